"""The watcher's news observed a budget at a time, over real files and a real Intake."""

import math
import time
from pathlib import Path

from daemon.intake.arrival import Arrival, Problem
from daemon.intake.backlog import Backlog
from daemon.intake.ignore import IgnoreRules
from daemon.intake.pairing import Intake

SPENT = -math.inf  # a budget already spent: one path per call


def backlog_on(inbox: Path, **options: float) -> Backlog:
    return Backlog(Intake(inbox, IgnoreRules(), settle_seconds=0.0, **options))  # type: ignore[arg-type]


def test_a_spent_budget_observes_one_path_a_turn(tmp_path: Path) -> None:
    backlog = backlog_on(tmp_path, pair_timeout=60.0)
    names = [f"p{index}.jpg" for index in range(5)]
    for name in names:
        (tmp_path / name).write_bytes(b"\xff\xd8 image bytes")
        backlog.put(tmp_path / name)
    for seen in range(1, 6):
        assert not backlog.empty
        assert backlog.observe(0.0, SPENT)
        assert len(backlog.intake) == seen
        assert (backlog.poll(0.0, math.inf) is None) == (seen < 5)  # decided once caught up
    assert backlog.empty
    assert not backlog.observe(0.0, SPENT)  # nothing new


def test_news_after_catching_up_waits_for_the_next_turn_not_the_decisions(
    tmp_path: Path,
) -> None:
    """A large photo copied over minutes is a steady stream of events: were decisions held
    while any news waited, no other photo would be answered meanwhile."""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8 image bytes")
    backlog = backlog_on(tmp_path, pair_timeout=60.0)
    backlog.put(photo)
    backlog.observe(0.0, math.inf)
    backlog.put(photo)  # the next event, as the turn decides
    assert not backlog.empty and backlog.poll(0.0, math.inf) is not None


def test_a_photo_is_not_decided_alone_while_its_sidecar_waits_in_the_backlog(
    tmp_path: Path,
) -> None:
    """After a long stop every file's wait for a partner has run out: a photo observed a turn
    before its sidecar would be reported as having none (or rendered with the default)."""
    photo, sidecar = tmp_path / "photo.jpg", tmp_path / "photo.json"
    photo.write_bytes(b"\xff\xd8 image bytes")
    sidecar.write_text('{"style": "a"}')
    time.sleep(0.05)  # older than pair_timeout: no wait left for either
    backlog = backlog_on(tmp_path, pair_timeout=0.01)
    backlog.put(photo)
    for _ in range(20):  # other news first: the same photo's events, say
        backlog.put(photo)
    backlog.put(sidecar)
    events = []
    now = 0.0
    while not backlog.empty:
        backlog.observe(now, SPENT)
        now += 1.0
        events += backlog.poll(now, math.inf) or []
    events += backlog.poll(now + 1.0, math.inf) or []
    assert not [event for event in events if isinstance(event, Problem)]
    assert events == [Arrival(photo, sidecar, Path("."))]


def test_a_full_scan_looks_at_every_tracked_file_again_a_budget_at_a_time(tmp_path: Path) -> None:
    """Files deleted while their events were lost (an inotify overflow) are forgotten by the
    sweep after a full scan, which is no news: decisions go on during it."""
    backlog = backlog_on(tmp_path, pair_timeout=60.0)
    for index in range(4):
        (tmp_path / f"p{index}.jpg").write_bytes(b"\xff\xd8 image bytes")
        backlog.put(tmp_path / f"p{index}.jpg")
    backlog.observe(0.0, math.inf)
    for index in range(3):
        (tmp_path / f"p{index}.jpg").unlink()  # no event
    backlog.scanned()
    assert backlog.observe(1.0, SPENT) is False  # the marker: the sweep begins
    backlog.observe(1.0, SPENT)
    assert len(backlog.intake) == 3  # one re-look a turn
    assert not backlog.empty
    assert backlog.poll(1.0, math.inf) is not None  # decisions go on
    backlog.observe(1.0, math.inf)
    assert len(backlog.intake) == 1 and backlog.empty


def test_a_path_named_by_many_events_is_observed_once(tmp_path: Path) -> None:
    """A re-test: 72,000 writes a second to 2,000 files queued every event, and decisions
    waited minutes after the writes had ended."""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8 image bytes")
    backlog = backlog_on(tmp_path, pair_timeout=60.0)
    for _ in range(10_000):
        backlog.put(photo)
    backlog.observe(0.0, SPENT)  # one path, one turn
    assert backlog.empty and backlog.poll(0.0, math.inf) is not None
