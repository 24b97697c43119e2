"""`stylefold demo`: the newcomer's first command runs the real daemon on shipped sample images."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import image_bytes, wait_for
from PIL import Image

from daemon.cli.demo import tidy_inbox
from daemon.cli.demo_folder import (
    MARKER,
    SAMPLES,
    STYLES,
    DemoError,
    demo_jobs,
    not_the_demos,
    prepare,
    sample_path,
)
from daemon.jobs.store import Store
from service.imageio import encode_image

CLI = [sys.executable, "-m", "daemon.cli"]

pytest.importorskip("skimage", reason="the demo's images come with the demo extra")


def test_demo_runs_every_job_through_the_daemon(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    done = subprocess.run(
        [*CLI, "demo", "--dir", str(folder), "--size", "32", "--iterations", "3"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    outbox = folder / "outbox"
    for job in demo_jobs(32, 3):
        manifest = json.loads((outbox / f"{job.photo}.manifest.json").read_text())
        assert manifest["status"] == "ok"
        assert manifest["params"]["size"] == 32
        assert manifest["iterations"] <= 3
        with Image.open(outbox / manifest["output"]["file"]) as image:
            assert max(image.size) == 32
        assert (outbox / f"{job.photo}.log").is_file()
        assert (folder / "state" / "archive" / sample_path(job.photo).name).is_file()
        assert manifest["output"]["file"] in done.stdout
    # Said as render says it: "(at the iteration cap)", not the manifest's "(iterations)".
    assert "iterations (at the iteration cap) on cpu" in done.stdout, done.stdout
    blend = json.loads((outbox / "astronaut.manifest.json").read_text())
    assert {s["name"]: s["weight"] for s in blend["styles"]} == {"cells": 0.7, "retina": 0.3}
    kept = json.loads((outbox / "coffee.manifest.json").read_text())
    assert kept["params"]["preserve_colors"] == "luminance"
    assert json.loads((outbox / "rocket.manifest.json").read_text())["output"]["format"] == "png"
    assert str(outbox) in done.stdout
    assert (folder / "daemon.log").stat().st_size > 0
    # Nothing is left for the next run to take for a photo without its sidecar.
    assert list((folder / "inbox").iterdir()) == []
    assert "removed hubble.jpg from the inbox" in done.stdout
    # and from what the daemon remembers as answered there, which every later start told as
    # "none of the 1 files answered in place is in the inbox" (a new user's trial)
    store = Store(folder / "state")
    try:
        assert store.seen_paths() == []
    finally:
        store.close()
    # The status command it names works as printed (a new user's trial: bare `stylefold
    # status` after the demo asked for a config file).
    [command] = re.findall(r"`(stylefold status --state [^`]+)`", done.stdout)
    status = subprocess.run(
        [*CLI, *shlex.split(command)[1:]], capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0 and "4 done" in status.stdout, status.stdout + status.stderr

    # --keep: the photos are sent again and skipped; that was told as if they were just done,
    # from the earlier manifests (a new user's trial). With another size, new answers are
    # numbered, and those are the ones told.
    for size, told in (("32", "answered by an earlier demo, sent again: skipped -> "), ("40", "")):
        again = subprocess.run(
            [*CLI, "demo", "--dir", str(folder), "--keep", "--size", size, "--iterations", "3"],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert again.returncode == 0, again.stdout + again.stderr
        for job in demo_jobs(32, 3):
            if told:
                assert f"{job.photo}: {told}{job.photo}.stylised." in again.stdout, again.stdout
            else:
                assert f"{job.photo}: done in" in again.stdout
                manifest = json.loads((outbox / f"{job.photo}.manifest-2.json").read_text())
                assert f"-> {manifest['output']['file']}" in again.stdout
        assert ("done in" in again.stdout) is not bool(told)
    # Everything a real demo left is the demo's: the next run may start afresh.
    assert not_the_demos(folder, demo_jobs(32, 3)) == []


def test_prepare_lays_out_folders_styles_and_sidecars(tmp_path: Path) -> None:
    jobs = demo_jobs(64, 10)
    prepare(tmp_path / "demo", jobs, keep=False)
    root = tmp_path / "demo"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [
        "inbox",
        "outbox",
        "state",
        "styles",
    ]
    assert sorted(p.stem for p in (root / "styles").iterdir()) == sorted(STYLES)
    for job in jobs:
        sidecar = json.loads((root / "inbox" / f"{job.photo}.json").read_text())
        assert sidecar == job.sidecar
        assert (root / "inbox" / sample_path(job.photo).name).is_file()


def test_prepare_starts_afresh_unless_asked_to_keep(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    prepare(root, demo_jobs(64, 10), keep=False)
    earlier = root / "outbox" / "chelsea.stylised.jpg"
    earlier.write_bytes(encode_image(Image.new("RGB", (8, 8))))  # signed as the daemon's
    prepare(root, demo_jobs(64, 10), keep=True)
    assert earlier.exists()
    prepare(root, demo_jobs(64, 10), keep=False)
    assert not earlier.exists()


def test_a_folder_not_made_by_the_demo_is_refused(tmp_path: Path) -> None:
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(DemoError, match="not made by `stylefold demo`"):
        prepare(mine, demo_jobs(64, 10), keep=False)
    assert (mine / "holiday.jpg").read_bytes() == b"precious"
    assert not (mine / MARKER).exists()

    done = subprocess.run(
        [*CLI, "demo", "--dir", str(mine)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.startswith("stylefold demo: error:")
    assert "Traceback" not in done.stderr


def test_a_fresh_start_is_refused_while_the_demo_folder_holds_your_photos(tmp_path: Path) -> None:
    """A new user's trial: the demo's last lines invite trying your own photos in its folder;
    the next `stylefold demo` deleted them (the waiting photo, the archived original and its
    result) without a word. Now only what is provably the demo's goes (samples by their bytes,
    its sidecars, answers the daemon signed, the daemon's own state files); anything else is
    named and nothing is deleted. An attacker's re-test found names that only began like a
    demo answer, files of other types in the state folder, and links."""
    root = tmp_path / "demo"
    jobs = demo_jobs(64, 10)
    prepare(root, jobs, keep=False)
    (root / "state" / "archive").mkdir()
    shutil.copyfile(sample_path("chelsea"), root / "state" / "archive" / "chelsea.png")
    shutil.copyfile(root / "inbox" / "chelsea.json", root / "state" / "archive" / "chelsea.json")
    (root / "state" / "stylefold.db").write_bytes(b"the daemon's")
    assert not_the_demos(root, jobs) == []
    outside = tmp_path / "mine.png"
    outside.write_bytes(image_bytes(seed=9))
    yours = {
        "inbox/pending.jpg": image_bytes(seed=1),
        "state/archive/mytrip.jpg": image_bytes(seed=2),
        "state/spool/20261205-000000-000000-abcdef/input.jpg": image_bytes(seed=3),
        "state/returned/cat.dng": image_bytes(seed=6),
        "state/notes.txt": b"notes",
        "outbox/mytrip.stylised.jpg": b"your result",
        "outbox/chelsea.edited.jpg": image_bytes(seed=7),
        "outbox/chelsea.stylised.jpg": image_bytes(seed=8),  # the name, not the signature
        "outbox/rocket.backup.psd": b"layers",
        "styles/mine.png": image_bytes(seed=4),
        "inbox/chelsea.png": image_bytes(seed=5),  # a demo name, other bytes
    }
    for rel, data in yours.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "inbox" / "coffee.png").unlink()
    (root / "inbox" / "coffee.png").symlink_to(outside)
    expected = sorted([*yours, "inbox/coffee.png"])
    assert not_the_demos(root, jobs) == expected
    with pytest.raises(DemoError, match=r"holds files the demo did not make \(inbox/chelsea.png"):
        prepare(root, jobs, keep=False)
    done = subprocess.run(
        [*CLI, "demo", "--dir", str(root)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and f"and {len(expected) - 3} more" in done.stderr, done.stderr
    assert "--keep" in done.stderr and "Traceback" not in done.stderr
    assert all((root / rel).read_bytes() == data for rel, data in yours.items())
    assert outside.read_bytes() == image_bytes(seed=9)


def test_keep_never_writes_over_a_file_of_yours_nor_through_a_link(tmp_path: Path) -> None:
    """An attacker's re-test: the refusal's own advice, --keep, copied the samples over your
    chelsea.png and its sidecar, over your styles/cells.png, and through a link (symbolic or
    hard) over a file outside the demo's folder."""
    root = tmp_path / "demo"
    jobs = demo_jobs(64, 10)
    prepare(root, jobs, keep=False)
    prepare(root, jobs, keep=True)  # its own files: no refusal
    outside = tmp_path / "mine.png"
    outside.write_bytes(image_bytes(seed=9))
    cases = {
        "inbox/chelsea.png": lambda path: path.write_bytes(image_bytes(seed=5)),
        "inbox/chelsea.json": lambda path: path.write_text('{"style": "retina"}'),
        "styles/cells.png": lambda path: path.write_bytes(image_bytes(seed=4)),
        "inbox/coffee.png": lambda path: path.symlink_to(outside),
        "inbox/astronaut.png": lambda path: path.hardlink_to(outside),
    }
    for rel, make in cases.items():
        target = root / rel
        target.unlink()
        make(target)
        kept = target.read_bytes()
        with pytest.raises(DemoError, match=f"{target} is not the demo's"):
            prepare(root, jobs, keep=True)
        assert target.read_bytes() == kept and outside.read_bytes() == image_bytes(seed=9)
        target.unlink()
        prepare(root, jobs, keep=True)  # its own again


def test_every_sample_ships_with_scikit_image() -> None:
    for name in SAMPLES:
        with Image.open(sample_path(name)) as image:
            assert min(image.size) >= 256, name


def test_a_brought_along_style_stays_for_an_unfinished_job(tmp_path: Path) -> None:
    jobs = demo_jobs(64, 10)
    prepare(tmp_path, jobs, keep=False)
    inbox = tmp_path / "inbox"
    assert tidy_inbox(tmp_path, jobs, unfinished=["rocket"]) == []
    assert (inbox / "hubble.jpg").is_file()
    assert tidy_inbox(tmp_path, jobs, unfinished=["chelsea"]) == ["hubble.jpg"]
    assert not (inbox / "hubble.jpg").exists()


def test_a_demo_stopped_by_ctrl_c_says_so_and_how_to_finish(tmp_path: Path) -> None:
    """Ctrl-C during the jobs printed "finished" and an error (a new user's trial)."""
    folder = tmp_path / "demo"
    demo = subprocess.Popen(
        [*CLI, "demo", "--dir", str(folder), "--size", "64", "--iterations", "2000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: list((folder / "outbox").glob("*.progress.json")), 120, "a job running")
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=120)
    finally:
        demo.kill()
    assert demo.returncode == 130, out + err
    assert "stopped after" in out and "finished in" not in out
    assert "stopped before" in err and "stylefold once" in err and "did not finish" not in err
