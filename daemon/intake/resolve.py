"""Turning a settled pair into what the engine will be asked for: the sidecar read and checked,
its styles found in the library (or brought along), its params merged over the defaults.
Nothing is moved here; a pair that cannot become a job raises `Rejected` with the fix."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from daemon import safefs
from daemon.config import Settings
from daemon.config.render_limits import ceilings
from daemon.intake import reasons
from daemon.intake.jsonload import SidecarError, read_inbox
from daemon.intake.pairing import Arrival
from daemon.intake.sidecar import lossless_note, merge_params, parse_sidecar, style_alone, unused
from daemon.intake.sidecar_model import Sidecar, StyleFile
from daemon.intake.styles import (
    ResolvedStyle,
    StyleError,
    StyleLibrary,
    blend_defaults,
    defaults_from,
)
from service.params import RenderParams


class Rejected(Exception):
    """The pair cannot become a job (bad sidecar, unknown style, limits); nothing was moved.
    The message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Resolved:
    """A sidecar turned into what the engine will be asked for (nothing moved yet)."""

    sidecar: Sidecar | None
    sidecar_raw: bytes | None
    styles: list[tuple[str, Path, float]]  # (name, image file, weight)
    params: RenderParams
    output_format: str
    output_quality: int
    notes: tuple[str, ...] = ()  # what the sender should hear, though nothing is wrong


def resolve(arrival: Arrival, settings: Settings, library: StyleLibrary) -> Resolved:
    """Read the sidecar and resolve styles and parameters; raises Rejected, or
    `daemon.safefs.Changed` when the sidecar is not the file that settled."""
    sidecar: Sidecar | None = None
    raw: bytes | None = None
    try:
        if arrival.sidecar is not None:
            relative = arrival.sidecar.relative_to(settings.inbox)
            seen = (arrival.seen or {}).get(arrival.sidecar)
            expect = None if seen is None else seen.identity()
            raw = read_inbox(
                settings.inbox, relative, settings.max_sidecar_bytes, "sidecar", expect
            )
            try:
                sidecar = parse_sidecar(
                    raw, ceilings(settings.max_output_size, settings.max_iterations)
                )
            except SidecarError as exc:
                also = style_problems(
                    raw, library, arrival.image.parent, settings.default_style, settings.inbox
                )
                raise SidecarError(*exc.problems, *also) from None
            itself = arrival.style_file == arrival.image  # paired so across case too
            if itself or sidecar.style_file() == arrival.image.name:
                raise StyleError(
                    f"style.file: {arrival.image.name} is the photo itself; bring a different "
                    'image as the style, or name a library style ("style": "<name>")'
                )
        spec = sidecar.style if sidecar is not None else None
        if isinstance(spec, StyleFile) and arrival.style_file is not None:
            spec = StyleFile(file=arrival.style_file.name)  # as paired: Style.PNG for style.png
        styles = library.resolve(
            spec,
            beside=arrival.image.parent,
            default=settings.default_style,
            root=settings.inbox,
        )
        params = merge_params(
            settings.defaults,
            blend_defaults(styles),
            sidecar.overrides() if sidecar is not None else {},
            max_size=settings.max_output_size,
            max_iterations=settings.max_iterations,
            weights=settings.weights,
        )
    except (SidecarError, StyleError) as exc:
        where = arrival.sidecar.name if arrival.sidecar is not None else arrival.image.name
        photo = _unreadable_photo(arrival, settings)
        raise Rejected(f"{where}: {exc}" + ("" if photo is None else f"; {photo}")) from None
    output = sidecar.output if sidecar is not None else None
    given = unused(sidecar.overrides(), params) if sidecar is not None else []
    default = None
    if spec is None:  # a new user's trial: the log never said where the style came from
        why = "no sidecar came" if sidecar is None else "the sidecar names no style"
        default = f"{why}, so the default style {settings.default_style} (default_style)"
    output_format = output.format if output and output.format else settings.output_format
    lossless = lossless_note(output.quality if output else None, output_format)
    sent = sidecar.overrides() if sidecar is not None else {}
    notes = [default, style_defaults_note(styles, sent), *given, lossless]
    return Resolved(
        sidecar=sidecar,
        sidecar_raw=raw,
        styles=[(style.name, style.path, style.weight) for style in styles],
        params=params,
        output_format=output_format,
        output_quality=(output.quality if output and output.quality else settings.output_quality),
        notes=tuple(note for note in notes if note is not None),
    )


def _unreadable_photo(arrival: Arrival, settings: Settings) -> str | None:
    """Why the daemon's user may not read the photo of a pair refused for its sidecar, so the
    sender mends both in one round (a trial: a sync tool's modes shut out both files, and the
    photo was told only in a second report, once the sidecar was fixed). Anything else about
    the photo is the claim's to tell."""
    relative = arrival.image.relative_to(settings.inbox)
    try:
        with safefs.folder(settings.inbox, relative.parent) as folder:
            why = reasons.unreadable_at(folder, relative.name)
    except (OSError, safefs.Changed):
        return None
    return None if why is None else f"{relative.name} {why}"


def style_defaults_note(
    styles: list[ResolvedStyle], given: Mapping[str, object], overrides: str = "the sidecar"
) -> str | None:
    """Where params the sender did not write came from, when a style's JSON gave them (a
    photographer could not tell why a result was gentle), and a blend's other styles whose
    JSON was left out (another's: silent); `given`: the params the sender wrote, by
    `overrides` (a photographer's trial: "strength 0.2 (a sidecar overrides)" did not say the
    sidecar's 0.9 was the one used)."""
    source = defaults_from(styles)
    if source is None:
        return None
    left = [style.name for style in styles if style is not source and style.defaults]
    unused = (
        f"; {', '.join(left)}'s left out: a blend takes the heaviest style's (the first among "
        "equals)"
        if left
        else ""
    )
    if not source.defaults:
        return f"style {source.name} has no defaults in the style library{unused}" if left else None
    told = ", ".join(
        f"{key} {value}{_default_fate(key, given, overrides, source.defaults)}"
        for key, value in source.defaults.items()
    )
    return f"style {source.name}'s defaults from the style library: {told}{unused}"


def _default_fate(
    key: str, given: Mapping[str, object], by: str, defaults: Mapping[str, object]
) -> str:
    """What became of a style's default for `key` (one of its `defaults`): overridden by what
    the sender gave, or not used at all (a style_weight given decides instead of any strength,
    a strength given instead of any style_weight; in the style's JSON alone, its style_weight
    instead of its strength); nothing when it was used (a re-test: "(the sidecar overrides
    them)" read as if it had)."""
    if key in given:
        return f" (overridden by {by}: {given[key]})"
    if key == "strength" and "style_weight" in given:
        return f" (not used: style_weight {given['style_weight']} from {by} decides)"
    if key == "style_weight" and "strength" in given:  # `sidecar.layered`: the later decides
        # a photographer's trial: the log told the style's style_weight 5 as used
        return f" (not used: strength {given['strength']} from {by} decides)"
    if key == "strength" and defaults.get("style_weight") is not None:  # both in its JSON
        return f" (not used: its style_weight {defaults['style_weight']} decides)"
    return ""


def style_problems(
    raw: bytes, library: StyleLibrary, beside: Path, default: str | None, root: Path | None = None
) -> list[str]:
    """What is wrong with the styles of a sidecar that is invalid for other reasons (see
    `style_alone`), so that its report names every fix at once."""
    spec = style_alone(raw)
    if spec is None:
        return []
    try:
        library.resolve(spec, beside=beside, default=default, root=root)
    except StyleError as exc:
        return [str(exc)]
    return []
