"""Device selection and device-specific behaviour (OOM detection, peak memory, fast paths)."""

import contextlib
import resource
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from service.errors import DeviceError, DeviceOutOfMemoryError

# Memory one batch item needs per output pixel (activations kept for the backward pass, their
# gradients, L-BFGS's history of 100 step pairs), and the share of the free memory a batch may
# plan to use. Measured on CPU (bf16 convolutions): a batch of 4 at 512x384 px peaked 2,500 MiB
# above a batch of 1, 4,440 bytes per pixel per item; CUDA is unmeasured (no GPU was lent) and
# gets a wider margin.
BYTES_PER_PIXEL = {"cuda": 6_000, "cpu": 5_000, "mps": 6_000}
BATCH_MEMORY_SHARE = 0.7


def resolve(name: str) -> torch.device:
    """'auto' (CUDA, then MPS, then CPU), 'cpu', 'cuda', 'cuda:N' or 'mps', checked to exist."""
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r}: CUDA is not available here; use cpu or auto")
        index = device.index if device.index is not None else torch.cuda.current_device()
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(
                f"device {name!r}: there are only {count} CUDA device(s) (0-{count - 1})"
            )
        return torch.device("cuda", index)
    if device.type == "mps" and not _mps_available():
        raise DeviceError(f"device {name!r}: MPS is not available here; use cpu or auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unsupported device {name!r}; use auto, cpu, cuda:N or mps")
    return device


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def bf16_is_native(device: torch.device) -> bool:
    """Whether bf16 convolutions run in hardware here. On CPUs without AVX512-BF16 or AMX, bf16
    is emulated and slower than fp32; where it is native (measured on an AMD EPYC with
    AVX512-BF16: VGG-19 forward+backward 1.65-1.7x faster at 256-512 px) it pays off."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
    return False


def prepare(device: torch.device) -> None:
    """Process-wide settings that help on this device."""
    if device.type == "cuda":
        # Input sizes repeat across iterations, so autotuning pays off (neural-style-pt:
        # 40 s -> 23 s on a GTX 1080).
        torch.backends.cudnn.benchmark = True


# How allocators say they ran out, besides torch.OutOfMemoryError: CUDA's older message, and
# the CPU allocator's ("DefaultCPUAllocator: can't allocate memory: you tried to allocate ...").
_OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "cannot allocate memory")


@contextlib.contextmanager
def out_of_memory_as_error(device: torch.device) -> Iterator[None]:
    """Turn the device's own out-of-memory exceptions into DeviceOutOfMemoryError, so that a
    job is retried smaller (oom_fallback), not reported as an internal error."""
    try:
        yield
    except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        said = any(words in str(exc).lower() for words in _OUT_OF_MEMORY)
        if not (said or isinstance(exc, MemoryError | torch.OutOfMemoryError)):
            raise
    else:
        return
    with contextlib.suppress(RuntimeError):  # a cleanup that fails must not hide the error
        let_go_of_failed_graph(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    raise DeviceOutOfMemoryError(
        f"{device} ran out of memory; use a smaller size, another device, or free memory"
    )


def let_go_of_failed_graph(device: torch.device) -> None:
    """After an out-of-memory error inside a backward pass, PyTorch's autograd engine keeps the
    failed pass's graph, with every activation of the forward pass, until the next backward
    pass on that device (pytorch/pytorch#82218): on a CPU 0.5-0.9 GiB after a 768-1024 px
    attempt and 3.5 GiB after 2048 px, enough to make the smaller retry fail too. A trivial
    backward pass lets it go."""
    one = torch.ones(1, device=device, requires_grad=True)
    torch.autograd.grad(one.sum(), [one])


def per_item_bytes(pixels: float, device_type: str) -> float:
    return pixels * BYTES_PER_PIXEL.get(device_type, BYTES_PER_PIXEL["cpu"])


def available_bytes(device: torch.device) -> float:
    """The memory a new batch may plan to use: a share of what the device has free now (on
    CUDA, counting what PyTorch's cache holds but does not use; on CPU, MemAvailable)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return BATCH_MEMORY_SHARE * (free + cached)
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return BATCH_MEMORY_SHARE * int(line.split()[1]) * 1024
    return 0.0


class PeakMemory:
    """Peak memory of one job: CUDA's allocator statistics, or the process's resident high-water
    mark on CPU (reset at the start on Linux; elsewhere it is the process's lifetime peak)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif sys.platform.startswith("linux"):
            with contextlib.suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")

    def peak_bytes(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        if self.device.type == "mps":
            return int(torch.mps.driver_allocated_memory())
        if sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, ValueError):
                for line in Path("/proc/self/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
