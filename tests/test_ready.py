"""Pairs ready in the inbox, waiting for room in the queue: claimed with top folders in turns."""

from __future__ import annotations

from pathlib import Path

from daemon.intake.arrival import Arrival
from daemon.jobs.ready import ReadyPairs, top_folder

INBOX = Path("/srv/inbox")


def _pair(rel: str) -> Arrival:
    path = INBOX / rel
    return Arrival(path, path.with_suffix(".json"), path.parent.relative_to(INBOX))


def test_top_folders_take_turns_and_a_folder_emptied_goes_first_again() -> None:
    ready = ReadyPairs()
    for rel in ("roll/a.jpg", "roll/b.jpg", "roll/sub/c.jpg", "mine.jpg", "other/d.jpg"):
        ready.append(_pair(rel))
    order = [arrival.image.relative_to(INBOX).as_posix() for arrival in ready]
    assert order == ["roll/a.jpg", "mine.jpg", "other/d.jpg", "roll/b.jpg", "roll/sub/c.jpg"]
    assert [ready.popleft().image.relative_to(INBOX).as_posix() for _ in range(2)] == order[:2]
    # The top folder had nothing left, so it was forgotten: its new pair goes before the
    # roll, served already, after the older waiting folder.
    ready.append(_pair("mine2.jpg"))
    taken = [ready.popleft().image.relative_to(INBOX).as_posix() for _ in range(len(ready))]
    assert taken == ["other/d.jpg", "mine2.jpg", "roll/b.jpg", "roll/sub/c.jpg"]
    assert not ready


def test_a_pair_put_back_is_first_again_and_status_lists_them_in_that_order() -> None:
    ready = ReadyPairs()
    for rel in ("roll/a.jpg", "roll/b.jpg", "mine.jpg"):
        ready.append(_pair(rel))
    first = ready.popleft()
    ready.appendleft(first)  # its claim could not be made now
    items = ready.items(INBOX, queue_full=True)
    assert [item.path for item in items] == ["roll/a.jpg", "mine.jpg", "roll/b.jpg"]
    assert {item.state for item in items} == {"ready"} and "queue_max" in items[0].note
    assert top_folder(Path(".")) == "" and top_folder("roll/sub") == "roll"
