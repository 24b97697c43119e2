"""The reliability report is written only where asked, merging rows, and says how to rebuild it."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from reliability_report import REGENERATE, Collector, write_report

REPO = Path(__file__).resolve().parent.parent


def _header(text: str) -> list[str]:
    lines = text.splitlines()
    return lines[: next(i for i, line in enumerate(lines) if line.startswith("Last run:"))]


def test_rows_merge_and_failures_are_not_carried_over(tmp_path: Path) -> None:
    target = tmp_path / "RELIABILITY.md"
    first = Collector()
    first.record("a scenario", 2, "held a", "1 s")
    write_report(first, target)
    second = Collector()
    second.record("b scenario", 1, "held b")
    second.fail("test_x", "boom")
    write_report(second, target)
    text = target.read_text()
    assert "| a scenario | 2 | held a | pass | 1 s |" in text  # kept from the previous run
    assert "| b scenario | 1 | held b | pass |  |" in text
    assert "| FAIL test_x | 0 | boom | FAIL |  |" in text
    third = Collector()
    third.record("b scenario", 1, "held again")
    write_report(third, target)
    text = target.read_text()
    assert "FAIL test_x" not in text
    assert "| b scenario | 1 | held again | pass |  |" in text


def test_shipped_report_says_how_to_regenerate_it(tmp_path: Path) -> None:
    shipped = (REPO / "docs" / "RELIABILITY.md").read_text()
    assert f"`{REGENERATE}`" in shipped
    generated = tmp_path / "RELIABILITY.md"
    write_report(Collector(), generated)
    assert _header(shipped) == _header(generated.read_text())


def _write_rows(target: Path, prefix: str) -> None:
    for n in range(30):
        rows = Collector()
        rows.record(f"{prefix} {n}", 1, "held")
        write_report(rows, target)


def test_test_processes_writing_at_once_lose_no_row(tmp_path: Path) -> None:
    """pytest-xdist's processes each merge their rows at session end, possibly together."""
    target = tmp_path / "RELIABILITY.md"
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_rows, args=(target, p)) for p in ("a", "b", "c")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    text = target.read_text()
    missing = [f"{p} {n}" for p in "abc" for n in range(30) if f"| {p} {n} | 1 |" not in text]
    assert missing == []
