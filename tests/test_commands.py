"""The daemon's subcommands as a user runs them: real processes, real folders."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path

import numpy as np
from conftest import CLI, REPO, Daemon, Folders, image_bytes, start_daemon, write_json
from PIL import Image
from ray_cluster import free_port

from daemon.jobs.states import State
from daemon.jobs.store import DB_FILE, Store
from daemon.status_model import StatusReport
from service.params import STYLE_MIN_SIDE


def stylefold(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


def test_once_works_off_the_inbox_and_exits(folders: Folders) -> None:
    for rel, sidecar in (
        ("a/one.jpg", {"style": "mosaic"}),
        ("b/two.jpg", {"style": [{"name": "mosaic", "weight": 2}, {"name": "waves"}]}),
        ("c/bad.jpg", {"style": "mosaic", "params": {"size": "huge"}}),
        ("d/wait.jpg", {"style": {"file": "nothere.jpg"}}),
    ):
        path = folders.inbox / rel
        path.parent.mkdir(parents=True)
        path.write_bytes(image_bytes(seed=len(rel)))
        write_json(path.with_suffix(".json"), sidecar)
    (folders.inbox / "d/cut.jpg").write_bytes(image_bytes(seed=9)[:-100])  # a copy cut off
    write_json(folders.inbox / "d/cut.json", {"style": "mosaic"})
    result = stylefold(
        "once",
        "--config",
        str(folders.config()),
        "--log-format",
        "json",
        env={"STYLEFOLD_MAXPIXELS": "5"},  # a typo: said, and the default stays
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [unknown] = [
        json.loads(line)
        for line in result.stdout.splitlines()
        if '"config.unknown_variable"' in line
    ]
    assert "did you mean STYLEFOLD_MAX_PIXELS?" in unknown["problem"]
    # what is left, each named with what it waits for (a photographer's trial: "left_waiting=2")
    [done] = [json.loads(line) for line in result.stdout.splitlines() if "inbox_done" in line]
    cut, waiting = done["left_waiting"]
    assert cut.startswith("d/cut.jpg: still arriving: a JPEG without its end marker"), cut
    assert cut.endswith(" unless it changes"), cut  # not "(pair_timeout) unless it comes"
    assert waiting.startswith(
        "d/wait.jpg: waiting for the style image nothere.jpg named by wait.json; reported in "
    ), waiting
    assert waiting.endswith(" s (pair_timeout) unless it comes"), waiting
    assert (folders.outbox / "a/one.stylised.jpg").exists()
    manifest = json.loads((folders.outbox / "b/two.manifest.json").read_text())
    assert [s["weight"] for s in manifest["styles"]] == [2.0, 1.0]
    # The size each style image was used at: for this small output, the floor's short side, in
    # the style image's own shape (what sets the size of its strokes).
    for entry in manifest["styles"]:
        with Image.open(next(folders.styles.glob(f"{entry['name']}.*"))) as opened:
            width, height = opened.size
        used = entry["size"]
        shape = abs(used[0] / used[1] - width / height)
        assert min(used) == STYLE_MIN_SIDE and shape < 0.01, (used, opened.size)
    report = json.loads((folders.outbox / "c/bad.error.json").read_text())
    assert "params.size" in report["error"]
    assert (folders.inbox / "c/bad.jpg").exists() and not (folders.inbox / "a/one.jpg").exists()

    status = stylefold("status", "--state", str(folders.state))
    assert status.returncode == 0
    assert status.stdout.startswith("daemon: not running")
    assert "queued:" not in status.stdout and "recent failures: 1" in status.stdout
    assert "c/bad.jpg rejected: bad.json: params.size" in status.stdout
    assert "c/bad.error.json" in status.stdout  # where the report is
    report = StatusReport.model_validate_json(
        stylefold("status", "--state", str(folders.state), "--json").stdout
    )
    assert not report.daemon.running and report.jobs == []
    assert [(end.input, end.outcome) for end in report.recent if end.outcome != "done"] == [
        ("c/bad.jpg", "rejected")
    ]
    assert {end.input for end in report.recent if end.outcome == "done"} == {
        "a/one.jpg",
        "b/two.jpg",
    }


def test_a_brought_along_style_of_a_shape_the_library_refuses_is_refused_by_name(
    folders: Folders,
) -> None:
    """An attacker's trial: a 2 KB PNG strip of 30000x16 px, brought along in the inbox (never
    listed, so never checked as the library's styles are), was enlarged to the network's
    minimum side, a 240000x128 px style, and ran the worker out of memory at any output size;
    the report blamed the output size. Now it is refused as the library refuses it."""
    strip = np.zeros((16, 2000, 3), np.uint8)  # far enough: 16000x128 px to paint
    strip[::2, ::3] = 255
    Image.fromarray(strip).save(folders.inbox / "strip.png")
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(folders.inbox / "dot.png")
    for name, style in (("a", "strip.png"), ("b", "dot.png"), ("c", None)):
        (folders.inbox / f"{name}.jpg").write_bytes(image_bytes(seed=len(name)))
        sidecar = {"style": {"file": style}} if style else {"style": "mosaic"}
        write_json(folders.inbox / f"{name}.json", sidecar)
    result = stylefold("once", "--config", str(folders.config(retries=2)), timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name, problem in (
        ("a", "strip.png (brought along in the inbox) is 2000x16, a strip over 10 times"),
        ("b", "dot.png (brought along in the inbox) is only 8x8 pixels; a style image needs"),
    ):
        report = json.loads((folders.outbox / f"{name}.error.json").read_text())
        assert problem in report["error"], report["error"]
        assert report["kind"] == "input", report  # the image is wrong: no second try
    assert (folders.outbox / "c.stylised.jpg").exists()


def test_once_batches_queued_jobs_with_one_style_and_size(folders: Folders) -> None:
    """Three photos of one size with one style, batch_max 3: one batch, three results, each
    its own picture; the photo of another size runs alone."""
    for index in range(3):
        (folders.inbox / f"p{index}.jpg").write_bytes(image_bytes(seed=index))
        write_json(folders.inbox / f"p{index}.json", {"style": "mosaic"})
    (folders.inbox / "tall.jpg").write_bytes(image_bytes(size=(48, 64), seed=9))
    write_json(folders.inbox / "tall.json", {"style": "mosaic"})
    config = folders.config(batch_max=3)
    relative = os.path.relpath(config, REPO)  # the start line names it whole (a re-test)
    result = stylefold("once", "--config", relative, "--log-format", "json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [starting] = [json.loads(line) for line in result.stdout.splitlines() if "starting" in line]
    assert starting["config"] == str(config), starting
    manifests = {
        stem: json.loads((folders.outbox / f"{stem}.manifest.json").read_text())
        for stem in ("p0", "p1", "p2", "tall")
    }
    assert [manifests[f"p{i}"]["batch_size"] for i in range(3)] == [3, 3, 3]
    assert manifests["tall"]["batch_size"] == 1
    outputs = {(folders.outbox / f"p{i}.stylised.jpg").read_bytes() for i in range(3)}
    assert len(outputs) == 3
    assert "in a batch of 3" in (folders.outbox / "p0.log").read_text()


def test_top_inbox_folders_take_turns_in_the_queue(folders: Folders) -> None:
    """A bulk import's and a family's trials: a camera roll in `DCIM/` (or one person's long
    jobs) held every photo sent after it. With the roll queued and rendering, a photo of
    another folder and one at the top are the next two jobs started."""
    slow = {"style": "mosaic", "params": {"iterations": 60, "tolerance": 0}}
    daemon = start_daemon(folders)
    try:
        (folders.inbox / "DCIM").mkdir()
        for index in range(4):
            (folders.inbox / f"DCIM/IMG_{index}.jpg").write_bytes(image_bytes(seed=20 + index))
            write_json(folders.inbox / f"DCIM/IMG_{index}.json", slow)
        daemon.wait_for_log("job.started")
        (folders.inbox / "alice").mkdir()
        (folders.inbox / "alice/cat.jpg").write_bytes(image_bytes(seed=30))
        write_json(folders.inbox / "alice/cat.json", slow)
        (folders.inbox / "mine.jpg").write_bytes(image_bytes(seed=31))
        write_json(folders.inbox / "mine.json", slow)
        daemon.wait_for_log("job.started", timeout=120, count=3)
    finally:
        assert daemon.stop() == 0
    order = [str(line["input"]) for line in daemon.log_lines() if line["event"] == "job.started"]
    assert order[0].startswith("DCIM/")
    assert sorted(order[1:3]) == ["alice/cat.jpg", "mine.jpg"], order


def test_styles_lists_the_library(folders: Folders) -> None:
    write_json(folders.styles / "waves.json", {"style_weight": 5000})
    (folders.styles / "broken.jpg.json").write_text("{")
    result = stylefold("styles", "--styles", str(folders.styles))
    assert result.returncode == 0
    assert "2 style(s)" in result.stdout
    assert "mosaic" in result.stdout and '"style_weight": 5000' in result.stdout
    listed = json.loads(stylefold("styles", "--config", str(folders.config()), "--json").stdout)
    assert [s["name"] for s in listed["styles"]] == ["mosaic", "waves"]
    assert listed["case_twins"] == []
    # A phone user's re-test: two styles differing in case alone were listed without a word.
    shutil.copyfile(folders.styles / "mosaic.jpg", folders.styles / "Mosaic.png")
    result = stylefold("styles", "--styles", str(folders.styles))
    assert result.returncode == 0, result.stderr  # both are usable
    told = "note: Mosaic, mosaic differ in letter case or Unicode form alone: a sidecar must"
    assert told in result.stdout, result.stdout
    # A re-test: a Mac's decomposed name (a combining accent) put the columns out of line.
    shutil.copyfile(folders.styles / "mosaic.jpg", folders.styles / "Cafe\u0301.png")
    listed = stylefold("styles", "--styles", str(folders.styles)).stdout.splitlines()[1:4]
    files = ["Cafe\u0301.png", "Mosaic.png", "mosaic.jpg"]
    shown = [line[: line.index(file)] for line, file in zip(listed, files, strict=True)]
    assert len({sum(not unicodedata.combining(char) for char in at) for at in shown}) == 1
    listed = json.loads(stylefold("styles", "--styles", str(folders.styles), "--json").stdout)
    assert listed["case_twins"] == [["Mosaic", "mosaic"]]
    # A README trial: a missing folder given with --styles was told to give --styles DIR.
    result = stylefold("styles", "--styles", str(folders.root / "nowhere"))
    assert result.returncode == 78 and "nowhere is not a folder" in result.stderr
    assert "--styles DIR" not in result.stderr, result.stderr
    result = stylefold("styles", env={"HOME": str(folders.root)})  # nothing configured
    assert result.returncode == 78 and "stylefold styles --styles DIR" in result.stderr
    # A new user's trial: a config's typo was told, then a way around the config.
    typo = folders.root / "typo.toml"
    typo.write_text(folders.config().read_text() + "pair_timout = 60\n")
    result = stylefold("styles", "--config", str(typo))
    assert result.returncode == 78 and "did you mean 'pair_timeout'?" in result.stderr
    assert "--styles DIR" not in result.stderr, result.stderr


def test_validate_explains_what_to_fix(folders: Folders, tmp_path: Path) -> None:
    good = write_json(tmp_path / "good.json", {"style": "mosaic", "params": {"size": 32}})
    result = stylefold("validate", str(good), "--config", str(folders.config()))
    assert result.returncode == 0 and "ok" in result.stdout
    assert "note" not in result.stdout
    # A photographer's trial: both weights under [defaults] passed without a word.
    weights = folders.config(defaults={"strength": 0.5, "style_weight": 10})
    result = stylefold("validate", str(good), "--config", str(weights))
    assert result.returncode == 0 and "ok" in result.stdout
    told = "note: defaults: style_weight 10 is given, so strength 0.5 is not used"
    assert f"{weights}: {told}" in result.stdout, result.stdout  # the config's, not the sidecar's

    bad = write_json(tmp_path / "bad.json", {"style": "mosaic", "params": {"sise": 32}, "x": 1})
    result = stylefold("validate", str(bad))
    assert result.returncode == 1
    assert "params.sise: unknown key" in result.stderr and "did you mean 'size'" in result.stderr
    assert "x: unknown key" in result.stderr

    unknown = write_json(tmp_path / "unknown.json", {"style": "starry"})
    result = stylefold("validate", str(unknown), "--config", str(folders.config()))
    assert result.returncode == 1 and "not in the style library" in result.stderr
    both = write_json(tmp_path / "both.json", {"style": "mosaik", "params": {"sise": 32}})
    result = stylefold("validate", str(both), "--config", str(folders.config()))
    assert "params.sise: unknown key" in result.stderr, result.stderr
    assert "style 'mosaik' is not in the style library (did you mean 'mosaic'?" in result.stderr

    # Both at once (a new user's trial: told of the style, then of the size once it was fixed).
    two = write_json(tmp_path / "two.json", {"style": "nope", "params": {"size": 8000}})
    result = stylefold("validate", str(two), "--config", str(folders.config()))
    assert result.returncode == 1 and "would fail:\n  - style 'nope'" in result.stderr
    assert "\n  - params.size: 8000 is above this daemon's max_output_size" in result.stderr
    too_big = write_json(tmp_path / "big.json", {"style": "mosaic", "params": {"size": 8000}})
    result = stylefold("validate", str(too_big), "--config", str(folders.config()))
    assert result.returncode == 1 and "max_output_size" in result.stderr
    assert "without --config" not in result.stderr
    # Without a config the limits are the defaults, and said to be (a docs trial read them as
    # the refusal of a daemon whose config allows more).
    padded = {"style": "mosaic", "comment": "x" * 70_000}  # above max_sidecar_bytes too
    for sidecar in ({"params": {"size": 5000}}, {"params": {"iterations": 5000}}, padded):
        big = write_json(tmp_path / "big.json", {"style": "mosaic", **sidecar})
        result = stylefold("validate", str(big))
        assert result.returncode == 1 and " max_" in result.stderr
        assert result.stderr.rstrip().endswith(
            '(without --config, "this daemon" is one with the default settings; give --config '
            "to check against your daemon's limits)"
        ), result.stderr

    # A new user's trial: "ok" to a sidecar the daemon does not read for its name.
    renamed = {"txt.json.txt": "txt.json", "notes.txt": "notes.json", "s.json ": "s.json"}
    for name, wanted in renamed.items():
        misnamed = write_json(tmp_path / name, {"style": "mosaic"})
        result = stylefold("validate", str(misnamed))
        assert result.returncode == 1, result.stdout
        told = "a name that ends in .json (photo.json or photo.jpg.json beside photo.jpg), and"
        assert f"{told} {name!r} does not; rename it {wanted}" in result.stderr
    # Nor of names the daemon ignores (a re-test: hidden, a sync tool's conflict copy).
    ignored = {
        ".x.json": "(.*: hidden files and folders (Unix convention)); rename it x.json",
        "x.sync-conflict-20261207-101010-ABCDEFG.json": "Syncthing conflict copy",
        "~$x.json": "Microsoft Office owner file",
    }
    for name, why in ignored.items():
        result = stylefold("validate", str(write_json(tmp_path / name, {"style": "mosaic"})))
        assert result.returncode == 1, result.stdout
        assert "the daemon ignores files named so (" in result.stderr and why in result.stderr
    result = stylefold("validate", str(tmp_path / "missing.json"))
    assert result.returncode == 1 and "missing.json: no such file" in result.stderr
    # An attacker's trial: "ok" to a sidecar bringing along another's sidecar as its style.
    named = write_json(tmp_path / "named.json", {"style": {"file": "good.json"}})
    result = stylefold("validate", str(named))
    assert result.returncode == 1, result.stdout
    assert "style.file: 'good.json' is not an image name; use a file ending in" in result.stderr

    start = write_json(tmp_path / "start.json", {"style": "mosaic", "params": {"init": "image"}})
    result = stylefold("validate", str(start))
    assert result.returncode == 1 and "only `stylefold render --init PATH` takes" in result.stderr

    # Without a config, against the built-in defaults and limits (a photographer's trial:
    # each got "ok" and then an error report from the daemon).
    for params, problem in (
        ({"style_layer_weights": [1, 2]}, "give one weight per layer"),
        ({"content_layers": ["conv6_1"]}, "'conv6_1' does not exist"),
        ({"content_weight": 0, "style_weight": 0}, "nothing would be optimised"),
        ({"size": 5000}, "max_output_size (4096)"),
        ({"size": 100000}, "size 4096 or less"),
    ):
        sidecar = write_json(tmp_path / "alone.json", {"style": "mosaic", "params": params})
        result = stylefold("validate", str(sidecar))
        assert result.returncode == 1 and problem in result.stderr, result.stdout
    result = stylefold("validate", str(write_json(tmp_path / "no_style.json", {})))
    assert result.returncode == 1 and 'names no style; add "style"' in result.stderr
    result = stylefold("validate", str(good))
    assert result.returncode == 0 and "styles not checked" in result.stdout
    both = {"style": "mosaic", "params": {"strength": 0.2, "style_weight": 1000}}
    result = stylefold("validate", str(write_json(tmp_path / "both.json", both)))
    assert result.returncode == 0  # allowed, as documented, but said
    assert "style_weight 1000 is given, so strength 0.2 is not used" in result.stdout
    lossless = {"style": "mosaic", "output": {"format": "TIF", "quality": 50}}
    result = stylefold("validate", str(write_json(tmp_path / "lossless.json", lossless)))
    assert result.returncode == 0  # a photographer's trial: only the job log said so
    assert "note: output.quality 50 is not used: a tiff is lossless" in result.stdout
    plain = {"style": "mosaic", "params": {"style_weight": 0}}
    result = stylefold("validate", str(write_json(tmp_path / "plain.json", plain)))
    assert result.returncode == 0 and "style_weight 0 takes no style" in result.stdout
    for init, told in (("content", True), ("noise", False)):
        seeded = {"style": "mosaic", "params": {"seed": 3, "init": init}}
        result = stylefold("validate", str(write_json(tmp_path / "seeded.json", seeded)))
        assert result.returncode == 0
        assert (f"seed 3 changes nothing with init {init}" in result.stdout) is told, init

    missing = stylefold("validate", str(good), "--styles", str(tmp_path / "nosuchdir"))
    assert missing.returncode == 78 and "nosuchdir is not a folder" in missing.stderr
    # A config asked for but unusable: its checks cannot be made, so no "ok" (a user's trial).
    for config, problem in (
        (folders.root / "stylefold.tom", "does not exist"),
        (write_json(tmp_path / "broken.toml", {"inbox": 1}), "not valid TOML"),
    ):
        result = stylefold("validate", str(too_big), "--config", str(config))
        assert result.returncode == 78 and "ok" not in result.stdout  # not the sidecar's 1
        assert problem in result.stderr and "leave out --config" in result.stderr


def test_every_documented_log_level_is_a_flag_too() -> None:
    """The config table lists critical; `run --log-level critical` refused it."""
    for command in ("run", "once"):
        usage = stylefold(command, "--help").stdout
        assert "{debug,info,warning,error,critical}" in usage


def test_doctor_passes_and_names_what_is_wrong(folders: Folders) -> None:
    result = stylefold("doctor", "--config", str(folders.config()))
    assert result.returncode == 0, result.stdout
    assert "WARN" not in result.stdout
    # pydantic-settings ignores variables it does not know: a typo would go unsaid.
    weights = folders.config(defaults={"strength": 0.5, "style_weight": 10})
    typo = stylefold("doctor", "--config", str(weights), env={"STYLEFOLD_SETLE_SECONDS": "3"})
    assert typo.returncode == 0, typo.stdout
    assert "WARN config: defaults: style_weight 10 is given, so strength 0.5" in typo.stdout
    assert (
        "WARN environment: STYLEFOLD_SETLE_SECONDS is not a setting and is ignored; "
        "did you mean STYLEFOLD_SETTLE_SECONDS?"
    ) in typo.stdout
    for line in ("ok   devices: cpu", "ok   weights: vgg19 loads", "ok   inotify:"):
        assert line in result.stdout
    # An inbox Syncthing shares: archive "move" is safe only in a Receive Only folder, which
    # doctor cannot see (a Syncthing user's trial: Send & Receive lost the phone's originals).
    (folders.inbox / ".stfolder").mkdir()
    synced = stylefold("doctor", "--config", str(folders.config(archive="move")))
    assert synced.returncode == 0, synced.stdout
    assert f"WARN inbox: {folders.inbox} is a Syncthing folder and archive is" in synced.stdout
    assert "Receive Only" in synced.stdout
    kept = stylefold("doctor", "--config", str(folders.config(archive="keep")))
    assert "WARN" not in kept.stdout, kept.stdout
    (folders.inbox / ".stfolder").rmdir()
    missing = folders.root / "gone"
    result = stylefold("doctor", "--config", str(folders.config()), "--inbox", str(missing))
    assert result.returncode == 1
    assert "FAIL config" in result.stdout and "does not exist; create it" in result.stdout
    result = stylefold(
        "doctor", "--config", str(folders.config(default_style="nope", no_sidecar="default"))
    )
    assert result.returncode == 1 and "default_style 'nope' is not in the library" in result.stdout
    # every style unusable: what to fix, not "add images" where they are (a photographer's trial)
    write_json(folders.styles / "mosaic.json", {"strength": 5})
    (folders.styles / "waves.png").write_bytes(b"")
    result = stylefold("doctor", "--config", str(folders.config()))
    [line] = [line for line in result.stdout.splitlines() if line.startswith("FAIL styles")]
    assert line.startswith(f"FAIL styles: no usable style in {folders.styles}; fix or remove: ")
    assert "mosaic.json: strength" in line and "waves.png" in line, line
    assert "add images" not in line, line
    for name in ("mosaic.json", "mosaic.jpg", "waves.png"):
        (folders.styles / name).unlink()
    result = stylefold("doctor", "--config", str(folders.config()))
    assert f"FAIL styles: no style in {folders.styles}; add images (e.g." in result.stdout


def test_run_refuses_bad_configuration_with_the_setting_named(folders: Folders) -> None:
    config = str(folders.config(settle_seconds=-1))
    result = stylefold("run", "--config", config, "--log-format", "json")
    assert result.returncode == 78  # EX_CONFIG: systemd does not restart it
    assert "settle_seconds" in result.stderr
    # A log shipper that reads the JSON log sees it too (found by an operator's trial).
    [line] = [json.loads(text) for text in result.stdout.splitlines()]
    assert line["event"] == "daemon.config_error" and line["exit_code"] == 78
    assert "settle_seconds" in line["error"] and line["level"] == "error"


def test_run_exits_as_misconfigured_when_no_worker_can_load(
    folders: Folders, tmp_path: Path
) -> None:
    """A device this machine lacks, or a weights file that does not load, is the settings'
    fault: exit 78, so systemd does not restart it five times over the same error (an
    operator's trial: "cuda:7" on a host without it exited 1)."""
    broken = tmp_path / "vgg19.bin"
    broken.write_bytes(b"not a weights file" * 100)
    cases = [
        ({"devices": ["cuda:63"]}, {}, "device 'cuda:63'"),
        ({}, {"STYLEFOLD_WEIGHTS__VGG19": str(broken)}, f"weights file {broken}"),
    ]
    for settings, env, reason in cases:
        config = str(folders.config(**settings))
        result = stylefold("run", "--config", config, "--log-format", "json", env=env)
        assert result.returncode == 78, (settings, result.stdout[-2000:])
        [failed] = [
            line
            for line in map(json.loads, result.stdout.splitlines())
            if line["event"] == "daemon.start_failed"
        ]
        assert failed["error"].startswith("no worker could start:") and reason in failed["error"]


def test_a_damaged_state_database_is_named_with_its_fix_by_doctor_status_and_run(
    folders: Folders,
) -> None:
    """Found by an operator's trial: with garbage in stylefold.db the daemon could not start,
    `doctor` said all checks passed and `status` blamed permissions and free space."""
    config = str(folders.config())
    folders.state.mkdir(parents=True, exist_ok=True)
    Store(folders.state).close()  # a real, intact database
    result = stylefold("doctor", "--config", config)
    assert "ok   state database: intact" in result.stdout, result.stdout
    (folders.state / DB_FILE).write_bytes(bytes(range(256)) * 20)

    result = stylefold("doctor", "--config", config)
    assert result.returncode == 1
    assert "FAIL state database:" in result.stdout and "is damaged" in result.stdout
    assert "move stylefold.db, stylefold.db-wal and stylefold.db-shm aside" in result.stdout

    result = stylefold("status", "--config", config, "--json")
    [attention] = StatusReport.model_validate_json(result.stdout).attention
    assert attention.what.startswith("the state database is damaged"), attention
    assert "restore stylefold.db from a backup" in attention.fix

    result = stylefold("run", "--config", config)
    said = result.stdout + result.stderr  # the log (start_failed), wherever it goes
    assert result.returncode == 78  # not restarted by systemd: a restart meets the same file
    assert "is damaged" in said and "restore stylefold.db from a backup" in said
    assert "[Errno" not in said

    # An operator's trial: a file with two pages overwritten still opened; the daemon started
    # on it and crashed with a traceback in its first query, which status told as a matter
    # of permissions and free space.
    (folders.state / DB_FILE).unlink()
    store = Store(folders.state)
    for number in range(400):
        store.create(f"job-{number}", State.CLAIMING, f"photo-{number}.jpg", note="x" * 200)
    store.close()
    whole = (folders.state / DB_FILE).read_bytes()  # its first page holds the schema: it opens
    broken = whole[:4096] + bytes(range(256)) * ((len(whole) - 8192) // 256) + whole[-4096:]
    (folders.state / DB_FILE).write_bytes(broken)
    result = stylefold("status", "--config", config, "--json")
    [attention] = StatusReport.model_validate_json(result.stdout).attention
    assert attention.what.startswith("the state database is damaged"), attention
    result = stylefold("run", "--config", config, "--log-format", "json")
    assert result.returncode == 78, result.stdout[-2000:]
    [failed] = [
        line
        for line in map(json.loads, result.stdout.splitlines())
        if line["event"] == "daemon.start_failed"
    ]
    assert "is damaged" in failed["error"] and "move stylefold.db" in failed["error"]
    assert "\n" not in failed["error"]  # not a line per broken page
    assert "Traceback" not in result.stdout + result.stderr


def test_a_pipe_or_device_named_as_a_file_is_refused_at_once(tmp_path: Path) -> None:
    """Opened for reading, a FIFO waits for a writer forever: `validate`, `render`, `run` and
    `doctor` given one hung until killed. Each now says what it is and exits."""
    pipe = tmp_path / "photo.json"
    os.mkfifo(pipe)
    style = tmp_path / "style.png"
    style.write_bytes(image_bytes(seed=7))
    out = str(tmp_path / "out.jpg")
    cases = [
        (("validate", str(pipe)), 1, "photo.json is a named pipe (FIFO), not a file"),
        (("validate", "/dev/zero"), 1, "zero is a character device, not a file"),
        (("render", str(pipe), str(style), "-o", out), 1, "is a named pipe (FIFO), not a file"),
        (("render", str(style), str(pipe), "-o", out), 1, "photo.json is a named pipe (FIFO)"),
        (("render", str(style), str(style), "--init", "/dev/zero", "-o", out), 1, "device, not"),
        (("run", "--config", str(pipe)), 78, "is a named pipe (FIFO), not a file; point"),
        (("doctor", "--config", str(pipe)), 1, "is a named pipe (FIFO), not a file; point"),
        (("status", "--config", str(tmp_path)), 78, "is a folder; point --config"),
        (("status", "--state", str(tmp_path / "new")), 1, "no daemon has run with it yet"),
    ]
    for args, code, words in cases:
        result = stylefold(*args, timeout=60)
        assert (result.returncode, words in result.stdout + result.stderr) == (code, True), (
            args,
            result.stdout + result.stderr,
        )


def _python_without(tmp_path: Path, *hidden: str) -> tuple[list[str], dict[str, str]]:
    """This checkout's CLI in a real interpreter that has every package of the test venv but
    `hidden`: as a user's install without those extras."""
    site = Path(sysconfig.get_paths()["purelib"])
    farm = tmp_path / "site-packages"
    farm.mkdir()
    for entry in site.iterdir():
        if not entry.name.lower().startswith(hidden) and entry.suffix != ".pth":
            (farm / entry.name).symlink_to(entry)
    return [sys.executable, "-S", "-m", "daemon.cli"], {"PYTHONPATH": f"{REPO}{os.pathsep}{farm}"}


def test_doctor_names_a_missing_extra_that_stops_the_daemon(
    folders: Folders, tmp_path: Path
) -> None:
    """backend = "ray" or metrics_port without its extra: doctor said "all checks passed",
    then run exited 1 for ray, which systemd restarted five times. Both are settings: 78."""
    cli, env = _python_without(tmp_path, "ray", "prometheus_client")
    probe = subprocess.run([*cli[:2], "-c", "import ray"], env={**os.environ, **env}, check=False)
    assert probe.returncode != 0  # really not there
    both = folders.config(backend="ray", metrics_port=9464)
    result = subprocess.run(
        [*cli, "doctor", "--config", str(both)],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = [line for line in result.stdout.splitlines() if "extras:" in line]
    assert line.startswith("FAIL extras: backend 'ray' needs the ray extra"), line
    assert "prometheus-client is not installed: pip install 'stylefold[metrics]'" in line
    for config in (folders.config(backend="ray"), folders.config(metrics_port=9464)):
        run = subprocess.run(
            [*cli, "once", "--config", str(config)],
            capture_output=True, text=True, env={**os.environ, **env}, timeout=300, check=False,
        )  # fmt: skip
        assert run.returncode == 78, run.stdout + run.stderr


def test_doctor_says_at_once_that_nothing_listens_at_the_ray_address(folders: Folders) -> None:
    """doctor waited the whole ray_connect_timeout (the daemon's patience with a cluster that
    may be booting) on an address that refused the connection at once (an operator's trial)."""
    nowhere = f"127.0.0.1:{free_port()}"
    config = folders.config(backend="ray", ray_address=nowhere, ray_connect_timeout=600)
    begun = time.monotonic()
    result = stylefold("doctor", "--config", str(config), timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("FAIL ray:")]
    assert line.startswith(f"FAIL ray: nothing answers at {nowhere} ("), line
    assert "Connection refused" in line and "start the cluster" in line, line
    assert "FAIL ray resources: unknown, the cluster did not answer" in result.stdout
    assert time.monotonic() - begun < 120


def test_doctor_names_a_daemon_watching_the_inbox_with_another_state(
    folders: Folders, daemon_factory: Callable[..., Daemon]
) -> None:
    """doctor said "daemon: not running" while another daemon watched the same inbox with its
    own state folder, and then run exited 78 (a new user's trial)."""
    daemon = daemon_factory()
    other = folders.config(state=str(folders.root / "state-2"))
    result = stylefold("doctor", "--config", str(other))
    assert result.returncode == 1, result.stdout
    assert (
        f"FAIL daemon: another stylefold daemon (pid {daemon.process.pid}, state "
        f"{folders.state}) is watching the inbox {folders.inbox}, so this one would exit 78"
    ) in result.stdout, result.stdout
    daemon.stop()
    result = stylefold("doctor", "--config", str(other))
    assert "ok   daemon: not running" in result.stdout, result.stdout


def test_doctor_fails_an_outbox_gone_while_the_daemon_runs(
    folders: Folders, daemon_factory: Callable[..., Daemon]
) -> None:
    """An operator's trial: the outbox moved away, the daemon waited for it (it does not make
    it again: a share not mounted), and doctor said "ok ... the daemon creates it"."""
    daemon = daemon_factory()
    folders.outbox.rename(folders.root / "outbox.old")
    result = stylefold("doctor", "--config", str(folders.config()))
    assert result.returncode == 1, result.stdout
    told = f"FAIL folders: the outbox {folders.outbox} is missing, and the running daemon waits"
    assert told in result.stdout and "mount it, or make the folder" in result.stdout
    daemon.stop()
    result = stylefold("doctor", "--config", str(folders.config()))
    assert "does not exist yet (the daemon creates it)" in result.stdout, result.stdout


def test_styles_of_a_library_with_only_skipped_images_says_what_to_fix(tmp_path: Path) -> None:
    """shipwreck.jpg beside shipwreck.png: "0 style(s)", the reason, then "add images such
    as starry_night.jpg" to a folder full of them (a new user's trial). The reason stands."""
    library = tmp_path / "styles"
    library.mkdir()
    (library / "shipwreck.jpg").write_bytes(image_bytes(seed=1))
    (library / "shipwreck.png").write_bytes(image_bytes(seed=2))
    result = stylefold("styles", "--styles", str(library))
    assert "both define style 'shipwreck'; remove one" in result.stdout, result.stdout
    assert "add images such as" not in result.stdout
    assert result.returncode == 1, "a library whose every style is skipped is not fine"
    (library / "shipwreck.png").unlink()
    (library / "shipwreck.jpg").unlink()
    empty = stylefold("styles", "--styles", str(library))
    assert "add images such as" in empty.stdout and empty.returncode == 0


def test_styles_and_doctor_show_escapes_in_file_names(folders: Folders) -> None:
    """A status trial: a style file named with ESC [ 2 J cleared the terminal from `styles`'
    and `doctor`'s skipped lines, where `status` showed the same escapes as text."""
    (folders.styles / "e\x1b[2J\u202egpj.png").write_bytes(image_bytes(seed=3))
    for command in ("styles", "doctor"):
        result = stylefold(command, "--config", str(folders.config()))
        assert r"e\x1b[2J\u202egpj.png" in result.stdout, result.stdout
        assert "\x1b" not in result.stdout and "\u202e" not in result.stdout


def test_every_command_s_help_says_what_it_does() -> None:
    """A new user's trial: `status`, `styles` and `doctor --help` gave the usage alone."""
    from daemon.cli import build_parser

    [commands] = [
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    ]
    for name, parser in commands.choices.items():
        assert parser.description, name
        assert "usage:" in parser.format_help(), name  # `render --help` crashed on a "%"
