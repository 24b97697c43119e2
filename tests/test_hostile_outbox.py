"""A writable outbox: a two-way sync (Syncthing's default "Send & Receive", Nextcloud) lets the
people who read the outbox write into it too, links and FIFOs included. The daemon must write,
remove and read only its own files in it: never through a folder link onto the server, never
hang on a FIFO named like one of its files, and still give every photo exactly one answer."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
from conftest import Folders, image_bytes, start_daemon
from hostile import Decoy

pytestmark = pytest.mark.heavy

ANSWER = re.compile(r".+\.(manifest|error)(-\d+)?\.json")


def _pair(inbox: Path, rel: str, seed: int) -> None:
    photo = inbox / rel
    photo.parent.mkdir(parents=True, exist_ok=True)
    photo.write_bytes(image_bytes(seed=seed))
    photo.with_suffix(".json").write_text(
        json.dumps({"style": "mosaic", "params": {"iterations": 2}})
    )


def _answers(outbox: Path) -> dict[str, str]:
    """Each manifest or report in the outbox, by the photo it answers (files only: not through
    links, not the FIFO)."""
    found = {}
    for folder, _dirs, files in os.walk(outbox):  # os.walk does not enter folder links
        for name in files:
            path = Path(folder, name)
            if ANSWER.fullmatch(name) and stat.S_ISREG(path.lstat().st_mode):
                value = json.loads(path.read_text())
                photo = value["input"]["path"] if "manifest" in name else value["input"]
                assert photo not in found, f"two answers for {photo}: {found[photo]}, {path}"
                found[photo] = path.relative_to(outbox).as_posix()
    return found


def test_links_and_fifos_in_the_outbox_are_never_followed(folders: Folders, tmp_path: Path) -> None:
    inbox, outbox = folders.inbox, folders.outbox
    decoy = Decoy(tmp_path / "decoy")
    # Folder links where the answers of inbox folders go, at the top and one level down.
    (outbox / "trip").symlink_to(decoy.root / "dir")
    (outbox / "album").mkdir()
    (outbox / "album" / "june").symlink_to(decoy.root)
    # Links and a FIFO at the very names of answers: the daemon reads an earlier report or
    # manifest there before it writes (is it stale? whose is it?).
    os.mkfifo(outbox / "beach.error.json")
    (outbox / "beach.manifest.json").symlink_to(decoy.root / "secret.json")
    (outbox / "beach.stylised.jpg").symlink_to(decoy.root / "photo.jpg")
    (outbox / "beach.log").symlink_to(decoy.root / "dir" / "photo.json")
    decoy.before = decoy.snapshot()
    _pair(inbox, "trip/photo.jpg", 1)
    _pair(inbox, "album/june/photo.jpg", 2)
    _pair(inbox, "beach.jpg", 3)

    daemon = start_daemon(folders, config=folders.config(pair_timeout=0.8), command="once")
    try:
        assert daemon.process.wait(timeout=240) == 0, daemon.log_path.read_text()[-3000:]
    finally:  # held for ever on the FIFO, before: not left running after the test
        daemon.process.kill()

    assert decoy.unchanged()
    answers = _answers(outbox)
    assert set(answers) == {"trip/photo.jpg", "album/june/photo.jpg", "beach.jpg"}
    assert answers["trip/photo.jpg"] == "trip-2/photo.manifest.json"
    assert answers["album/june/photo.jpg"] == "album/june-2/photo.manifest.json"
    # The names held by links and the FIFO are numbered past, the links left as they are.
    assert answers["beach.jpg"] == "beach.manifest-2.json"
    manifest = json.loads((outbox / answers["beach.jpg"]).read_text())
    image = outbox / manifest["output"]["file"]
    assert image.name == "beach.stylised-2.jpg"
    assert stat.S_ISREG(image.lstat().st_mode) and image.stat().st_size > 0
