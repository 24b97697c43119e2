"""What Ray writes becomes the daemon's log lines at the level Ray gave them (pure: the lines
below are as a Ray operator's trial logged them when a node's raylet was killed mid-job)."""

from __future__ import annotations

import logging

from daemon.pool.ray_process import output_level, output_levels

CRASH = [
    "(RenderActor pid=25763) [2026-12-05 07:26:36,521 C 25763 25788] core_worker.cc:515:  An "
    "unexpected system state has occurred. You have likely discovered a bug in Ray.",
    "(RenderActor pid=25763) *** StackTrace Information ***",
    "(RenderActor pid=25763) /lib/x86_64-linux-gnu/libc.so.6(+0x891f5) [0x7f0048ca71f5]",
    "(RenderActor pid=25763)",
]


def _levels(lines: list[str]) -> list[int]:
    return [level for _, level in output_levels(lines)]


def test_a_crash_and_its_stack_trace_are_critical_not_info() -> None:
    """The failed check (C) came in at info behind the actor's prefix, and so did each frame of
    its stack trace, invisible to `journalctl -p warning`."""
    assert _levels(CRASH) == [logging.CRITICAL] * 4


def test_levels_of_the_driver_and_of_actors() -> None:
    warning = "2026-12-05 07:12:53,879\tWARNING dataclient.py:402 -- Encountered connection issues"
    assert output_level(warning) == logging.WARNING
    assert output_level("(RenderActor pid=7) " + warning) == logging.WARNING
    assert output_level("[2026-12-05 07:00:00,000 E 1 2] raylet.cc:1: gone") == logging.ERROR
    assert output_level("[2026-12-05 07:00:00,000 I 1 2] raylet.cc:1: ok") == logging.INFO
    assert output_level("SIGTERM handler is not set because ...") == logging.INFO
    # A plain line after a warning, or after an error of another source, stays info.
    after = output_level("Log channel is reconnecting.", ("", logging.WARNING))
    assert after == logging.INFO
    other = output_level("(RenderActor pid=8) frame", ("(RenderActor pid=7)", logging.CRITICAL))
    assert other == logging.INFO
