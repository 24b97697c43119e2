"""The parameters of one style-transfer job.

This model is the single source of truth for job options: the engine reads it, `stylefold render`
maps its flags onto it, and the daemon's sidecar `params` object is validated against it (so an
unknown key or a wrong type is rejected with the field's name).

The content:style balance is set by `strength` (0 to 1), which `style_weight_for` maps onto a
style weight; an explicit `style_weight` overrides it. The mapping is log-linear, so each tenth
of strength multiplies the style weight by the same factor (10^0.4, about 2.5), and it is
calibrated at the default output size, 512 px, on three photo/painting pairs scored by an
independent referee (docs/BENCH.md, "Strength"): at 0 (weight 0.1) the output is the photo
with a faint grain, and at 1 (weight 1000) it is pastiche's balance, where a painting's colours
and strokes cover the picture and a busy photo's detail starts to dissolve. The same weight
looks stronger on a smaller output (the network's filters see a fixed number of pixels, so on
a larger output they take finer detail of the painting): a 256 px job at a given strength
carries more style than a 512 px one.
"""

import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

VGG19_LAYERS: tuple[str, ...] = (
    "conv1_1", "conv1_2",
    "conv2_1", "conv2_2",
    "conv3_1", "conv3_2", "conv3_3", "conv3_4",
    "conv4_1", "conv4_2", "conv4_3", "conv4_4",
    "conv5_1", "conv5_2", "conv5_3", "conv5_4",
)  # fmt: skip
VGG16_LAYERS: tuple[str, ...] = (
    "conv1_1", "conv1_2",
    "conv2_1", "conv2_2",
    "conv3_1", "conv3_2", "conv3_3",
    "conv4_1", "conv4_2", "conv4_3",
    "conv5_1", "conv5_2", "conv5_3",
)  # fmt: skip


def layer_position(name: str) -> tuple[int, int]:
    """(block, conv) of a layer name such as "conv4_1": (4, 1)."""
    block, conv = name.removeprefix("conv").split("_")
    return int(block), int(conv)


def min_side(layers: tuple[str, ...]) -> int:
    """The smallest image side that reaches every layer in `layers`: each pooling before a
    layer's block halves the size, and a pooled side of 0 fails."""
    if not layers:
        return 1
    return int(2 ** (max(layer_position(name)[0] for name in layers) - 1))


Network = Literal["vgg19", "vgg16"]
ColorMode = Literal["none", "luminance", "histogram"]
# The style image's short side is never below this: smaller, its Gram matrices are mostly the
# network's zero padding at its borders, and the render paints a frame of swirls around a
# washed-out middle (seen at 40-128 px: a low style_scale, or a small output).
STYLE_MIN_SIDE = 128
MAX_LEARNING_RATE = 100.0  # grey levels per step for Adam; beyond it the image is noise
# The largest weight of a loss term. Only the weights' ratios count; near 1e18 a term's gradient
# overflows float32 and the render diverges (measured at 64 and 256 px: 1e15 renders), which an
# attacker's content_weight of 1e308 was told to fix by lowering the style weight.
MAX_WEIGHT = 1e12

# Why an optimisation ended (results, manifests); here, not in optimize.py, so that readers of
# results (the daemon, the web page) need not import torch.
StopReason = Literal["converged", "iterations"]
STOPPED: dict[str, str] = {"converged": "converged", "iterations": "at the iteration cap"}


def _list_as_tuple(value: object) -> object:
    """JSON and TOML give arrays as lists; the fields are tuples (hashable, frozen). Converted
    before validation so strict validation (sidecars) accepts a JSON array."""
    return tuple(value) if isinstance(value, list) else value


Layers = Annotated[tuple[str, ...], BeforeValidator(_list_as_tuple)]


def _or_boolean(schema: dict[str, Any]) -> None:
    """The schema of a mode that a hand-written sidecar may give as true or false too
    (`RenderParams._bool_means_luminance`): the schema said the modes alone (a new user's
    trial: a sidecar the daemon took, the schema refused)."""
    modes = {key: schema.pop(key) for key in ("enum", "type")}
    schema["anyOf"] = [modes, {"type": "boolean"}]


# Style weights (with content weight 1) at strength 0 and 1; see the module's docstring.
STRENGTH_RANGE: tuple[float, float] = (0.1, 1000.0)
# Weight 398: at 512 px, from the recolored start and at the default tolerance, the referee
# scores the result at least as close to both the photo and the style as pastiche's 500 steps
# on the benchmark's three pairs (docs/BENCH.md), and the subject stays recognisable.
DEFAULT_STRENGTH = 0.9


def style_weight_for(strength: float) -> float:
    """The style weight of a strength in [0, 1]: log-linear between `STRENGTH_RANGE`."""
    if not 0 <= strength <= 1:
        raise ValueError(f"strength {strength} is outside 0 to 1")
    low, high = (math.log10(w) for w in STRENGTH_RANGE)
    return float(10 ** (low + strength * (high - low)))


def beyond_strength(error_type: str, loc: Sequence[int | str], value: object = None) -> str:
    """For a strength past 1 or below 0 (pydantic's `less_than_equal`/`greater_than_equal` at
    a `loc` ending in strength): the style_weight that goes further (photographers' trials:
    1.5, then -1, told only the bound), for every place that tells it: sidecars, style
    defaults, flags, config files. A `value` that reads as a percentage (2 to 100) is told
    its fraction instead (a photographer's trial: 50, meant as 50 %, was sent to
    style_weight), and below 10 the style_weight too.
    Empty for any other error."""
    ends = {"less_than_equal": ("more", 1.0), "greater_than_equal": ("less", 0.0)}
    if error_type not in ends or tuple(loc[-1:]) != ("strength",):
        return ""
    what, end = ends[error_type]
    weight = style_weight_for(end)
    told = f"for {what} style than strength {end:g} gives (style_weight {weight:g}), set "
    told += "style_weight instead"
    if isinstance(value, int | float) and not isinstance(value, bool) and 2 <= value <= 100:
        fraction = f"strength is a fraction: for {value:g} %, write {value / 100:g}"
        # 2 may be 2 % or "twice as much": a new user's trial was sent to 0.02, almost none
        return f"; {fraction}" + (f"; {told}" if value < 10 else "")
    return f"; {told}"


def strength_of(style_weight: float) -> float:
    """The strength a style weight corresponds to, clamped to [0, 1] (`style_weight_for`'s
    inverse inside the range)."""
    if style_weight <= 0:
        return 0.0
    low, high = (math.log10(w) for w in STRENGTH_RANGE)
    return min(1.0, max(0.0, (math.log10(style_weight) - low) / (high - low)))


Init = Literal["recolored", "content", "noise", "image"]

MAX_SIZE = 16384  # the largest output long side anyone may ask for
# The formats a result is written in, by the names settings, sidecars and manifests use; the
# other usual spellings are accepted for them (`output_format`).
OutputFormat = Literal["jpg", "png", "webp", "tiff"]
FORMAT_ALIASES = {"jpeg": "jpg", "tif": "tiff"}
DEFAULT_QUALITY = 92  # of JPEG and WebP results: settings' output_quality, render's --quality
# The starts named by a word; "image" comes with a file instead (`stylefold render --init PATH`).
NAMED_INITS: tuple[str, ...] = tuple(name for name in get_args(Init) if name != "image")


def whole(value: object) -> object:
    """128.0 as 128: JSON has one kind of number, so a script's float is a whole number where
    it has no fraction (the published schema's "integer" takes it too; a photographer's trial
    found the sidecar refused what the schema and the config file accepted)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


WholeNumber = Annotated[int, BeforeValidator(whole)]


class RenderParams(BaseModel):
    """Options of one render. Defaults follow Gatys et al. and the seed, tuned for one set of
    weights to work at any size and with any number of style images."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: WholeNumber = Field(
        default=512, ge=16, le=MAX_SIZE, description="Long side of the output in pixels."
    )
    # 300: at 512 px, renders of the benchmark's pairs converge after 280-350 iterations at the
    # default tolerance; the cap keeps the slowest within a quarter of pastiche's 500 steps where
    # the convolutions run in bf16. Coarse-to-fine plans share it out.
    iterations: WholeNumber = Field(
        default=300,
        ge=0,
        le=100_000,
        description="Iteration cap of a one-scale render. Coarse-to-fine shares it: a half-size "
        "sketch gets half of it, a larger output's first coarse pass all of it, and each finer "
        "pass a share of what the pass before it ran. 0 returns the start (see init) as it is.",
    )
    content_weight: float = Field(
        default=1.0, ge=0, le=MAX_WEIGHT, description="Weight of the content loss."
    )
    strength: float = Field(
        default=DEFAULT_STRENGTH,
        ge=0,
        le=1,
        description="How much style: 0 the gentlest (a faint texture over the photo: "
        "style_weight 0.1), 1 the most; equal steps change the picture about equally. For even "
        "less style than 0 gives, give a style_weight below 0.1. Ignored when style_weight is "
        "given.",
    )
    style_weight: float | None = Field(
        default=None,
        ge=0,
        le=MAX_WEIGHT,
        description="Weight of the style loss, overriding strength (1000 with content 1 is "
        "pastiche's balance); unset: taken from strength.",
    )
    tv_weight: float = Field(
        default=0.0,
        ge=0,
        le=MAX_WEIGHT,
        description="Weight of the total-variation smoothness loss (neighbouring pixels' mean "
        "squared difference in grey levels): at the default strength 1000-10000 softens "
        "speckles, 100000 blurs the strokes, 1000000 flattens the picture; below 100 it does "
        "nothing visible.",
    )
    init: Init = Field(
        default="recolored",
        description="Start from the content image recolored with the style's colour mean and "
        "covariance (in proportion below the default strength; the photo's own colours when "
        "preserve_colors is set), from the content image as it is, from noise, or (only "
        "`stylefold render --init PATH`) from a given image.",
    )
    optimizer: Literal["lbfgs", "adam"] = Field(
        default="lbfgs",
        description="L-BFGS (reaches a given loss in far fewer iterations) or Adam.",
    )
    learning_rate: float | None = Field(
        default=None,
        ge=1e-6,
        le=MAX_LEARNING_RATE,
        description="Step size, 1e-6 to 100. None picks each optimiser's own: 1 for L-BFGS (a "
        "multiplier of its first step; its line search takes over), and for Adam 10 grey levels "
        "a step (Adam's steps are in the network's input units: grey levels for VGG-19; 50 "
        "turned a 128 px picture to noise in 20 steps).",
    )
    pooling: Literal["max", "avg"] = Field(
        default="max",
        description="VGG's pooling: max (as trained) or avg (the paper's choice; smoother).",
    )
    style_scale: float = Field(
        default=1.0,
        gt=0,
        le=8,
        description="Style image size relative to the output size (linear; at 1 the style "
        "image has as many pixels as the output; lower makes the strokes finer). The style "
        f"image's short side stays at least {STYLE_MIN_SIDE} px, below which it carries no "
        "texture: for small outputs a low style_scale, and even 1, change nothing (the job log "
        "says when that overrode a style_scale below 1).",
    )
    preserve_colors: ColorMode = Field(
        default="none",
        description="Keep the content's colours: 'luminance' transfers luminance only, "
        "'histogram' matches the style's colours to the content first; true means "
        "'luminance', false 'none'. A photo with little contrast (night, fog, a wall of one "
        "colour) is painted with at least half the style's, so its subject stays.",
        json_schema_extra=_or_boolean,
    )
    seed: WholeNumber = Field(
        default=0,
        ge=0,
        le=2**32 - 1,
        description='Seed of the noise start (init "noise"); the other starts do not draw from it.',
    )
    network: Network = Field(
        default="vgg19",
        description="vgg19 (the paper's network) or vgg16 (a little faster; its weights do "
        "not ship offline: set weights.vgg16 to a .pth file, or weights.download = true).",
    )
    content_layers: Layers = Field(
        default=("conv4_2",),
        description="Layers whose features the output keeps from the photo (deeper: looser).",
    )
    style_layers: Layers = Field(
        default=("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"),
        description="Layers whose Gram matrices the output takes from the style image.",
    )
    style_layer_weights: Annotated[
        tuple[Annotated[float, Field(ge=0, allow_inf_nan=False)], ...] | None,
        BeforeValidator(_list_as_tuple),
    ] = Field(
        default=None,
        description="One weight (0 or more, not all 0) per style layer; None weights them equally.",
    )
    multiscale: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Coarse-to-fine: 'auto' refines through each halving for outputs above 640 "
        "px; 'on' does so at any size from 32 px (at most 640 px: one sketch at half size, about "
        "half the time at 512 px with a little less of the photo kept); 'off' renders at one "
        "scale.",
    )
    tolerance: float = Field(
        default=0.01,
        ge=0,
        lt=1,  # a new user's 2 (200 %) stopped every render after 20 iterations as "converged"
        description="Stop a scale when its loss improved by less than this fraction over the "
        "last 20 iterations (0.01: 1 %); 0 runs every iteration.",
    )

    @property
    def effective_style_weight(self) -> float:
        """The style weight the engine uses: `style_weight` if given, else from `strength`."""
        if self.style_weight is not None:
            return self.style_weight
        return style_weight_for(self.strength)

    @property
    def recolor_share(self) -> float:
        """How much of the style's colours a recolored start takes: all of them from the
        default strength's balance up, less in proportion below it (a gentle strength keeps the
        photo's colours, which the content loss alone would not bring back), none when the
        photo's colours are kept or there is no style weight. The balance is the style:content
        ratio, so a raised content_weight keeps the photo's colours as a lowered style weight
        does (a new user's trial: content_weight 100 kept the bridge's shape in Starry Night's
        colours, style_weight 4, the same ratio, its orange)."""
        if self.init != "recolored" or self.preserve_colors != "none":
            return 0.0
        if self.content_weight == 0:
            return 1.0 if self.effective_style_weight > 0 else 0.0
        balance = self.effective_style_weight / self.content_weight
        return min(1.0, strength_of(balance) / DEFAULT_STRENGTH)

    @field_validator("preserve_colors", mode="before")
    @classmethod
    def _bool_means_luminance(cls, value: object) -> object:
        """Sidecars written by hand often say `true`/`false`; map those onto the modes, and the
        words, which are all an environment variable can say (a README trial:
        STYLEFOLD_DEFAULTS__PRESERVE_COLORS=true was refused)."""
        word = value.strip().lower() if isinstance(value, str) else value
        if value is True or word == "true":
            return "luminance"
        if value is False or word == "false":
            return "none"
        return value

    @model_validator(mode="after")
    def _layers_exist(self) -> "RenderParams":
        """Layers bound a job's cost (each is a Gram matrix per style and per step), so each
        may be named once, and only from the chosen network."""
        known = VGG19_LAYERS if self.network == "vgg19" else VGG16_LAYERS
        for key, layers in (
            ("content_layers", self.content_layers),
            ("style_layers", self.style_layers),
        ):
            for name in layers:
                if name not in known:
                    raise ValueError(
                        f"layer {name!r} does not exist in {self.network} ({key}); "
                        f"use one of {', '.join(known)}"
                    )
                if layers.count(name) > 1:
                    raise ValueError(f"layer {name!r} is listed twice in {key}; list it once")
        # Empty lists are refused where their weight asks for them (as all-0 layer weights
        # below): a sender who wants none of the style or of the photo sets that weight to 0.
        if not self.style_layers and self.effective_style_weight > 0:
            raise ValueError(
                "style_layers is empty, so no style would be transferred; list at least one "
                'layer (e.g. ["conv1_1", "conv3_1", "conv5_1"]) or leave style_layers out'
            )
        if not self.content_layers and self.content_weight > 0:
            raise ValueError(
                "content_layers is empty, so nothing of the photo would be kept; list at least "
                'one layer (e.g. ["conv4_2"]), or set content_weight 0 to let the style take over'
            )
        weights = self.style_layer_weights
        if weights is not None and len(weights) != len(self.style_layers):
            raise ValueError(
                f"style_layer_weights has {len(weights)} entries but "
                f"style_layers has {len(self.style_layers)}; give one weight per layer"
            )
        if weights and self.effective_style_weight * max(weights) > MAX_WEIGHT:
            raise ValueError(
                f"style_layer_weights up to {max(weights):g} times the style weight "
                f"{self.effective_style_weight:g} is more than {MAX_WEIGHT:g}, where the loss "
                "overflows; only the weights' ratios count, so give smaller ones"
            )
        if weights and not any(weights):
            raise ValueError(
                "style_layer_weights are all 0, so no style would be transferred; give at least "
                "one layer a weight above 0 (or leave style_layer_weights out)"
            )
        if self.content_weight == 0 and self.style_weight == 0:
            raise ValueError(
                "content_weight and style_weight are both 0, so nothing would be optimised; "
                "give at least one a weight above 0 (e.g. content_weight 1, style_weight 1000)"
            )
        return self


def format_alias(value: object) -> object:
    """A validator's step: a format name in any case or alias as its OutputFormat spelling."""
    return output_format(value) if isinstance(value, str) else value


# A format as settings and sidecars take it: any case, and the aliases.
FormatName = Annotated[OutputFormat, BeforeValidator(format_alias)]


def output_format(name: str) -> str:
    """`name` (any case, an alias or not) as an OutputFormat's spelling; unknown names as they
    are (lower case), for the caller to refuse."""
    return FORMAT_ALIASES.get(name.lower(), name.lower())
