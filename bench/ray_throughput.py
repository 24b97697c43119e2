"""Throughput of the worker-pool backends: `stylefold once` over the same N small jobs with the
local pool (1 and 2 workers) and a local Ray cluster (1 and 2 CPU actors); prints a table.

Jobs per hour count from `daemon.ready` (networks loaded) to the last `job.done`, so start-up
(process spawn, ray.init, actor load) is reported apart from steady-state throughput.

    python bench/ray_throughput.py --jobs 12 --size 64 --iterations 20
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

REPO = Path(__file__).resolve().parent.parent


def _jpeg(size: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray((rng.random((4, 4, 3)) * 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.resize((size, size * 3 // 4), Image.Resampling.BICUBIC).save(buffer, format="JPEG")
    return buffer.getvalue()


def _config(root: Path, subject: dict[str, Any], size: int, iterations: int) -> Path:
    lines = [
        f'inbox = "{root / "inbox"}"',
        f'outbox = "{root / "outbox"}"',
        f'styles = "{root / "styles"}"',
        f'state = "{root / "state"}"',
        'devices = ["cpu"]',
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


def run_subject(subject: dict[str, Any], jobs: int, size: int, iterations: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="stylefold-bench-") as tmp:
        root = Path(tmp)
        for name in ("inbox", "outbox", "styles", "state"):
            (root / name).mkdir()
        (root / "styles" / "mosaic.jpg").write_bytes(_jpeg(size, 999))
        for index in range(jobs):
            (root / "inbox" / f"p{index:03d}.jpg").write_bytes(_jpeg(size, index))
            (root / "inbox" / f"p{index:03d}.json").write_text('{"style": "mosaic"}')
        config = _config(root, subject, size, iterations)
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
        render = sum(float(x.get("render_seconds") or 0.0) for x in done)
        return {
            "startup_s": ready[0] - began,
            "span_s": span,
            "jobs_per_hour": jobs / span * 3600,
            "render_s_per_job": render / jobs,
            "overhead_s_per_job": float(np.mean([x["overhead_seconds"] for x in done])),
        }


SUBJECTS: list[tuple[str, dict[str, Any]]] = [
    ("local, 1 worker", {"backend": "local", "workers_per_device": 1}),
    ("local, 2 workers", {"backend": "local", "workers_per_device": 2}),
    ("ray, 1 actor", {"backend": "ray", "ray_address": "local", "ray_cpu_actors": 1}),
    ("ray, 2 actors", {"backend": "ray", "ray_address": "local", "ray_cpu_actors": 2}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()
    print(f"{args.jobs} jobs, {args.size} px, {args.iterations} iterations, CPU only")
    header = f"{'subject':<18} {'start-up s':>10} {'span s':>8} {'jobs/h':>8} "
    print(header + f"{'render s/job':>12} {'overhead s/job':>14}")
    for name, subject in SUBJECTS:
        r = run_subject(subject, args.jobs, args.size, args.iterations)
        print(
            f"{name:<18} {r['startup_s']:>10.1f} {r['span_s']:>8.1f} {r['jobs_per_hour']:>8.0f} "
            f"{r['render_s_per_job']:>12.2f} {r['overhead_s_per_job']:>14.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
