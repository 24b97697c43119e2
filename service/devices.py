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
# What one job needs at the least per output pixel, above a worker that has loaded its
# network: bench/memory.py measured 2,100-3,000 bytes on CPU between 512 and 2048 px, and
# 1,700-2,000 on CUDA at 2048-4096 px (docs/BENCH.md), before the L-BFGS history (up to 1 GiB)
# has grown. A job that needs more than is left at this rate cannot fit (`refuse_if_too_large`).
LEAST_BYTES_PER_PIXEL = 2_000
# A style image's pixels pass the network without gradients: a re-test measured 2.6 GB at the
# peak of a 512 px render whose style was enlarged to 2048x1638 (style_scale 4), about 500
# bytes per style pixel above the loaded worker.
LEAST_BYTES_PER_STYLE_PIXEL = 500
CGROUP_ROOT = Path("/sys/fs/cgroup")


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
    raise DeviceOutOfMemoryError(f"{device} ran out of memory; {_MEMORY_FIX}")


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
    """The memory a new batch may plan to use: a share of what the device has free now."""
    return BATCH_MEMORY_SHARE * (free_bytes(device) or 0.0)


def free_bytes(device: torch.device) -> float | None:
    """What the device has free now, None where that is not known: on CUDA, counting what
    PyTorch's cache holds but does not use; on CPU, MemAvailable, or what this process's
    cgroup (a systemd unit's MemoryMax=) leaves, if less."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return float(free + cached)
    if device.type != "cpu":
        return None
    known = [room for room in (_mem_available(), cgroup_room()) if room is not None]
    return float(min(known)) if known else None


def _mem_available() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def cgroup_room(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = CGROUP_ROOT
) -> int | None:
    """The memory this process's cgroup (v2) and the cgroups above it let it take still: the
    least of memory.max - memory.current over those with a limit; None without one."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    path = next((line[3:] for line in lines if line.startswith("0::")), None)
    if path is None:
        return None
    folder, room = root / path.lstrip("/"), None
    while folder.is_relative_to(root):
        with contextlib.suppress(OSError, ValueError):
            limit = (folder / "memory.max").read_text().strip()
            if limit != "max":
                left = int(limit) - int((folder / "memory.current").read_text())
                room = left if room is None else min(room, left)
        if folder == root:
            break
        folder = folder.parent
    return room


def refuse_if_too_large(
    width: int, height: int, items: int, device: torch.device, style_pixels: int = 0
) -> None:
    """Raise DeviceOutOfMemoryError, before any allocation, for a render that cannot fit in
    the memory left. On a CPU Linux lends memory it does not have, so a job too large for the
    machine is not refused by its allocator but grows until the OOM killer ends its worker (or
    another process): an attacker's trial, a 50x40 px photo asked at 4096 px, took a worker
    past 22 GB of 24. CUDA's allocator refuses cleanly; it is left to do so. The error is the
    one a real shortage raises, so oom_fallback retries the job smaller. `style_pixels`: the
    largest style image's, as the network sees it (style_scale enlarges it)."""
    if device.type != "cpu" or (free := free_bytes(device)) is None:
        return
    need = LEAST_BYTES_PER_PIXEL * width * height * items
    need += LEAST_BYTES_PER_STYLE_PIXEL * style_pixels
    if need > free:
        photos = f"of {items} photos " if items > 1 else ""
        # Named where it is the larger (style_scale enlarged it): the size asked is not all.
        large = style_pixels > width * height * items
        styles = f" (its style image at {style_pixels / 1e6:.1f} megapixels)" if large else ""
        raise DeviceOutOfMemoryError(
            f"a render {photos}at {width}x{height} px{styles} needs at least "
            f"{need / 2**30:.1f} GiB of memory, and {device} has {max(0.0, free) / 2**30:.1f} "
            f"GiB left; {_MEMORY_FIX}"
        )


_MEMORY_FIX = "use a smaller size, another device, or free memory"


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
