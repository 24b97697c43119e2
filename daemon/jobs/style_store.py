"""The style images claimed jobs use, each stored once: `state/style-store/<sha256>.<ext>`.

A job folder holds hard links to these copies (`spool/<job-id>/style-N.<ext>`): a thousand jobs
with one style share one copy, and editing the library cannot change a job already claimed. A
copy no job links to any more is dropped when the last job folder using it goes, and at
start-up (`StyleStore.collect`). Kept apart from `daemon.jobs.spool`, which moves originals:
this only ever copies, and owns nothing of a job.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from daemon import safefs
from daemon.config import Settings
from daemon.fsutil import atomic_copy, file_sha256, plain_suffix
from daemon.intake import reasons
from daemon.intake.resolve import Rejected
from daemon.safefs import Changed, Identity, NotUsable

STYLE_STORE = "style-store"
INCOMING = ".incoming-"  # a copy being made; left behind only by a crash, removed by collect


class StyleStore:
    """The content-addressed copies under `state/style-store/`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.folder = settings.state / STYLE_STORE
        self.folder.mkdir(parents=True, exist_ok=True)
        self._digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256

    def store(self, path: Path, expect: Identity | None) -> Path:
        """The style image's stored copy. A library style unchanged since it was last stored
        is not read again. A style brought along in the inbox is read like an original: through
        `daemon.safefs`, only if it is still the regular file that settled (`expect`), and
        never over `max_input_bytes` (an attacker's trial: a sparse 300 MiB file became 300 MiB
        of real bytes in the state folder per queued job)."""
        ext = plain_suffix(path.name)
        incoming = self.folder / f"{INCOMING}{secrets.token_hex(6)}{ext}"
        try:
            relative = path.relative_to(self.settings.inbox)
        except ValueError:
            relative = None
        if relative is None:
            result = os.stat(path)
            key = (str(path), result.st_size, result.st_mtime_ns)
            digest = self._digests.get(key)
            if digest is not None and (self.folder / f"{digest}{ext}").exists():
                return self.folder / f"{digest}{ext}"
            atomic_copy(path, incoming)
        else:
            try:
                with safefs.folder(self.settings.inbox, relative.parent) as source:
                    fd = safefs.open_file(source, relative.name, expect)
            except safefs.UnsafePath as exc:
                raise Changed(str(exc)) from None
            except NotUsable as exc:
                raise Rejected(f"style.file: {exc}") from None
            except PermissionError as exc:  # a review: it held every later photo, as a photo did
                told = f"style.file: {relative.name} {reasons.unreadable(exc.strerror)}"
                raise Rejected(told) from None
            try:
                # The pairing checked the size of the style the sidecar named when it settled;
                # a sidecar rewritten in place with its old size and mtime names another.
                size, limit = os.fstat(fd).st_size, self.settings.max_input_bytes
                if size > limit:
                    raise Rejected(f"style image {relative.name} {reasons.too_large(size, limit)}")
                with safefs.folder(self.folder) as store:
                    safefs.copy_open(fd, store, incoming.name)
            finally:
                os.close(fd)
        digest = file_sha256(incoming)  # of the copy: what the job will actually use
        stored = self.folder / f"{digest}{ext}"
        if stored.exists():  # the same bytes: replacing it would leave earlier jobs their own
            incoming.unlink()
        else:
            os.replace(incoming, stored)
        if relative is None:
            self._digests[key] = digest
        return stored

    def collect(self) -> None:
        """Drop stored styles no job links to any more, and copies a crash left unfinished.
        Called between claims (at start-up, after a job folder goes), never during one."""
        with contextlib.suppress(OSError):
            for entry in self.folder.iterdir():
                with contextlib.suppress(OSError):
                    if entry.name.startswith(INCOMING) or entry.stat().st_nlink <= 1:
                        entry.unlink()
