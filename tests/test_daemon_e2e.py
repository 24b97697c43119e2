"""The daemon end to end: a real `stylefold run` process, real files, the real engine.

One daemon serves the arrival-pattern tests of this module (each test works in its own inbox
subfolder); restarts and signals get daemons of their own.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import (
    CLI,
    REPO,
    Daemon,
    Folders,
    as_an_ordinary_user,
    image_bytes,
    iso_media,
    make_folders,
    make_image,
    start_daemon,
    started_again_not_given_up,
    status_json,
    wait_for,
    write_json,
)
from PIL import Image

from daemon.exitcodes import ExitCode
from daemon.jobs.recovery import MAX_STARTS
from daemon.status import read_status
from daemon.status_model import open_failures
from daemon.supervision import status_line
from daemon.versions import stylefold_version
from service.params import DEFAULT_STRENGTH, strength_of, style_weight_for

SIDECAR = {"style": "mosaic"}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    folders = make_folders(tmp_path_factory.mktemp("e2e"))
    daemon = start_daemon(folders, config=folders.config(pair_timeout=4.0, arriving_timeout=3.0))
    yield daemon
    assert daemon.stop() == 0


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    command = [*CLI, *argv]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


def _outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _manifest(folders: Folders, rel: str) -> dict[str, object]:
    path = folders.outbox / rel
    wait_for(path.exists, 90, f"{rel} in the outbox")
    return json.loads(path.read_text())


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _finished_once(daemon: Daemon, rel_dir: str, stem: str = "photo") -> dict[str, object]:
    """The job's result set is complete, alone, and its original is archived."""
    folders = daemon.folders
    manifest = _manifest(folders, f"{rel_dir}/{stem}.manifest.json")
    # The original is archived once the answer is complete: after the manifest, a stale error
    # report about the same photo is dropped (the result is on disk first), then the original
    # moves on. Read the outbox before that and the outdated report may still be there.
    archived = folders.state / "archive" / rel_dir / f"{stem}.jpg"
    wait_for(archived.exists, 10, "the original in the archive")
    assert _outputs(folders.outbox / rel_dir) == [
        f"{stem}.log",
        f"{stem}.manifest.json",
        f"{stem}.stylised.jpg",
    ]
    assert manifest["input"]["sha256"] == _sha(archived.read_bytes())  # type: ignore[index]
    assert not (folders.inbox / rel_dir / f"{stem}.jpg").exists()
    return manifest


def test_image_first_then_sidecar(shared: Daemon) -> None:
    inbox = shared.folders.inbox / "image-first"
    inbox.mkdir()
    (inbox / "photo.jpg").write_bytes(image_bytes(seed=1))
    time.sleep(1.0)  # the photo settles and waits for its sidecar
    write_json(inbox / "photo.json", SIDECAR)
    manifest = _finished_once(shared, "image-first")
    assert manifest["styles"][0]["name"] == "mosaic"  # type: ignore[index]
    assert manifest["output"]["size"] == [48, 36]  # type: ignore[index]
    # The weight the default strength stood for, exactly (a photographer's trial: the
    # README's rounded 398 does not repeat the picture).
    assert manifest["params"]["style_weight"] is None  # type: ignore[index]
    assert manifest["style_weight_used"] == style_weight_for(DEFAULT_STRENGTH)
    assert manifest["start_style_colours"] == 1.0  # the recolored start, at the default


def test_sidecar_first_then_image_in_nested_subfolders(shared: Daemon) -> None:
    inbox = shared.folders.inbox / "sidecar-first" / "2024" / "june"
    write_json(inbox / "photo.json", {"style": "waves", "output": {"format": "png"}})
    time.sleep(1.0)
    (inbox / "photo.jpg").write_bytes(image_bytes(seed=2))
    manifest = _manifest(shared.folders, "sidecar-first/2024/june/photo.manifest.json")
    assert manifest["output"]["format"] == "png"  # type: ignore[index]
    assert (shared.folders.outbox / "sidecar-first/2024/june/photo.stylised.png").exists()


def test_both_weights_given_the_style_weight_is_used_and_the_log_says_so(shared: Daemon) -> None:
    """Allowed, as documented, but the sender is told their strength did nothing (a
    photographer's trial: the daemon was silent where validate spoke), and a seed without the
    noise start (another's: three seeds, three identical pictures)."""
    inbox = shared.folders.inbox / "both-weights"
    given = {"strength": 0.2, "style_weight": 50, "seed": 7}
    write_json(inbox / "photo.json", {**SIDECAR, "params": given})
    (inbox / "photo.jpg").write_bytes(image_bytes(seed=43))
    manifest = _finished_once(shared, "both-weights")
    assert manifest["style_weight_used"] == 50
    assert manifest["start_style_colours"] == pytest.approx(strength_of(50) / DEFAULT_STRENGTH)
    log = (shared.folders.outbox / "both-weights" / "photo.log").read_text()
    assert "style_weight 50 is given, so strength 0.2 is not used" in log, log
    assert "seed 7 changes nothing with init recolored: only the noise start" in log, log


def test_temporary_name_renamed_into_place(shared: Daemon) -> None:
    inbox = shared.folders.inbox / "renamed"
    write_json(inbox / "photo.json", SIDECAR)
    temporary = inbox / ".syncthing.photo.jpg.tmp"
    data = image_bytes(seed=3)
    with temporary.open("wb") as handle:
        for start in range(0, len(data), 200):  # a slow sync: the final name must wait
            handle.write(data[start : start + 200])
            handle.flush()
            time.sleep(0.05)
    os.rename(temporary, inbox / "photo.jpg")
    manifest = _finished_once(shared, "renamed")
    assert manifest["input"]["sha256"] == _sha(data)  # type: ignore[index]


def test_file_growing_for_seconds_is_taken_once_complete(shared: Daemon) -> None:
    inbox = shared.folders.inbox / "growing"
    write_json(inbox / "photo.json", SIDECAR)
    data = image_bytes(size=(64, 48), seed=4)
    step = max(1, len(data) // 30)
    with (inbox / "photo.jpg").open("wb") as handle:  # the final name from the first byte
        for start in range(0, len(data), step):
            handle.write(data[start : start + step])
            handle.flush()
            time.sleep(0.1)  # well inside settle_seconds (0.4), for about 3 s
    manifest = _finished_once(shared, "growing")
    assert manifest["input"]["sha256"] == _sha(data)  # type: ignore[index]
    claimed = [
        line
        for line in shared.log_lines()
        if line.get("event") == "job.claimed" and line.get("input") == "growing/photo.jpg"
    ]
    assert len(claimed) == 1


def test_bad_sidecar_gets_an_error_report_and_the_original_stays(shared: Daemon) -> None:
    inbox = shared.folders.inbox / "bad"
    data = image_bytes(seed=5)
    (inbox).mkdir()
    (inbox / "photo.jpg").write_bytes(data)
    write_json(inbox / "photo.json", {"style": "mosaic", "params": {"iterashuns": 3}})
    report = _manifest(shared.folders, "bad/photo.error.json")
    assert "iterashuns" in str(report["error"]) and "iterations" in str(report["error"])
    assert (inbox / "photo.jpg").read_bytes() == data
    time.sleep(1.5)  # settled again, rescanned: not reported twice
    assert _outputs(shared.folders.outbox / "bad") == ["photo.error.json", "photo.log"]
    # Fixing the sidecar makes it a job, whose result takes the plain names and replaces the
    # outdated report.
    write_json(inbox / "photo.json", SIDECAR)
    _finished_once(shared, "bad")
    # `status` no longer lists the failure a person has since fixed (found by a new user).

    def answered() -> dict[str, Any] | None:
        state = str(shared.folders.state)
        status = json.loads(_cli("status", "--state", state, "--json").stdout)
        ends = [end for end in status["recent"] if end["input"] == "bad/photo.jpg"]
        return status if [end["outcome"] for end in ends] == ["done", "rejected"] else None

    status = wait_for(answered, what="the result in status.json")
    done, rejected = (end for end in status["recent"] if end["input"] == "bad/photo.jpg")
    assert rejected["answered_again_by"] == done["job_id"]
    text = _cli("status", "--state", str(shared.folders.state)).stdout
    assert "bad/photo.jpg rejected" not in text

    # A lone sidecar's report is answered by its photo's result too (a new user's trial).
    write_json(inbox / "lone" / "photo.json", SIDECAR)
    _manifest(shared.folders, "bad/lone/photo.error.json")
    (inbox / "lone" / "photo.jpg").write_bytes(image_bytes(seed=34))
    _finished_once(shared, "bad/lone")

    def lone_ends() -> list[dict[str, Any]]:
        status = json.loads(_cli("status", "--state", str(shared.folders.state), "--json").stdout)
        ends = [end for end in status["recent"] if end["input"].startswith("bad/lone/")]
        return ends if [end["outcome"] for end in ends] == ["done", "rejected"] else []

    done, rejected = wait_for(lone_ends, what="the photo's result in status.json")
    assert rejected["input"] == "bad/lone/photo.json"
    assert rejected["answered_again_by"] == done["job_id"]
    text = _cli("status", "--state", str(shared.folders.state)).stdout
    assert "bad/lone/photo.json rejected" not in text


def test_photos_whose_names_differ_only_in_case_get_answers_a_phone_can_hold(
    shared: Daemon,
) -> None:
    """A Linux inbox can hold `Trip/Photo.jpg`, `Trip/photo.jpg` and `trip/photo.jpg`; a phone,
    a Mac or a Windows share the outbox syncs to folds case, so answers named alike would be one
    file there and the sync tool would keep one of them (a sync user's trial)."""
    photos = [("case/Trip", "Photo", 46), ("case/Trip", "photo", 47), ("case/trip", "photo", 48)]
    for rel_dir, stem, seed in photos:
        folder = shared.folders.inbox / rel_dir
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{stem}.jpg").write_bytes(image_bytes(seed=seed))
        write_json(folder / f"{stem}.json", SIDECAR)
    root = shared.folders.outbox / "case"

    def answered() -> list[Path]:
        return sorted(root.rglob("*.manifest*.json")) if root.is_dir() else []

    wait_for(lambda: len(answered()) == 3, 90, "three answers")
    inputs = {json.loads(path.read_text())["input"]["sha256"] for path in answered()}
    assert inputs == {_sha(image_bytes(seed=seed)) for _, _, seed in photos}
    files = [path.relative_to(root) for path in root.rglob("*") if path.is_file()]
    folded = {str(path).casefold() for path in files}
    assert len(folded) == len(files) == 9, sorted(files)


def test_a_resent_photo_is_skipped_and_a_copy_elsewhere_reuses_the_result(shared: Daemon) -> None:
    inbox = shared.folders.inbox / "again"
    data = image_bytes(seed=6)
    (inbox).mkdir()
    (inbox / "photo.jpg").write_bytes(data)
    write_json(inbox / "photo.json", SIDECAR)
    first = _finished_once(shared, "again")
    # Sent again (a sync tool restoring the archived original): recognised, not answered again.
    (inbox / "photo.jpg").write_bytes(data)
    write_json(inbox / "photo.json", SIDECAR)
    wait_for(
        lambda: any(
            line.get("event") == "job.skipped" and line.get("input") == "again/photo.jpg"
            for line in shared.log_lines()
        ),
        90,
        "job.skipped",
    )
    wait_for(lambda: not (inbox / "photo.jpg").exists(), 10, "the re-sent copy gone")
    out = shared.folders.outbox / "again"
    assert _outputs(out) == ["photo.log", "photo.manifest.json", "photo.stylised.jpg"]
    # The same photo under another name is answered there, from the earlier result.
    (inbox / "copy.jpg").write_bytes(data)
    write_json(inbox / "copy.json", SIDECAR)
    second = _manifest(shared.folders, "again/copy.manifest.json")
    assert second["reused"]["job_id"] == first["job_id"]  # type: ignore[index]
    assert second["styles"] == first["styles"]  # the sizes the images were used at too
    assert (out / "copy.stylised.jpg").read_bytes() == (out / "photo.stylised.jpg").read_bytes()


def test_an_identical_photo_in_another_folder_learns_nothing_of_the_first(shared: Daemon) -> None:
    """A family's trial (per-person folders on one daemon): Bob sent a photo Alice had sent and
    his manifest named her file, its folder, her brought-along style's name and her render's
    timings. Another folder's photo is rendered for itself; in the same folder the earlier
    result is reused, under this job's own style names."""
    data = image_bytes(seed=67)
    style = (shared.folders.styles / "mosaic.jpg").read_bytes()
    alice, bob = shared.folders.inbox / "alice", shared.folders.inbox / "bob"
    alice.mkdir()
    (alice / "secret_style.jpg").write_bytes(style)
    (alice / "beach.jpg").write_bytes(data)
    write_json(alice / "beach.json", {"style": {"file": "secret_style.jpg"}})
    first = _finished_once(shared, "alice", "beach")
    bob.mkdir()
    (bob / "guess.jpg").write_bytes(data)
    write_json(bob / "guess.json", SIDECAR)
    guessed = _finished_once(shared, "bob", "guess")
    assert guessed["reused"] is None
    told = [path.read_bytes() for path in (shared.folders.outbox / "bob").iterdir()]
    assert not [text for text in told if b"alice" in text or b"secret_style" in text]
    (alice / "again.jpg").write_bytes(data)
    write_json(alice / "again.json", SIDECAR)
    again = _manifest(shared.folders, "alice/again.manifest.json")
    assert again["reused"]["job_id"] == first["job_id"]  # type: ignore[index]
    assert [style["name"] for style in again["styles"]] == ["mosaic"]  # type: ignore[attr-defined]


def test_a_photo_another_sidecar_borrows_as_its_style_is_answered_too(shared: Daemon) -> None:
    """Anyone may name any photo as the style to bring along: that must not cost the photo
    its own answer, even when the borrowing pair is decided first."""
    inbox = shared.folders.inbox / "borrowed"
    write_json(inbox / "photo.json", SIDECAR)
    (inbox / "borrower.jpg").write_bytes(image_bytes(seed=31))
    write_json(inbox / "borrower.json", {"style": {"file": "photo.jpg"}})
    time.sleep(0.1)
    photo = image_bytes(seed=30)
    (inbox / "photo.jpg").write_bytes(photo)  # settles last
    borrowed = _manifest(shared.folders, "borrowed/borrower.manifest.json")
    assert borrowed["styles"][0]["sha256"] == _sha(photo)  # type: ignore[index]
    own = _manifest(shared.folders, "borrowed/photo.manifest.json")
    assert own["styles"][0]["name"] == "mosaic"  # type: ignore[index]
    archived = ["borrower.jpg", "borrower.json", "photo.jpg", "photo.json"]
    archive = shared.folders.state / "archive" / "borrowed"
    wait_for(lambda: _outputs(archive) == archived, 10, "both pairs archived")
    assert _outputs(inbox) == []
    # The stored copy of a style no job uses any more goes with its last job, not at the next
    # restart (an operator's trial: months of brought-along styles piled up in the state).
    store = shared.folders.state / "style-store"
    assert not [p for p in store.iterdir() if p.name.startswith(_sha(photo))]


def test_two_photos_that_swap_styles_are_both_answered(shared: Daemon) -> None:
    """An attacker's trial: each waited for the other until pair_timeout, then the second
    claimed failed with "not a file in the same folder" (the first had been moved away)."""
    inbox = shared.folders.inbox / "swap"
    inbox.mkdir()
    for name, seed, other in (("a", 51, "b"), ("b", 52, "a")):
        (inbox / f"{name}.jpg").write_bytes(image_bytes(seed=seed))
        write_json(inbox / f"{name}.json", {"style": {"file": f"{other}.jpg"}})
    for name, seed in (("a", 51), ("b", 52)):
        manifest = _manifest(shared.folders, f"swap/{name}.manifest.json")
        assert manifest["input"]["sha256"] == _sha(image_bytes(seed=seed))  # type: ignore[index]
        assert manifest["styles"][0]["sha256"] == _sha(image_bytes(seed=103 - seed))  # type: ignore[index]
    # The copy left in the inbox lost its style when the other photo was claimed: no problem,
    # it is answered (a sync user's trial: a false report after pair_timeout, 4 s here).
    time.sleep(6.0)
    assert not [p.name for p in (shared.folders.outbox / "swap").glob("*.error*")]
    # One was claimed as a copy (the other still needed it): it stays in the inbox, answered.
    left = sorted(p.name for p in inbox.iterdir())
    assert left in (["a.jpg", "a.json"], ["b.jpg", "b.json"]), left


def test_a_pair_naming_a_photo_already_taken_as_its_style_is_told_what_happened(
    shared: Daemon,
) -> None:
    """A borrower that completes after the photo it names was taken as a job of its own cannot
    have it; "add it there" would send its sender looking for a file they did add."""
    inbox = shared.folders.inbox / "taken"
    inbox.mkdir()
    (inbox / "photo.jpg").write_bytes(image_bytes(seed=32))
    write_json(inbox / "photo.json", SIDECAR)
    _manifest(shared.folders, "taken/photo.manifest.json")
    (inbox / "late.jpg").write_bytes(image_bytes(seed=33))
    write_json(inbox / "late.json", {"style": {"file": "photo.jpg"}})
    report = _manifest(shared.folders, "taken/late.error.json")
    assert "late.jpg cannot use the style image photo.jpg its sidecar names" in report["error"]
    assert "taken as a photo of its own, with photo.json" in str(report["error"])
    assert "send a copy of it under another name" in str(report["error"])


def test_a_file_over_max_input_bytes_is_reported_unread(shared: Daemon) -> None:
    """A sparse file claims gigabytes it does not hold: hashing it stalled the daemon's loop
    for minutes and decoding it filled the worker's memory. Over max_input_bytes (256 MiB by
    default) a photo, or a style image brought along, is reported before anything reads it."""
    inbox = shared.folders.inbox / "sparse"
    inbox.mkdir()
    for name in ("huge.jpg", "painting.jpg"):
        with (inbox / name).open("wb") as handle:
            handle.write(image_bytes(seed=40))
            handle.truncate(4 * 2**30)  # 4 GiB on screen, a few KiB on disk
    write_json(inbox / "huge.json", SIDECAR)
    (inbox / "borrower.jpg").write_bytes(image_bytes(seed=41))
    write_json(inbox / "borrower.json", {"style": {"file": "painting.jpg"}})
    (inbox / "photo.jpg").write_bytes(image_bytes(seed=42))
    write_json(inbox / "photo.json", SIDECAR)
    reports = {}
    for stem in ("huge", "borrower"):
        path = shared.folders.outbox / "sparse" / f"{stem}.error.json"
        reports[stem] = json.loads(wait_for(lambda p=path: p.exists() and p.read_text(), 30))
    assert (
        "huge.jpg is 4,294,967,296 bytes, more than max_input_bytes (268,435,456)"
        in (reports["huge"]["error"])
    )
    assert "cannot use the style image painting.jpg it brings" in reports["borrower"]["error"]
    assert "more than max_input_bytes" in reports["borrower"]["error"]
    _manifest(shared.folders, "sparse/photo.manifest.json")  # the loop went on
    wait_for(lambda: not (inbox / "photo.jpg").exists(), 10, "the photo archived")
    assert _outputs(shared.folders.outbox / "sparse") == sorted(
        [
            f"{stem}.{ext}"
            for stem in ("huge", "borrower", "painting")
            for ext in ("error.json", "log")
        ]
        + ["photo.log", "photo.manifest.json", "photo.stylised.jpg"]
    )
    assert (inbox / "huge.jpg").stat().st_size == 4 * 2**30  # left as it was


def test_a_photo_that_does_not_decode_is_reported_and_returned(shared: Daemon) -> None:
    inbox = shared.folders.inbox / "corrupt"
    inbox.mkdir()
    (inbox / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is no JPEG" * 20)
    write_json(inbox / "photo.json", SIDECAR)
    report = _manifest(shared.folders, "corrupt/photo.error.json")
    assert "truncated or corrupt" in str(report["error"]) or "not an image" in str(report["error"])
    wait_for((inbox / "photo.jpg").exists, 10, "the original back in the inbox")
    time.sleep(1.5)  # back in the inbox, settled again: not taken a second time
    assert _outputs(shared.folders.outbox / "corrupt") == ["photo.error.json", "photo.log"]


def test_a_clip_named_heic_is_told_it_is_a_video(shared: Daemon) -> None:
    """A Live Photo's motion part or a clip renamed .HEIC: whole by its boxes, so not waited
    for as truncated, and told what it is rather than "copy it again"."""
    inbox = shared.folders.inbox / "clip"
    inbox.mkdir()
    (inbox / "IMG_0001.HEIC").write_bytes(iso_media(b"qt  "))
    write_json(inbox / "IMG_0001.json", SIDECAR)
    error = str(_manifest(shared.folders, "clip/IMG_0001.error.json")["error"])
    assert "is a video (its ftyp brand is 'qt'), not a photo" in error, error
    assert "send a still photo" in error and "copy it again" not in error, error
    wait_for((inbox / "IMG_0001.HEIC").exists, 10, "the original back in the inbox")


def test_what_the_header_refuses_is_answered_without_waiting_for_the_queue(
    folders: Folders,
) -> None:
    """A trial: random bytes named broken.jpg waited behind every queued job to be told they
    are not an image. What the header tells (no image at all, over max_pixels) is answered as
    the job is queued, while the one worker is still busy."""
    config = folders.config(grace_period=0.5, max_pixels=20_000, max_output_size=1024)
    (folders.inbox / "slow.jpg").write_bytes(image_bytes(seed=7))
    write_json(folders.inbox / "slow.json", SLOW)
    daemon = start_daemon(folders, config=config)
    try:
        daemon.wait_for_log("job.started")
        (folders.inbox / "broken.jpg").write_bytes(os.urandom(3000))
        make_image(folders.inbox / "poster.png", size=(200, 150), seed=3)
        # Too thin at any size this daemon makes (an attacker's trial: told to ask for a size
        # above its max_output_size, and the ratio of its output, 64:1, not its own).
        make_image(folders.inbox / "strip.png", size=(6000, 3), seed=4)
        for stem in ("broken", "poster", "strip"):
            write_json(folders.inbox / f"{stem}.json", SIDECAR)
        broken = _manifest(folders, "broken.error.json")
        poster = _manifest(folders, "poster.error.json")
        strip = _manifest(folders, "strip.error.json")
        assert not (folders.outbox / "slow.stylised.jpg").exists()  # still rendering
    finally:
        daemon.stop()
    # Named as every other report begins (a photographer's trial: "the photo is ...").
    assert str(broken["error"]).startswith("broken.jpg is not an image format stylefold can")
    assert str(poster["error"]) == (
        "poster.png is 200x150 = 30,000 pixels, over the limit of 20,000; downscale it or "
        "raise the daemon's max_pixels setting"
    )
    assert str(strip["error"]).endswith(
        "the network needs at least 16 px on the short side to reach its deepest layer; no "
        "output size up to 1024 reaches that at 2000:1, so crop the image to a less elongated "
        "shape"
    ), strip
    for stem in ("broken", "poster", "strip"):  # returned, as after a worker's refusal
        assert (folders.inbox / f"{stem}.json").exists()


def test_a_photo_without_sidecar_is_reported_after_the_pair_timeout(shared: Daemon) -> None:
    inbox = shared.folders.inbox / "lonely"
    inbox.mkdir()
    (inbox / "photo.jpg").write_bytes(image_bytes(seed=10))
    report = _manifest(shared.folders, "lonely/photo.error.json")
    assert "has no sidecar" in str(report["error"]) and "photo.json" in str(report["error"])
    # told that the photo is taken again by itself once its sidecar comes (a status trial)
    assert "it is taken again by itself once the fix above is done" in str(report["original"])
    assert (inbox / "photo.jpg").exists()


def test_the_daemon_process_never_loads_torch(shared: Daemon) -> None:
    """Torch lives in the workers; the daemon itself stays small (tens of MiB, not hundreds)."""
    maps = Path(f"/proc/{shared.process.pid}/maps").read_text()
    assert "libtorch" not in maps
    assert any(line.get("event") == "job.done" for line in shared.log_lines())


def test_no_temporaries_or_progress_files_are_left(shared: Daemon) -> None:
    leftovers = [
        p
        for p in shared.folders.outbox.rglob("*")
        if p.name.startswith(".stylefold-") or p.name.endswith(".progress.json")
    ]
    assert leftovers == []


# -- restarts and signals ----------------------------------------------------------------------

SLOW = {"style": "mosaic", "params": {"iterations": 400}}


def _status(folders: Folders) -> dict[str, object]:
    return status_json(folders).model_dump(mode="json")


def test_sigterm_then_kill_9_during_a_job_then_a_restart_finishes_it_exactly_once(
    folders: Folders,
) -> None:
    config = folders.config(grace_period=0.5)
    (folders.inbox / "photo.jpg").write_bytes(image_bytes(seed=7))
    write_json(folders.inbox / "photo.json", SLOW)

    # SIGTERM mid-job: the job goes back to the queue (it stays in the spool), exit status 0.
    daemon = start_daemon(folders, config=config)
    try:
        daemon.wait_for_log("job.started")
        wait_for(
            lambda: [j for j in _status(folders)["jobs"] if j["state"] == "running"],
            20,
            "status to show the running job",
        )
        asked = time.time()
        daemon.process.send_signal(signal.SIGTERM)
        # While it finishes, status says it is stopping, not running (found by a new user).
        status_file = folders.state / "status.json"

        seen: dict[str, Any] = {}

        def stopping() -> bool:
            with contextlib.suppress(FileNotFoundError):  # removed once it has stopped
                seen.update(json.loads(status_file.read_text())["daemon"])
                return bool(seen["stopping"])
            return False

        wait_for(stopping, 20, "status to say the daemon is stopping")
        # when the grace period (0.5 s) cuts the running job, from the signal on
        assert asked <= seen["cuts_running_at"] <= time.time() + 0.5, (asked, seen)
        said = daemon.wait_for_log("daemon.stopping")["waits"]
        assert said.startswith("up to 0.5 s (grace_period) for the running jobs; a second"), said
        assert daemon.stop(signal.SIGTERM, timeout=40) == 0
    finally:
        daemon.process.kill()
    assert daemon.wait_for_log("job.requeued")
    spooled = [p for p in (folders.state / "spool").iterdir() if not p.name.startswith(".")]
    assert len(spooled) == 1 and (spooled[0] / "input.jpg").exists()
    assert _outputs(folders.outbox) == []  # no result, no progress file, no temporaries

    # kill -9 mid-job: nothing is cleaned up, and nothing needs to be.
    daemon = start_daemon(folders, config=config)
    try:
        # The journal says what started: version, config file and folders (an operator's
        # trial could not tell which config a restarted daemon had read).
        starting = daemon.wait_for_log("daemon.starting")
        assert starting["version"] == stylefold_version() != "unknown", starting
        assert starting["config"] == str(config) and starting["pid"] == daemon.process.pid
        assert starting["inbox"] == str(folders.inbox) and starting["state"] == str(folders.state)
        assert daemon.wait_for_log("job.recovered")["input"] == "photo.jpg"
        ready = daemon.wait_for_log("daemon.ready")
        assert (ready["recovered"], ready["unfinished"]) == (1, 1), ready
        daemon.wait_for_log("job.started")
        # the running daemon's status counts the start before this one (it said 0)
        wait_for(lambda: [j["starts"] for j in _status(folders)["jobs"]] == [2], 20, "starts")
    finally:
        daemon.process.kill()
        daemon.process.wait(10)
    assert not (folders.inbox / "photo.jpg").exists()
    # Nothing runs it now: status says so, not "running" (found by an operator's trial).
    report = _status(folders)
    assert report["daemon"]["running"] is False
    [job] = report["jobs"]
    assert job["state"] == "queued" and job["reason"].startswith("interrupted"), job

    # Shorten the job for the final run; nothing else changes (its sidecar, as claimed, stays:
    # a job whose originals no longer match its record would be given back).
    with sqlite3.connect(folders.state / "stylefold.db") as db:
        db.execute("UPDATE jobs SET record = json_set(record, '$.params.iterations', 3)")
    daemon = start_daemon(folders, config=config)
    try:
        daemon.wait_for_log("job.done", timeout=90)
        time.sleep(1.0)
    finally:
        assert daemon.stop() == 0
    assert _outputs(folders.outbox) == ["photo.log", "photo.manifest.json", "photo.stylised.jpg"]
    assert [p.name for p in (folders.state / "spool").iterdir()] == []
    assert (folders.state / "archive" / "photo.jpg").exists()
    log = (folders.outbox / "photo.log").read_text()
    assert all(f"start {n})" in log for n in (1, 2, 3))  # one log telling the whole story
    assert "put back in the queue" in log
    # the kill -9 is told between the starts it separates, once
    assert log.count("interrupted: the daemon stopped while it ran; it runs again") == 1, log
    assert log.index("start 2)") < log.index("interrupted:") < log.index("start 3)"), log


def test_a_job_survives_the_loss_of_the_state_database(folders: Folders) -> None:
    """Found by an operator's trial: with the database moved aside (the fix status gives for a
    damaged one) or lost, the spooled photo stayed in the state folder and was never answered."""
    config = folders.config()
    daemon = start_daemon(folders, config=config)
    try:
        (folders.inbox / "photo.jpg").write_bytes(image_bytes(seed=3))
        write_json(folders.inbox / "photo.json", SLOW)
        daemon.wait_for_log("job.started")
    finally:
        daemon.process.kill()  # before it can finish
        daemon.process.wait(10)
    [spooled] = [p for p in (folders.state / "spool").iterdir() if not p.name.startswith(".")]
    # Shorten the job for the run that recovers it (400 iterations outlast the wait on a loaded
    # CI machine): its spooled sidecar is what goes back to the inbox.
    [sidecar] = [p for p in spooled.glob("*.json") if json.loads(p.read_text()).get("params")]
    write_json(sidecar, {"style": "mosaic", "params": {"iterations": 3}})
    for name in ("stylefold.db", "stylefold.db-wal", "stylefold.db-shm"):
        with contextlib.suppress(FileNotFoundError):
            (folders.state / name).rename(folders.state / f"{name}.damaged")
    daemon = start_daemon(folders, config=config)
    try:
        assert daemon.wait_for_log("job.unrecorded")["input"] == "photo.jpg"
        daemon.wait_for_log("job.done", timeout=90)
    finally:
        assert daemon.stop() == 0
    assert _outputs(folders.outbox) == ["photo.log", "photo.manifest.json", "photo.stylised.jpg"]
    assert [p.name for p in (folders.state / "spool").iterdir()] == []


def test_a_stop_between_a_recorded_end_and_its_folder_going_leaves_no_folder(
    folders: Folders,
) -> None:
    """A job's end is recorded before its spool folder goes: a stop in between left the folder
    (a result image and a log) in the state folder for good. The next start removes it, unless
    an original is in it after all."""
    sidecar = {"style": "mosaic", "params": {"iterations": 2}}
    daemon = start_daemon(folders)
    try:
        for name in ("one", "two"):
            (folders.inbox / f"{name}.jpg").write_bytes(image_bytes(seed=5))
            write_json(folders.inbox / f"{name}.json", sidecar)
            daemon.wait_for_log("job.done", count=1 if name == "one" else 2)
    finally:
        assert daemon.stop() == 0
    with sqlite3.connect(folders.state / "stylefold.db") as db:
        rows = db.execute(
            "SELECT id, json_extract(record, '$.input_file') FROM jobs ORDER BY id"
        ).fetchall()
    (done, _), (kept, input_file) = rows
    spool = folders.state / "spool"
    for job_id in (done, kept):
        (spool / job_id).mkdir()
        (spool / job_id / "result.png").write_bytes(b"rendered")
    (spool / kept / input_file).write_bytes(b"an original")  # never removed unasked

    daemon = start_daemon(folders)
    try:
        assert daemon.wait_for_log("spool.leftover_removed")["state"] == "done"
        daemon.wait_for_log("spool.leftover_kept")
    finally:
        assert daemon.stop() == 0
    assert [p.name for p in spool.iterdir()] == [kept]
    assert (spool / kept / input_file).read_bytes() == b"an original"


def test_a_brought_along_style_left_in_the_inbox_is_not_a_lone_photo_after_a_restart(
    folders: Folders,
) -> None:
    """A style image a sidecar brings is copied, not moved (several sidecars may share it), so
    it stays in the inbox; the next daemon must not answer it as a photo without a sidecar."""
    config = folders.config(pair_timeout=2.0)
    daemon = start_daemon(folders, config=config)
    try:
        (folders.inbox / "mine.jpg").write_bytes(image_bytes(seed=11))
        (folders.inbox / "photo.jpg").write_bytes(image_bytes(seed=12))
        write_json(folders.inbox / "photo.json", {"style": {"file": "mine.jpg"}})
        daemon.wait_for_log("job.done")
    finally:
        assert daemon.stop() == 0
    daemon = start_daemon(folders, config=config)
    try:
        (folders.inbox / "lone.jpg").write_bytes(image_bytes(seed=13))  # reported, as a yardstick
        wait_for((folders.outbox / "lone.error.json").exists, 60, "the lone photo's report")
    finally:
        assert daemon.stop() == 0
    assert not (folders.outbox / "mine.error.json").exists()
    assert (folders.inbox / "mine.jpg").read_bytes() == image_bytes(seed=11)


def test_a_lone_photo_s_report_goes_once_a_pair_brings_it_as_its_style(folders: Folders) -> None:
    """A re-test: mine.jpg, alone for pair_timeout, was told it had no sidecar (rightly then);
    a pair that came later and brought it as its style was answered, and the report, about a
    photo that is none, stayed in the outbox and among status's recent failures."""
    daemon = start_daemon(folders, config=folders.config(pair_timeout=1.0))
    try:
        (folders.inbox / "mine.jpg").write_bytes(image_bytes(seed=11))
        (folders.inbox / "theirs.jpg").write_bytes(image_bytes(seed=13))
        report = folders.outbox / "mine.error.json"
        wait_for(report.exists, 60, "the lone photo's report")
        wait_for((folders.outbox / "theirs.error.json").exists, 60, "the other one's")
        # A pair that brings it, claimed: its report goes.
        (folders.inbox / "q.jpg").write_bytes(image_bytes(seed=14))
        write_json(
            folders.inbox / "q.json",
            {"style": {"file": "theirs.jpg"}, "params": {"iterations": 2}},
        )
        _manifest(folders, "q.manifest.json")
        wait_for(lambda: not (folders.outbox / "theirs.error.json").exists(), 10, "withdrawn")
        # A pair that names it, refused: the pair's report says what is wrong; mine.jpg's
        # "add mine.json beside it" goes (a second re-test).
        (folders.inbox / "photo.jpg").write_bytes(image_bytes(seed=12))
        refused = {"style": {"file": "mine.jpg"}, "params": {"strenght": 1}}
        write_json(folders.inbox / "photo.json", refused)
        wait_for((folders.outbox / "photo.error.json").exists, 60, "the pair's report")
        wait_for(lambda: not report.exists(), 10, "the lone report withdrawn")
        write_json(
            folders.inbox / "photo.json",
            {"style": {"file": "mine.jpg"}, "params": {"iterations": 2}},
        )
        _manifest(folders, "photo.manifest.json")
        assert not report.exists() and not (folders.outbox / "mine.log").exists()
        assert open_failures(status_json(folders).recent) == []
    finally:
        assert daemon.stop() == 0
    assert (folders.inbox / "mine.jpg").read_bytes() == image_bytes(seed=11)


def test_a_refused_pair_mended_but_for_its_missing_style_image_is_told_so(
    folders: Folders,
) -> None:
    """A re-test: a sidecar refused for a misspelt key, naming a style image not there, was
    mended; the pair then waited for the image without a word (no report at pair_timeout, not
    in status), the old report blaming the key already fixed."""
    daemon = start_daemon(folders, config=folders.config(pair_timeout=1.0))
    try:
        (folders.inbox / "d.jpg").write_bytes(image_bytes(seed=12))
        write_json(
            folders.inbox / "d.json", {"style": {"file": "mine.jpg"}, "params": {"sizee": 1}}
        )
        report = folders.outbox / "d.error.json"
        first = json.loads(wait_for(lambda: report.exists() and report.read_text(), 60))
        assert "sizee" in first["error"]
        write_json(
            folders.inbox / "d.json", {"style": {"file": "mine.jpg"}, "params": {"iterations": 2}}
        )
        told = wait_for(
            lambda: report.exists() and "sizee" not in report.read_text() and report.read_text(),
            60,
            "the mended pair's report",
        )
        assert (
            "d.jpg is missing the style image mine.jpg named by d.json" in json.loads(told)["error"]
        )
        (folders.inbox / "mine.jpg").write_bytes(image_bytes(seed=11))
        _manifest(folders, "d.manifest.json")
    finally:
        assert daemon.stop() == 0


@pytest.mark.parametrize("default", [None, "mosaic"])
def test_once_after_a_restart_does_not_count_a_brought_along_style_as_waiting(
    folders: Folders, default: str | None
) -> None:
    """A docs trial: after a restart `once` listed the style image a sidecar had brought as
    "waiting for its sidecar; reported in 447 s (pair_timeout) unless it comes", which it never
    is (and `status` said the same while it waited). With a default style it was listed as
    waiting to be rendered with that style, then dropped without a word."""
    lone = {} if default is None else {"default_style": default, "no_sidecar": "default"}
    config = folders.config(**lone)
    daemon = start_daemon(folders, config=config)
    try:
        (folders.inbox / "mine.jpg").write_bytes(image_bytes(seed=11))
        (folders.inbox / "photo.jpg").write_bytes(image_bytes(seed=12))
        write_json(
            folders.inbox / "photo.json",
            {"style": {"file": "mine.jpg"}, "params": {"iterations": 2}},
        )
        daemon.wait_for_log("job.done")
    finally:
        assert daemon.stop() == 0
    (folders.inbox / "lone.jpg").write_bytes(image_bytes(seed=13))  # waits, as a yardstick
    once = start_daemon(folders, config=config, command="once", ready=False)
    assert once.process.wait(120) == 0
    done = once.wait_for_log("daemon.inbox_done")
    assert [line.split(":")[0] for line in done["left_waiting"]] == ["lone.jpg"], done
    assert (folders.inbox / "mine.jpg").exists()


def test_orderly_stops_do_not_count_as_interruptions(folders: Folders) -> None:
    """Restarts for upgrades or config changes (SIGTERM mid-job) put the job back in the queue;
    only crashes count towards MAX_STARTS. Found by an operator's trial: five `systemctl
    restart`s during one long print failed it with advice about memory."""
    config = folders.config(grace_period=0.5)
    (folders.inbox / "photo.jpg").write_bytes(image_bytes(seed=8))
    write_json(folders.inbox / "photo.json", SLOW)
    for _ in range(MAX_STARTS):
        daemon = start_daemon(folders, config=config)
        try:
            daemon.wait_for_log("job.started")
            assert daemon.stop(signal.SIGTERM, timeout=40) == 0
        finally:
            daemon.process.kill()
        assert daemon.wait_for_log("job.requeued")
    started_again_not_given_up(folders, config)  # a sixth start


AFTER = (
    "{second} arrived after its photo {photo} had been taken with the sidecar it had then (job "
    "{job}), so it was not used; to render the photo with it, put {photo} back beside it (it is "
    "kept at archive/{photo}); otherwise remove {second}"
)
CASE_TWIN = (
    "{second} was not used: job {job} took {photo} with {first}, which differs from it in case "
    "or Unicode form alone"
)


@pytest.mark.parametrize(
    ("photo", "first", "second", "archive", "told"),
    [
        ("h.jpg", "h.json", "h.json", "move", AFTER),
        ("H.jpg", "h.json", "h.json", "move", AFTER),  # names pair without case
        ("pic.JPG", "pic.JPG.json", "pic.jpg.json", "keep", CASE_TWIN),
    ],
)
def test_a_sidecar_after_its_photo_was_taken_is_told_so(
    folders: Folders, photo: str, first: str, second: str, archive: str, told: str
) -> None:
    """Found by a sync-tool trial: the corrected sidecar got "has no photo beside it; add the
    photo", beside the photo's result, as if the photo had never come. And by a re-test: a
    `pic.jpg.json` beside `pic.JPG`, kept in the inbox with the `pic.JPG.json` it was answered
    with, was never told anything."""
    config = folders.config(pair_timeout=2.0, archive=archive)
    daemon = start_daemon(folders, config=config)
    stem = photo.split(".")[0].lower()
    try:
        (folders.inbox / photo).write_bytes(image_bytes(seed=4))
        write_json(folders.inbox / first, {"style": "mosaic", "params": {"iterations": 2}})
        job = daemon.wait_for_log("job.done")["job_id"]
        write_json(folders.inbox / second, {"style": "waves", "params": {"iterations": 2}})
        reports = wait_for(lambda: list(folders.outbox.glob(f"{stem}.error*.json")), 30, "one")
    finally:
        assert daemon.stop() == 0
    assert _the_report_about(folders, reports, second).startswith(
        told.format(photo=photo, first=first, second=second, job=job)
    )
    assert daemon.logged("job.claimed") == 1


def _the_report_about(folders: Folders, reports: list[Path], sidecar: str) -> str:
    """The text of the one report in `reports`: about `sidecar`, which stays in the inbox."""
    [report] = [json.loads(path.read_text()) for path in reports]
    assert report["input"] == sidecar, report
    assert (folders.inbox / sidecar).exists()  # left where it is
    return str(report["error"])


@pytest.mark.parametrize(
    ("photo", "unused", "used", "archive"),
    [
        ("t.jpg", "t.json", "t.jpg.json", "move"),
        ("t.jpg", "t.json", "t.jpg.json", "keep"),
        # x.jpg.json is x.jpg.jpg's by its stem, or a photo x.jpg's (an attacker's trial: it
        # was told to add the photo x.jpg)
        ("x.jpg.jpg", "x.jpg.json", "x.jpg.jpg.json", "move"),
        ("M.jpg", "M.json", "m.JPG.json", "move"),  # its whole name in another case (a re-test)
    ],
)
def test_of_two_sidecars_the_unused_one_is_told_why(
    folders: Folders, photo: str, unused: str, used: str, archive: str
) -> None:
    """Found by a sync-tool trial: with both t.json and t.jpg.json, the unused t.json later got
    "has no photo beside it" (with archive = "keep", the photo was right beside it)."""
    daemon = start_daemon(folders, config=folders.config(pair_timeout=2.0, archive=archive))
    try:
        write_json(folders.inbox / unused, {"style": "waves", "params": {"iterations": 2}})
        write_json(folders.inbox / used, {"style": "mosaic", "params": {"iterations": 2}})
        (folders.inbox / photo).write_bytes(image_bytes(seed=4))
        job = daemon.wait_for_log("job.done")["job_id"]
        reports = wait_for(lambda: list(folders.outbox.glob("[txM].error*.json")), 30, "a report")
        time.sleep(3.0)  # no second job, no second report
    finally:
        assert daemon.stop() == 0
    # Once: not again at pair_timeout, as one without its photo (an attacker's trial).
    assert daemon.logged("job.rejected") == 1
    assert _the_report_about(folders, reports, unused).startswith(
        f"{unused} was not used: job {job} took {photo} with {used}, the sidecar named after "
        f"the photo's whole file name, which comes first; remove {unused}"
    )
    assert daemon.logged("job.claimed") == 1
    manifest = json.loads((folders.outbox / f"{Path(photo).stem}.manifest.json").read_text())
    assert manifest["sidecar"]["path"] == used


def test_the_fix_an_unused_sidecar_s_report_names_gets_the_photo_rendered(
    folders: Folders,
) -> None:
    """A phone user's trial: beside both.jpg, its rejected both.jpg.json and both.json, the
    report on both.json said to remove both.jpg.json to render the photo with both.json;
    doing so changed nothing until a reload, and then the report stayed beside the result."""
    daemon = start_daemon(folders, config=folders.config(pair_timeout=30.0))
    try:
        write_json(folders.inbox / "both.jpg.json", {"style": "nope"})
        write_json(folders.inbox / "both.json", {"style": "mosaic", "params": {"iterations": 2}})
        (folders.inbox / "both.jpg").write_bytes(image_bytes(seed=4))
        wait_for(lambda: len(list(folders.outbox.glob("both.error*.json"))) == 2, 30, "two reports")
        (folders.inbox / "both.jpg.json").unlink()
        daemon.wait_for_log("job.done")
        wait_for(lambda: not list(folders.outbox.glob("both*.error*.json")), 10, "no report")
    finally:
        assert daemon.stop() == 0
    manifest = json.loads((folders.outbox / "both.manifest.json").read_text())
    assert manifest["sidecar"]["path"] == "both.json"
    assert sorted(p.name for p in folders.outbox.iterdir()) == [
        "both.log", "both.manifest.json", "both.stylised.jpg",
    ]  # fmt: skip


def test_a_report_on_a_pair_outdates_the_not_used_report_on_its_sidecar(
    folders: Folders,
) -> None:
    """A re-test: once m.jpg.json went, the pair m.jpg and m.json was reported (m.json names
    no style of the library), and m.json's earlier "is not used" report stayed beside it."""
    daemon = start_daemon(folders, config=folders.config(pair_timeout=30.0))
    try:
        write_json(folders.inbox / "m.jpg.json", {"style": "nope"})
        write_json(folders.inbox / "m.json", {"style": "nope2"})
        (folders.inbox / "m.jpg").write_bytes(image_bytes(seed=4))
        wait_for(lambda: len(list(folders.outbox.glob("m.error*.json"))) == 2, 30, "two reports")
        (folders.inbox / "m.jpg.json").unlink()
        wait_for(lambda: "nope2" in " ".join(_reports(folders, "m")), 30, "the pair's report")
        wait_for(lambda: len(_reports(folders, "m")) == 1, 10, "one report")
    finally:
        assert daemon.stop() == 0


def _reports(folders: Folders, stem: str) -> list[str]:
    """The errors of the reports on `stem` in the outbox; one the daemon removes between the
    listing and its read is gone (a CI run: FileNotFoundError while the stale one went)."""
    errors = []
    for path in sorted(folders.outbox.glob(f"{stem}.error*.json")):
        with contextlib.suppress(FileNotFoundError):
            errors.append(str(json.loads(path.read_text())["error"]))
    return errors


def test_a_second_daemon_on_the_same_state_refuses(shared: Daemon) -> None:
    config = shared.folders.root / "stylefold.toml"
    result = subprocess.run(
        [*CLI, "run", "--config", str(config), "--log-format", "json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == ExitCode.CONFIG  # systemd does not restart it into a loop
    assert "another stylefold daemon" in result.stdout and str(shared.process.pid) in result.stdout


def test_a_second_daemon_on_the_same_inbox_refuses(shared: Daemon, tmp_path: Path) -> None:
    """Found by a new user's trial: with its own state folder a second daemon started on the
    same inbox, and the two would have raced for every photo."""
    config = shared.folders.root / "stylefold.toml"
    result = subprocess.run(
        [*CLI, "run", "--config", str(config), "--state", str(tmp_path / "state2"),
         "--log-format", "json"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == ExitCode.CONFIG
    assert "another stylefold daemon is watching the inbox" in result.stdout
    assert str(shared.folders.inbox) in result.stdout
    # ... and on stderr, as a configuration error is (a new user's trial: a JSON line alone)
    assert result.stderr.startswith("stylefold: another stylefold daemon is watching the inbox")
    # An operator's trial: each refusal left an empty state2/ with archive/ and lock in it.
    assert not (tmp_path / "state2").exists()


def test_a_second_daemon_on_a_folder_inside_or_around_the_inbox_refuses(
    shared: Daemon, tmp_path: Path
) -> None:
    """A re-test: a daemon on a subfolder of a watched inbox started, and both would have
    taken its photos; so would one whose inbox holds the watched one."""
    inside = shared.folders.inbox / "nested-inbox"
    inside.mkdir()
    config = shared.folders.root / "stylefold.toml"
    styles = shutil.copytree(shared.folders.styles, tmp_path / "styles")  # outside either inbox
    for n, (inbox, where) in enumerate(((inside, "around"), (shared.folders.root, "inside"))):
        state = tmp_path / f"state{n}"
        result = subprocess.run(
            [*CLI, "run", "--config", str(config), "--inbox", str(inbox), "--state", str(state),
             "--outbox", str(tmp_path / f"outbox{n}"), "--styles", str(styles),
             "--log-format", "json"],
            cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == ExitCode.CONFIG, result.stdout + result.stderr
        told = f"another stylefold daemon (pid {shared.process.pid}) is watching the inbox "
        assert told + f"{shared.folders.inbox}, {where} this one's" in result.stdout, result.stdout
        assert not state.exists()
    inside.rmdir()


def test_a_state_folder_that_cannot_be_made_stops_the_start_and_says_why(
    shared: Daemon, tmp_path: Path
) -> None:
    """Folders are made once the daemon holds the inbox (its own here); one that cannot be made
    (here a folder the daemon's user may not write into) is a configuration error, named with
    its setting."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (tmp_path / "shut").mkdir(mode=0o555)
    config = shared.folders.root / "stylefold.toml"
    result = subprocess.run(
        [*as_an_ordinary_user(), *CLI, "run", "--config", str(config), "--inbox", str(inbox),
         "--outbox", str(tmp_path / "outbox"), "--state", str(tmp_path / "shut" / "state"),
         "--log-format", "json"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == ExitCode.CONFIG, result.stdout + result.stderr
    told = f"state: cannot create {tmp_path / 'shut' / 'state'} (Permission denied)"
    assert told in result.stdout and "daemon.config_error" in result.stdout, result.stdout
    # and on stderr, as `run` tells the settings' own errors (a re-test found only the log line)
    assert result.stderr.startswith(f"stylefold: configuration error:\n{told}; create it by hand")


def test_reload_and_status_find_the_daemon_by_its_state_folder_while_the_config_is_broken(
    shared: Daemon,
) -> None:
    """Found by a new user: `reload --state` alone, and `reload --config` on a file with a wrong
    value (the case the README gives exit code 78 for), said no daemon was running."""
    config = shared.folders.root / "stylefold.toml"
    good = config.read_text()
    pid = shared.process.pid

    by_state = _cli("reload", "--state", str(shared.folders.state))
    assert by_state.returncode == 0, by_state.stderr
    assert f"process {pid} reloaded" in by_state.stdout
    other = shared.folders.root / "other.toml"  # a new user's trial: the daemon's file unnamed
    other.write_text(good)
    named = _cli("reload", "--config", str(other))
    assert named.returncode == 0, named.stderr
    assert f"(from {config}, the file it was started with, not {other})" in named.stdout
    failed = shared.logged("daemon.reload_failed")
    config.write_text(good + "seed = -1\n")  # a wrong value under [defaults]; the TOML parses
    try:
        broken = _cli("reload", "--config", str(config))
        assert broken.returncode == ExitCode.CONFIG, broken.stderr
        assert "reload failed" in broken.stderr
        assert "defaults.seed" in broken.stderr
        shared.wait_for_log("daemon.reload_failed", count=failed + 1)
        status = _cli("status", "--config", str(config))
        assert status.returncode == 0, status.stderr
        assert f"running, pid {pid}" in status.stdout
        # an operator's trial: nothing said the config was broken
        assert "note: the configuration cannot be used (defaults.seed" in status.stderr
    finally:
        config.write_text(good)
    nowhere = _cli("reload")
    assert nowhere.returncode == 1 and "give --config or --state" in nowhere.stderr
    typo = _cli("reload", "--config", str(config.with_suffix(".tom")))  # a new user's slip
    assert typo.returncode == ExitCode.CONFIG and "stylefold.tom does not exist" in typo.stderr
    config.write_text(good + "settle_seconds = [\n")  # not TOML: no state folder to find
    try:
        unreadable = _cli("reload", "--config", str(config))
        assert unreadable.returncode == ExitCode.CONFIG, unreadable.stderr  # an operator's trial
        assert "not valid TOML" in unreadable.stderr
    finally:
        config.write_text(good)


def test_a_reload_that_changes_a_restart_only_setting_says_so_until_it_is_applied(
    shared: Daemon,
) -> None:
    """Found by an operator's trial: a reload that moved the inbox said only "reloaded", and
    status showed nothing, while photos dropped in the new inbox waited unwatched."""
    config = shared.folders.root / "stylefold.toml"
    good = config.read_text()
    config.write_text("max_tracked = 12345\n" + good)  # top level, before any [table]
    try:
        reload = _cli("reload", "--config", str(config))
        assert reload.returncode == 0, reload.stderr
        assert "max_tracked changed, which only a restart applies" in reload.stdout
        report = _status(shared.folders)
        assert report["daemon"]["reload"]["needs_restart"] == ["max_tracked"]  # type: ignore[index]
        said = status_line(read_status(shared.folders.state))  # what systemd shows (STATUS=)
        assert said.startswith("restart to apply max_tracked"), said
        text = _cli("status", "--state", str(shared.folders.state)).stdout
        assert "only a restart applies" in text and "max_tracked" in text, text
        # A broken reload after it keeps that notice (a Ray operator's trial: it went).
        config.write_text("max_tracked = 12345\nretries = -1\n" + good)
        assert _cli("reload", "--config", str(config)).returncode == ExitCode.CONFIG
        reload_info = _status(shared.folders)["daemon"]["reload"]  # type: ignore[index]
        assert reload_info["error"] and reload_info["needs_restart"] == ["max_tracked"]
        # waiting since the first reload, not the latest (an administrator's trial: "for 0 s")
        first = report["daemon"]["reload"]  # type: ignore[index]
        assert reload_info["waiting_since"] == first["waiting_since"] == first["at"]
        assert reload_info["at"] > first["at"]
    finally:
        config.write_text(good)
    assert _cli("reload", "--config", str(config)).returncode == 0
    report = _status(shared.folders)
    assert report["daemon"]["reload"]["needs_restart"] == []  # type: ignore[index]
    assert (
        "only a restart applies" not in _cli("status", "--state", str(shared.folders.state)).stdout
    )


def test_a_reload_after_state_was_changed_in_the_file_finds_the_running_daemon(
    shared: Daemon,
) -> None:
    """An operator's trial: with `state` changed in the file, `reload --pid` (systemd's
    ExecReload=) waited a minute in the new, empty folder and said the daemon did not answer,
    and the daemon made that folder although it keeps its own until a restart."""
    config = shared.folders.root / "stylefold.toml"
    good = config.read_text()
    moved = shared.folders.root / "state2"
    config.write_text(good.replace(str(shared.folders.state), str(moved)))
    try:
        pid = shared.process.pid
        reload = _cli("reload", "--config", str(config), "--pid", str(pid), "--timeout", "20")
        assert reload.returncode == 0, reload.stderr
        assert "state, archive_dir changed, which only a restart" in reload.stdout, reload.stdout
        assert not moved.exists()
        unnamed = _cli("reload", "--config", str(config))
        assert unnamed.returncode == 1 and "name it with --pid" in unnamed.stderr
        assert "`state` was changed" in unnamed.stderr
    finally:
        config.write_text(good)
    assert _cli("reload", "--config", str(config)).returncode == 0


def test_sighup_reloads_and_a_broken_config_keeps_the_running_one(shared: Daemon) -> None:
    config = shared.folders.root / "stylefold.toml"
    good = config.read_text()
    failed, reloaded = shared.logged("daemon.reload_failed"), shared.logged("daemon.reloaded")
    config.write_text(good + "settle_seconds = [\n")
    shared.process.send_signal(signal.SIGHUP)
    answer = shared.wait_for_log("daemon.reload_failed", count=failed + 1)
    assert "not valid TOML" in str(answer["error"])
    config.write_bytes(b"\xff\xfe" + good.encode())  # a re-test: not UTF-8 ended the daemon
    shared.process.send_signal(signal.SIGHUP)
    answer = shared.wait_for_log("daemon.reload_failed", count=failed + 2)
    assert "is not UTF-8 text (it is UTF-16 text" in str(answer["error"])
    assert shared.process.poll() is None
    config.write_text(good)
    make_image(shared.folders.styles / "new_style.png", size=(40, 40), seed=9)
    shared.process.send_signal(signal.SIGHUP)
    answer = shared.wait_for_log("daemon.reloaded", count=reloaded + 1)
    assert answer["styles"] == 3 and answer["changed"] == []
    # What a reload changed is said (a soak trial's operator saw only the style count).
    changed = good.replace("rescan_interval = 30.0", "rescan_interval = 45.0")
    both = "strength = 0.5\nstyle_weight = 10.0\n"  # under [defaults], the file's last table
    config.write_text(changed.replace("iterations = 4", "iterations = 7") + both)
    unused = shared.logged("config.unused_default")
    shared.process.send_signal(signal.SIGHUP)
    answer = shared.wait_for_log("daemon.reloaded", count=reloaded + 2)
    assert answer["changed"] == [
        "defaults.iterations: 4 -> 7",
        "defaults.strength: 0.9 -> 0.5",
        "defaults.style_weight: null -> 10.0",
        "rescan_interval: 30.0 -> 45.0",
    ]
    # A photographer's trial: both weights in the file went unsaid (style_weight wins).
    note = shared.wait_for_log("config.unused_default", count=unused + 1)["note"]
    assert note.startswith("defaults: style_weight 10 is given, so strength 0.5 is not used")
    config.write_text(good)
    shared.process.send_signal(signal.SIGHUP)
    shared.wait_for_log("daemon.reloaded", count=reloaded + 3)
    assert shared.process.poll() is None


def test_a_reload_of_archive_applies_to_claims_and_releases_alike(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A newcomer's review: a reload reached the claim but not the release, so after `archive`
    went from keep to move photos were moved in and then given back to the inbox until a
    restart. Back to keep, the original stays."""
    folders = make_folders(tmp_path_factory.mktemp("archive-reload"))
    config = folders.config(archive="keep")
    daemon = start_daemon(folders, config=config)
    try:
        for archive, stem, seed in (("move", "moved", 49), ("keep", "kept", 50)):
            folders.config(archive=archive)  # rewrites the file
            assert _cli("reload", "--config", str(config)).returncode == 0
            (folders.inbox / f"{stem}.jpg").write_bytes(image_bytes(seed=seed))
            write_json(folders.inbox / f"{stem}.json", SIDECAR)
            _manifest(folders, f"{stem}.manifest.json")
            time.sleep(1.0)  # the release follows the answer
        wait_for((folders.state / "archive" / "moved.jpg").exists, 10, "the archived original")
        assert not (folders.inbox / "moved.jpg").exists()
        assert (folders.state / "archive" / "moved.jpg").read_bytes() == image_bytes(seed=49)
        assert (folders.inbox / "kept.jpg").read_bytes() == image_bytes(seed=50)
        assert not (folders.state / "archive" / "kept.jpg").exists()
    finally:
        assert daemon.stop() == 0


def test_with_archive_keep_an_original_never_leaves_the_inbox(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A sync user's trial: with archive = "keep" and a two-way sync (the Nextcloud client),
    claiming moved the photo into the spool, which the sync tool took for a deletion: the photo
    vanished from the phone and the cloud while its job was queued or running, and for as long
    as the daemon was stopped. A kept original is now copied, never moved: it stays in the
    inbox throughout, across a stop mid-job, and gets exactly one answer."""
    folders = make_folders(tmp_path_factory.mktemp("keep"))
    config = folders.config(archive="keep", grace_period=0.5)
    photo, sidecar = folders.inbox / "photo.jpg", folders.inbox / "photo.json"
    daemon = start_daemon(folders, config=config)
    try:
        photo.write_bytes(image_bytes(seed=45))
        write_json(sidecar, {"style": "mosaic", "params": {"iterations": 100, "tolerance": 0}})
        sent = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in (photo, sidecar)}

        def untouched() -> bool:
            return all((p.read_bytes(), p.stat().st_mtime_ns) == s for p, s in sent.items())

        daemon.wait_for_log("job.started")
        assert untouched()  # queued, then running: still in the inbox
    finally:
        assert daemon.stop() == 0  # mid-job: the job stays in the spool for the next start
    assert untouched() and not (folders.outbox / "photo.manifest.json").exists()
    daemon = start_daemon(folders, config=config)
    try:
        wait_for((folders.outbox / "photo.manifest.json").exists, 90, "the answer")
        time.sleep(2.0)  # a second (wrong) job would have been claimed by now
        assert daemon.logged("job.claimed") == 0  # the recovered job, not a new claim
    finally:
        assert daemon.stop() == 0
    assert _outputs(folders.outbox) == ["photo.log", "photo.manifest.json", "photo.stylised.jpg"]
    assert untouched()
    assert not any((folders.state / "archive").rglob("*"))
    assert not any((folders.state / "spool").iterdir())


def _same_size_png(seed: int) -> bytes:
    """A PNG stored uncompressed: of one size whatever its pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def test_a_kept_original_swapped_with_its_size_and_mtime_kept_is_answered_again(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """An attacker's trial with archive = "keep": a kept photo written over in place with
    another of its size and given back its mtime, or replaced by one so (rsync's temporary
    file renamed over it), and a sidecar rewritten so, were never answered: the record of a
    kept original held its size and mtime alone. Each is a new request with its own answer."""
    folders = make_folders(tmp_path_factory.mktemp("keep_swap"))
    config = folders.config(archive="keep", rescan_interval=1.0)
    photo, sidecar = folders.inbox / "a.png", folders.inbox / "a.json"
    versions = [_same_size_png(seed) for seed in (1, 2, 3)]
    assert len({len(v) for v in versions}) == 1 and len(set(versions)) == 3
    daemon = start_daemon(folders, config=config)

    def swapped(write: Callable[[], None], path: Path) -> None:
        mtime = path.stat().st_mtime_ns
        write()
        os.utime(path, ns=(mtime, mtime))

    def renamed_over() -> None:
        temporary = folders.inbox / ".a.png.tmp"
        temporary.write_bytes(versions[2])
        temporary.replace(photo)

    def answered(number: str) -> str:
        manifest = _manifest(folders, f"a.manifest{number}.json")
        return str(manifest["input"]["sha256"])  # type: ignore[index]

    try:
        photo.write_bytes(versions[0])
        write_json(sidecar, {"style": "mosaic", "params": {"strength": 0.5}})
        assert answered("") == _sha(versions[0])
        # Its inode change time alone moved: the same photo, no new request (a re-test: each
        # chmod brought a second answer, a second failure or a false "sent again").
        photo.chmod(0o600)
        os.utime(sidecar, ns=(time.time_ns(), sidecar.stat().st_mtime_ns))  # touch -a
        (folders.root / "link").hardlink_to(photo)  # an attacker's trial: then refused for it
        time.sleep(2.5)  # settled, and past a full scan
        (folders.root / "link").unlink()
        time.sleep(2.5)
        assert daemon.logged("job.claimed") == 1
        assert daemon.logged("job.rejected") == 0
        swapped(lambda: photo.write_bytes(versions[1]), photo)  # in place: the same inode
        assert answered("-2") == _sha(versions[1])
        swapped(renamed_over, photo)
        assert answered("-3") == _sha(versions[2])
        swapped(
            lambda: write_json(sidecar, {"style": "mosaic", "params": {"strength": 0.3}}), sidecar
        )
        _manifest(folders, "a.manifest-4.json")
        time.sleep(2.5)  # past a full scan: nothing else is taken
        assert daemon.logged("job.claimed") == 4
    finally:
        assert daemon.stop() == 0
    photo.chmod(0o644)  # while it was stopped
    daemon = start_daemon(folders, config=config)
    try:
        time.sleep(2.5)  # past the first scan, settled
        assert daemon.logged("job.claimed") == 0
    finally:
        assert daemon.stop() == 0


def test_a_cpu_worker_runs_torch_on_the_threads_the_operator_chose(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """README tells an operator sharing a machine to set OMP_NUM_THREADS; the worker set torch's
    threads to the core count over it, and the journal did not say how many it took."""
    folders = make_folders(tmp_path_factory.mktemp("threads"))
    daemon = start_daemon(folders, env={"OMP_NUM_THREADS": "3"})
    try:
        assert daemon.wait_for_log("pool.worker_ready")["threads"] == 3
    finally:
        assert daemon.stop() == 0


def test_with_archive_keep_a_full_tracker_says_to_move_answered_photos_out(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Kept originals stay in the inbox and stay tracked: once they fill max_tracked no new
    photo is taken, and status must say that moving answered ones out (or a higher limit) makes
    room: it said to let the queue drain, which holds nothing then. Moving them out does."""
    folders = make_folders(tmp_path_factory.mktemp("kept_full"))
    config = folders.config(archive="keep", max_tracked=2, rescan_interval=1.0)
    daemon = start_daemon(folders, config=config)
    try:
        for stem in ("first", "second"):
            (folders.inbox / f"{stem}.jpg").write_bytes(image_bytes(seed=len(stem)))
            write_json(folders.inbox / f"{stem}.json", SIDECAR)
            if stem == "first":
                _manifest(folders, "first.manifest.json")

        def advice() -> str | None:
            status = json.loads((folders.state / "status.json").read_text())
            found = [a["fix"] for a in status["attention"] if "max_tracked" in a["what"]]
            return found[0] if found else None

        fix = wait_for(advice, 30, "max_tracked listed by status")
        assert 'archive = "keep"' in fix and "move answered ones out" in fix, fix
        assert not (folders.outbox / "second.manifest.json").exists()
        answered = folders.root / "answered"
        answered.mkdir()
        for name in ("first.jpg", "first.json"):
            (folders.inbox / name).rename(answered / name)
        _manifest(folders, "second.manifest.json")
    finally:
        assert daemon.stop() == 0


def _gps_photo(path: Path, seed: int) -> None:
    """A camera's JPEG with its location (a photographer's trial: it went into the result)."""
    image = Image.open(io.BytesIO(image_bytes(seed=seed)))
    exif = Image.Exif()
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 31.0, 0.0), 3: "E", 4: (9.0, 3.0, 0.0)})
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, exif=exif.tobytes())


def test_strip_location_leaves_the_gps_out_of_results_from_its_reload_on(
    folders: Folders, daemon_factory: Callable[..., Daemon]
) -> None:
    """`again/kept.jpg` is `kept.jpg` again: it was answered with a copy of kept's result, and
    its location, after the reload; it is rendered now."""
    daemon = daemon_factory()
    results, reused = [], []
    for stem, seed in (("kept", 54), ("stripped", 55), ("again/kept", 54)):
        if stem == "stripped":
            folders.config(strip_location=True)  # the same file, rewritten
            daemon.process.send_signal(signal.SIGHUP)
            daemon.wait_for_log("daemon.reloaded")
        _gps_photo(folders.inbox / f"{stem}.jpg", seed)
        write_json(folders.inbox / f"{stem}.json", SIDECAR)
        manifest = _manifest(folders, f"{stem}.manifest.json")
        reused.append(manifest["reused"])
        output = Path(stem).parent / str(manifest["output"]["file"])  # type: ignore[index]
        with Image.open(folders.outbox / output) as result:
            results.append(result.getexif().get_ifd(0x8825).get(1))
    assert results == ["N", None, None]
    assert reused == [None, None, None]


def test_a_tiny_photo_is_rendered_with_a_note_that_it_was_upscaled(shared: Daemon) -> None:
    """An 8x8 photo became a full-size result without a word (a photographer's trial)."""
    inbox = shared.folders.inbox / "tiny"
    inbox.mkdir()
    (inbox / "photo.jpg").write_bytes(image_bytes(size=(8, 8), seed=56))
    write_json(inbox / "photo.json", SIDECAR)
    manifest = _finished_once(shared, "tiny")
    log = (shared.folders.outbox / "tiny" / "photo.log").read_text()
    assert "note: the photo is only 8x8 px, upscaled to 48x48, so the result is soft" in log
    assert manifest["notes"] == [  # and in the manifest, for scripts (another's trial)
        "the photo is only 8x8 px, upscaled to 48x48, so the result is soft (send a larger "
        "photo for more detail)"
    ]
    [params] = [line.split(" params ", 1)[1] for line in log.splitlines() if " params {" in line]
    assert json.loads(params)["size"] == 48  # JSON, to paste into a sidecar
    large = shared.folders.inbox / "not-tiny"
    large.mkdir()
    (large / "photo.jpg").write_bytes(image_bytes(size=(64, 48), seed=57))
    write_json(large / "photo.json", SIDECAR)
    manifest = _finished_once(shared, "not-tiny")  # 64x48 to 48x36: nothing to say
    assert manifest["notes"] == []
    assert "upscaled" not in (shared.folders.outbox / "not-tiny" / "photo.log").read_text()


def test_a_style_scale_the_floor_overrode_is_told_in_the_log(shared: Daemon) -> None:
    """A user's trial: at a small size `style_scale` 0.5 gave the very same picture as 1, and
    the manifest recorded 0.5 with no word that it did nothing."""
    inbox = shared.folders.inbox / "finer"
    inbox.mkdir()
    (inbox / "photo.jpg").write_bytes(image_bytes(size=(64, 48), seed=58))
    write_json(inbox / "photo.json", {**SIDECAR, "params": {"style_scale": 0.5}})
    manifest = _finished_once(shared, "finer")
    assert manifest["params"]["style_scale"] == 0.5  # type: ignore[index]
    log = (shared.folders.outbox / "finer" / "photo.log").read_text()
    assert "note: style_scale 0.5 asks for a " in log, log
    assert "as a style image's short side is kept at least 128 px (less carries no texture)" in log
    # in a blend each note names its style
    blend = [{"name": "mosaic", "weight": 1}, {"name": "waves", "weight": 1}]
    blended = shared.folders.inbox / "finer-blend"
    blended.mkdir()
    (blended / "photo.jpg").write_bytes(image_bytes(size=(64, 48), seed=59))
    write_json(blended / "photo.json", {"style": blend, "params": {"style_scale": 0.5}})
    notes = _finished_once(shared, "finer-blend")["notes"]
    assert [note.split(": style_scale")[0] for note in notes] == [  # type: ignore[union-attr]
        "style mosaic",
        "style waves",
    ], notes
