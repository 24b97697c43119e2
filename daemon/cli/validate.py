"""`stylefold validate FILE.json`: the sidecar contract checked before a file is dropped into
the inbox; with a config (or --styles) also its styles and the daemon's limits."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.cli.common import (
    config_file,
    config_named,
    fail_config,
    folder_flags,
    read_settings,
    style_library,
)
from daemon.config import DEFAULTS, ConfigError, Settings

if TYPE_CHECKING:
    from daemon.intake.ignore import IgnoreRules


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a sidecar JSON file",
        description="Check FILE.json against the sidecar contract; with a config (or --styles) "
        "also check that its styles exist and its params are within the daemon's limits.",
    )
    parser.add_argument("file", type=Path, metavar="FILE.json")
    folder_flags(parser)
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    from daemon.config.render_limits import ceilings
    from daemon.intake.ignore import IgnoreRules
    from daemon.intake.jsonload import SidecarError, read_limited
    from daemon.intake.resolve import style_problems
    from daemon.intake.sidecar import (
        defaults_notes,
        lossless_note,
        merge_params,
        parse_sidecar,
        unused,
    )
    from daemon.intake.styles import (
        ResolvedStyle,
        StyleError,
        blend_defaults,
        check_style_file_name,
    )

    path: Path = args.file
    if not path.exists() and not path.is_symlink():
        print(f"{path}: no such file; give the path of a sidecar (.json)", file=sys.stderr)
        return 1
    try:
        settings = read_settings(args)
    except ConfigError as exc:
        if config_named(args):
            # Asked for, so an "ok" without its checks would mislead.
            return fail_config(
                f"{exc}\n(leave out --config to check the sidecar against the contract alone)"
            )
        settings = None  # no config named: the contract alone can still be checked
    # Without a config, against the built-in defaults and limits: a layer list or a weight
    # that no daemon takes is found before the file is sent.
    limits = settings if settings is not None else DEFAULTS
    raw: bytes | None = None
    try:
        raw = read_limited(path, limits.max_sidecar_bytes, "sidecar")
        sidecar = parse_sidecar(raw, ceilings(limits.max_output_size, limits.max_iterations))
    except SidecarError as exc:
        problems = exc.problems
    else:
        problems = []
    try:
        library = style_library(args)
    except ConfigError as exc:
        if args.styles is not None:
            return fail_config(str(exc))
        library = None  # the styles cannot be checked; the params still are
    if (misnamed := _misnamed(path.name, IgnoreRules.from_settings(limits))) is not None:
        problems.insert(0, misnamed)
    if problems:
        if library is not None and raw is not None:  # its styles too, when it could be read
            default = settings.default_style if settings else None
            problems += style_problems(raw, library, path.resolve().parent, default)
        print(f"{path}: invalid sidecar", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        _whose_limits(problems, settings)
        return 1
    given = sidecar.overrides()
    failing: list[str] = []  # all of them at once (a new user's trial: the style, then the size)
    styles: list[ResolvedStyle] = []
    try:
        if library is None:
            if (style_file := sidecar.style_file()) is not None:
                check_style_file_name(style_file, IgnoreRules.from_settings(limits))
            if sidecar.style is None:
                raise StyleError(
                    'names no style; add "style": "<name>" (only a daemon configured with '
                    "default_style takes a sidecar without one)"
                )
        else:
            styles = library.resolve(
                sidecar.style,
                beside=path.resolve().parent,
                default=settings.default_style if settings else None,
            )
    except StyleError as exc:
        failing.append(str(exc))
    try:
        params = merge_params(
            limits.defaults,
            blend_defaults(styles),
            given,
            max_size=limits.max_output_size,
            max_iterations=limits.max_iterations,
            weights=limits.weights,
        )
    except SidecarError as exc:
        failing.append(str(exc))
    if failing:
        told = f" {failing[0]}" if len(failing) == 1 else "".join(f"\n  - {f}" for f in failing)
        print(f"{path}: valid JSON, but it would fail:{told}", file=sys.stderr)
        _whose_limits(failing, settings)
        return 1
    output = sidecar.output
    fmt = output.format if output and output.format else limits.output_format
    # The config file's own, under its name (a re-test: they read as the sidecar's).
    for told in defaults_notes(settings.defaults) if settings is not None else []:
        print(f"{config_file(args) or 'environment'}: note: {told}")
    lossless = lossless_note(output.quality if output else None, fmt)
    for note in (*unused(given, params), lossless):
        if note is not None:
            print(f"{path}: {note}")
    if library is None:
        print(f"{path}: ok (styles not checked: give --config or --styles to check them)")
    else:
        print(f"{path}: ok (styles: {', '.join(s.name for s in styles)})")
    return 0


LIMITS = ("this daemon's max_", "than max_sidecar_bytes")  # how a limit's breach reads


def _misnamed(name: str, rules: IgnoreRules) -> str | None:
    """A name the daemon does not read as a sidecar (a new user's trial: `validate` said ok of
    `txt.json.txt`, which the daemon told to rename; a re-test's: and of `.x.json`, which it
    ignores)."""
    from daemon.intake.ignore import SIDECAR_EXTENSION, without_trailing

    stem, dot, extension = without_trailing(name).rpartition(".")
    if name == without_trailing(name) and dot and extension.lower() == SIDECAR_EXTENSION:
        if (rule := rules.why_ignored(name)) is None:
            return None
        wanted = name.lstrip(".") if name.startswith(".") else "after its photo (photo.json)"
        return f"the daemon ignores files named so ({rule}); rename it {wanted}"
    wanted = stem if stem.lower().endswith(f".{SIDECAR_EXTENSION}") else f"{stem or name}.json"
    return (
        f"the daemon reads a sidecar only under a name that ends in .json (photo.json or "
        f"photo.jpg.json beside photo.jpg), and {name!r} does not; rename it {wanted}"
    )


def _whose_limits(problems: list[str], settings: Settings | None) -> None:
    """Without a config, "this daemon's max_output_size" is the default's (a docs trial: an
    operator whose daemon allows more read it as their daemon's refusal)."""
    if settings is None and any(limit in p for p in problems for limit in LIMITS):
        print(
            '(without --config, "this daemon" is one with the default settings; give --config '
            "to check against your daemon's limits)",
            file=sys.stderr,
        )
