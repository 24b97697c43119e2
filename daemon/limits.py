"""Limits that protect the daemon from an inbox it does not control (files tracked, folder
depth, queue length), and what of the inbox it will not take (links). Reaching one never drops
a photo silently: it is logged once when first reached, listed by `stylefold status` under
"needs attention" while it holds, and logged again when it no longer does."""

from __future__ import annotations

import threading
import time

import structlog

from daemon.status_model import Attention

log = structlog.get_logger("stylefold.limits")


class Limits:
    """The limits reached right now, by setting name (or `links`); thread-safe (the watcher's
    threads and the main loop both report)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reached: dict[str, Attention] = {}

    def reach(
        self, setting: str, what: str, fix: str, where: str | None = None, *, whole: bool = False
    ) -> None:
        """Note that `setting` is reached; only the first call until `clear` logs. `whole`: the
        call knows all of `where` (a full scan's), which then replaces what an earlier call
        named (a re-test: status named folders long fixed, and never the new ones)."""
        with self._lock:
            if (known := self._reached.get(setting)) is not None:
                if whole and known.where != where:
                    self._reached[setting] = known.model_copy(update={"where": where})
                return
            self._reached[setting] = Attention(what=what, where=where, fix=fix, since=time.time())
        log.warning("limit.reached", setting=setting, what=what, where=where, fix=fix)

    def clear(self, setting: str) -> None:
        with self._lock:
            item = self._reached.pop(setting, None)
        if item is not None:
            log.info("limit.cleared", setting=setting, what=item.what)

    def held(self, setting: str) -> Attention | None:
        """What `reach` said of `setting`, while it holds."""
        with self._lock:
            return self._reached.get(setting)

    def attention(self) -> list[Attention]:
        with self._lock:
            return list(self._reached.values())
