"""Peak memory of one job at 512, 1024 and 2048 px, on CPU and (when present) CUDA.

    python -m bench.memory [--sizes 512 1024 2048] [--iterations 3] [--device cpu] [--out DIR]

Each size runs `bench.stylefold_run` (one render through the public engine API) in its own
process, so `ru_maxrss` from `os.wait4` is that job's alone. Parameters are stylefold's defaults
except the iteration cap: memory peaks during the first iterations of the final scale (the L-BFGS
history is allocated whole when a scale starts, and every scale gets at least one iteration), so a
few iterations measure what a full job needs in a fraction of its time.
Above 640 px the default coarse-to-fine plan applies, so the scales column says what ran.
It prints a markdown table and writes `table.md`, `results.json` and each run's output and log
under `--out`. See docs/BENCH.md, "Peak memory".
"""

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image

from bench import machine
from bench.compare_pastiche import DATA, DEFAULT_CONTENT, DEFAULT_STYLE, MIB, REPO
from bench.measure import run_measured
from service.params import RenderParams

DEFAULT_SIZES = (512, 1024, 2048)


@dataclass(frozen=True)
class Row:
    device: str
    size: int
    scales: str  # long side of each scale, coarsest first
    output: tuple[int, int]  # (w, h)
    peak_rss_bytes: int  # ru_maxrss of the child: the whole process, imports and weights included
    engine_peak_bytes: int  # RenderResult.peak_memory_bytes: CUDA allocator peak, or job RSS
    wall_s: float


def measure(device: str, size: int, args: argparse.Namespace) -> Row:
    """One job in its own process; the child writes OUT.png and OUT.json (its engine record)."""
    folder = args.out / device.replace(":", "-")
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{size}.png"
    params = RenderParams.model_validate({"size": size, "iterations": args.iterations})
    cmd = [
        sys.executable, "-m", "bench.stylefold_run",
        "--content", str(args.content), "--style", str(args.style),
        "--params", params.model_dump_json(), "--out", str(out), "--device", device,
    ]  # fmt: skip
    measured = run_measured(cmd, folder / f"{size}.log")
    record = json.loads(out.with_suffix(".json").read_text())
    with Image.open(out) as image:
        output = image.size
    return Row(
        device=device,
        size=size,
        scales=" → ".join(str(max(w, h)) for w, h in record["scales"]),
        output=output,
        peak_rss_bytes=measured.peak_rss_bytes,
        engine_peak_bytes=record["engine_peak_memory_bytes"],
        wall_s=measured.wall_s,
    )


def table(rows: list[Row]) -> str:
    head = ["device", "size", "scales", "output WxH", "peak RSS MiB", "engine peak MiB", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r.device, str(r.size), r.scales, f"{r.output[0]}x{r.output[1]}",
            f"{r.peak_rss_bytes / MIB:.0f}", f"{r.engine_peak_bytes / MIB:.0f}", f"{r.wall_s:.1f}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--content", type=Path, default=DEFAULT_CONTENT)
    parser.add_argument("--style", type=Path, default=DEFAULT_STYLE)
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
        help="output long sides in px (default 512 1024 2048)",
    )  # fmt: skip
    parser.add_argument(
        "--iterations", type=int, default=3,
        help="iteration cap per job (default 3; the peak comes in the final scale's first)",
    )  # fmt: skip
    parser.add_argument(
        "--device", action="append", dest="devices",
        help="cpu, cuda or cuda:N; repeat for several (default cpu, and cuda when present)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="results folder (default .bench-out/memory-*)")
    args = parser.parse_args(argv)
    if args.iterations < 1 or min(args.sizes) < 16:
        parser.error("--iterations must be at least 1 and --sizes at least 16 px")
    if args.devices is None:
        args.devices = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    for path in (args.content, args.style):
        if not path.is_file():
            where = f"the benchmark images live in {DATA}, beside the repository; "
            hint = where if path in (DEFAULT_CONTENT, DEFAULT_STYLE) else ""
            parser.error(f"{path} does not exist: {hint}pass --content and --style instead")
    args.content, args.style = args.content.resolve(), args.style.resolve()
    if args.out is None:
        args.out = machine.results_folder(REPO, "memory")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    machines = {device: machine.describe(device, REPO) for device in args.devices}
    print(f"machine: {json.dumps(machines)}", flush=True)
    rows: list[Row] = []
    for device in args.devices:
        for size in sorted(args.sizes):
            print(f"[{device} {size} px] {args.iterations} iterations ...", flush=True)
            rows.append(measure(device, size, args))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    results = {
        "machines": machines,
        "content": str(args.content),
        "style": str(args.style),
        "iterations": args.iterations,
        "rows": [asdict(row) for row in rows],
    }
    machine.publish(args.out, table(rows), results)
    print(f"results in {args.out}")


if __name__ == "__main__":
    main()
