"""Shared fixtures: tiny synthetic photos, a style library, and a real daemon process."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from PIL import Image

from daemon.status_model import StatusReport

if TYPE_CHECKING:
    from ray_cluster import RayCluster

REPO = Path(__file__).resolve().parent.parent

# Three test processes (pytest-xdist) share two cores, and each starts daemons whose workers run
# torch: at a thread per core each, torch's threads spin-wait for each other and a render of 3 s
# took over 90 (CI, 2026-12-05). One each, as README tells an operator sharing a machine; a test
# that needs the default sets it back.
os.environ.setdefault("OMP_NUM_THREADS", "1")

CLI = [sys.executable, "-m", "daemon.cli"]  # the `stylefold` command of this checkout
# Small enough that a job takes about a second on 2 cores, large enough for VGG's five poolings.
TINY_PARAMS: dict[str, Any] = {"size": 48, "iterations": 4, "tolerance": 0.0}


def make_image(
    path: Path, size: tuple[int, int] = (64, 48), seed: int = 0, fmt: str | None = None
) -> Path:
    """A smooth random picture (so JPEG keeps it small) written to `path`."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.random((4, 4, 3)) * 255
    image = Image.fromarray(base.astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
    return path


def sample(name: str, size: int = 64) -> Image.Image:
    """A scikit-image sample picture (`skimage.data.<name>`) fitted within size x size, RGB."""
    from skimage import data

    image = Image.fromarray(getattr(data, name)())
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    return image.convert("RGB")


def in_fresh_process(script: str, *args: str, timeout: float = 120) -> str:
    """What `script` prints, run from the repository in a new Python process: its peak memory
    (`ru_maxrss`) is its own, not the test process's."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    ).stdout


def image_bytes(size: tuple[int, int] = (64, 48), seed: int = 0) -> bytes:
    import io

    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.random((4, 4, 3)) * 255
    image = Image.fromarray(base.astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def iso_media(major: bytes, *compatible: bytes) -> bytes:
    """An ISO base media file laid out as phones write their clips (ftyp, wide, mdat, moov),
    whole by its box sizes: what a video named .HEIC looks like to the daemon."""

    def box(kind: bytes, payload: bytes) -> bytes:
        return (8 + len(payload)).to_bytes(4, "big") + kind + payload

    ftyp = box(b"ftyp", major + b"\0\0\0\0" + b"".join(compatible or (major,)))
    moov = box(b"moov", box(b"mvhd", bytes(100)))
    return ftyp + box(b"wide", b"") + box(b"mdat", os.urandom(4096)) + moov


def write_json(path: Path, value: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return path


@pytest.fixture
def tiny_image(tmp_path: Path) -> Callable[..., Path]:
    def factory(name: str = "photo.jpg", **kwargs: Any) -> Path:
        return make_image(tmp_path / name, **kwargs)

    return factory


@dataclass
class Folders:
    root: Path
    inbox: Path
    outbox: Path
    styles: Path
    state: Path

    def config(self, **extra: Any) -> Path:
        """A TOML config with test-sized defaults; `extra` adds or replaces top-level keys."""
        values: dict[str, Any] = {
            "inbox": str(self.inbox),
            "outbox": str(self.outbox),
            "styles": str(self.styles),
            "state": str(self.state),
            "devices": ["cpu"],
            "settle_seconds": 0.4,
            "poll_interval": 0.2,
            "rescan_interval": 30.0,
            "grace_period": 5.0,
            **extra,
        }
        defaults = {**TINY_PARAMS, **values.pop("defaults", {})}
        lines = [f"{key} = {_toml(value)}" for key, value in values.items()]
        lines.append("[defaults]")
        lines += [f"{key} = {_toml(value)}" for key, value in defaults.items()]
        path = self.root / "stylefold.toml"
        path.write_text("\n".join(lines) + "\n")
        return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


@functools.cache
def can_unshare_mounts() -> bool:
    """Whether tests may build a private mount namespace (root and unshare(1)); probed once."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = ["unshare", "--mount", "--propagation", "private", "true"]
    return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0


def mount_tmpfs(path: Path, size: str) -> None:
    """A small tmpfs over `path` (a full or read-only disk on demand), or skip the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    done = subprocess.run(mount, capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


def make_folders(root: Path) -> Folders:
    folders = Folders(root, root / "inbox", root / "outbox", root / "styles", root / "state")
    for path in (folders.inbox, folders.outbox, folders.styles, folders.state):
        path.mkdir(parents=True, exist_ok=True)
    make_image(folders.styles / "mosaic.jpg", size=(48, 48), seed=101)
    make_image(folders.styles / "waves.png", size=(40, 56), seed=202)
    return folders


@pytest.fixture
def folders(tmp_path: Path) -> Folders:
    return make_folders(tmp_path)


@dataclass
class Daemon:
    """A `stylefold run` subprocess; its JSON log lines are collected in `log_path`."""

    folders: Folders
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                lines.append({"event": raw})
        return lines

    def logged(self, event: str) -> int:
        """How many times `event` is in the log so far (to wait for the next one)."""
        return sum(line.get("event") == event for line in self.log_lines())

    def wait_for_log(self, event: str, timeout: float = 60.0, count: int = 1) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in self.log_lines() if line.get("event") == event]
            if len(found) >= count:
                return found[count - 1]
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(
            f"no {event!r} (x{count}) in the daemon log within {timeout} s; "
            f"exit={self.process.poll()}\n{self.log_path.read_text()[-4000:]}"
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(
                f"daemon did not exit on {sig}\n{self.log_path.read_text()[-4000:]}"
            ) from None
        # A model given a value of the wrong type (a str for an enum, through model_copy) is
        # written with a warning to the operator's log, and may be read back wrong.
        text = self.log_path.read_text(errors="replace")
        assert "serializer warnings" not in text, text[text.index("serializer warnings") - 500 :]
        return code


def start_daemon(
    folders: Folders,
    *args: str,
    config: Path | None = None,
    ready: bool = True,
    env: dict[str, str] | None = None,
    command: str = "run",
    launcher: tuple[str, ...] = (),
) -> Daemon:
    """Start `python -m daemon.cli run` (or `once`) and, by default, wait until it is ready;
    `launcher` runs it under another command (setpriv)."""
    config = config or folders.config()
    log_path = folders.root / f"daemon-{time.monotonic_ns()}.log"
    inherited = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    full_env = {**inherited, "PYTHONUNBUFFERED": "1", **(env or {})}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                *launcher,
                *CLI,
                command,
                "--config",
                str(config),
                "--log-format",
                "json",
                "--log-level",
                "debug",
                *args,
            ],
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
    daemon = Daemon(folders, process, log_path, full_env)
    if ready:
        daemon.wait_for_log("daemon.ready", timeout=90)
    return daemon


WITHOUT_OVERRIDE = "-dac_override,-dac_read_search,-fowner"


def as_an_ordinary_user() -> tuple[str, ...]:
    """A launcher that runs a command without the capabilities that override file permissions
    (as root), so that the refusals are the kernel's own, as for the daemon's own user."""
    if os.geteuid() != 0:
        return ()
    return ("setpriv", f"--inh-caps={WITHOUT_OVERRIDE}", f"--bounding-set={WITHOUT_OVERRIDE}")


def started_again_not_given_up(folders: Folders, config: Path) -> None:
    """A daemon started now starts the queued job again: not failed as "interrupted N times"
    by recovery's MAX_STARTS, and no error report."""
    daemon = start_daemon(folders, config=config)
    try:
        daemon.wait_for_log("job.started")
    finally:
        assert daemon.stop() == 0
    assert not daemon.logged("job.failed")
    assert not list(folders.outbox.glob("*.error.json"))


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def daemon_factory(folders: Folders) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def factory(*args: str, **kwargs: Any) -> Daemon:
        daemon = start_daemon(folders, *args, **kwargs)
        started.append(daemon)
        return daemon

    yield factory
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(10)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    """A Ray cluster on 127.0.0.1 for a module of Ray tests (tests/ray_cluster.py): its head
    starts booting when the module first asks, so that its tests without a cluster run
    meanwhile (`RayCluster.up` waits for a node); stopped after the module."""
    from ray_cluster import RayCluster

    ray_cluster = RayCluster.create()
    ray_cluster.start_head(cpus=2)
    try:
        yield ray_cluster
    finally:
        ray_cluster.stop()


# The reliability report (docs/RELIABILITY.md): a session fixture and its session-end hook.
from reliability_report import (  # noqa: E402, F401
    pytest_runtest_logreport,
    pytest_sessionfinish,
    reliability,
)


def status_json(folders: Folders) -> StatusReport:
    """What `stylefold status --json` says of the daemon of `folders`."""
    done = subprocess.run(
        [*CLI, "status", "--state", str(folders.state), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return StatusReport.model_validate_json(done.stdout)
