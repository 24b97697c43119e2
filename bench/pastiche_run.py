"""pastiche as a benchmark subject: its own CLI in a child process, at its defaults.

Only what the comparison needs is set: size, step count, device, a seed and how often it prints
its loss (printing costs nothing, it prints a loss it computed anyway). Everything else (layers,
weights, pooling, L-BFGS with one step per call, style size = content pixel count) is pastiche's
default. On CUDA the CLI runs under `bench.cuda_peak`, which only adds the device's peak memory.
"""

import re
import sys
from dataclasses import dataclass
from pathlib import Path

_ROW = re.compile(r"^(\d+)\s+([0-9.]+)\s+([0-9.eE+-]+|nan|inf)\s*$")


@dataclass(frozen=True)
class Step:
    """One line of pastiche's progress table: its own loss and seconds since its main() began."""

    step: int
    elapsed_s: float
    loss: float


def command(
    content: Path, style: Path, out: Path, *, size: int, iterations: int, device: str
) -> list[str]:
    """The pastiche command line for one run."""
    args = [
        "--device", device,
        "--seed", "0",
        "--size", str(size),
        "--num-steps", str(iterations),
        "--info-step", str(max(1, iterations // 50)),
        "--content", str(content),
        "--styles", str(style),
        "--output", str(out),
    ]  # fmt: skip
    if device.startswith("cuda"):
        return [sys.executable, "-m", "bench.cuda_peak", "pastiche", *args]
    return [sys.executable, "-m", "pastiche", *args]


def parse_log(text: str) -> list[Step]:
    """pastiche's progress rows (`step elapsed loss`), in order."""
    steps = []
    for line in text.splitlines():
        match = _ROW.match(line.strip())
        if match:
            steps.append(Step(int(match[1]), float(match[2]), float(match[3])))
    return steps
