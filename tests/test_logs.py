"""Log setup: JSON lines by default, console on a terminal, levels, job ids, stdlib routing."""

import io
import json
import logging
import os
import pty
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from daemon.logs import job_context, setup_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_by_default_off_a_terminal() -> None:
    stream = io.StringIO()
    setup_logging("auto", "info", stream)
    structlog.get_logger("stylefold.test").info("job queued", queue=3)
    [line] = lines(stream)
    assert line["event"] == "job queued"
    assert line["queue"] == 3
    assert line["level"] == "info"
    assert line["logger"] == "stylefold.test"
    assert line["timestamp"].endswith("Z")


def test_job_id_bound_two_ways() -> None:
    stream = io.StringIO()
    setup_logging("json", "info", stream)
    structlog.get_logger("stylefold.job").bind(job_id="j-1").info("started")
    with job_context("j-2"):
        structlog.get_logger("stylefold.worker").info("iteration", n=10)
    structlog.get_logger("stylefold").info("idle")
    started, iteration, idle = lines(stream)
    assert started["job_id"] == "j-1"
    assert iteration["job_id"] == "j-2"
    assert "job_id" not in idle


def test_level_honoured_and_changeable() -> None:
    stream = io.StringIO()
    setup_logging("json", "warning", stream)
    logger = structlog.get_logger("stylefold")
    logger.info("hidden")
    logger.warning("shown")
    setup_logging("json", "debug", stream)  # a reload (SIGHUP) takes effect on existing loggers
    logger.debug("now shown")
    assert [line["event"] for line in lines(stream)] == ["shown", "now shown"]


def test_stdlib_logging_and_exceptions_in_the_same_format() -> None:
    stream = io.StringIO()
    setup_logging("json", "info", stream)
    logging.getLogger("somelib").error("library says %s", "hello")
    logging.getLogger("watchdog.observers").info("noisy library detail")
    try:
        raise ValueError("boom")
    except ValueError:
        structlog.get_logger("stylefold").exception("job failed")
    library, failure = lines(stream)
    assert library["event"] == "library says hello"
    assert library["level"] == "error"
    assert failure["exception"][0]["exc_type"] == "ValueError"


def test_python_warnings_become_log_lines_in_the_same_format() -> None:
    """Found by a soak trial: watchdog's RuntimeWarnings came out as raw text among the JSON."""
    stream = io.StringIO()
    setup_logging("json", "info", stream)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("Callback with id '1' already exists", RuntimeWarning, stacklevel=1)
    [line] = lines(stream)
    assert "RuntimeWarning: Callback with id '1' already exists" in line["event"]
    assert line["level"] == "warning" and line["logger"] == "py.warnings"


def test_console_on_a_terminal() -> None:
    leader, follower = pty.openpty()
    try:
        with os.fdopen(follower, "w", closefd=False) as terminal:
            setup_logging("auto", "info", terminal)
            structlog.get_logger("stylefold").info("hello console", job_id="j-9")
            terminal.flush()
        output = os.read(leader, 4096).decode()
    finally:
        os.close(leader)
        os.close(follower)
    assert "hello console" in output
    assert "job_id=j-9" in output
    assert not output.lstrip().startswith("{")


def test_a_name_with_terminal_escapes_is_shown_not_obeyed_on_the_console() -> None:
    """An inbox file name is anyone's text: on a terminal, ESC ] 0 ; ... BEL retitles the
    window and ESC [ 2 J clears it (an attacker's trial)."""
    stream = io.StringIO()
    setup_logging("console", "info", stream)
    hostile = "a\x1b]0;PWNED\x07\x1b[2J\u202egpj.exe"
    structlog.get_logger("stylefold").info("job.claimed", input=hostile)
    text = stream.getvalue()
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert r"a\x1b]0;PWNED\x07\x1b[2J\u202egpj.exe" in text


def test_console_forced() -> None:
    stream = io.StringIO()
    setup_logging("console", "info", stream)
    structlog.get_logger("stylefold").info("readable")
    assert "readable" in stream.getvalue()
    assert not stream.getvalue().startswith("{")
