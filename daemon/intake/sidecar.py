"""The sidecar contract: the JSON file that travels with a photo and says how to stylise it.

For `photo.jpg` the sidecar is `photo.json` (or `photo.jpg.json`):

    {"style": "starry_night",
     "params": {"size": 512, "iterations": 300},
     "output": {"format": "jpg", "quality": 92}}

`style` is a library name, a blend `[{"name": ..., "weight": ...}]`, or `{"file": "mine.jpg"}`
(a bare file name beside the sidecar). Every key is optional except that without `style` the
daemon's default_style must be configured. `params` override the daemon's defaults key by key;
the merged result is validated as `service.params.RenderParams`.

Sidecars are written by people and by other programs, so everything here assumes hostile input:
size is checked before reading, nesting depth before parsing (`daemon.intake.jsonload`), types
strictly (no "256" or true for a number), and every pydantic error becomes a sentence naming the
key and what to do (`SidecarError.problems`).
`python -m daemon.intake.sidecar` regenerates daemon/sidecar.schema.json from the model.
"""

import difflib
import json
import math
import re
import sys
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Annotated, Any, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from daemon.config import DEFAULT_IMAGE_EXTENSIONS
from daemon.config.render_limits import (
    START_IMAGE_REFUSED,
    OverLimit,
    breach_text,
    network_missing,
    over_limits,
)
from daemon.intake.ignore import PHOTO_TYPES
from daemon.intake.jsonload import SidecarError, json_kind, load_json, shown
from service.params import NAMED_INITS, OutputFormat, RenderParams, output_format
from service.weights import WeightsConfig

SCHEMA_PATH = Path(__file__).parent.parent / "sidecar.schema.json"
SCHEMA_ID = "https://stylefold.invalid/sidecar.schema.json"
MAX_STYLES = 16
MAX_NAME_LENGTH = 128
_STYLE_NAME = re.compile(r"^\w[\w. -]*$")
STYLE_NAME_RULE = (
    "letters, digits, '-', '_', '.' and spaces, starting with a letter or digit, not ending "
    f"with a space, no '..', at most {MAX_NAME_LENGTH} characters"
)
_IMAGE_SUFFIXES = frozenset({*DEFAULT_IMAGE_EXTENSIONS, *PHOTO_TYPES})


def check_style_name(name: str, key: str = "style") -> str:
    """Style names are library keys, never paths: no separators, no `..`, no hidden names.
    `key` holds the name where it was given: "style", or "name" in a blend's item, which
    cannot bring an image along."""
    if not name or len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"a style name has 1 to {MAX_NAME_LENGTH} characters")
    last = name.replace("\\", "/").rpartition("/")[2]  # a path from a phone or a PC
    if last != name and (meant := _name_in(name)) is not None:
        file = f', and an image beside the sidecar as "style": {{"file": {json.dumps(last)}}}'
        raise ValueError(
            f"{shown(name)} is a path; name a library style alone, as "
            f"{json.dumps(key)}: {json.dumps(meant)} (see `stylefold styles`)"
            + (file if meant != last and key == "style" else "")
        )
    if ".." in name or not _STYLE_NAME.match(name) or name != name.strip():
        raise ValueError(
            f"{shown(name)} is not a style name; use a name from the style library "
            f"({STYLE_NAME_RULE}), see `stylefold styles`"
        )
    return name


def _name_in(text: str) -> str | None:
    """The library name a path or an image's file name stands for ("styles/cells.png" is
    "cells"; "cells.v2" is a name), or None when its last part cannot be one."""
    last = text.replace("\\", "/").rpartition("/")[2]
    if not _STYLE_NAME.match(last) or ".." in last:
        return None
    stem, dot, suffix = last.rpartition(".")
    return stem if dot and suffix.lower() in _IMAGE_SUFFIXES else last


def check_file_name(name: str) -> str:
    """A brought-along style image is a bare, visible file name in the sidecar's own folder."""
    if (
        not name
        or len(name) > 255
        or any(char in name for char in "/\\\0")
        or name.startswith(".")
        or name != name.strip()
    ):
        raise ValueError(
            f"{shown(name)} is not a bare file name; name an image lying beside the sidecar, "
            'e.g. {"file": "mine.jpg"} (no folders, no hidden names)'
        )
    return name


StyleName = Annotated[str, AfterValidator(check_style_name)]


class StyleRef(BaseModel):
    """One style of a blend; weights are relative (the engine normalises them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, AfterValidator(partial(check_style_name, key="name"))] = Field(
        description="A style library name (see `stylefold styles`)."
    )
    weight: float = Field(1.0, gt=0, le=1e6, allow_inf_nan=False, description="Blend weight.")


class StyleFile(BaseModel):
    """A style image brought along in the inbox instead of a library name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: Annotated[str, AfterValidator(check_file_name)] = Field(
        description="Bare file name of an image in the same inbox folder as the sidecar."
    )


def _no_duplicates(refs: list[StyleRef]) -> list[StyleRef]:
    names = [ref.name for ref in refs]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"style {name!r} is listed twice; give each style once")
    return refs


def _style_kind(value: object) -> str | None:
    if isinstance(value, str):
        return "name"
    if isinstance(value, list | tuple):
        return "blend"
    if isinstance(value, dict) and "name" in value and "file" not in value:
        return None  # {"name": "cells"}: told the shapes, not that "file" is missing
    if isinstance(value, dict | StyleFile):
        return "file"
    return None


StyleSpec = Annotated[
    Annotated[StyleName, Tag("name")]
    | Annotated[
        list[StyleRef],
        Field(min_length=1, max_length=MAX_STYLES),
        AfterValidator(_no_duplicates),
        Tag("blend"),
    ]
    | Annotated[StyleFile, Tag("file")],
    Discriminator(
        _style_kind,
        custom_error_type="style_shape",
        custom_error_message='must be a style name ("starry_night"), a list of '
        '{"name": ..., "weight": ...} to blend, or {"file": "mine.jpg"}',
    ),
]
_TAGS = frozenset({"name", "blend", "file"})


def _partial_params(value: Any, handler: ValidatorFunctionWrapHandler) -> RenderParams:
    """Check each given key's type and range now; cross-field rules (e.g. one weight per style
    layer) can only be judged once the style's own defaults are merged, in `merge_params`."""
    try:
        result: RenderParams = handler(value)
    except ValidationError as exc:
        if isinstance(value, dict) and all(not error["loc"] for error in exc.errors()):
            return RenderParams.model_construct(**value)
        raise
    if result.init == "image":
        raise PydanticCustomError("start_image", START_IMAGE_REFUSED)
    return result


ParamsOverride = Annotated[RenderParams, WrapValidator(_partial_params)]


def _format_alias(value: object) -> object:
    return output_format(value) if isinstance(value, str) else value


class OutputOptions(BaseModel):
    """How the result is encoded; unset keys use the daemon's output_format/output_quality."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Annotated[OutputFormat | None, BeforeValidator(_format_alias)] = Field(
        None, description="Output image format (jpeg and tif are accepted as aliases)."
    )
    quality: int | None = Field(None, ge=1, le=100, description="JPEG/WebP quality, 1-100.")


class Sidecar(BaseModel):
    """How to stylise one photo."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="stylefold sidecar",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    style: StyleSpec | None = Field(
        None, description="Library style name, a blend, or a style image beside the sidecar."
    )
    params: ParamsOverride = Field(
        default_factory=lambda: RenderParams.model_validate({}),
        description="Engine options overriding the daemon's and the style's defaults key by key.",
    )
    output: OutputOptions = Field(default_factory=lambda: OutputOptions.model_validate({}))

    def overrides(self) -> dict[str, Any]:
        """Only the params the sidecar actually gave, for merging over other defaults."""
        return given(self.params)

    def style_file(self) -> str | None:
        """The bare file name of a brought-along style image, if the sidecar names one."""
        return self.style.file if isinstance(self.style, StyleFile) else None


_PARAMS_ADAPTER: TypeAdapter[RenderParams] = TypeAdapter(ParamsOverride)
_STYLE_ADAPTER: TypeAdapter[StyleSpec] = TypeAdapter(StyleSpec)
_OUTPUT_ADAPTER: TypeAdapter[OutputOptions] = TypeAdapter(OutputOptions)
_SIDECAR_ADAPTER: TypeAdapter[Sidecar] = TypeAdapter(Sidecar)


def style_alone(data: bytes | str) -> StyleSpec | None:
    """The `style` of a sidecar whose other keys are invalid, when it is valid by itself: its
    styles are then checked too, so that one report names every fix (a misspelt param and an
    unknown style were told one after the other, a round trip each). None otherwise."""
    try:
        value = load_json(data)
        if isinstance(value, dict) and "style" in value:
            return _STYLE_ADAPTER.validate_python(value["style"], strict=True)
    except (SidecarError, ValidationError):
        pass
    return None


def _model_at(path: tuple[str, ...]) -> type[BaseModel] | None:
    models: dict[tuple[str, ...], type[BaseModel]] = {
        (): Sidecar,
        ("params",): RenderParams,
        ("output",): OutputOptions,
        ("style", "blend"): StyleRef,
        ("style", "file"): StyleFile,
    }
    return models.get(path)


def _allowed_keys(path: tuple[str, ...]) -> list[str]:
    model = _model_at(path)
    return list(model.model_fields) if model is not None else []


def _elsewhere(
    key: str, path: tuple[str, ...], value: object, sidecar: Mapping[str, Any]
) -> str | None:
    """Where a key put at the wrong level belongs (`strength` beside `style`, `quality` in
    `params`): "remove it" would throw away what the sender asked for. A value that its place
    would refuse too, or a key given there as well, is told so (a re-test: the advice was
    itself refused)."""
    sections: dict[tuple[str, ...], str] = {
        (): 'at the top level, beside "params"',
        ("params",): 'inside "params"',
        ("output",): 'inside "output"',
    }
    if _spelt(key, _allowed_keys(path)) is not None or _names_a_style(key, path, value):
        return None  # its own level's key in other letter case, or a blend's item's style
    here = sidecar.get(path[0], {}) if path else sidecar
    if path in sections and (twin := _kept_twin(key, here)):  # a re-test: both told to move
        return twin
    for section, place in sections.items():
        spelt = _spelt(key, _allowed_keys(section))
        if section == path or spelt is None:
            continue
        key = spelt  # "Strength" is params' "strength"
        if key == "params":  # not "beside" itself
            place = "at the top level"
        there = sidecar.get(section[0], {}) if section else sidecar
        if isinstance(there, Mapping) and key in there:
            what = (
                "move what it holds into that one"
                if isinstance(value, Mapping)
                else "remove this one"
            )
            return f"belongs {place}, where it is given too; {what}"
        refused = _refused_at(section, {key: value})
        example: dict[str, object] = {key: value if len(json.dumps(value)) <= 40 else "..."}
        if section:
            example = {section[0]: example}
        told = f"belongs {place}, as in {json.dumps(example)}; move it there"
        return told + (f", and fix it: {'; '.join(refused)}" if refused else "")
    return None


def _unknown_key(
    key: str, path: tuple[str, ...], item: ErrorDetails, sidecar: Mapping[str, Any] | None
) -> str:
    """What to do with a key its place does not know: its spelling, where it is one of that
    place's in other letter case (unless that place has it already), what a blend's item is
    written with, or the close one."""
    allowed = _allowed_keys(path)
    if (spelt := _spelt(key, allowed)) is not None:
        beside = _beside(sidecar, item["loc"])
        if spelt in beside:  # a re-test: the advice made it twice
            return f"unknown key; {json.dumps(spelt)} is given too; remove this one"
        if twin := _kept_twin(key, beside):  # "Params" and "PARAMS": both told to write it
            return f"unknown key; {twin}"
        told = f"unknown key; write it {json.dumps(spelt)} (keys are lower case)"
        held = item.get("input")
        # a re-test: "Params": {"Size": 64} was told of "Size" only once "Params" was mended
        inner = not path and spelt in ("params", "output") and isinstance(held, Mapping)
        if inner and (refused := _refused_at((spelt,), dict(held))):
            told += f", and mend what it holds: {'; '.join(refused)}"
        return told
    value = item.get("input")
    if _names_a_style(key, path, value):
        example = json.dumps({"name": _name_in(str(value)) or "starry", "weight": 1})
        if key.casefold() == "file":  # a re-test: told a name no library style had
            return (
                f"unknown key; a blend mixes styles of the library only: put {shown(value)} in "
                f"the style library and name it, as {example}"
            )
        return f"unknown key; a blend's item names a library style, as {example}"
    close = difflib.get_close_matches(key.lower(), allowed, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
    return f"unknown key; remove it ({hint})"


def _kept_twin(key: str, here: object) -> str | None:
    """What to tell `key` when the same object also holds it in other letter case: the
    lower-case spelling is kept, or else the first; None when `key` is the one kept."""
    twins = [k for k in here if k.casefold() == key.casefold()] if isinstance(here, Mapping) else []
    kept = next((k for k in twins if k == k.lower()), twins[0] if twins else key)
    if kept == key:
        return None
    return f"the same key as {json.dumps(kept)}, which is given too; remove this one"


def _beside(sidecar: Mapping[str, Any] | None, loc: tuple[str | int, ...]) -> Mapping[str, Any]:
    """The keys given beside the one at `loc` in the sidecar as sent ({} when not known)."""
    here: Any = sidecar or {}
    for part in loc[:-1]:
        try:
            here = here[part]
        except (KeyError, IndexError, TypeError):
            if part not in _TAGS:  # a tag of the style's union is not in the sidecar
                return {}
    return here if isinstance(here, Mapping) else {}


def _names_a_style(key: str, path: tuple[str, ...], value: object) -> bool:
    """A blend's item that gives its style as "style" or "file" (meaning "name"), which the
    top level's "style" must not claim (a re-test: told it belongs at the top level)."""
    return (
        path == ("style", "blend")
        and key.casefold() in ("style", "file")
        and isinstance(value, str)
    )


def _spelt(key: str, allowed: list[str]) -> str | None:
    """The allowed key that `key` is in another letter case, or itself (JSON keys are exact:
    a sender's "Strength" is params' "strength")."""
    return next((known for known in allowed if known.casefold() == key.casefold()), None)


def _refused_at(section: tuple[str, ...], given: dict[str, object]) -> list[str]:
    """What the section would say of the moved key (`_elsewhere`)."""
    models: dict[tuple[str, ...], TypeAdapter[Any]] = {
        (): _SIDECAR_ADAPTER,
        ("params",): _PARAMS_ADAPTER,
        ("output",): _OUTPUT_ADAPTER,
    }
    try:
        models[section].validate_python(given, strict=True)
    except ValidationError as exc:
        return describe_errors(exc, section)
    return []


def describe_errors(
    error: ValidationError,
    prefix: tuple[str, ...] = (),
    ceilings: Mapping[str, tuple[str, int]] | None = None,
    sidecar: Mapping[str, Any] | None = None,
    flat: bool = False,
) -> list[str]:
    """One sentence per pydantic error: `where: what is wrong (got ...); what to do`. A param
    above the engine's own bound is told the daemon's lower limit (`ceilings`, from
    `daemon.config.render_limits`) at once, not in a second round trip. `sidecar`: the
    document as given, whose keys in two letter cases are told to keep one, and, when it is a
    whole sidecar, whose keys at the wrong level are told where they belong. `flat`: the
    document is the object at `prefix` alone (a style's params file), so its keys are named
    without it ("strength", not "params.strength": a new user's trial)."""
    problems = []
    for item in error.errors():
        loc = prefix + tuple(str(part) for part in item["loc"])
        where = ""
        model_path: list[str] = []
        for index, part in enumerate(loc):
            is_tag = part in _TAGS and index > 0 and loc[index - 1] == "style"
            if is_tag:
                model_path.append(part)
            elif part.isdigit() and where:
                where += f"[{part}]"
            else:
                name = part if part.isprintable() and len(part) <= 40 else shown(part)
                if not (flat and index < len(prefix)):
                    where += f".{name}" if where else name
                model_path.append(part)
        where = where or "sidecar"
        kind = item["type"]
        if kind == "missing":
            if _kept_twin(model_path[-1], _beside(sidecar, item["loc"])) is None:
                # else it is there in other letter case, which the next line tells
                problems.append(f"{where}: required key is missing; add it")
        elif (
            kind == "extra_forbidden"
            and sidecar is not None
            and not flat  # a whole sidecar, not a style's params file
            and (
                home := _elsewhere(
                    model_path[-1], tuple(model_path[:-1]), item.get("input"), sidecar
                )
            )
        ):
            problems.append(f"{where}: {home}")
        elif kind == "extra_forbidden":
            key = model_path[-1] if model_path else where
            told = _unknown_key(key, tuple(model_path[:-1]), item, sidecar)
            problems.append(f"{where}: {told}")
        elif kind in ("model_type", "dict_type"):
            problems.append(f"{where}: {_object_fix(model_path, item.get('input'))}")
        elif (over := _over_ceiling(model_path, item, ceilings or {})) is not None:
            problems.append(breach_text(over))
        elif kind == "literal_error" and model_path[-1:] == ["init"]:
            # "image" is a value of the field, but only `render --init PATH` can give it.
            named = ", ".join(repr(name) for name in NAMED_INITS)
            told = f"must be one of {named} (got {shown(item.get('input'))})"
            problems.append(f"{where}: {told}{_value_case(model_path, item.get('input'))}")
        elif kind == "literal_error":
            told = error_text(item) + _value_case(model_path, item.get("input"))
            problems.append(f"{where}: {told}")
        else:
            numbers = model_path[-1:] == ["style_layer_weights"]
            problems.append(f"{where}: {error_text(item, _example(model_path), numbers)}")
    return problems


def _value_case(model_path: list[str], got: object) -> str:
    """The advice for a field's value in other letter case (a new user's "Luminance" was told
    only the values, where a key's "Strength" is told its spelling)."""
    model = _model_at(tuple(model_path[:-1]))
    field = model.model_fields.get(model_path[-1]) if model and model_path else None
    if field is None or not isinstance(got, str):
        return ""
    values = [value for value in get_args(field.annotation) if isinstance(value, str)]
    if model_path[-1:] == ["init"]:
        values = list(NAMED_INITS)
    spelt = _spelt(got, values)
    return "" if spelt is None else f"; write it {json.dumps(spelt)} (values are lower case)"


def _example(model_path: list[str]) -> str | None:
    """A number fit for the field, for the hint after a value of the wrong type (`quality` was
    told "a whole number such as 256")."""
    model = _model_at(tuple(model_path[:-1]))
    field = model.model_fields.get(model_path[-1]) if model is not None and model_path else None
    default = field.default if field is not None else None
    if isinstance(default, int | float) and not isinstance(default, bool):
        return f"{default:g}"
    return _EXAMPLES.get(model_path[-1] if model_path else "")


_EXAMPLES = {"quality": "90", "style_weight": "1000"}


def _over_ceiling(
    model_path: list[str], item: ErrorDetails, ceilings: Mapping[str, tuple[str, int]]
) -> OverLimit | None:
    """The daemon's limit a param breaks, where it lies below the engine bound it broke."""
    key = model_path[-1] if model_path[:1] == ["params"] and len(model_path) == 2 else ""
    if item["type"] != "less_than_equal" or key not in ceilings:
        return None
    setting, limit = ceilings[key]
    bound, asked = item.get("ctx", {}).get("le"), item.get("input")
    if not isinstance(asked, int | float) or not isinstance(bound, int | float) or limit >= bound:
        return None
    return OverLimit(key, asked, limit, setting, limit)


def error_text(item: ErrorDetails, example: str | None = None, numbers: bool = False) -> str:
    """One pydantic error as people read it: its message without "Value error, ", the value
    given, and what to write instead of a value of the wrong type (`example`: a number fit for
    the field; `numbers`: the field is a list of numbers)."""
    message = item["msg"].removeprefix("Value error, ")
    kind, got = item["type"], item.get("input")
    if kind in _LIST_KINDS:  # "a valid tuple" is Python's word (a photographer's trial)
        message = "must be a list in square brackets"
    if kind == "too_long":  # "... after validation, not 17" is pydantic's wording
        context = item.get("ctx", {})
        message = f"has {context.get('actual_length')} items; at most {context.get('max_length')}"
        message += " are allowed"
    value = ""
    bound = kind.startswith(("greater_than", "less_than"))  # "> 0" is not "got 0"
    if isinstance(got, str | int | float | bool) and (bound or shown(got) not in message):
        value = f" (got {shown(got)})"
    return f"{message}{value}{_type_fix(kind, got, example, numbers)}"


def _object_fix(model_path: list[str], got: object) -> str:
    """What an object in the sidecar looks like, where something else was written."""
    if model_path[:1] == ["style"]:
        name = got if isinstance(got, str) else "starry"
        example = f'{{"name": {json.dumps(name)}, "weight": 0.5}}'
        return f"each style of a blend is an object such as {example} (got {shown(got)})"
    examples = {"params": '{"strength": 0.7}', "output": '{"format": "jpg", "quality": 90}'}
    example = examples.get(model_path[0] if model_path else "", '{"style": "starry"}')
    return f"must be an object such as {example} (got {shown(got)})"


_LIST_KINDS = ("tuple_type", "list_type")


def _number_or_text(text: str) -> float | int | str:
    """A list item as written in the one string a sender gave ("1,2": weights, not names)."""
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):  # "nan" is a name here, as JSON has no such number
        return text
    return int(number) if number.is_integer() else number


def _type_fix(kind: str, got: object, example: str | None, numbers: bool) -> str:
    """What to write instead of a value of the wrong JSON type (nothing is coerced: "256" and
    true are not numbers, 2.0 is not a whole number, "conv1_1,conv2_1" is not a list)."""
    if kind in _LIST_KINDS:
        if isinstance(got, str):
            parts = [part.strip() for part in got.split(",") if part.strip()]
            items = [_number_or_text(part) for part in parts] if numbers else parts
            if any(isinstance(item, str) for item in items) and numbers:
                return ""  # ["nan"] would be refused in its turn
            return f"; write {json.dumps(items)}"
        return f"; write {json.dumps([got])}" if isinstance(got, int | float) else ""
    if kind not in ("int_type", "float_type", "int_from_float"):
        return ""
    whole = kind != "float_type"
    example = example or ("256" if whole else "0.5")
    if isinstance(got, bool):
        return f"; true and false are not numbers, write a number such as {example}"
    if isinstance(got, str):
        text = got.strip()
        if text.lstrip("-").replace(".", "", 1).isdigit():
            return f"; write the number without quotes: {text}"
        return f"; write a {'whole ' if whole else ''}number such as {example}, without quotes"
    if isinstance(got, float) and whole:
        return f"; write a whole number such as {example}"
    return f"; write a number such as {example}"


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
    try:
        return Sidecar.model_validate(value, strict=True)
    except ValidationError as exc:
        raise SidecarError(*describe_errors(exc, ceilings=ceilings, sidecar=value)) from None


def parse_param_overrides(data: bytes | str, what: str) -> dict[str, Any]:
    """Validate a params object on its own (a style's `<name>.json` defaults)."""
    value = load_json(data, what)
    if not isinstance(value, dict):
        raise SidecarError(f'{what}: must be a JSON object of params such as {{"size": 512}}')
    try:
        params = _PARAMS_ADAPTER.validate_python(value, strict=True)
    except ValidationError as exc:
        raise SidecarError(*describe_errors(exc, ("params",), sidecar=value, flat=True)) from None
    return given(params)


def given(params: RenderParams) -> dict[str, Any]:
    """The params set explicitly, in the order of the fields, not of a set: the notes that list
    them (a style's defaults taken) read the same each time."""
    return {
        name: getattr(params, name)
        for name in RenderParams.model_fields
        if name in params.model_fields_set
    }


def unused_strength(given: Mapping[str, Any]) -> str | None:
    """A sidecar giving both weights: allowed (style_weight wins, as documented), but the
    sender should hear that their strength did nothing."""
    if "strength" not in given or given.get("style_weight") is None:
        return None
    return (
        f"note: style_weight {given['style_weight']:g} is given, so strength "
        f"{given['strength']:g} is not used; leave out one of them"
    )


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
