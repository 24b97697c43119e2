"""Daemon throughput: `stylefold once` over the same N queued jobs with one style, for each
pool configuration: batching off and on, workers per device, and (with --ray) a local Ray
cluster; prints a table.

Jobs per hour count from `daemon.ready` (networks loaded) to the last `job.done`, so start-up
(process spawn, ray.init, actor load) is reported apart from steady-state throughput. The
iteration count is fixed (no convergence stop), so every configuration does the same work.

    python -m bench.throughput --jobs 20 --size 512 --iterations 300 --device cuda
    python -m bench.throughput --jobs 12 --size 64 --iterations 20 --ray
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench import machine

REPO = Path(__file__).resolve().parent.parent


def _jpeg(size: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray((rng.random((4, 4, 3)) * 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.resize((size, size * 3 // 4), Image.Resampling.BICUBIC).save(buffer, format="JPEG")
    return buffer.getvalue()


def _config(root: Path, subject: dict[str, Any], size: int, iterations: int, device: str) -> Path:
    lines = [
        f'inbox = "{root / "inbox"}"',
        f'outbox = "{root / "outbox"}"',
        f'styles = "{root / "styles"}"',
        f'state = "{root / "state"}"',
        f"devices = {json.dumps([device])}",
        "settle_seconds = 0.2",
        "poll_interval = 0.2",
        *(f"{key} = {json.dumps(value)}" for key, value in subject.items()),
        "[defaults]",
        f"size = {size}",
        f"iterations = {iterations}",
        "tolerance = 0.0",
    ]
    path = root / "stylefold.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _stamp(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(line["timestamp"])).timestamp()


def run_subject(
    subject: dict[str, Any], jobs: int, size: int, iterations: int, device: str
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="stylefold-bench-") as tmp:
        root = Path(tmp)
        for name in ("inbox", "outbox", "styles", "state"):
            (root / name).mkdir()
        (root / "styles" / "mosaic.jpg").write_bytes(_jpeg(size, 999))
        for index in range(jobs):
            (root / "inbox" / f"p{index:03d}.jpg").write_bytes(_jpeg(size, index))
            (root / "inbox" / f"p{index:03d}.json").write_text('{"style": "mosaic"}')
        config = _config(root, subject, size, iterations, device)
        began = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", "daemon.cli", "once", "--config", str(config),
             "--log-format", "json"],
            cwd=REPO, capture_output=True, text=True, timeout=1800, check=False,
        )  # fmt: skip
        lines = []
        for raw in proc.stdout.splitlines() + proc.stderr.splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
        ready = [_stamp(x) for x in lines if x.get("event") == "daemon.ready"]
        done = [x for x in lines if x.get("event") == "job.done"]
        if proc.returncode != 0 or not ready or len(done) != jobs:
            raise SystemExit(f"{subject}: exit {proc.returncode}, {len(done)}/{jobs} done\n"
                             f"{proc.stderr[-2000:]}")  # fmt: skip
        span = max(_stamp(x) for x in done) - ready[0]
        manifests = [json.loads(p.read_text()) for p in (root / "outbox").glob("*.manifest.json")]
        timings = [m["timings"] for m in manifests]
        # A batch's render time is shared by its jobs; the rest of the worker's time for a job
        # (decoding and encoding) is overhead.
        render = sum(
            t["render_seconds"] / m["batch_size"] for t, m in zip(timings, manifests, strict=True)
        )
        overhead = [t["worker_total_seconds"] - t["render_seconds"] for t in timings]
        return {
            "startup_s": ready[0] - began,
            "span_s": span,
            "jobs_per_hour": jobs / span * 3600,
            "render_s_per_job": render / jobs,
            "overhead_s_per_job": float(np.mean(overhead)),
            "mean_batch": float(np.mean([m["batch_size"] for m in manifests])),
        }


SUBJECTS: list[tuple[str, dict[str, Any]]] = [
    ("1 worker, no batching", {"workers_per_device": 1, "batch_max": 1}),
    ("1 worker, batch_max 4", {"workers_per_device": 1, "batch_max": 4}),
    ("1 worker, batch_max 8", {"workers_per_device": 1, "batch_max": 8}),
    ("2 workers, no batching", {"workers_per_device": 2, "batch_max": 1}),
    ("2 workers, batch_max 4", {"workers_per_device": 2, "batch_max": 4}),
]
RAY_SUBJECTS: list[tuple[str, dict[str, Any]]] = [
    ("ray, 1 actor", {"backend": "ray", "ray_address": "local", "ray_cpu_actors": 1}),
    ("ray, 2 actors", {"backend": "ray", "ray_address": "local", "ray_cpu_actors": 2}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument(
        "--only", nargs="*", help="subjects whose name contains any of these (e.g. 'no batching')"
    )
    parser.add_argument("--ray", action="store_true", help="also the Ray backend (CPU actors)")
    args = parser.parse_args()
    print(json.dumps(machine.describe(args.device, REPO)))
    print(f"{args.jobs} jobs, {args.size} px, {args.iterations} iterations, {args.device}")
    header = f"{'subject':<24} {'start-up s':>10} {'span s':>8} {'jobs/h':>8} "
    print(header + f"{'render s/job':>12} {'overhead s/job':>14} {'mean batch':>10}")
    subjects = SUBJECTS + (RAY_SUBJECTS if args.ray else [])
    if args.only:
        subjects = [s for s in subjects if any(word in s[0] for word in args.only)]
    for name, subject in subjects:
        r = run_subject(subject, args.jobs, args.size, args.iterations, args.device)
        print(
            f"{name:<24} {r['startup_s']:>10.1f} {r['span_s']:>8.1f} {r['jobs_per_hour']:>8.0f} "
            f"{r['render_s_per_job']:>12.2f} {r['overhead_s_per_job']:>14.2f} "
            f"{r['mean_batch']:>10.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
