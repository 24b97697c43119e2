"""Outbox writes: whole files only, names that never replace an earlier result."""

import contextlib
import ctypes
import hashlib
import itertools
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from outbox_files import a_manifest, a_report
from pydantic import ValidationError

from daemon import fsutil
from daemon.jobs import outbox
from daemon.jobs.error_report import as_report
from daemon.jobs.outbox import OutputNames, folder_clash
from daemon.jobs.publisher import _clash
from daemon.jobs.record import AnswerNames


def test_atomic_write_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "photo.stylised.jpg"
    fsutil.atomic_write(target, b"abc")
    fsutil.atomic_write(target, b"defg")
    assert target.read_bytes() == b"defg"
    assert sorted(p.name for p in target.parent.iterdir()) == ["photo.stylised.jpg"]


def test_written_files_get_the_usual_mode(tmp_path: Path) -> None:
    """Users' sync tools and other accounts read the outbox: files are 0666 & ~umask, like any
    tool's output, not the 0600 of a private temporary file."""
    previous = os.umask(0o027)
    try:
        fsutil.atomic_write(tmp_path / "photo.stylised.jpg", b"abc")
        fsutil.atomic_write_json(tmp_path / "photo.manifest.json", {"ok": True})
    finally:
        os.umask(previous)
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path.name


def test_failed_write_removes_its_temporary_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "photo.manifest.json"
    fsutil.atomic_write(target, b"old")

    def broken() -> Iterator[bytes]:
        yield b"partial"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        fsutil._write_chunks(target, broken())
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["photo.manifest.json"]


def test_names_are_numbered_and_never_reuse_a_taken_name(tmp_path: Path) -> None:
    first = outbox.choose_names(tmp_path, "photo", "jpg")
    assert first.image.name == "photo.stylised.jpg"
    assert first.manifest.name == "photo.manifest.json"
    assert first.log.name == "photo.log"
    assert first.error.name == "photo.error.json"
    assert first.progress.name == "photo.progress.json"
    outbox.publish_error(first, a_report(job_id="a"), "log\n")

    second = outbox.choose_names(tmp_path, "photo", "jpg")
    assert second.image.name == "photo.stylised-2.jpg"
    assert second.manifest.name == "photo.manifest-2.json"
    assert second.log.name == "photo-2.log"
    assert second.error.name == "photo.error-2.json"

    third = outbox.choose_names(tmp_path, "photo", "jpg", reserved=second.all())
    assert third.number == 3
    kept = AnswerNames.model_validate_json(third.for_record().model_dump_json())
    assert OutputNames.of(tmp_path, "", kept) == third


def test_answers_named_together_list_the_folder_once_and_take_each_others_names(
    tmp_path: Path,
) -> None:
    """A flood's reports are named in one listing of their folder (it cost the square of
    their number); each name chosen in it is taken for the next, written or not yet, and a
    file someone else makes under the exact name is still seen."""
    outbox.publish_error(outbox.choose_names(tmp_path, "photo", "jpg"), a_report(), "")
    assert outbox.choose_names(tmp_path, "Photo", "jpg").number == 2
    assert outbox.choose_names(tmp_path, "Photo", "jpg").number == 2  # not written: free again
    with outbox.one_listing():
        assert outbox.choose_names(tmp_path, "Photo", "jpg").number == 2
        assert outbox.choose_names(tmp_path, "PHOTO", "jpg").number == 3  # taken by the one before
        (tmp_path / "photo.error-4.json").write_text("{}")  # made meanwhile, exactly so named
        assert outbox.choose_names(tmp_path, "photo", "jpg").number == 5
    assert outbox.choose_names(tmp_path, "photo", "jpg").number == 2  # a fresh listing


def test_names_that_a_folding_receiver_would_merge_are_taken(tmp_path: Path) -> None:
    """A phone, a Mac or a Windows share folds case and Unicode normalisation: an answer whose
    name differs from one in the outbox only so would be the same file there, and the sync tool
    would keep one of the two. Folders count too: `Trip/` and `trip/` are one folder there."""
    outbox.publish_error(outbox.choose_names(tmp_path, "Photo", "jpg"), a_report(), "")
    assert outbox.choose_names(tmp_path, "photo", "jpg").number == 2
    assert outbox.choose_names(tmp_path, "PHOTO", "jpg", root=tmp_path).number == 2
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    outbox.publish_error(outbox.choose_names(tmp_path, nfc, "jpg"), a_report(), "")
    assert outbox.choose_names(tmp_path, nfd, "jpg").number == 2

    upper = outbox.choose_names(tmp_path / "Trip" / "June", "beach", "jpg", root=tmp_path)
    outbox.publish_error(upper, a_report(), "")
    lower = outbox.choose_names(tmp_path / "trip" / "june", "Beach", "jpg", root=tmp_path)
    assert lower.number == 2
    # A running job's reserved names count the same way.
    running = outbox.choose_names(tmp_path / "x", "sea", "jpg", root=tmp_path)
    assert outbox.choose_names(tmp_path / "X", "SEA", "jpg", reserved=running.all()).number == 2


def test_publish_result_writes_the_image_and_a_manifest_naming_its_job(tmp_path: Path) -> None:
    rendered = tmp_path / "render.jpg"
    rendered.write_bytes(b"\xff\xd8jpeg")
    names = outbox.choose_names(tmp_path / "out", "photo", "jpg", root=tmp_path)
    assert outbox.owner(names.manifest) is None
    digest = outbox.publish_result(names, rendered, a_manifest("job-1"), "line\n")
    assert names.image.read_bytes() == b"\xff\xd8jpeg"
    assert digest == hashlib.sha256(b"\xff\xd8jpeg").hexdigest()
    assert outbox.owner(names.manifest) == "job-1"


def test_error_report_needs_an_error_text(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        a_report(error="")
    names = outbox.choose_names(tmp_path, "photo", "jpg")
    outbox.publish_error(names, a_report(job_id="x"), "")
    assert outbox.owner(names.error) == "x"
    assert as_report(json.loads(names.error.read_text())) == a_report(job_id="x")
    # A file under a report's name that is not one is not read as one, whatever it holds.
    for other in ({"job_id": "x"}, {"error": "x", "job_id": 3}, [1], "x", None):
        assert as_report(other) is None
        names.error.write_text(json.dumps(other))
        assert outbox.owner(names.error) == ("x" if other == {"job_id": "x"} else None)
    names.error.write_text("{not json")
    assert outbox.owner(names.error) is None


def test_long_names_fit_the_file_system(tmp_path: Path) -> None:
    stem = "é" * 200  # 400 bytes in UTF-8
    names = outbox.choose_names(tmp_path, stem, "jpg")
    for path in names.all():
        assert len(path.name.encode()) <= fsutil.NAME_MAX
    outbox.publish_error(names, a_report(), "")
    assert names.error.exists()
    # One stem for the whole set, numbered too (an attacker's trial: a long photo's manifest,
    # image and log were cut to three stems, and a script finds a job's files by its stem).
    for each in (names, replace(names, number=12, image_ext="webp")):
        stems = {path.name.partition(".")[0].removesuffix(f"-{each.number}") for path in each.all()}
        assert len(stems) == 1, stems
        assert max(len(path.name.encode()) for path in each.all()) >= fsutil.NAME_MAX - 1


def test_remove_temporaries_only_touches_ours(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    ours = tmp_path / "a" / ".stylefold-0123.tmp"
    theirs = tmp_path / "a" / ".syncthing.photo.jpg.tmp"
    ours.write_bytes(b"")
    theirs.write_bytes(b"")
    assert fsutil.remove_temporaries(tmp_path) == 1
    assert not ours.exists() and theirs.exists()


def test_atomic_copy_keeps_bytes_and_mtime(tmp_path: Path) -> None:
    source = tmp_path / "src.bin"
    source.write_bytes(os.urandom(3 << 20))
    os.utime(source, (1_000_000, 1_000_000))
    target = tmp_path / "copy" / "dst.bin"
    fsutil.atomic_copy(source, target)
    assert target.read_bytes() == source.read_bytes()
    assert target.stat().st_mtime == 1_000_000


def test_a_stale_error_report_of_the_same_photo_does_not_push_the_numbering(tmp_path: Path) -> None:
    pair = ["trip/photo.jpg", "trip/photo.json"]
    first = outbox.choose_names(tmp_path, "photo", "jpg")
    # A report about the photo, or about its sidecar alone: the pair takes the plain names.
    for reported in pair:
        outbox.publish_error(first, a_report(input=reported), "log\n")
        assert outbox.choose_names(tmp_path, "photo", "jpg", inputs=pair) == first
    # Another photo with the same stem is a different job: numbered.
    assert outbox.choose_names(tmp_path, "photo", "jpg", inputs=["trip/photo.png"]).number == 2
    outbox.drop_stale_report(first, ["trip/photo.png"], tmp_path / "inbox")
    assert first.error.exists()
    outbox.drop_stale_report(first, pair, tmp_path / "inbox")
    assert not first.error.exists() and not first.log.exists()  # the report's log went along
    # A result holds its names whatever the inputs.
    image = tmp_path / "rendered.jpg"
    image.write_bytes(b"an image")
    outbox.publish_result(first, image, a_manifest("j"), "log\n")
    assert outbox.choose_names(tmp_path, "photo", "jpg", inputs=pair).number == 2


def test_an_answer_in_another_format_holds_its_manifest_and_log(tmp_path: Path) -> None:
    photo = ["old/photo.jpg"]  # what a_manifest answers
    png = outbox.choose_names(tmp_path, "photo", "png", inputs=photo)
    image = tmp_path / "rendered"
    image.write_bytes(b"an image")
    manifest = a_manifest("j")
    manifest = manifest.model_copy(
        update={"output": manifest.output.model_copy(update={"file": png.image.name})}
    )
    outbox.publish_result(png, image, manifest, "log\n")
    # A JPEG asked for the same photo: the PNG answer stands, so the JPEG is numbered beside it,
    # and a failure of it leaves the PNG's manifest where it is.
    jpg = outbox.choose_names(tmp_path, "photo", "jpg", inputs=photo)
    assert jpg.number == 2
    outbox.publish_error(replace(jpg, number=1), a_report(input=photo[0]), "log\n")
    assert png.manifest.exists()
    # Once its owner deletes the PNG, its manifest and log are the new answer's to replace.
    png.image.unlink()
    assert outbox.choose_names(tmp_path, "photo", "jpg", inputs=photo).number == 1
    # A manifest naming no file beside it is not taken as an answer whose image went.
    fsutil.atomic_write_json(
        png.manifest,
        manifest.model_copy(
            update={"output": manifest.output.model_copy(update={"file": "../photo.stylised.png"})}
        ).model_dump(mode="json"),
        under=tmp_path,
    )
    assert outbox.choose_names(tmp_path, "photo", "jpg", inputs=photo).number == 2


def test_a_folder_is_not_made_where_it_takes_an_answer_s_name(tmp_path: Path) -> None:
    (tmp_path / "photo.stylised.jpg").write_bytes(b"an answer")
    (tmp_path / "Trip").mkdir()
    reserved = [tmp_path / "sub" / "b.log", tmp_path / "queued.stylised.jpg"]
    assert folder_clash(tmp_path, "queued.stylised.jpg/x", reserved) is not None
    assert folder_clash(tmp_path, "SUB/B.LOG", reserved) is not None  # folded, one level down
    told = folder_clash(tmp_path, "Photo.Stylised.JPG", reserved)
    assert told is not None and "beside the file photo.stylised.jpg" in told
    assert folder_clash(tmp_path, "trip/deeper", reserved) is None  # alike folders: numbered
    assert folder_clash(tmp_path, "sub/other", reserved) is None
    (tmp_path / "queued.stylised.jpg").mkdir()  # already there: no one's to refuse
    assert folder_clash(tmp_path, "queued.stylised.jpg/x", reserved) is None


def test_a_folder_refused_or_held_by_a_file_is_numbered_and_stays_so(tmp_path: Path) -> None:
    root, inbox = tmp_path / "outbox", tmp_path / "inbox"
    root.mkdir()
    inbox.mkdir()
    (root / "photo.log").write_text("an answer's log")
    (root / "Trip").mkdir()
    (root / "b.LOG").write_text("another answer's log")
    reserved = [root / "queued.stylised.jpg", root / "sub" / "c.log"]

    def folder(rel_dir: str, reserved: list[Path] = reserved) -> str:
        return outbox.answer_folder(root, rel_dir, reserved, inbox)

    assert folder("") == ""
    assert folder("photo.log/x") == "photo.log-2/x"
    assert folder("queued.stylised.jpg") == "queued.stylised.jpg-2"
    assert folder("b.log") == "b.log-2"  # folded
    assert folder("trip/photo.log") == "trip/photo.log"
    assert folder("sub/c.log") == "sub/c.log-2"
    # Made and marked by the first answer, the next ones of that folder go there too.
    outbox.mark_folders(root, "photo.log-2/x", "photo.log/x")
    assert folder("photo.log/y") == "photo.log-2/y"
    # An inbox folder of that very name is not answered in another folder's numbered one, nor
    # is a numbered name taken that an inbox folder has (a re-test's finding: both inbox
    # folders were answered in photo.log-2/).
    assert folder("photo.log-2") == "photo.log-2-2"
    (inbox / "B.log-2").mkdir()
    assert folder("b.log") == "b.log-3"
    # Alike in case, a numbered folder and another inbox folder's are one on a folding
    # receiver (a re-test's finding: C.LOG-2/ was made beside c.log/'s c.log-2/).
    assert folder("PHOTO.LOG-2") == "PHOTO.LOG-2-2"
    # The answer folders of jobs in progress count, made or not (a re-test's finding: with the
    # outbox away at claim, or the numbered folder removed mid-job, another inbox folder took
    # it); alike mirrors of alike inbox folders still share one, their files numbered apart.
    (root / "d.log").write_text("an answer's log")

    def claimed(rel_dir: str, *held: tuple[str, str]) -> str:
        return outbox.answer_folder(root, rel_dir, [], inbox, held)

    assert claimed("c.log-2", ("c.log-2", "c.log")) == "c.log-2-2"
    assert claimed("d.log", ("D.log-2", "D.log-2")) == "d.log-3"
    assert claimed("trip2", ("Trip2", "Trip2")) == "trip2"
    assert claimed("trip2", ("Trip2", "trip")) == "trip2-2"
    assert claimed("c.log-2/sub", ("c.log-2/sub", "c.log/sub")) == "c.log-2-2/sub"
    long = "é" * 127  # 254 bytes: the number takes the place of its end
    (root / long).write_text("x")
    assert folder(long, []) == "é" * 126 + "-2"


def test_a_file_is_not_named_like_a_folder_an_answer_in_progress_goes_in(tmp_path: Path) -> None:
    """Two attackers' trials: a photo `k.jpg` claimed while the answer of `k.log/a.jpg` was in
    progress took the name `k.log` for its log, and whichever came second was blocked."""
    reserved = [tmp_path / "k.log" / "a.stylised.jpg"]
    assert outbox.choose_names(tmp_path, "k", "jpg", reserved=reserved).number == 2
    assert outbox.choose_names(tmp_path, "m", "jpg", reserved=reserved).number == 1


def test_a_folder_holding_an_answer_s_name_is_told_as_such(tmp_path: Path) -> None:
    """A folder made at an answer's name by another writer of the outbox: the rename of the
    answer fails with EISDIR, which no space or permission mends (it was told to free space)."""
    from daemon.jobs.publisher import _clash

    (tmp_path / "photo.stylised.jpg").mkdir()
    (tmp_path / ".tmp").write_bytes(b"the answer")
    with pytest.raises(OSError) as caught:
        os.replace(tmp_path / ".tmp", tmp_path / "photo.stylised.jpg")
    told = _clash(caught.value)
    assert told == (
        f"{tmp_path / 'photo.stylised.jpg'} is a folder, where the answer writes a file of that "
        "name; move that folder away"
    )


def test_answers_are_never_written_or_removed_through_a_folder_link(tmp_path: Path) -> None:
    """A two-way synced outbox lets its readers make a folder a link to one of the server's
    between the answer's naming and its writing: the write refuses it, names the link, and
    leaves the folder it points to alone."""
    root, elsewhere = tmp_path / "outbox", tmp_path / "elsewhere"
    (root / "trip").mkdir(parents=True)
    elsewhere.mkdir()
    (elsewhere / "photo.log").write_text("theirs")
    names = outbox.choose_names(root / "trip", "photo", "jpg", root=root)
    (root / "trip").rmdir()
    (root / "trip").symlink_to(elsewhere)
    rendered = tmp_path / "render.jpg"
    rendered.write_bytes(b"\xff\xd8jpeg")

    with pytest.raises(OSError) as refused:
        outbox.publish_result(names, rendered, a_manifest("job-1"), "line\n")
    assert f"{root / 'trip'} is a link" in str(_clash(refused.value))
    with pytest.raises(OSError):
        fsutil.remove(names.log, root)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["photo.log"]
    assert (elsewhere / "photo.log").read_text() == "theirs"
    assert not outbox.is_folder(root, "trip") and outbox.is_folder(root, "")


def test_an_answer_lands_whole_though_its_folder_is_swapped_for_a_link_meanwhile(
    tmp_path: Path,
) -> None:
    """An attacker's trial toggled an outbox folder and a link to elsewhere while answers were
    written: an image landed, its log and manifest were refused through the link, and the
    outbox held a result without its manifest until the next try. Each answer is written into
    its folder as opened once: all of it, or none of it (refused), never part."""
    root, elsewhere = tmp_path / "outbox", tmp_path / "elsewhere"
    folder = root / "trip"
    folder.mkdir(parents=True)
    elsewhere.mkdir()
    rendered = tmp_path / "render.jpg"
    rendered.write_bytes(b"\xff\xd8jpeg" * 1000)
    stop = threading.Event()

    def toggle() -> None:
        for turn in itertools.count():
            if stop.is_set():
                return
            with contextlib.suppress(OSError):  # a write may make the folder again meanwhile
                folder.rename(root / f"away{turn}")
                folder.symlink_to(elsewhere)
                time.sleep(0.0005)
                folder.unlink()
            time.sleep(0.0005)

    toggler = threading.Thread(target=toggle)
    toggler.start()
    refused = tries = 0
    try:  # on a loaded machine the toggler may be starved for a while: go on until both showed
        while tries < 150 or (not 0 < refused < tries and tries < 5000):
            names = outbox.OutputNames(folder, f"p{tries}", "jpg", 1, root)
            try:
                outbox.publish_result(names, rendered, a_manifest(f"job-{tries}"), "line\n")
            except OSError:
                refused += 1
            tries += 1
    finally:
        stop.set()
        toggler.join()
    assert list(elsewhere.iterdir()) == []
    found: dict[tuple[Path, str], set[str]] = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            stem, _, tail = path.name.partition(".")
            found.setdefault((path.parent, stem), set()).add(tail)
    whole = {"stylised.jpg", "log", "manifest.json"}
    assert {key: got for key, got in found.items() if got != whole} == {}
    assert 0 < refused < tries and len(found) == tries - refused


def test_a_link_at_an_answers_name_is_replaced_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("keep")
    (tmp_path / "out").mkdir()
    names = outbox.choose_names(tmp_path / "out", "photo", "jpg")
    names.log.symlink_to(secret)
    outbox.publish_error(names, a_report(), "the log\n")
    assert names.log.read_text() == "the log\n" and not names.log.is_symlink()
    fsutil.remove(names.log, names.outbox)
    assert secret.read_text() == "keep" and not names.log.exists()


def test_read_json_takes_no_fifo_link_or_huge_file(tmp_path: Path) -> None:
    """Whoever writes into the outbox may put anything at the name of a report the daemon
    reads: a FIFO would hold it at the open for ever, a huge file fill its memory."""
    fifo, link, huge = tmp_path / "a.error.json", tmp_path / "b.error.json", tmp_path / "c.json"
    os.mkfifo(fifo)
    (tmp_path / "real.json").write_text('{"job_id": "j"}')
    link.symlink_to(tmp_path / "real.json")
    with huge.open("wb") as handle:
        handle.write(b'{"job_id": "')
        handle.truncate(fsutil.JSON_BYTES + 1)
    assert [fsutil.read_json(p) for p in (fifo, link, huge)] == [None, None, None]
    assert fsutil.read_json(tmp_path / "real.json") == {"job_id": "j"}
    # An earlier answer's image, hashed to see that it is unchanged and copied for a reuse.
    for swapped in (fifo, link):
        with pytest.raises(OSError, match=r"not a regular file|symbolic link"):
            fsutil.answer_sha256(swapped, tmp_path, 1 << 20)
        with pytest.raises(OSError, match=r"not a regular file|symbolic link"):
            fsutil.open_answer(swapped, tmp_path, 1 << 20)


def test_remove_temporaries_never_enters_a_folder_swapped_for_a_link(tmp_path: Path) -> None:
    """An attacker's trial: `os.walk` checks a folder is no link, then opens it by its path; a
    folder swapped for a link in between (a loop of renameat2 exchanges) had our temporary
    files deleted in the folder it pointed to, within a couple of thousand walks."""
    outbox, decoy = tmp_path / "outbox", tmp_path / "decoy"
    outbox.mkdir()
    decoy.mkdir()
    theirs = decoy / ".stylefold-deadbeefdeadbeef.tmp"
    theirs.write_bytes(b"someone else's")
    for index in range(8):
        (outbox / f"x{index}").mkdir()
        (outbox / f".s{index}").symlink_to(decoy)
    exchange = ctypes.CDLL(None, use_errno=True).renameat2
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            for index in range(8):
                real, link = os.fsencode(outbox / f"x{index}"), os.fsencode(outbox / f".s{index}")
                exchange(-100, real, -100, link, 2)  # AT_FDCWD, RENAME_EXCHANGE

    swapper = threading.Thread(target=swap)
    swapper.start()
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and theirs.exists():
            fsutil.remove_temporaries(outbox)
    finally:
        stop.set()
        swapper.join()
    assert theirs.read_bytes() == b"someone else's"


def test_an_answer_is_hashed_no_further_than_an_answer_can_be(tmp_path: Path) -> None:
    """An attacker's trial: a sparse 100 GB file at an earlier answer's name was hashed to the
    end in the daemon's loop (minutes), to see whether that answer was unchanged."""
    huge = tmp_path / "photo.stylised.jpg"
    with huge.open("wb") as handle:
        handle.truncate(1 << 40)
    began = time.monotonic()
    with pytest.raises(OSError, match="larger than ours"):
        fsutil.answer_sha256(huge, tmp_path, 1 << 20)
    assert time.monotonic() - began < 1
    small = tmp_path / "small.jpg"
    small.write_bytes(b"jpeg")
    assert fsutil.answer_sha256(small, tmp_path, 1 << 20) == hashlib.sha256(b"jpeg").hexdigest()
    # Opened once, it is copied as it was then, whatever takes its name meanwhile (a re-test:
    # a swap between the check and the copy wrote 2 GiB of a sparse file into the outbox).
    with fsutil.open_answer(small, tmp_path, 1 << 20) as opened:
        small.unlink()
        huge.rename(small)
        copy = tmp_path / "out" / "copy.jpg"
        fsutil.atomic_copy(small, copy, tmp_path, hashlib.sha256(b"jpeg").hexdigest(), opened)
    assert copy.read_bytes() == b"jpeg"


def test_an_answer_is_not_read_through_a_folder_link(tmp_path: Path) -> None:
    """A re-test: with the earlier answer's folder swapped for a link to a server folder, its
    manifest was read there and its facts published in the new answer."""
    outbox, server = tmp_path / "outbox", tmp_path / "server"
    (server / "f").mkdir(parents=True)
    (server / "f" / "a.manifest.json").write_text('{"secret": 1}')
    outbox.mkdir()
    (outbox / "f").symlink_to(server / "f")
    with pytest.raises(OSError, match="is not a folder now"):
        fsutil.open_answer(outbox / "f" / "a.manifest.json", outbox, 1 << 20)
    with pytest.raises(OSError, match="not in the outbox"):
        fsutil.open_answer(server / "f" / "a.manifest.json", outbox, 1 << 20)


def test_a_copy_that_must_match_its_published_hash_is_not_put_in_place_otherwise(
    tmp_path: Path,
) -> None:
    """A reuse copies an earlier answer checked unchanged a moment (or a blocked retry) before:
    whatever was swapped in since, only the published bytes become the new answer."""
    earlier, copy = tmp_path / "earlier.jpg", tmp_path / "out" / "copy.jpg"
    earlier.write_bytes(b"published")
    published = hashlib.sha256(b"published").hexdigest()
    earlier.write_bytes(b"swapped in")
    with pytest.raises(fsutil.NotTheSame):
        fsutil.atomic_copy(earlier, copy, under=tmp_path, sha256=published)
    assert not copy.exists() and sorted(os.listdir(tmp_path / "out")) == []
    earlier.write_bytes(b"published")
    fsutil.atomic_copy(earlier, copy, under=tmp_path, sha256=published)
    assert copy.read_bytes() == b"published"


def test_a_link_named_like_an_answer_folder_in_another_case_makes_it_numbered(
    tmp_path: Path,
) -> None:
    """An attacker's trial: with `outbox/case` a link to a folder, the inbox folder `Case/` was
    answered in a new `Case/` beside it, one name on a receiver that folds case."""
    root, inbox, elsewhere = tmp_path / "outbox", tmp_path / "inbox", tmp_path / "elsewhere"
    for folder in (root, inbox / "Case", elsewhere):
        folder.mkdir(parents=True)
    (root / "case").symlink_to(elsewhere)
    assert folder_clash(root, "Case", []) is not None
    assert outbox.answer_folder(root, "Case", [], inbox) == "Case-2"
