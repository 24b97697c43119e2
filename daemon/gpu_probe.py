"""What `devices = "auto"` finds, asked of a short-lived child process so the daemon itself never
imports torch; and, on a host with an NVIDIA driver, why CUDA cannot be used when it cannot.

A GPU host whose sandbox hides the GPU (no `DeviceAllow=`, no `/dev/nvidia-uvm`, the service
user outside the device group) still runs, on the CPU, fifty times slower. That must never be
silent: the probe keeps the child's stderr (torch's own explanation) for the log, `status` and
`doctor`, and `gpu_required = true` turns it into an exit.

Two environment variables are test hooks, not settings: STYLEFOLD_TEST_GPU_ROOT is prefixed to
the driver paths (/proc/driver/nvidia/gpus, /dev/nvidia*), STYLEFOLD_TEST_GPU_PROBE replaces
the torch probe's Python code, so tests can build a host with a broken driver.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from daemon.config import Settings

log = structlog.get_logger("stylefold.daemon")

PROBE_TIMEOUT = 120.0  # seconds: a cold CUDA initialisation can take a minute
ROOT_ENV = "STYLEFOLD_TEST_GPU_ROOT"
PROBE_ENV = "STYLEFOLD_TEST_GPU_PROBE"
STDERR_KEEP = 2000  # characters of the child's stderr kept (its end: the exception)

# Prints the devices on stdout; when CUDA is not available, torch.cuda.init() raises the reason
# (no driver, no device node, not compiled with CUDA), which goes to stderr.
_TORCH_PROBE = """
import sys
import torch
if torch.cuda.is_available():
    print(" ".join(f"cuda:{i}" for i in range(torch.cuda.device_count())))
    raise SystemExit
try:
    torch.cuda.init()
except Exception as exc:
    print(f"torch.cuda.init(): {type(exc).__name__}: {exc}", file=sys.stderr)
mps = getattr(torch.backends, "mps", None)
print("mps" if mps is not None and mps.is_available() else "cpu")
"""

GPU_FIX = (
    "an NVIDIA driver is loaded but this process cannot use CUDA. Under systemd: keep "
    "DevicePolicy=closed with DeviceAllow=char-nvidia-frontend rw, char-nvidia rw, "
    "char-nvidia-uvm rw and char-nvidia-caps rw in the unit (and no PrivateDevices=yes); load "
    "nvidia and nvidia-uvm at boot (/etc/modules-load.d) so /dev/nvidia-uvm exists "
    "(ExecStartPre=+-/usr/bin/nvidia-modprobe -u -c=0), then restart the unit; where "
    "/dev/nvidia* are not world-accessible, add the service user to the video and render "
    "groups (SupplementaryGroups=video render). Check with `sudo -u stylefold stylefold doctor` "
    "and `ls -l /dev/nvidia*`; a torch without CUDA needs the CUDA build from pytorch.org. "
    'Set devices = ["cpu"] to run on the CPU on purpose'
)


@dataclass(frozen=True)
class DeviceProbe:
    """What "auto" resolved to, and on a driver host without usable CUDA, why."""

    devices: list[str]
    driver: str | None = None  # the evidence of an NVIDIA driver, e.g. "/proc/driver/nvidia/gpus"
    problem: str | None = None  # why CUDA is unusable there (the child's stderr included)

    @property
    def fallback(self) -> bool:
        """A GPU host running on the CPU: what the admin must hear about."""
        return self.problem is not None


def driver_evidence(root: str | None = None) -> str | None:
    """A path showing an NVIDIA driver on this host (a GPU it registered, or a device node),
    None without one. Elsewhere than on Linux there is no such evidence to look for."""
    prefix = Path(root if root is not None else os.environ.get(ROOT_ENV, "/"))
    gpus = prefix / "proc/driver/nvidia/gpus"
    try:
        if any(gpus.iterdir()):
            return "/proc/driver/nvidia/gpus"
    except OSError:
        pass
    nodes = sorted((prefix / "dev").glob("nvidia[0-9]*"))
    return f"/dev/{nodes[0].name}" if nodes else None


def probe_devices(should_stop: Callable[[], bool] = lambda: False) -> DeviceProbe:
    """Every visible CUDA GPU, else MPS, else the CPU. `should_stop` runs about every 0.2 s
    while the child works (the daemon keeps its watchdog fed there) and, returning True,
    abandons the probe (the CPU is answered, nobody will use it)."""
    driver = driver_evidence()
    if sys.platform.startswith("linux") and driver is None:
        return DeviceProbe(["cpu"])
    code = os.environ.get(PROBE_ENV) or _TORCH_PROBE
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    except OSError as exc:
        return _failed(driver, f"the probe could not start ({exc})")
    deadline = time.monotonic() + PROBE_TIMEOUT
    while True:
        try:
            out, err = child.communicate(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            stopping = should_stop()
            if stopping or time.monotonic() > deadline:
                child.kill()
                out, err = child.communicate()
                if stopping:
                    return DeviceProbe(["cpu"], driver)
                return _failed(driver, f"the probe took over {PROBE_TIMEOUT:.0f} s", err)
    devices = out.split()
    if child.returncode != 0:
        return _failed(driver, f"the probe exited with code {child.returncode}", err)
    if driver is not None and not any(d.startswith("cuda") for d in devices):
        return _failed(driver, "torch sees no CUDA device", err, devices or ["cpu"])
    return DeviceProbe(devices or ["cpu"], driver)


def probe_for(settings: Settings, should_stop: Callable[[], bool]) -> DeviceProbe | None:
    """The probe of `devices = "auto"` on local workers (None for any other settings), logged:
    an error with the child's stderr and the fix when a GPU host cannot use CUDA."""
    if settings.backend != "local" or settings.devices != ["auto"]:
        return None
    probe = probe_devices(should_stop)
    if probe.problem is not None:
        log.error(
            "daemon.gpu_unusable",
            problem=probe.problem,
            devices=probe.devices,
            then="exiting (gpu_required)" if settings.gpu_required else "running on the CPU",
            fix=GPU_FIX,
        )
    return probe


def _failed(
    driver: str | None, what: str, stderr: str = "", devices: list[str] | None = None
) -> DeviceProbe:
    text = stderr.strip()[-STDERR_KEEP:]
    problem = f"{what} although {driver} shows an NVIDIA driver" if driver else what
    return DeviceProbe(devices or ["cpu"], driver, problem + (f"; stderr: {text}" if text else ""))
