"""Large prints: coarse-to-fine against a single-scale run to convergence, scored at full size.

    python -m bench.large_prints --size 1024
    python -m bench.large_prints --size 1024 --pair golden_gate:shipwreck --fresh coarse-to-fine

Two subjects at stylefold's defaults (the default strength) and `--size`:

- `single-scale`: `multiscale="off"`, `--reference-tolerance` (default 0.005, a quarter of the
  default's) and an iteration cap of 1000: the reference, as close to converged as a CPU allows;
- `coarse-to-fine`: the defaults, so `service.schedule`'s plan.

Both are rendered in this process with one engine and scored by `bench.referee` at full size,
with the style distance per layer (conv1_2 and conv2_2 are the fine texture). Writes a PNG and a
record per subject, `crops.png` (the same square of each at 100 %, side by side), `table.md` and
`results.json` into `--out`. A subject whose record is already there is scored again, not
redone (the reference at 1024 px is the expensive part), unless named in `--fresh`; each record
keeps the engine version it was made with.
"""

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from bench import machine
from bench.referee import STYLE_LAYERS, Referee, Verdict, photo_anchor
from bench.sweep import image_path, side_by_side
from service.engine import Engine, StyleImage
from service.params import RenderParams
from service.progress import Progress
from service.schedule import dimensions

REPO = Path(__file__).resolve().parents[1]
SUBJECTS = ("single-scale", "coarse-to-fine")
CROP = 256  # side of the square shown at 100 %


@dataclass(frozen=True)
class Record:
    """One render, kept beside its PNG so a later run can score it without redoing it."""

    engine: str
    iterations: int
    stage_iterations: list[int]
    cpu_s: float
    wall_s: float = 0.0  # 0 in records from before it was kept; on a GPU the time that counts


@dataclass(frozen=True)
class Subject:
    name: str
    record: Record
    verdict: Verdict

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, **asdict(self.record), "referee": self.verdict.as_dict()}


def params_of(name: str, args: argparse.Namespace) -> RenderParams:
    if name == "single-scale":
        values: dict[str, object] = {
            "multiscale": "off",
            "tolerance": args.reference_tolerance,
            "iterations": 1000,
        }
    else:
        values = {}
    return RenderParams.model_validate({"size": args.size, **values})


def _kept(args: argparse.Namespace, name: str) -> Path:
    """Where a subject's record lies, beside its PNG."""
    return args.out / f"{name}.json"


def render(
    name: str, args: argparse.Namespace, engine: Engine, content: Image.Image, style: Image.Image
) -> Record:
    """Render one subject, or read its record when it exists and is not to be redone."""
    kept = _kept(args, name)
    if kept.exists() and name not in args.fresh:
        return Record(**json.loads(kept.read_text()))
    began, began_wall = time.process_time(), time.perf_counter()

    def say(progress: Progress) -> None:  # the reference runs for an hour on a CPU
        print(
            f"  {name}: scale {progress.scale + 1}/{progress.scales}, iteration "
            f"{progress.iteration}/{progress.total}, {time.process_time() - began:.0f} CPU s",
            flush=True,
        )

    params = params_of(name, args)
    result = engine.render(content, [StyleImage(style)], params, progress=say, progress_every=50)
    record = Record(
        machine.engine_version(REPO),
        result.iterations,
        result.stage_iterations,
        time.process_time() - began,
        time.perf_counter() - began_wall,
    )
    result.image.save(kept.with_suffix(".png"))
    kept.write_text(json.dumps(asdict(record)))
    return record


def crops(paths: list[Path], centre: tuple[float, float], target: Path) -> None:
    """The same `CROP` square of every output, at 100 %, side by side."""
    pieces = []
    for path in paths:
        with Image.open(path) as image:
            x = round(centre[0] * image.width - CROP / 2)
            y = round(centre[1] * image.height - CROP / 2)
            x, y = max(0, min(x, image.width - CROP)), max(0, min(y, image.height - CROP))
            pieces.append(image.convert("RGB").crop((x, y, x + CROP, y + CROP)))
    side_by_side(pieces, target)


def table(subjects: list[Subject], photo: Verdict, gpu: bool) -> str:
    layers = " | ".join(f"style {name}" for name in STYLE_LAYERS)
    lines = [
        f"| subject | engine | iterations (per scale) | CPU s | wall s | ÷ single-scale | content "
        f"| style | {layers} |",
        "|---|---|---|---|---|---|---|---|" + "---|" * len(STYLE_LAYERS),
    ]
    per_layer = " | ".join(f"{v:.4f}" for v in photo.style_layers)
    lines.append(f"| (the photo) | – | 0 | – | – | – | 0 | {photo.style:.4f} | {per_layer} |")
    lines.extend(row(s, subjects[0].record, gpu) for s in subjects)
    return "\n".join(lines)


def row(subject: Subject, reference: Record, gpu: bool) -> str:
    """One subject's table row; its time is given as a share of the reference's: CPU time on
    a CPU (other load hardly moves it), wall time on a GPU (the CPU mostly waits there)."""
    r, v = subject.record, subject.verdict
    per_layer = " | ".join(f"{x:.4f}" for x in v.style_layers)
    stages = "+".join(str(n) for n in r.stage_iterations)
    share = r.wall_s / reference.wall_s if gpu else r.cpu_s / reference.cpu_s
    return (
        f"| {subject.name} | {r.engine} | {r.iterations} ({stages}) | {r.cpu_s:.0f} | "
        f"{r.wall_s:.1f} | {share:.3f} | {v.content:.4f} | {v.style:.4f} | {per_layer} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", default="tubingen:starry_night", metavar="C:S")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--reference-tolerance", type=float, default=0.005)
    parser.add_argument(
        "--crop", type=float, nargs=2, default=(0.5, 0.5), metavar=("X", "Y"),
        help="centre of the 100 %% crop as fractions of width and height (default 0.5 0.5)",
    )  # fmt: skip
    parser.add_argument(
        "--only", nargs="+", default=list(SUBJECTS), choices=SUBJECTS,
        help="render only these (the others are scored from their records, if any)",
    )  # fmt: skip
    parser.add_argument("--fresh", nargs="*", default=[], choices=SUBJECTS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    args.out = args.out or machine.results_folder(REPO, "large")
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine.describe(args.device, REPO)
    print(f"machine: {json.dumps(info)}", flush=True)
    content_name, style_name = args.pair.split(":")
    content = Image.open(image_path(content_name, "content")).convert("RGB")
    style = Image.open(image_path(style_name, "styles")).convert("RGB")
    referee = Referee(content, style, args.device)
    engine = Engine(device=args.device)
    gpu = engine.device.type == "cuda"
    # The network's load and the device's start-up are no subject's: pay them before timing.
    engine.render(content, [StyleImage(style)], RenderParams(size=64, iterations=2))
    subjects = []
    for name in SUBJECTS:
        if name not in args.only and not _kept(args, name).exists():
            continue
        print(f"[{args.size} px] {name} ...", flush=True)
        record = render(name, args, engine, content, style)
        with Image.open(args.out / f"{name}.png") as image:
            subjects.append(Subject(name, record, referee.judge(image)))
        print(row(subjects[-1], subjects[0].record, gpu), flush=True)
    photo = photo_anchor(referee, dimensions(*content.size, args.size))
    crops([args.out / f"{s.name}.png" for s in subjects], args.crop, args.out / "crops.png")
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results = {"machine": info, "pair": args.pair, "size": args.size,
               "subjects": [s.as_dict() for s in subjects], "photo": photo.as_dict()}  # fmt: skip
    machine.publish(args.out, table(subjects, photo, gpu), results)


if __name__ == "__main__":
    main()
