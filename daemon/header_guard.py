"""Parsing an inbox file's header in the daemon's own process, guarded.

Pillow's parsers (some of them C: WebP, HEIF, AVIF) run on whatever the inbox holds, and a
file that stops the process inside one would stop it again at every start: systemd restarts
it, it reads the same file, and the service never comes up. So a mark file is laid down for the
read and removed after it; a mark that survived names a read that never ended, and that file is
not parsed in the daemon again (a worker, a process of its own, may decode it: a crash there is
a failed attempt). Best effort: a full state folder leaves no mark.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

NOT_READ = "a read of its header began before the daemon stopped and never ended"


@contextlib.contextmanager
def guarded_read(mark: Path, identity: str = "") -> Iterator[bool]:
    """Whether this process may parse the file `mark` stands for: not when `mark` holds
    `identity` (the file as it was when a read of it began and never ended). The mark stays
    then, so that no later start reads that file either."""
    try:
        held: str | None = mark.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        held = None
    if held == identity:
        yield False
        return
    with contextlib.suppress(OSError):
        mark.write_text(identity, encoding="utf-8")
    try:
        yield True
    finally:
        with contextlib.suppress(OSError):
            mark.unlink(missing_ok=True)
