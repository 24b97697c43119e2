"""The progress file a person or a script reads while a photo is painted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Folders, image_bytes
from hostile import Decoy
from test_resend import _lifecycle, _outbox, _render, _send, _take

from daemon.jobs import running
from daemon.jobs.outbox import owner
from daemon.jobs.progress import ProgressFile, ProgressReport
from daemon.pool.events import Progress, Started

RESULT_SET_X = ["x.log", "x.manifest.json", "x.stylised.jpg"]


def _event(scale: int, iteration: int, done: float = 0.75) -> Progress:
    return Progress(
        job_id="j1",
        iteration=iteration,
        total=40,
        scale=scale,
        scales=2,
        size=(64, 48),
        losses={"content": 1.5, "style": 0.25},
        elapsed=2.0,
        eta=6.04,
        done=done,
        device="cpu",
    )


def test_progress_counts_scales_from_one_as_the_log_does(tmp_path: Path) -> None:
    file = ProgressFile(
        tmp_path / "photo.progress.json", tmp_path, "j1", "photo.jpg", min_interval=0
    )
    seen = []
    for scale, iteration, done in ((0, 10, 0.1), (1, 30, 0.4567)):
        assert file.update(_event(scale, iteration, done))
        seen.append(json.loads(file.path.read_text()))
    assert [(p["scale"], p["scales"]) for p in seen] == [(1, 2), (2, 2)]
    last = seen[-1]
    assert last["input"] == "photo.jpg" and last["state"] == "running"
    # the percent is the worker's share of work (a fine iteration costs more), not 30/40
    assert (last["iteration"], last["total"], last["percent"]) == (30, 40, 45.7)
    assert last["eta_seconds"] == 6.0 and last["size"] == [64, 48]


def test_progress_is_written_at_most_every_min_interval(tmp_path: Path) -> None:
    file = ProgressFile(
        tmp_path / "photo.progress.json", tmp_path, "j1", "photo.jpg", min_interval=3600
    )
    assert file.update(_event(0, 1))
    assert not file.update(_event(0, 2))
    assert json.loads(file.path.read_text())["iteration"] == 1
    file.started(40, "cpu")  # always written: the job (re)starts
    started = json.loads(file.path.read_text())
    assert (started["iteration"], started["percent"], started["scale"]) == (0, 0.0, None)
    assert ProgressReport.model_validate(started).total == 40


def test_a_progress_file_left_by_a_swapped_folder_goes_once_the_folder_is_back(
    folders: Folders, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attacker's trial toggled an outbox folder and a link to elsewhere while its jobs
    ended: the stop could not remove a progress file through the link, the answer went to a
    numbered folder, and `"state": "running"` stayed in the real folder for good. The real
    lifecycle, database and files; the worker's part is done by hand."""
    monkeypatch.setattr(running, "LEFTOVER_RETRY", 0.0)  # else the next try is 5 s later
    lc = _lifecycle(folders)
    job_id = _take(lc, _send(folders, "ot/x.jpg"))
    assert job_id is not None
    lc.handle(Started(job_id, worker=0, device="cpu"))
    progress = lc.spool.names(lc.jobs[job_id]).progress
    assert owner(progress) == job_id
    decoy = Decoy(folders.root / "decoy")
    folder = folders.outbox / "ot"
    folder.rename(folders.outbox / "ot.real")
    folder.symlink_to(decoy.root, target_is_directory=True)
    _render(lc, job_id)  # its stop meets the link; the answer goes to a numbered folder
    assert progress.parent.is_symlink()
    folder.unlink()
    (folders.outbox / "ot.real").rename(folder)
    assert json.loads(progress.read_text())["state"] == "running"  # as the trial found it
    lc.retry_due()
    assert not progress.exists() and _outbox(folders, "ot") == []
    assert _outbox(folders, "ot-2") == [".stylefold-folder.json", *RESULT_SET_X]
    assert decoy.unchanged()


def test_a_left_progress_file_whose_name_another_job_took_is_left_to_it(
    folders: Folders, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next try removes a stale file only while no other job holds its name."""
    monkeypatch.setattr(running, "LEFTOVER_RETRY", 0.0)
    lc = _lifecycle(folders)
    first = _take(lc, _send(folders, "ot/x.jpg"))
    assert first is not None
    lc.handle(Started(first, worker=0, device="cpu"))
    progress = lc.spool.names(lc.jobs[first]).progress
    folder = folders.outbox / "ot"
    folder.rename(folders.outbox / "ot.real")
    folder.symlink_to(folders.root, target_is_directory=True)
    _render(lc, first)
    folder.unlink()
    (folders.outbox / "ot.real").rename(folder)
    # Before the next try, a person removes the stale file, and another photo of that name is
    # claimed: the plain names are free again (the first's answer went to ot-2), and its run
    # writes its own progress file there.
    progress.unlink()
    arrival = _send(folders, "ot/x.jpg")
    arrival.image.write_bytes(image_bytes(seed=6))  # another photo of that name
    second = _take(lc, arrival)
    assert second is not None and lc.spool.names(lc.jobs[second]).progress == progress
    lc.handle(Started(second, worker=0, device="cpu"))
    lc.retry_due()
    assert owner(progress) == second
