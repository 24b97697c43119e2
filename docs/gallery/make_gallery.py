"""Reproduce the seed's experiments with stylefold on images that ship with scikit-image.

    python docs/gallery/make_gallery.py                        # everything
    python docs/gallery/make_gallery.py --only ratio --size 192 --out /tmp/gallery

Writes small JPEGs into docs/gallery/ and `figures.md` (iterations, stop reason, time and final
losses of every render, measured on the machine that ran it), and prints each row as it comes.
The experiments follow the seed README (Gatys et al.): the noise image, content only, style
only, the content:style ratio sweep, the iteration sweep, noise versus content initialisation
and a large output (here coarse-to-fine), plus the README's before/after pictures, one
`stylefold render` run through the real command line and the `strength` sweep. Renders made
before `strength` existed pin the style weight they were made with, so they stay reproducible.
"""

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from daemon.cli.demo_folder import sample_path
from service.engine import Engine, RenderResult, StyleImage
from service.params import RenderParams

HERE = Path(__file__).resolve().parent
QUALITY = 85
CONTENT = "chelsea"  # the cat: fur, eyes and whiskers show at once when content is lost
STYLE = "cells"  # the immunohistochemistry slide: strong strokes, a two-colour palette
GROUPS = (
    "render", "hero", "inputs", "references", "ratio", "strength", "iterations", "init", "large",
)  # fmt: skip
STRENGTHS = (0.1, 0.3, 0.5, 0.7, 0.9)
RATIOS = (0.1, 1.0, 10.0, 100.0)  # style weights with content 1: the range where pictures change
# The README's fourth before/after pair is the `stylefold render` example.
RENDER_EXAMPLE = "render_example"
FIGURES = "figures.md"
_ROW = re.compile(r"^\| `([\w.-]+)\.jpg` \|")


def load(name: str) -> Image.Image:
    return Image.open(sample_path(name)).convert("RGB")


@dataclass(frozen=True)
class Render:
    """One picture of the gallery: a render, or an input shown as it is (no styles)."""

    name: str
    caption: str
    content: str
    styles: tuple[tuple[str, float], ...] = ()
    params: dict[str, Any] = field(default_factory=dict)

    def key(self) -> tuple[object, ...]:
        """Renders with equal keys give equal pictures (the engine is deterministic)."""
        return (self.content, self.styles, tuple(sorted(self.params.items())))


@dataclass
class Figure:
    name: str
    caption: str
    result: RenderResult | None = None
    seconds: float = 0.0


def experiments(size: int, hero: int, large: int) -> dict[str, list[Render]]:
    """The seed's experiments as stylefold jobs, grouped as the README shows them. Weights are
    stylefold's (normalised losses, content 1), not the seed's."""
    fixed = {"size": size, "tolerance": 0.0}  # sweeps run every iteration they are given
    noise = {**fixed, "init": "noise", "style_weight": 1e3}
    cat = (CONTENT, ((STYLE, 1.0),))
    shown = {"size": hero}  # the README's first picture: what the defaults give
    return {
        "hero": [
            Render("hero_chelsea", "cells", "chelsea", ((STYLE, 1.0),), shown),
            Render("hero_astronaut", "cells 0.7 + retina 0.3", "astronaut",
                   ((STYLE, 0.7), ("retina", 0.3)), shown),
            Render("hero_coffee", "cells, colours kept", "coffee", ((STYLE, 1.0),),
                   {**shown, "preserve_colors": "luminance"}),
        ],
        "inputs": [
            Render("content", "the content image (chelsea)", CONTENT, params={"size": size}),
            Render("style", "the style image (immunohistochemistry)", STYLE,
                   params={"size": size}),
        ],
        "references": [
            Render("noise", "the noise a noise init starts from", *cat,
                   {**noise, "iterations": 0}),
            Render("content_only", "content loss only, 100 it from noise", *cat,
                   {**noise, "iterations": 100, "style_weight": 0.0}),
            Render("style_only", "style loss only, 100 it from noise", *cat,
                   {**noise, "iterations": 100, "content_weight": 0.0}),
        ],
        "ratio": [
            Render(f"ratio_{weight:g}", f"content:style 1:{weight:g}, 60 it", *cat,
                   {**fixed, "iterations": 60, "style_weight": weight})
            for weight in RATIOS
        ],
        "strength": [
            Render(f"strength_{strength:g}", f"strength {strength:g} (otherwise defaults)",
                   *cat, {"size": size, "strength": strength})
            for strength in STRENGTHS
        ],
        "iterations": [
            Render(f"iterations_{n}", f"{n} it from noise", *cat, {**noise, "iterations": n})
            for n in (10, 25, 50, 100)
        ],
        "init": [
            Render("init_noise", "noise init, 100 it", *cat, {**noise, "iterations": 100}),
            Render("init_content", "content init, 100 it", *cat,
                   {**fixed, "iterations": 100, "style_weight": 1e3, "init": "content"}),
            Render("init_recolored", "recolored content init, 100 it", *cat,
                   {**fixed, "iterations": 100, "style_weight": 1e3}),
        ],
        "large": [
            Render(f"large_{large}", f"{large} px, coarse to fine, 100 it first pass",
                   "motorcycle", (("retina", 1.0),),
                   {"size": large, "iterations": 100, "style_weight": 1e3}),
        ],
    }  # fmt: skip


def save(image: Image.Image, path: Path) -> None:
    image.save(path, "JPEG", quality=QUALITY, optimize=True, progressive=True)


class Gallery:
    """Runs renders once each (the sweeps share some) and keeps their figures."""

    def __init__(self, engine: Engine, out: Path, machine: str, order: Sequence[str]) -> None:
        self.engine = engine
        self.out = out
        self.machine = machine
        self.order = order
        self.figures: list[Figure] = []
        self._done: dict[tuple[object, ...], tuple[Path, RenderResult, float]] = {}

    def render(self, job: Render) -> Figure:
        target = self.out / f"{job.name}.jpg"
        if not job.styles:
            image = load(job.content)
            image.thumbnail((job.params["size"], job.params["size"]), Image.Resampling.LANCZOS)
            save(image, target)
            return self._add(Figure(job.name, job.caption))
        earlier = self._done.get(job.key())
        if earlier is not None:
            path, result, seconds = earlier
            target.write_bytes(path.read_bytes())
            return self._add(Figure(job.name, f"{job.caption} (= {path.stem})", result, seconds))
        styles = [StyleImage(load(name), weight) for name, weight in job.styles]
        started = time.perf_counter()
        result = self.engine.render(load(job.content), styles, RenderParams(**job.params))
        seconds = time.perf_counter() - started
        save(result.image, target)
        self._done[job.key()] = (target, result, seconds)
        return self._add(Figure(job.name, job.caption, result, seconds))

    def render_cli(self, size: int, device: str) -> Figure:
        """`stylefold render` as the README shows it, through the installed command."""
        target = self.out / f"{RENDER_EXAMPLE}.jpg"
        command = [
            "stylefold", "render", str(sample_path("rocket")), str(sample_path("hubble")),
            "-o", str(target), "--size", str(size),
            "--device", device, "--quiet", "--overwrite",  # the gallery's re-saved copy
        ]  # fmt: skip
        started = time.perf_counter()
        subprocess.run(command, check=True)
        with Image.open(target) as image:
            small = image.convert("RGB")
        save(small, target)  # the command writes quality 92; the gallery keeps files small
        caption = f"stylefold render rocket.jpg hubble.jpg --size {size}"
        return self._add(Figure(RENDER_EXAMPLE, caption, None, time.perf_counter() - started))

    def _add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        line = row(figure)
        if line is not None:
            print(line, flush=True)
            merge_figures(self.out / FIGURES, {figure.name: line}, self.machine, self.order)
        return figure


def hero_picture(jobs: Sequence[Render], out: Path, target: Path, height: int = 180) -> None:
    """The README's first picture: photos (style in the corner) above their results."""
    gap = 6
    befores, afters = [], []
    for job in jobs:
        with Image.open(out / f"{job.name}.jpg") as image:
            after = image.convert("RGB")
        width = round(after.width * height / after.height)
        before = load(job.content).resize((width, height), Image.Resampling.LANCZOS)
        inset_w = width // 3 // len(job.styles)
        for index, (name, _) in enumerate(job.styles):
            inset = load(name)
            inset = inset.resize((inset_w, round(inset.height * inset_w / inset.width)))
            x, y = width - (index + 1) * inset_w, height - inset.height
            before.paste(inset, (x, y))
            ImageDraw.Draw(before).rectangle(
                (x, y, x + inset_w - 1, height - 1), outline="white", width=2
            )
        befores.append(before)
        afters.append(after.resize((width, height), Image.Resampling.LANCZOS))
    canvas = Image.new(
        "RGB", (sum(t.width for t in befores) + gap * (len(jobs) - 1), 2 * height + gap), "white"
    )
    x = 0
    for before, after in zip(befores, afters, strict=True):
        canvas.paste(before, (x, 0))
        canvas.paste(after, (x, height + gap))
        x += before.width + gap
    save(canvas, target)


def row(f: Figure) -> str | None:
    """One markdown table row; inputs shown as they are have none."""
    if f.result is None:
        if not f.seconds:
            return None
        return f"| `{f.name}.jpg` | {f.caption} | | | {f.seconds:.0f} | | | |"
    r = f.result
    scales = " → ".join(f"{w}×{h}" for w, h in r.scales)
    return (
        f"| `{f.name}.jpg` | {f.caption} | {r.iterations} | {r.stop_reason} | {f.seconds:.0f} | "
        f"{r.losses['content']:.3g} | {r.losses['style']:.3g} | {scales} |"
    )


HEADER = (
    "| picture | what | iterations | stop | seconds | content loss | style loss | scales |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
)


def merge_figures(path: Path, rows: dict[str, str], machine: str, order: Sequence[str]) -> None:
    """Keep one row per picture in figures.md: a run replaces the rows of what it made, so
    `--only` reruns keep the others, and lists the machine it measured on."""
    kept: dict[str, str] = {}
    machines: list[str] = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            match = _ROW.match(line)
            if match:
                kept[match.group(1)] = line
            elif line.startswith("- "):
                machines.append(line[2:])
    kept.update(rows)
    if machine not in machines:
        machines.append(machine)
    rank = {name: index for index, name in enumerate(order)}
    names = sorted(kept, key=lambda name: rank.get(name, len(rank)))
    text = [
        "# Gallery figures",
        "",
        "Made by `python docs/gallery/make_gallery.py`; each row was measured by the run that made "
        "its picture, on:",
        "",
        *(f"- {line}" for line in machines),
        "",
        *HEADER,
        *(kept[name] for name in names),
    ]
    path.write_text("\n".join(text) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate docs/gallery/.")
    parser.add_argument("--size", type=int, default=192, help="long side of the sweeps")
    parser.add_argument("--hero", type=int, default=512, help="long side of the README set")
    parser.add_argument("--large", type=int, default=1024, help="long side of the large output")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--only", nargs="+", choices=GROUPS, metavar="GROUP",
                        help=f"only these groups: {', '.join(GROUPS)}")  # fmt: skip
    args = parser.parse_args(argv)

    groups = experiments(args.size, args.hero, args.large)
    args.out.mkdir(parents=True, exist_ok=True)
    engine = Engine(device=args.device)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
        f"device {engine.device}, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}, "
        f"load average {os.getloadavg()[0]:.1f} at the start (other work shared the CPU)"
    )
    order = [RENDER_EXAMPLE, *(job.name for jobs in groups.values() for job in jobs)]
    gallery = Gallery(engine, args.out, machine, order)
    started = time.perf_counter()
    run = args.only or GROUPS
    for group in run:
        if group == "render":
            gallery.render_cli(args.hero, args.device)
            continue
        for job in groups[group]:
            gallery.render(job)
    if "hero" in run or "render" in run:  # after both, whatever order --only gave
        rocket = Render(RENDER_EXAMPLE, "hubble", "rocket", (("hubble", 1.0),))
        hero_picture([*groups["hero"], rocket], args.out, args.out / "hero.jpg")
    print(f"all renders together: {(time.perf_counter() - started) / 60:.1f} min")
    print(f"figures: {args.out / FIGURES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
