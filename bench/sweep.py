"""A balance sweep: several content/style pairs rendered at a range of style weights (or
strengths), every output scored by both referees, to calibrate `strength`.

    python -m bench.sweep --size 256 --weights 1 3 10 30 100 1000
    python -m bench.sweep --size 256 --strengths 0.1 0.3 0.5 0.7 0.9 --pairs chelsea:cells

Every render uses stylefold's defaults except the size and the balance (style weight, content
weight 1; or strength), in one process with one engine. A pair is `CONTENT:STYLE`, each a
scikit-image sample name (see `daemon.cli.demo_folder.SAMPLES`) or a file name in
`../shared/data/content` / `../shared/data/styles`. Writes per render a PNG and, into `--out`,
`results.json`, `table.md` and one strip per pair (`<pair>.png`, the renders side by side);
renders already in `--out` are scored again but not redone, so an interrupted sweep resumes.
"""

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from bench import machine
from bench.referee import Referee, Verdict, photo_anchor
from bench.score import Score, Scorer
from daemon.cli.demo_folder import SAMPLES, sample_path
from service.engine import Engine, StyleImage
from service.params import RenderParams
from service.schedule import dimensions

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
DEFAULT_PAIRS = (
    "tubingen:starry_night",
    "golden_gate:shipwreck",
    "chelsea:cells",
    "rocket:hubble",
    "astronaut:retina",
)


def image_path(name: str, folder: str) -> Path:
    """A scikit-image sample by name, else a file of ../shared/data/<folder> (extension
    optional)."""
    if name in SAMPLES:
        return sample_path(name)
    for candidate in (DATA / folder / name, *sorted((DATA / folder).glob(f"{name}.*"))):
        if candidate.is_file():
            return candidate
    raise SystemExit(f"sweep: no sample or file named {name!r} in {DATA / folder}")


@dataclass(frozen=True)
class Point:
    pair: str
    setting: str  # "style_weight=10" or "strength=0.5"
    iterations: int
    cpu_s: float
    verdict: Verdict
    score: Score

    def as_dict(self) -> dict[str, object]:
        return {
            "pair": self.pair,
            "setting": self.setting,
            "iterations": self.iterations,
            "cpu_s": self.cpu_s,
            "referee": self.verdict.as_dict(),
            "loss_referee": self.score.as_dict(),
        }


def settings(args: argparse.Namespace) -> list[tuple[str, dict[str, float]]]:
    if args.strengths:
        return [(f"strength={s:g}", {"strength": s}) for s in args.strengths]
    return [(f"style_weight={w:g}", {"style_weight": w}) for w in args.weights]


def side_by_side(pictures: list[Image.Image], target: Path, gap: int = 4) -> None:
    """Pictures in one row on white, `gap` pixels apart, for looking at."""
    height = max(p.height for p in pictures)
    width = sum(p.width for p in pictures) + gap * (len(pictures) - 1)
    canvas = Image.new("RGB", (width, height), "white")
    x = 0
    for picture in pictures:
        canvas.paste(picture, (x, 0))
        x += picture.width + gap
    canvas.save(target, quality=90)


def strip(paths: list[Path], target: Path, height: int = 160) -> None:
    """The renders of one pair side by side, each scaled to `height`."""
    images: list[Image.Image] = []
    for path in paths:
        with Image.open(path) as image:
            images.append(
                image.convert("RGB").resize(
                    (round(image.width * height / image.height), height),
                    Image.Resampling.LANCZOS,
                )
            )
    side_by_side(images, target)


def table(points: list[Point], photo: dict[str, Verdict]) -> str:
    lines = [
        "| pair | setting | iterations | CPU s | content (referee) | style (referee) | "
        "content loss | style loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for pair, verdict in photo.items():
        lines.append(
            f"| {pair} | the photo itself | 0 | – | {verdict.content:.3f} | {verdict.style:.3f} "
            "| 0 | – |"
        )
    for p in points:
        lines.append(
            f"| {p.pair} | {p.setting} | {p.iterations} | {p.cpu_s:.0f} | "
            f"{p.verdict.content:.3f} | {p.verdict.style:.3f} | {p.score.content:.4g} | "
            f"{p.score.style:.4g} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=list(DEFAULT_PAIRS), metavar="C:S")
    parser.add_argument("--size", type=int, default=256)
    balance = parser.add_mutually_exclusive_group()
    balance.add_argument("--weights", type=float, nargs="+", default=[1, 3, 10, 30, 100, 1000])
    balance.add_argument("--strengths", type=float, nargs="+")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    out: Path = args.out or machine.results_folder(REPO, "sweep")
    out.mkdir(parents=True, exist_ok=True)
    info = machine.describe(args.device, REPO)
    print(f"machine: {json.dumps(info)}", flush=True)
    engine = Engine(device=args.device)
    points: list[Point] = []
    photo: dict[str, Verdict] = {}
    for pair in args.pairs:
        content_name, style_name = pair.split(":")
        content = Image.open(image_path(content_name, "content")).convert("RGB")
        style = Image.open(image_path(style_name, "styles")).convert("RGB")
        referee, scorer = Referee(content, style), Scorer(content, style)
        photo[pair] = photo_anchor(referee, dimensions(*content.size, args.size))
        paths = []
        for setting, values in settings(args):
            path = out / f"{content_name}-{style_name}-{setting.replace('=', '_')}.png"
            record = path.with_suffix(".json")
            if not record.exists():
                params = RenderParams.model_validate({"size": args.size, **values})
                began = time.process_time()
                result = engine.render(content, [StyleImage(style)], params)
                result.image.save(path)
                cpu_s = time.process_time() - began
                record.write_text(json.dumps({"iterations": result.iterations, "cpu_s": cpu_s}))
            done = json.loads(record.read_text())
            with Image.open(path) as image:
                point = Point(
                    pair, setting, done["iterations"], done["cpu_s"],
                    referee.judge(image), scorer.score(image),
                )  # fmt: skip
            print(table([point], {}).splitlines()[-1], flush=True)
            points.append(point)
            paths.append(path)
        strip(paths, out / f"{content_name}-{style_name}.png")
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results = {"machine": info, "size": args.size, "points": [p.as_dict() for p in points],
               "photo": {k: v.as_dict() for k, v in photo.items()}}  # fmt: skip
    machine.publish(out, table(points, photo), results)


if __name__ == "__main__":
    main()
