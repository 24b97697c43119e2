"""The progress file a person or a script reads while a photo is painted."""

from __future__ import annotations

import json
from pathlib import Path

from daemon.jobs.progress import ProgressFile, ProgressReport
from daemon.pool.events import Progress


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
