"""Device selection, out-of-memory mapping and peak-memory accounting."""

import subprocess
import sys

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
