"""How quickly and how cheaply the daemon reacts, measured from outside on a real daemon process.

For each watch mode (inotify, polling) it starts `stylefold run` on temporary folders, then
- drops pairs one at a time and times from the photo's last byte to the `job.started` log line
  (the settle time is part of that by design; the figure above it is what the daemon adds);
- per job, the time beyond the optimisation itself: claim -> published result, minus the
  engine's render time (decode, encode, queueing, outbox writes, archive);
- idle CPU and memory: user+system CPU of the daemon and of its workers over an idle stretch,
  and resident memory of each.

    python -m bench.daemon_latency [--jobs 5] [--settle 1.0] [--idle 20] [--modes native,polling]

Figures go to stdout (and, with --json FILE, to a file). Quote them with the machine record.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def photo(seed: int, size: tuple[int, int]) -> bytes:
    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((6, 8, 3)) * 255).astype(np.uint8))
    buffer = io.BytesIO()
    small.resize(size, Image.Resampling.BICUBIC).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def _stamp(line: dict[str, Any]) -> float:
    return datetime.datetime.fromisoformat(str(line["timestamp"])).timestamp()


@dataclass
class Run:
    folder: Path
    process: subprocess.Popen[bytes]
    log: Path

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for raw in self.log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue
        return out

    def events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == event]

    def wait_for(self, event: str, count: int, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(event)
            if len(found) >= count:
                return found
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"no {event} x{count}; log tail:\n{self.log.read_text()[-3000:]}")


def _start(root: Path, mode: str, args: argparse.Namespace) -> Run:
    prepare(root, mode, args)
    return launch(root)


def prepare(root: Path, mode: str, args: argparse.Namespace) -> None:
    """Folders, a style and a config for a daemon at `root`; `args` gives settle, poll_interval,
    size and iterations."""
    for name in ("inbox", "outbox", "styles", "state"):
        (root / name).mkdir(parents=True)
    (root / "styles" / "mosaic.jpg").write_bytes(photo(99, (64, 64)))
    config = root / "stylefold.toml"
    config.write_text(
        "\n".join(
            [
                f'inbox = "{root / "inbox"}"',
                f'outbox = "{root / "outbox"}"',
                f'styles = "{root / "styles"}"',
                f'state = "{root / "state"}"',
                'devices = ["cpu"]',
                f'watch_mode = "{mode}"',
                f"settle_seconds = {args.settle}",
                f"poll_interval = {args.poll_interval}",
                "[defaults]",
                f"size = {args.size}",
                f"iterations = {args.iterations}",
                "tolerance = 0.0",
            ]
        )
        + "\n"
    )


def launch(root: Path) -> Run:
    """`stylefold run` on the folders `prepare` made, once it says it is ready."""
    config = root / "stylefold.toml"
    log = root / "daemon.log"
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daemon.cli",
                "run",
                "--config",
                str(config),
                "--log-format",
                "json",
            ],
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    run = Run(root, process, log)
    run.wait_for("daemon.ready", len(run.events("daemon.ready")) + 1, 180)
    return run


def _measure_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"stylefold-bench-{mode}-") as tmp:
        run = _start(Path(tmp), mode, args)
        try:
            time.sleep(2.0)  # let start-up settle before the idle window
            pid = run.process.pid
            workers = _children(pid)
            daemon_cpu, worker_cpu = cpu_seconds(pid), sum(cpu_seconds(w) for w in workers)
            time.sleep(args.idle)
            idle = {
                "seconds": args.idle,
                "daemon_cpu_percent": round(100 * (cpu_seconds(pid) - daemon_cpu) / args.idle, 2),
                "workers_cpu_percent": round(
                    100 * (sum(cpu_seconds(w) for w in workers) - worker_cpu) / args.idle, 2
                ),
                "daemon_rss_mib": round(_rss_bytes(pid) / 2**20, 1),
                "workers_rss_mib": [round(_rss_bytes(w) / 2**20, 1) for w in workers],
            }
            latencies, overheads, renders = [], [], []
            inbox = Path(tmp) / "inbox"
            for index in range(args.jobs):
                (inbox / f"p{index}.json").write_text('{"style": "mosaic"}')
                time.sleep(0.2)
                with (inbox / f"p{index}.jpg").open("wb") as handle:
                    handle.write(photo(index, (args.size * 4 // 3, args.size)))
                last_byte = time.time()
                started = run.wait_for("job.started", index + 1, 120)[-1]
                latencies.append(_stamp(started) - last_byte)
                done = run.wait_for("job.done", index + 1, 600)[-1]
                overheads.append(float(done["total_seconds"]) - float(done["render_seconds"]))
                renders.append(float(done["render_seconds"]))
            peak_rss = round(_rss_bytes(pid) / 2**20, 1)
        finally:
            run.process.terminate()
            run.process.wait(60)
    return {
        "mode": mode,
        "idle": idle,
        "last_byte_to_start_s": _summary(latencies),
        "above_settle_s": _summary([x - args.settle for x in latencies]),
        "overhead_per_job_s": _summary(overheads),
        "render_s": _summary(renders),
        "daemon_rss_after_jobs_mib": peak_rss,
    }


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "n": len(values),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--settle", type=float, default=1.0, help="settle_seconds for the run")
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle measurement")
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--modes", default="native,polling")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    from bench.machine import describe

    results = {"machine": describe("cpu", REPO), "settings": vars(args) | {"json": None}}
    results["modes"] = [_measure_mode(mode, args) for mode in args.modes.split(",")]
    for mode in results["modes"]:
        lat, above = mode["last_byte_to_start_s"], mode["above_settle_s"]
        idle, over = mode["idle"], mode["overhead_per_job_s"]
        print(
            f"[{mode['mode']}] last byte -> job started: median {lat['median']} s "
            f"(min {lat['min']}, max {lat['max']}; settle {args.settle} s, so "
            f"{above['median']} s above it)"
        )
        print(
            f"[{mode['mode']}] idle: daemon {idle['daemon_cpu_percent']} % CPU, "
            f"{idle['daemon_rss_mib']} MiB; workers {idle['workers_cpu_percent']} % CPU, "
            f"{idle['workers_rss_mib']} MiB"
        )
        print(
            f"[{mode['mode']}] per job beyond the optimisation: median {over['median']} s "
            f"(min {over['min']}, max {over['max']}); render median "
            f"{mode['render_s']['median']} s"
        )
        print(
            f"[{mode['mode']}] daemon memory after the jobs: "
            f"{mode['daemon_rss_after_jobs_mib']} MiB"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
