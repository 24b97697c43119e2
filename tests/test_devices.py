"""Device selection, out-of-memory mapping and peak-memory accounting."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from service import devices
from service.errors import DeviceOutOfMemoryError, EngineError


def test_auto_and_cpu_resolve_here() -> None:
    assert devices.resolve("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert devices.resolve(" AUTO ").type in (expected, "mps")


@pytest.mark.parametrize(
    ("name", "message"),
    [("gpu0", "unknown device"), ("cuda:99", "CUDA|only"), ("xla", "unsupported device")],
)
def test_bad_device_names_say_what_to_use(name: str, message: str) -> None:
    with pytest.raises(EngineError, match=message):
        devices.resolve(name)


def test_out_of_memory_becomes_a_device_error() -> None:
    with (
        pytest.raises(DeviceOutOfMemoryError, match="ran out of memory; use a smaller size"),
        devices.out_of_memory_as_error(torch.device("cpu")),
    ):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    with (
        pytest.raises(DeviceOutOfMemoryError),
        devices.out_of_memory_as_error(torch.device("mps")),
    ):
        raise RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)")
    with (  # other errors pass through
        pytest.raises(RuntimeError, match="something else"),
        devices.out_of_memory_as_error(torch.device("cpu")),
    ):
        raise RuntimeError("something else")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-job peak needs Linux")
def test_cpu_peak_memory_sees_a_large_allocation_and_resets() -> None:
    """In a fresh process, as a worker is: in one that has freed large blocks (a test runner
    after renders), glibc can keep them resident and serve the new block from them, so the
    resident high-water mark cannot see it."""
    script = """
import torch
from service import devices
peak = devices.PeakMemory(torch.device("cpu"))
peak.reset()
baseline = peak.peak_bytes()
block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
assert peak.peak_bytes() >= baseline + 60 * 2**20, (peak.peak_bytes(), baseline)
del block
peak.reset()
assert peak.peak_bytes() < baseline + 60 * 2**20, (peak.peak_bytes(), baseline)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_cgroup_s_memory_limit_is_the_room_left_under_the_tightest_one(tmp_path: Path) -> None:
    """A systemd unit's MemoryMax= (cgroup v2), or its slice's, bounds the memory a job can
    take more tightly than MemAvailable, which knows nothing of it."""
    root = tmp_path / "cgroup"
    unit = root / "system.slice" / "stylefold.service"
    unit.mkdir(parents=True)
    proc = tmp_path / "cgroup.txt"
    proc.write_text("0::/system.slice/stylefold.service\n")
    assert devices.cgroup_room(proc, root) is None  # no limit anywhere (files absent)
    (unit / "memory.max").write_text("max\n")
    (unit / "memory.current").write_text("1000\n")
    assert devices.cgroup_room(proc, root) is None
    (unit / "memory.max").write_text(f"{10 * 2**30}\n")
    (unit / "memory.current").write_text(f"{2**30}\n")
    assert devices.cgroup_room(proc, root) == 9 * 2**30
    (root / "system.slice" / "memory.max").write_text(f"{4 * 2**30}\n")  # the slice's is tighter
    (root / "system.slice" / "memory.current").write_text(f"{3 * 2**30}\n")
    assert devices.cgroup_room(proc, root) == 2**30
    proc.write_text("4:memory:/process_api/x\n")  # cgroup v1 only: not known this way
    assert devices.cgroup_room(proc, root) is None
