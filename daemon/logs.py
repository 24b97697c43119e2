"""Logging: JSON lines for journald and log shippers, a readable console form on a terminal.

`setup_logging` configures structlog and routes the standard `logging` module (watchdog, torch,
...) through the same renderer, so every line of the daemon has one format; under systemd each
line starts with its journald priority (`daemon.journal`). It may be called
again (SIGHUP) to change format or level. Lines about a job carry `job_id`: bind it for a block
with `job_context(job_id)` (context variables, so it follows the code that handles the job).
"""

import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import Processor

from daemon.journal import PriorityFormatter, is_journal
from daemon.visible import visible

LogFormat = Literal["auto", "json", "console"]
# Libraries whose debug output drowns the daemon's own; they log at warning and above only.
QUIET_LIBRARIES: tuple[str, ...] = ("watchdog", "PIL", "urllib3", "filelock", "fsspec")


def _wants_console(log_format: LogFormat, stream: TextIO) -> bool:
    if log_format != "auto":
        return log_format == "console"
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _visible_values(
    logger: object, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Inbox names in a console log, with control characters shown as escapes (JSON escapes
    them itself)."""
    return {key: visible(v) if isinstance(v, str) else v for key, v in event.items()}


def setup_logging(
    log_format: LogFormat = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """JSON on stdout unless it is a terminal (or as configured); `level` is a name such as
    "info"."""
    out = stream if stream is not None else sys.stdout
    numeric = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    if _wants_console(log_format, out):
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        exceptions: list[Processor] = [_visible_values]  # a terminal obeys escapes in names
    else:
        renderer = structlog.processors.JSONRenderer()
        exceptions = [structlog.processors.dict_tracebacks]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *exceptions,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(PriorityFormatter(formatter) if is_journal(out) else formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # Libraries' Python warnings (watchdog's RuntimeWarnings on fast nested mkdirs) become log
    # lines in the same format instead of raw text on stderr among the JSON lines.
    logging.captureWarnings(True)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))


@contextmanager
def job_context(job_id: str, **bound: Any) -> Iterator[None]:
    """Every structlog line inside the block (any module, this thread/task) carries job_id."""
    with structlog.contextvars.bound_contextvars(job_id=job_id, **bound):
        yield
