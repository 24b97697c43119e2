"""Awkward names, end to end and across a restart: names that are not UTF-8, a photo and its
sidecar spelled in different Unicode normalisations, names at the 255-byte limit, folders
named like a photo or a sidecar, a style file that is the photo itself. Each gets exactly one
answer a user can act on; a second run (a restart) answers nothing again and leaves nothing
in the state folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import Folders, image_bytes, start_daemon, wait_for, write_json
from hostile import run_once

from daemon.config import load_settings
from daemon.status import read_status

pytestmark = pytest.mark.heavy

LATIN1 = os.fsdecode(b"caf\xe9")  # a name from an old SMB client: not UTF-8
COMPOSED, DECOMPOSED = "caf\u00e9", "cafe\u0301"  # Linux and most tools / macOS
LONG = "L" * 250  # photo.jpg is 254 bytes, its sidecar 255: the outputs must be shortened


def _write(folder: Path, name: str, data: bytes | object) -> None:
    path = folder / name
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())


def _commit_files(outbox: Path) -> list[str]:
    return sorted(
        name for name in os.listdir(outbox) if name.endswith((".manifest.json", ".error.json"))
    )


def test_awkward_names_get_one_answer_each_and_survive_a_restart(folders: Folders) -> None:
    inbox, outbox = folders.inbox, folders.outbox
    style = {"style": "mosaic"}
    _write(inbox, f"{LATIN1}.jpg", image_bytes(seed=1))
    _write(inbox, f"{LATIN1}.json", style)
    _write(inbox, f"{COMPOSED}.jpg", image_bytes(seed=2))
    _write(inbox, f"{DECOMPOSED}.json", style)  # pairs with the composed photo
    _write(inbox, f"{LONG}.jpg", image_bytes(seed=3))
    _write(inbox, f"{LONG}.json", {"style": "no-such-style"})  # answered without a render
    _write(inbox, "holiday.jpg", image_bytes(seed=4))
    (inbox / "holiday.json").mkdir()  # a folder named like its sidecar
    (inbox / "album.jpg").mkdir()  # a folder named like the photo of a sidecar
    _write(inbox, "album.json", style)
    _write(inbox, "self.jpg", image_bytes(seed=5))
    _write(inbox, "self.json", {"style": {"file": "self.jpg"}})
    # A short pair_timeout: `once` stops once the inbox is quiet, which must come after the
    # lone files are reported.
    settings = load_settings(folders.config(pair_timeout=0.8), {})

    run_once(settings)
    first = _commit_files(outbox)
    short = next(name for name in first if name.startswith("LLLL"))
    assert len(short.encode()) <= 255 and short.endswith(".error.json")
    assert first == sorted(
        [
            f"{LATIN1}.manifest.json",
            f"{COMPOSED}.manifest.json",
            short,
            "holiday.error.json",
            "album.error.json",
            "self.error.json",
        ]
    )

    def error(name: str) -> str:
        return str(json.loads((outbox / name).read_text())["error"])

    assert "no-such-style" in error(short)
    assert "holiday.json beside it is a folder" in error("holiday.error.json")
    assert "rename the folder" in error("holiday.error.json")
    assert "album.jpg beside it is a folder" in error("album.error.json")
    assert "self.jpg is the photo itself" in error("self.error.json")
    manifest = json.loads((outbox / f"{COMPOSED}.manifest.json").read_text())
    assert manifest["sidecar"]["path"] == f"{DECOMPOSED}.json"
    archive = settings.archive_path
    assert (archive / f"{LATIN1}.jpg").read_bytes() == image_bytes(seed=1)
    assert (archive / f"{DECOMPOSED}.json").exists()

    run_once(settings)  # a restart: nothing is answered twice, nothing is left behind
    assert _commit_files(outbox) == first
    assert list((settings.state / "spool").iterdir()) == []
    assert not (settings.state / "returned").exists()
    assert (inbox / f"{LONG}.jpg").exists() and (inbox / "self.jpg").exists()


def test_names_that_differ_in_case_alone_pair_end_to_end(folders: Folders) -> None:
    """A USB-stick user's trial: a camera's `IMG_0001.JPG` and a hand-written `img_0001.json`
    never paired, nor a sidecar naming `brush.jpg` for `Brush.JPG`; on a stick that folds case
    neither could be renamed beside the other. A style named in another case that is the photo
    itself is still refused."""
    inbox, outbox = folders.inbox, folders.outbox
    _write(inbox, "IMG_0001.JPG", image_bytes(seed=63))
    _write(inbox, "img_0001.json", {"style": "mosaic"})
    _write(inbox, "portrait.jpg", image_bytes(seed=64))
    _write(inbox, "Portrait.json", {"style": {"file": "brush.jpg"}})
    _write(inbox, "Brush.JPG", image_bytes(seed=65))
    _write(inbox, "Mine.jpg", image_bytes(seed=66))
    _write(inbox, "mine.json", {"style": {"file": "MINE.JPG"}})
    settings = load_settings(folders.config(pair_timeout=0.8), {})

    run_once(settings)
    first = _commit_files(outbox)
    assert first == ["IMG_0001.manifest.json", "Mine.error.json", "portrait.manifest.json"]
    camera = json.loads((outbox / "IMG_0001.manifest.json").read_text())
    assert camera["sidecar"]["path"] == "img_0001.json"
    portrait = json.loads((outbox / "portrait.manifest.json").read_text())
    assert [style["name"] for style in portrait["styles"]] == ["Brush.JPG"]
    assert portrait["sidecar"]["path"] == "Portrait.json"
    error = json.loads((outbox / "Mine.error.json").read_text())["error"]
    assert "Mine.jpg is the photo itself" in error
    assert (inbox / "Brush.JPG").exists()  # a style brought along is copied, not moved

    run_once(settings)  # a restart: the style image left beside is not a lone photo
    assert _commit_files(outbox) == first
    assert list((settings.state / "spool").iterdir()) == []


def test_a_photo_whose_path_is_too_long_to_answer_is_listed_not_retried_for_ever(
    folders: Folders,
) -> None:
    """22 folders of 200-byte names: each name is legal and the depth under max_depth, but the
    whole path is longer than the system opens (PATH_MAX), and its answer's path under the
    outbox would be too. It was taken, crashed, and its report was retried for ever with advice
    to free space in the outbox; it is now listed under "needs attention" instead, and the
    inbox goes on."""
    names = [f"{index:02d}{'d' * 198}" for index in range(22)]
    fd = os.open(folders.inbox, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in names:
            os.mkdir(name, dir_fd=fd)
            fd, parent = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
            os.close(parent)
        for name, data in (
            ("deep.jpg", image_bytes(seed=50)),
            ("deep.json", b'{"style": "mosaic"}'),
        ):
            out = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
            os.write(out, data)
            os.close(out)
    finally:
        os.close(fd)
    daemon = start_daemon(folders, config=folders.config(rescan_interval=1.0))
    try:
        (folders.inbox / "photo.jpg").write_bytes(image_bytes(seed=51))
        write_json(folders.inbox / "photo.json", {"style": "mosaic"})
        wait_for((folders.outbox / "photo.manifest.json").exists, 60, "the short path's answer")

        def listed() -> list[str]:
            return [i.what for i in read_status(folders.state).attention if "path" in i.what]

        [what] = wait_for(listed, 30, "the long path listed")
        assert "longer than" in what and "are not taken" in what
        shutil.rmtree(folders.inbox / names[0])  # moved away
        wait_for(lambda: not listed(), 30, "the listing cleared")
    finally:
        assert daemon.stop() == 0
    assert not daemon.logged("job.outbox_unwritable") and not daemon.logged("job.arrival_crashed")
    assert sorted(os.listdir(folders.outbox)) == [
        "photo.log",
        "photo.manifest.json",
        "photo.stylised.jpg",
    ]


def test_an_inbox_folder_named_like_an_answer_file_is_answered_in_a_numbered_folder(
    folders: Folders,
) -> None:
    """Attackers' trials: after photo `xc.jpg` was answered, a folder `xc.log/` in the inbox
    needs a folder where the outbox holds the file `xc.log`. Its job was blocked, told first to
    free space, then to rename the inbox folder, which cannot help once the photo is claimed:
    it waited forever. Now such a folder's answers go to `xc.log-2/`, every one of them, and its
    log says why; a photo claimed while the folder's job is in progress cannot take the
    folder's name for its own log either (`yc.log/` before `yc.jpg`), nor the other way round."""
    (folders.outbox / "xc.log").write_text("an earlier job's log\n")
    (folders.inbox / "xc.log").mkdir()
    for name in ("inner", "second"):
        (folders.inbox / "xc.log" / f"{name}.jpg").write_bytes(image_bytes(seed=len(name)))
        write_json(folders.inbox / "xc.log" / f"{name}.json", {"style": "mosaic"})
    (folders.inbox / "yc.log").mkdir()  # together with yc.jpg: whichever is claimed first
    (folders.inbox / "yc.log" / "a.jpg").write_bytes(image_bytes(seed=53))
    write_json(folders.inbox / "yc.log" / "a.json", {"style": "mosaic"})
    (folders.inbox / "yc.jpg").write_bytes(image_bytes(seed=54))
    write_json(folders.inbox / "yc.json", {"style": "mosaic"})
    run_once(load_settings(folders.config(), {}))
    assert (folders.outbox / "xc.log").read_text() == "an earlier job's log\n"
    for name in ("inner", "second"):
        assert (folders.outbox / "xc.log-2" / f"{name}.stylised.jpg").is_file()
        log = (folders.outbox / "xc.log-2" / f"{name}.log").read_text()
        assert "answered in the outbox folder xc.log-2/, not xc.log/" in log
    answered = {
        path.relative_to(folders.outbox).as_posix()
        for path in folders.outbox.rglob("*.manifest*.json")  # yc.manifest-2.json too
    }
    xc = {"xc.log-2/inner.manifest.json", "xc.log-2/second.manifest.json"}
    assert answered - xc in (  # whichever of yc.jpg and yc.log/ was claimed first
        {"yc.manifest.json", "yc.log-2/a.manifest.json"},
        {"yc.manifest-2.json", "yc.log/a.manifest.json"},
    ), answered
    assert xc <= answered and not list(folders.outbox.rglob("*.error.json"))
    # An inbox folder named like the numbered one gets its own (a re-test's finding: a photo
    # of inbox/xc.log-2/ was answered beside xc.log/'s, under its photo's very name).
    (folders.inbox / "xc.log-2").mkdir()
    (folders.inbox / "xc.log-2" / "inner.jpg").write_bytes(image_bytes(seed=55))
    write_json(folders.inbox / "xc.log-2" / "inner.json", {"style": "mosaic"})
    run_once(load_settings(folders.config(), {}))
    manifest = json.loads((folders.outbox / "xc.log-2-2" / "inner.manifest.json").read_text())
    assert manifest["input"]["path"] == "xc.log-2/inner.jpg"
    assert not (folders.outbox / "xc.log-2" / "inner.stylised-2.jpg").exists()


def test_an_inbox_folder_cannot_take_the_name_of_an_answer(folders: Folders) -> None:
    """An attacker's trial: while `victim.jpg` rendered, a rejected pair in an inbox folder
    `victim.stylised.jpg/` made that folder in the outbox for its report, and the victim's
    result could never be written (blocked, told to free space). No folder is made that takes
    the name of an answer in progress, or differs only in case from a file beside it: such a
    folder's answers go to a numbered one."""
    daemon = start_daemon(folders)
    try:
        (folders.inbox / "victim.jpg").write_bytes(image_bytes(seed=58))
        # Rendering (about 20 s in fp32 on 2 cores) while the other pair is answered (seconds).
        slow = {"size": 128, "iterations": 80}
        write_json(folders.inbox / "victim.json", {"style": "mosaic", "params": slow})
        daemon.wait_for_log("job.started", timeout=60)
        taker = folders.inbox / "victim.stylised.jpg"
        taker.mkdir()
        (taker / "a.jpg").write_bytes(image_bytes(seed=59))
        write_json(taker / "a.json", {"style": "no such style"})
        report = folders.outbox / "victim.stylised.jpg-2" / "a.error.json"
        wait_for(report.exists, 60, "the report in a numbered folder")
        log = (report.parent / "a.log").read_text()
        assert "answered in the outbox folder victim.stylised.jpg-2/, not" in log
        assert not (folders.outbox / "victim.manifest.json").exists(), "rendered too soon"
        assert not (folders.outbox / "victim.stylised.jpg").exists()

        wait_for((folders.outbox / "victim.manifest.json").exists, 120, "the victim's answer")
        assert (folders.outbox / "victim.stylised.jpg").is_file()

        case = folders.inbox / "VICTIM.LOG"  # victim.log is a file in the outbox now
        case.mkdir()
        (case / "b.jpg").write_bytes(image_bytes(seed=60))
        write_json(case / "b.json", {"style": "no such style"})
        wait_for((folders.outbox / "VICTIM.LOG-2" / "b.error.json").exists, 60, "the report")
        assert not (folders.outbox / "VICTIM.LOG").exists()
    finally:
        assert daemon.stop() == 0
    assert not daemon.logged("job.outbox_unwritable")
