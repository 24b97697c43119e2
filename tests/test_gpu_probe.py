"""`devices = "auto"` on a host with an NVIDIA driver whose CUDA cannot be used: the probe runs a
real child process, on a fake driver tree (STYLEFOLD_TEST_GPU_ROOT), and either the real torch
probe or a child that fails the way a broken CUDA does (STYLEFOLD_TEST_GPU_PROBE)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from daemon.gpu_probe import PROBE_ENV, ROOT_ENV, driver_evidence, probe_devices

# What torch prints when the driver's device nodes are hidden by a sandbox (no DeviceAllow=).
BROKEN_CUDA = (
    "import sys\n"
    "sys.stderr.write('UserWarning: CUDA initialization: Unexpected error from "
    "cudaGetDeviceCount(). Error 304: OS call failed or operation not supported on this OS\\n')\n"
    "print('cpu')\n"
)
CRASHING_PROBE = (
    "import sys\n"
    "sys.stderr.write('ImportError: libcuda.so.1: cannot open shared object file\\n')\n"
    "sys.exit(3)\n"
)


def fake_driver(root: Path, *, proc: bool = True, node: bool = False) -> Path:
    if proc:
        (root / "proc/driver/nvidia/gpus/0000:01:00.0").mkdir(parents=True)
    if node:
        (root / "dev").mkdir(parents=True)
        (root / "dev/nvidia0").write_text("")
    return root


def test_no_driver_answers_cpu_without_running_a_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    monkeypatch.setenv(PROBE_ENV, CRASHING_PROBE)  # would be a problem, if it ran
    probe = probe_devices()
    assert probe.devices == ["cpu"] and probe.problem is None and not probe.fallback


def test_driver_evidence_is_a_registered_gpu_or_a_device_node(tmp_path: Path) -> None:
    assert driver_evidence(str(tmp_path)) is None
    assert driver_evidence(str(fake_driver(tmp_path / "a"))) == "/proc/driver/nvidia/gpus"
    node_only = fake_driver(tmp_path / "b", proc=False, node=True)
    assert driver_evidence(str(node_only)) == "/dev/nvidia0"
    (tmp_path / "c/proc/driver/nvidia/gpus").mkdir(parents=True)  # the module, no GPU
    assert driver_evidence(str(tmp_path / "c")) is None


def test_cuda_unusable_keeps_the_childs_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ROOT_ENV, str(fake_driver(tmp_path, proc=False, node=True)))
    monkeypatch.setenv(PROBE_ENV, BROKEN_CUDA)
    probe = probe_devices()
    assert probe.fallback and probe.devices == ["cpu"]
    assert probe.problem is not None
    assert "torch sees no CUDA device although /dev/nvidia0 shows an NVIDIA driver" in probe.problem
    assert "Error 304: OS call failed" in probe.problem


def test_a_crashing_probe_is_a_problem_with_its_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ROOT_ENV, str(fake_driver(tmp_path)))
    monkeypatch.setenv(PROBE_ENV, CRASHING_PROBE)
    probe = probe_devices()
    assert probe.devices == ["cpu"] and probe.problem is not None
    assert "exited with code 3" in probe.problem
    assert "libcuda.so.1: cannot open shared object file" in probe.problem


def test_usable_cuda_is_no_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ROOT_ENV, str(fake_driver(tmp_path)))
    monkeypatch.setenv(PROBE_ENV, "print('cuda:0 cuda:1')")
    probe = probe_devices()
    assert probe.devices == ["cuda:0", "cuda:1"] and not probe.fallback


def test_a_stop_abandons_a_hanging_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ROOT_ENV, str(fake_driver(tmp_path)))
    monkeypatch.setenv(PROBE_ENV, "import time; time.sleep(60)")
    started = time.monotonic()
    probe = probe_devices(lambda: time.monotonic() - started > 0.5)
    assert time.monotonic() - started < 5
    assert probe.devices == ["cpu"] and probe.problem is None  # nobody will use it


def test_the_real_torch_probe_explains_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No override: the shipped probe, with the real torch, on a host that has no NVIDIA
    driver (so CUDA fails for real) but pretends to have one."""
    if Path("/proc/driver/nvidia/gpus").exists():
        pytest.skip("a real NVIDIA driver is present: CUDA may well work here")
    monkeypatch.setenv(ROOT_ENV, str(fake_driver(tmp_path)))
    monkeypatch.delenv(PROBE_ENV, raising=False)
    probe = probe_devices()
    assert probe.devices == ["cpu"] and probe.problem is not None
    # torch.cuda.init()'s own words, whichever they are on this build.
    assert "stderr: torch.cuda.init(): " in probe.problem, probe.problem
