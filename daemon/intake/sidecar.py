"""Reading a sidecar (`daemon.intake.sidecar_model` is its contract): strictly typed, with
every problem told at once (`daemon.intake.sidecar_errors`), then layered over the daemon's and
the style's defaults and held to the daemon's limits.

Sidecars are written by people and by other programs, so everything here assumes hostile input:
size is checked before reading, nesting depth before parsing (`daemon.intake.jsonload`), types
strictly (no "256" or true for a number), and every pydantic error becomes a sentence naming the
key and what to do (`SidecarError.problems`).
`python -m daemon.intake.sidecar` regenerates daemon/sidecar.schema.json from the model.
"""

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from daemon.config.render_limits import (
    above_ceilings,
    breach_text,
    network_missing,
    over_limits,
)
from daemon.intake.jsonload import SidecarError, json_kind, load_json
from daemon.intake.sidecar_errors import describe_errors
from daemon.intake.sidecar_model import (
    PARAMS_ADAPTER,
    STYLE_ADAPTER,
    Sidecar,
    StyleFile,
    StyleSpec,
    given,
)
from service.params import NAMED_INITS, RenderParams
from service.weights import WeightsConfig

SCHEMA_PATH = Path(__file__).parent.parent / "sidecar.schema.json"
SCHEMA_ID = "https://stylefold.invalid/sidecar.schema.json"


def style_alone(data: bytes | str) -> StyleSpec | None:
    """The `style` of a sidecar whose other keys are invalid, when it is valid by itself: its
    styles are then checked too, so that one report names every fix (a misspelt param and an
    unknown style were told one after the other, a round trip each). None otherwise."""
    try:
        value = load_json(data)
        if isinstance(value, dict) and "style" in value:
            return STYLE_ADAPTER.validate_python(value["style"], strict=True)
    except (SidecarError, ValidationError):
        pass
    return None


# Keys of the metadata Google Photos writes beside each photo of a Takeout (IMG_1234.jpg.json),
# which a phone user's trial dropped into the inbox: told as what it is, not key by key
# ("title: unknown key; did you mean 'style'?").
TAKEOUT_KEYS = frozenset({"photoTakenTime", "creationTime", "geoData", "imageViews"})
TAKEOUT = (
    "sidecar: this is Google Photos' metadata (a Google Takeout file), not a stylefold sidecar; "
    'delete it, and send a sidecar of your own named after the photo, such as {"style": "name"}'
)


def parse_sidecar(
    data: bytes | str, ceilings: Mapping[str, tuple[str, int]] | None = None
) -> Sidecar:
    """Validate sidecar text; raises SidecarError with every problem found (a param above the
    engine's bound named with the daemon's own limit, from `ceilings`, when that is lower)."""
    value = load_json(data)
    if not isinstance(value, dict):
        raise SidecarError(
            f'sidecar: must be a JSON object such as {{"style": "name"}}, not {json_kind(value)}'
        )
    if TAKEOUT_KEYS & value.keys() and not Sidecar.model_fields.keys() & value.keys():
        raise SidecarError(TAKEOUT)
    try:
        return Sidecar.model_validate(value, strict=True)
    except ValidationError as exc:
        problems = describe_errors(exc, ceilings=ceilings, sidecar=value)
        raise SidecarError(*problems, *_over_ceilings_too(value, exc, ceilings or {})) from None


def files_named(data: bytes | str) -> tuple[str, ...]:
    """The style image files a sidecar that `parse_sidecar` refuses still names (`"style":
    {"file": ...}` beside a misspelt param, or files in a blend): they are its sender's style
    images, not photos without a sidecar (a user's trial: the style image got a "has no
    sidecar" report beside the pair's own, and kept it once the pair was mended)."""
    try:
        value = load_json(data)
    except SidecarError:
        return ()
    style = value.get("style") if isinstance(value, dict) else None
    named = []
    for entry in style if isinstance(style, list) else [style]:
        if isinstance(entry, dict) and isinstance(entry.get("file"), str):
            try:
                named.append(StyleFile(file=entry["file"]).file)
            except ValidationError:
                continue
    return tuple(dict.fromkeys(named))


def _over_ceilings_too(
    value: Mapping[str, Any], exc: ValidationError, ceilings: Mapping[str, tuple[str, int]]
) -> list[str]:
    """The params above the daemon's limits that the model took, told with the errors that
    stopped the sidecar: otherwise heard only once those are mended (a new user's trial: size
    100000 told first, iterations 99999 at the next try)."""
    params = value.get("params")
    if not isinstance(params, Mapping):
        return []
    told = {tuple(error["loc"][:2]) for error in exc.errors()}
    untold = {key: asked for key, asked in params.items() if ("params", key) not in told}
    return [breach_text(over) for over in above_ceilings(untold, ceilings)]


def parse_param_overrides(data: bytes | str, what: str) -> dict[str, Any]:
    """Validate a params object on its own (a style's `<name>.json` defaults)."""
    value = load_json(data, what)
    if not isinstance(value, dict):
        raise SidecarError(f'{what}: must be a JSON object of params such as {{"size": 512}}')
    try:
        params = PARAMS_ADAPTER.validate_python(value, strict=True)
    except ValidationError as exc:
        raise SidecarError(*describe_errors(exc, ("params",), sidecar=value, flat=True)) from None
    return given(params)


def unused(values: Mapping[str, Any], params: RenderParams) -> list[str]:
    """What a sender gave that does nothing in `params` (the render's, with `values` merged
    in): allowed, but they should hear it. Both weights (style_weight wins, as documented); a
    style_weight of 0; a seed without the noise start, the only start it draws (a
    photographer's trial: three seeds, three identical pictures, not a word)."""
    notes = []
    if "strength" in values and values.get("style_weight") is not None:
        notes.append(
            f"note: style_weight {values['style_weight']:g} is given, so strength "
            f"{values['strength']:g} is not used; leave out one of them"
        )
    if params.style_weight == 0:  # another's: validate said ok, the result was the photo
        notes.append(
            "note: style_weight 0 takes no style: the result is the photo as it is; give a "
            "strength above 0 instead"
        )
    if values.get("seed") is not None and params.init != "noise":
        notes.append(
            f"note: seed {values['seed']} changes nothing with init {params.init}: only the "
            'noise start (init "noise") draws from it'
        )
    return notes


def defaults_notes(defaults: RenderParams) -> list[str]:
    """`unused` for a config's [defaults] (a photographer's trial: both weights there passed
    `validate --config` without a word), for where the file is checked or taken."""
    given = {name: getattr(defaults, name) for name in defaults.model_fields_set}
    return [f"defaults: {note.removeprefix('note: ')}" for note in unused(given, defaults)]


def lossless_note(
    quality: int | None, output_format: str, key: str = "output.quality"
) -> str | None:
    """A quality given for a format that has none (a new user's trial, then a photographer's:
    `validate` and `render` said nothing where the job log did)."""
    if quality is None or output_format not in ("png", "tiff"):
        return None
    return f"note: {key} {quality} is not used: a {output_format} is lossless"


def layered(base: RenderParams, *layers: Mapping[str, Any]) -> dict[str, Any]:
    """`base`'s values under each layer in turn, key by key; a layer that gives `strength`
    without `style_weight` clears the `style_weight` of the layers below it."""
    merged: dict[str, Any] = {name: getattr(base, name) for name in RenderParams.model_fields}
    for layer in layers:
        merged.update(layer)
        if "strength" in layer and "style_weight" not in layer:
            merged["style_weight"] = None  # a later strength beats an earlier style_weight
    return merged


def merge_params(
    base: RenderParams,
    *layers: Mapping[str, Any],
    max_size: int,
    max_iterations: int,
    weights: WeightsConfig,
) -> RenderParams:
    """Daemon defaults < each layer in order (style defaults, then sidecar), validated as one
    RenderParams (`layered`) and held to the daemon's limits and weights
    (`daemon.config.render_limits`)."""
    try:
        params = RenderParams.model_validate(layered(base, *layers))
    except ValidationError as exc:
        raise SidecarError(*describe_errors(exc, ("params",))) from None
    problems = [breach_text(over) for over in over_limits(params, max_size, max_iterations)]
    if (missing := network_missing(params, weights)) is not None:
        problems.append(f"params.network: {missing}")
    if problems:
        raise SidecarError(*problems)
    return params


def schema() -> dict[str, Any]:
    """The JSON Schema shipped as daemon/sidecar.schema.json."""
    document = Sidecar.model_json_schema()
    document["$defs"]["RenderParams"]["properties"]["init"]["enum"] = list(NAMED_INITS)
    return {"$id": SCHEMA_ID, **document}


def schema_text() -> str:
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"


def write_schema(path: Path = SCHEMA_PATH) -> Path:
    path.write_text(schema_text(), encoding="utf-8")
    return path


if __name__ == "__main__":
    print(f"wrote {write_schema()}", file=sys.stderr)
