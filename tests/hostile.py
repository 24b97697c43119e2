"""Shared pieces of the hostile suites: a decoy tree outside the daemon's folders that must stay
byte-for-byte unchanged, and arrivals carrying what settled (as the intake emits them)."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

from conftest import image_bytes

from daemon.app import Daemon
from daemon.config import Settings
from daemon.intake.pairing import Arrival
from daemon.intake.partners import signature_of
from daemon.jobs import handover

SECRET = {"style": "mosaic", "password": "hunter2-outside"}


class Decoy:
    """Files an attacker would like the daemon to read, move or overwrite: a photo and a
    sidecar (so a path-based claim would happily take them) at the top and in `dir/`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "dir").mkdir(parents=True)
        for folder in (root, root / "dir"):
            (folder / "photo.jpg").write_bytes(image_bytes(seed=99))
            (folder / "photo.json").write_text(json.dumps(SECRET))
        (root / "secret.json").write_text(json.dumps(SECRET))
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, tuple[int, bytes]]:
        found = {}
        for path in sorted(self.root.rglob("*")):
            mode = os.lstat(path).st_mode
            data = path.read_bytes() if stat.S_ISREG(mode) else b""
            found[path.relative_to(self.root).as_posix()] = (stat.S_IFMT(mode), data)
        return found

    def unchanged(self) -> bool:
        return self.snapshot() == self.before


def arrival(inbox: Path, image: Path, sidecar: Path | None) -> Arrival:
    """What the intake emits for a settled pair, with the signatures it settled with."""
    seen = {path: signature_of(os.lstat(path)) for path in (image, sidecar) if path is not None}
    return Arrival(image, sidecar, image.parent.relative_to(inbox), None, seen)


def pair(inbox: Path, rel: str, sidecar: object = None, seed: int = 0) -> tuple[Path, Path]:
    image = inbox / rel
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(image_bytes(seed=seed))
    side = image.with_suffix(".json")
    side.write_text(json.dumps(sidecar if sidecar is not None else {"style": "mosaic"}))
    return image, side


def run_once(settings: Settings) -> None:
    """A real daemon in this process (`stylefold once`: it works off the inbox and stops), so
    a test seam set here reaches its spool; pytest's signal handlers are put back after."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        assert Daemon(settings, once=True).run() == 0
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        handover.race_hook = None
