"""A record of the machine a benchmark ran on, so that figures are never quoted without it."""

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

import torch


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def engine_version(repo: Path) -> str:
    """The commit, and whether service/ differs from it: the engine may change during a run."""
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--", "service"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} + uncommitted service/ changes" if dirty else head


def _cuda_driver() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip().splitlines()[0]


def describe(device: str, repo: Path) -> dict[str, object]:
    """The facts a reader needs to compare these figures with others."""
    info: dict[str, object] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "stylefold_commit": engine_version(repo),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda_driver"] = _cuda_driver()
        info["cuda_runtime"] = torch.version.cuda
    return info


def results_folder(repo: Path, name: str) -> Path:
    """The default place for a benchmark's results: `.bench-out/<name>-<date>-<time>/`."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return repo / ".bench-out" / f"{name}-{stamp}"


def publish(folder: Path, table: str, results: dict[str, object]) -> None:
    """Print the table and keep it with the full results (`table.md`, `results.json`)."""
    print(f"\n{table}\n")
    (folder / "table.md").write_text(table + "\n")
    (folder / "results.json").write_text(json.dumps(results, indent=1))
