"""The reliability report is written only where asked, merging rows, and says how to rebuild it."""

from __future__ import annotations

import ast
import multiprocessing
import re
from pathlib import Path

from reliability_report import REGENERATE, Collector, previous_rows, write_report

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


def _recorded_scenarios() -> list[re.Pattern[str]]:
    """The scenario names the reliability tests record, as patterns (an f-string's fields match
    anything), and the names of those tests (a failure's row is `FAIL <test>`)."""
    patterns = []
    for source in sorted((REPO / "tests").glob("test_reliability_*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                patterns.append(re.compile(rf"(X?FAIL) {node.name}(\[.*\])?"))
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "record"
                and node.args
            ):
                continue
            name = node.args[0]
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                patterns.append(re.compile(re.escape(name.value)))
            elif isinstance(name, ast.JoinedStr):
                parts = [
                    re.escape(part.value) if isinstance(part, ast.Constant) else ".*"
                    for part in name.values
                ]
                patterns.append(re.compile("".join(parts)))
    return patterns


def test_every_row_of_the_shipped_report_comes_from_a_test_that_still_exists() -> None:
    """Rows of scenarios that did not run are kept from the previous file, so a scenario whose
    test was removed or renamed stayed in docs/RELIABILITY.md as if it still passed (a
    newcomer's reading: "kill -9 between claim and rename", tested by nothing for weeks)."""
    patterns = _recorded_scenarios()
    assert patterns
    shipped = previous_rows((REPO / "docs" / "RELIABILITY.md").read_text())
    stale = [row for row in shipped if not any(p.fullmatch(row) for p in patterns)]
    assert stale == [], f"regenerate the report with `{REGENERATE}` from an empty file"
