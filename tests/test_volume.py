"""Volume: a flood of files that each get a report must not hold up the photos beside it.

A volume trial dropped 50,000 empty photos into an inbox folder: once they were reported, the
daemon wrote all their reports in one turn of its loop, each listing the growing outbox folder,
and for minutes no render finished, no pair was claimed and status stood still.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Folders, image_bytes, start_daemon, status_json, wait_for, write_json

from daemon.status_model import InboxItem

pytestmark = pytest.mark.heavy

FLOOD = 800


def _reports(folder: Path) -> int:
    return len(list(folder.glob("*.error.json"))) if folder.is_dir() else 0


def test_a_pair_dropped_during_a_flood_of_reports_is_answered_before_the_flood_is(
    folders: Folders,
) -> None:
    config = folders.config(pair_timeout=1.0, log_format="json")
    daemon = start_daemon(folders, config=config)
    flood = folders.inbox / "flood"
    flood.mkdir()
    for index in range(FLOOD):
        (flood / f"empty{index:05}.jpg").touch()
    answers = folders.outbox / "flood"
    wait_for(lambda: _reports(answers) > 0, 60, "the first reports on the empty photos")
    (folders.inbox / "good.jpg").write_bytes(image_bytes(seed=5))
    write_json(folders.inbox / "good.json", {"style": "mosaic"})
    wait_for(lambda: (folders.outbox / "good.stylised.jpg").exists(), 120, "the good pair")
    # Before: the whole flood was reported in one turn of the loop, the pair claimed after it.
    assert _reports(answers) < FLOOD
    wait_for(lambda: _reports(answers) == FLOOD, 240, "every empty photo reported")
    assert daemon.stop() == 0
    assert daemon.logged("problem.crashed") == 0
    reported = {json.loads(path.read_text())["input"] for path in answers.glob("*.error.json")}
    assert reported == {f"flood/empty{index:05}.jpg" for index in range(FLOOD)}


def test_a_pair_behind_a_full_queue_is_listed_and_takes_its_folder_s_turn(
    folders: Folders,
) -> None:
    """A volume trial: with the queue full of a 3,000-pair import in 100 folders, a photo
    dropped at the top of the inbox waited behind the whole import (over five minutes) and
    `status` did not list it anywhere."""
    config = folders.config(queue_max=1, log_format="json")
    daemon = start_daemon(folders, config=config)
    roll = folders.inbox / "roll"
    roll.mkdir()
    for index in range(3):
        (roll / f"p{index}.jpg").write_bytes(image_bytes(seed=index))
        write_json(roll / f"p{index}.json", {"style": "mosaic", "params": {"iterations": 60}})
    daemon.wait_for_log("job.started")
    (folders.inbox / "mine.jpg").write_bytes(image_bytes(seed=9))
    write_json(folders.inbox / "mine.json", {"style": "mosaic"})

    def ready() -> list[InboxItem]:
        return [item for item in status_json(folders).inbox if item.state == "ready"]

    listed = wait_for(lambda: {i.path for i in ready()} >= {"mine.jpg"} and ready(), 60, "ready")
    # one of the roll runs, one is queued, one waits in the inbox with the photo at the top
    assert [item.path.startswith("roll/") for item in listed] == [False, True]
    assert listed[0].path == "mine.jpg"  # its folder's turn comes first
    wait_for(lambda: daemon.logged("job.done") == 4, 240, "every pair answered")
    assert daemon.stop() == 0
    done = [line["input"] for line in daemon.log_lines() if line.get("event") == "job.done"]
    # Before: first come, first served from the inbox, mine.jpg was answered last.
    assert len(done) == 4 and done[-1] != "mine.jpg" and done.index("mine.jpg") == 2
