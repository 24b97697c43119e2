"""How photo-sync tools write into the inbox, reproduced against one real daemon.

Each pattern writes a photo and its sidecar into its own inbox subfolder, slowly enough that the
temporary or growing file lives longer than `settle_seconds`, and must end in exactly one job,
on the complete file (the manifest's input hash is the whole file's hash), with no error report
and no job for a temporary or metadata file. rclone and rsync are the real binaries (throttled
with --bwlimit); Syncthing, the Nextcloud client, newer rclone's `.partial` names, SMB/scp and
macOS Finder are imitated write for write: their write patterns are documented. Real Syncthing
instances run in tests/test_syncthing.py; slow and repeated rsync/rclone copies in
tests/test_sync_resend.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import Daemon, Folders, make_folders, start_daemon, wait_for
from PIL import Image

SETTLE = 1.5  # seconds; every imitated pause below is shorter, every transfer longer
CHUNK_PAUSE = 0.4
SIDECAR = {"style": "mosaic", "params": {"size": 32, "iterations": 2, "tolerance": 0.0}}
OLD_MTIME = time.time() - 86400  # sync tools set the sender's (older) mtime before the rename


def _photo(seed: int) -> bytes:
    """A noisy JPEG of about 300 kB: big enough that a throttled copy takes seconds."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(480, 480, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _sidecar() -> bytes:
    return json.dumps(SIDECAR).encode()


def _write_slowly(path: Path, data: bytes, pieces: int = 8) -> None:
    """Append `data` in pieces with pauses shorter than the settle time (a live transfer)."""
    step = -(-len(data) // pieces)
    with path.open("wb") as handle:
        for start in range(0, len(data), step):
            handle.write(data[start : start + step])
            handle.flush()
            time.sleep(CHUNK_PAUSE)


def _via_temporary(folder: Path, name: str, temporary: str, data: bytes) -> None:
    """Write under a temporary name, set the sender's mtime, rename into place."""
    tmp = folder / temporary
    _write_slowly(tmp, data)
    os.utime(tmp, (OLD_MTIME, OLD_MTIME))
    tmp.rename(folder / name)


def syncthing(folder: Path, photo: bytes) -> None:
    _via_temporary(folder, "photo.json", ".syncthing.photo.json.tmp", _sidecar())
    _via_temporary(folder, "photo.jpg", ".syncthing.photo.jpg.tmp", photo)


def nextcloud(folder: Path, photo: bytes) -> None:
    _via_temporary(folder, "photo.jpg", ".photo.jpg.~3f9a1c07", photo)
    _via_temporary(folder, "photo.json", ".photo.json.~b04e22d1", _sidecar())


def rclone_partial(folder: Path, photo: bytes) -> None:
    """rclone 1.63+ (the packaged binary may be older and write the final name directly)."""
    _via_temporary(folder, "photo.json", "photo.json.5e0c9a11.partial", _sidecar())
    _via_temporary(folder, "photo.jpg", "photo.jpg.a1b2c3d4.partial", photo)


def _source(folder: Path, photo: bytes) -> Path:
    source = folder.parent.parent / "sources" / folder.name
    source.mkdir(parents=True)
    (source / "photo.jpg").write_bytes(photo)
    (source / "photo.json").write_bytes(_sidecar())
    return source


def rclone(folder: Path, photo: bytes) -> None:
    source = _source(folder, photo)
    subprocess.run(
        ["rclone", "copy", "--config", "/dev/null", "--bwlimit", "100k", str(source), str(folder)],
        check=True,
        capture_output=True,
        timeout=60,
    )


def rsync(folder: Path, photo: bytes) -> None:
    source = _source(folder, photo)
    subprocess.run(
        ["rsync", "-a", "--bwlimit=100", f"{source}/", f"{folder}/"],
        check=True,
        capture_output=True,
        timeout=60,
    )


def smb_copy(folder: Path, photo: bytes) -> None:
    """Plain SMB, scp, sftp: the final name appears at once and grows."""
    _write_slowly(folder / "photo.jpg", photo)
    _write_slowly(folder / "photo.json", _sidecar(), pieces=2)


APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00" + b"Mac OS X        " + bytes(4072)


def macos_smb(folder: Path, photo: bytes) -> None:
    """Finder over SMB: `._` AppleDouble companions and .DS_Store beside the growing copy."""
    (folder / "._photo.jpg").write_bytes(APPLEDOUBLE)
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(2048))
    _write_slowly(folder / "photo.jpg", photo)
    (folder / "._photo.json").write_bytes(APPLEDOUBLE)
    _write_slowly(folder / "photo.json", _sidecar(), pieces=2)


@dataclass(frozen=True)
class Pattern:
    name: str
    transfer: Callable[[Path, bytes], None]
    binary: str | None = None


PATTERNS = (
    Pattern("syncthing", syncthing),
    Pattern("nextcloud", nextcloud),
    Pattern("rclone", rclone, "rclone"),
    Pattern("rclone_partial", rclone_partial),
    Pattern("rsync", rsync, "rsync"),
    Pattern("smb", smb_copy),
    Pattern("macos", macos_smb),
)
AVAILABLE = [p for p in PATTERNS if p.binary is None or shutil.which(p.binary)]


class Sampler:
    """Lists the inbox subfolders every few milliseconds while the transfers run, to show that
    each incomplete photo really was visible for longer than the settle time."""

    def __init__(self, folders: dict[str, Path], sizes: dict[str, int]) -> None:
        self._folders = folders
        self._sizes = sizes
        self.incomplete: dict[str, list[tuple[float, str, int]]] = {name: [] for name in folders}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            now = time.monotonic()
            for name, folder in self._folders.items():
                with contextlib.suppress(OSError):
                    for entry in os.scandir(folder):
                        if "photo.jpg" not in entry.name or entry.name.startswith("._"):
                            continue
                        size = entry.stat().st_size
                        if entry.name != "photo.jpg" or size < self._sizes[name]:
                            self.incomplete[name].append((now, entry.name, size))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def visible_seconds(self, name: str) -> float:
        seen = self.incomplete[name]
        return seen[-1][0] - seen[0][0] if seen else 0.0


@dataclass
class Outcome:
    photo_sha256: str
    incomplete_seconds: float
    incomplete_names: set[str]
    manifests: list[dict[str, Any]]
    errors: list[Path]
    outbox_files: list[str]
    inbox_files: list[str]
    claims: list[dict[str, Any]]
    transfer_error: BaseException | None


@dataclass
class Run:
    folders: Folders
    daemon: Daemon
    outcomes: dict[str, Outcome]
    log: list[dict[str, Any]]


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _finished(folder: Path) -> bool:
    return any(p.name.endswith((".manifest.json", ".error.json")) for p in folder.glob("*"))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    folders = make_folders(tmp_path_factory.mktemp("sync"))
    daemon = start_daemon(folders, config=folders.config(settle_seconds=SETTLE))
    photos = {p.name: _photo(seed) for seed, p in enumerate(AVAILABLE)}
    errors: dict[str, BaseException] = {}

    for pattern in AVAILABLE:
        (folders.inbox / pattern.name).mkdir()

    def transfer(pattern: Pattern) -> None:
        folder = folders.inbox / pattern.name
        try:
            pattern.transfer(folder, photos[pattern.name])
        except BaseException as exc:  # reported by that pattern's test
            errors[pattern.name] = exc

    threads = [threading.Thread(target=transfer, args=(p,)) for p in AVAILABLE]
    subfolders = {p.name: folders.inbox / p.name for p in AVAILABLE}
    sampler = Sampler(subfolders, {name: len(photo) for name, photo in photos.items()})
    try:
        with sampler:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
        wait_for(
            lambda: all(
                _finished(folders.outbox / p.name) for p in AVAILABLE if p.name not in errors
            ),
            timeout=60,
            what="a result or error report in every outbox subfolder",
        )
        time.sleep(SETTLE + 1.5)  # a second (wrong) job would have been claimed by now
        log = daemon.log_lines()
        outcomes = {}
        for pattern in AVAILABLE:
            out = folders.outbox / pattern.name
            outcomes[pattern.name] = Outcome(
                photo_sha256=hashlib.sha256(photos[pattern.name]).hexdigest(),
                incomplete_seconds=sampler.visible_seconds(pattern.name),
                incomplete_names={seen[1] for seen in sampler.incomplete[pattern.name]},
                manifests=[json.loads(p.read_text()) for p in out.glob("*.manifest.json")],
                errors=sorted(out.glob("*.error.json")),
                outbox_files=_files(out),
                inbox_files=_files(folders.inbox / pattern.name),
                claims=[
                    line
                    for line in log
                    if line.get("event") == "job.claimed"
                    and str(line.get("input", "")).startswith(f"{pattern.name}/")
                ],
                transfer_error=errors.get(pattern.name),
            )
        yield Run(folders, daemon, outcomes, log)
    finally:
        assert daemon.stop() == 0


@pytest.mark.parametrize("pattern", [p.name for p in PATTERNS])
def test_exactly_one_job_on_the_complete_file(run: Run, pattern: str) -> None:
    binary = next(p.binary for p in PATTERNS if p.name == pattern)
    if pattern not in run.outcomes:
        pytest.skip(f"{binary} is not installed (Debian package {binary}; .ci/run installs it)")
    outcome = run.outcomes[pattern]
    assert outcome.transfer_error is None, (
        f"the {pattern} transfer failed: {outcome.transfer_error}"
    )
    # The scenario mattered: an incomplete photo sat in the inbox longer than the settle time.
    assert outcome.incomplete_seconds > SETTLE, (
        outcome.incomplete_seconds,
        outcome.incomplete_names,
    )
    assert outcome.errors == [], [p.read_text() for p in outcome.errors]
    assert len(outcome.claims) == 1, outcome.claims
    assert outcome.claims[0]["input"] == f"{pattern}/photo.jpg"
    assert len(outcome.manifests) == 1, outcome.outbox_files
    assert outcome.manifests[0]["input"]["sha256"] == outcome.photo_sha256
    assert outcome.outbox_files == ["photo.log", "photo.manifest.json", "photo.stylised.jpg"]


def test_no_temporary_or_metadata_file_made_a_job_or_a_report(run: Run) -> None:
    claimed = sorted(
        str(line.get("input")) for line in run.log if line.get("event") == "job.claimed"
    )
    assert claimed == sorted(f"{name}/photo.jpg" for name in run.outcomes)
    reports = [
        line for line in run.log if line.get("event") in {"problem.reported", "job.rejected"}
    ]
    assert reports == []
    assert list(run.folders.outbox.rglob("*.error.json")) == []


def test_processed_photos_leave_the_inbox(run: Run) -> None:
    for name, outcome in run.outcomes.items():
        left = [f for f in outcome.inbox_files if not f.startswith("._") and f != ".DS_Store"]
        assert left == [], f"{name}: {left}"


def test_macos_appledouble_companions_go_with_the_photo(run: Run) -> None:
    outcome = run.outcomes["macos"]
    assert "._photo.jpg" not in outcome.inbox_files
    assert "._photo.json" not in outcome.inbox_files
