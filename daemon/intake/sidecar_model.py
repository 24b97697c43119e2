"""The sidecar contract: the JSON file that travels with a photo and says how to stylise it.

For `photo.jpg` the sidecar is `photo.json` (or `photo.jpg.json`):

    {"style": "starry_night",
     "params": {"size": 512, "iterations": 300},
     "output": {"format": "jpg", "quality": 92}}

`style` is a library name, a blend `[{"name": ..., "weight": ...}]`, or `{"file": "mine.jpg"}`
(a bare file name beside the sidecar). Every key is optional except that without `style` the
daemon's default_style must be configured. `params` override the daemon's defaults key by key;
the merged result is validated as `service.params.RenderParams`. Reading one is
`daemon.intake.sidecar`; telling what is wrong with one, `daemon.intake.sidecar_errors`.
"""

import json
import re
import unicodedata
from functools import partial
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
    WithJsonSchema,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

from daemon.config import DEFAULT_IMAGE_EXTENSIONS
from daemon.config.render_limits import START_IMAGE_REFUSED
from daemon.intake.ignore import PHOTO_TYPES
from daemon.intake.jsonload import shown
from service.params import (
    FORMAT_ALIASES,
    FormatName,
    OutputFormat,
    RenderParams,
    whole,
)

MAX_STYLES = 16
MAX_NAME_LENGTH = 128
_WORD = re.compile(r"\w")


def _is_style_name(text: str) -> bool:
    """A word character, then word characters, '.', '-', spaces and combining marks: names
    in decomposed Unicode (macOS writes `é` as `e` and an accent) were refused, since a
    combining accent is no word character (an attacker's trial: "Müller" was told it is not
    a style name, and the library skipped Müller.jpg)."""

    def mark(char: str) -> bool:
        return unicodedata.category(char)[0] == "M"

    # A mark goes on a letter or digit (or another mark): "a.\u0301." hid its ".." from the
    # rule (an attacker's trial).
    return bool(text) and all(
        _WORD.match(char)
        or (i and char in ". -")
        or (i and mark(char) and (_WORD.match(text[i - 1]) or mark(text[i - 1])))
        for i, char in enumerate(text)
    )


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
        # an empty one: a new user's trial meant the default style
        default = " (got ''); leave \"style\" out for the daemon's default style, if it has one"
        default = default if not name and key == "style" else ""
        raise ValueError(f"a style name has 1 to {MAX_NAME_LENGTH} characters{default}")
    last = name.replace("\\", "/").rpartition("/")[2]  # a path from a phone or a PC
    if last != name and (meant := name_in(name)) is not None:
        file = f', and an image beside the sidecar as "style": {{"file": {json.dumps(last)}}}'
        raise ValueError(
            f"{shown(name)} is a path; name a library style alone, as "
            f"{json.dumps(key)}: {json.dumps(meant)} (see `stylefold styles`)"
            + (file if meant != last and key == "style" else "")
        )
    if ".." in name or not _is_style_name(name) or name != name.strip():
        raise ValueError(
            f"{shown(name)} is not a style name; use a name from the style library "
            f"({STYLE_NAME_RULE}), see `stylefold styles`"
        )
    return name


def name_in(text: str) -> str | None:
    """The library name a path or an image's file name stands for ("styles/cells.png" is
    "cells"; "cells.v2" is a name), or None when its last part cannot be one."""
    last = text.replace("\\", "/").rpartition("/")[2]
    if not _is_style_name(last) or ".." in last:
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


# What the published schema can say of a name: no more than the rules above, so that it never
# refuses what the daemon takes (the name rule's \w is Unicode in Python, ASCII in most JSON
# Schema validators): not empty, no separator, no "..", no hidden name, no space at either end
# (an empty name, "../etc" and ".hidden" passed the schema and were refused here).
NAME_SCHEMA = WithJsonSchema(
    {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_NAME_LENGTH,
        "pattern": r"^(?!.*\.\.)(?!.*\s$)[^\s./\\][^/\\]*$",
    }
)
FILE_SCHEMA = WithJsonSchema(
    {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": r"^(?!.*\s$)[^\s./\\][^/\\]*$",
    }
)
StyleName = Annotated[str, AfterValidator(check_style_name), NAME_SCHEMA]


class StyleRef(BaseModel):
    """One style of a blend; weights are relative (the engine normalises them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, AfterValidator(partial(check_style_name, key="name")), NAME_SCHEMA] = (
        Field(description="A style library name (see `stylefold styles`), each once in a blend.")
    )
    weight: float = Field(1.0, gt=0, le=1e6, allow_inf_nan=False, description="Blend weight.")


class StyleFile(BaseModel):
    """A style image brought along in the inbox instead of a library name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: Annotated[str, AfterValidator(check_file_name), FILE_SCHEMA] = Field(
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
STYLE_TAGS = frozenset({"name", "blend", "file"})


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


def _any_case(names: list[str]) -> str:
    """A JSON Schema pattern (ECMA-262: no case-insensitive flag) for `names` in any case."""
    spelt = ["".join(f"[{c.lower()}{c.upper()}]" for c in name) for name in names]
    return f"^({'|'.join(spelt)})$"


# The schema takes what `FormatName` does: "jpeg" and "TIF" were refused by the schema alone.
FORMAT_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"enum": list(get_args(OutputFormat))},  # what editors offer
            {"type": "string", "pattern": _any_case([*get_args(OutputFormat), *FORMAT_ALIASES])},
            {"type": "null"},
        ]
    }
)


class OutputOptions(BaseModel):
    """How the result is encoded; unset keys use the daemon's output_format/output_quality."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Annotated[FormatName | None, FORMAT_SCHEMA] = Field(
        None,
        description="Output image format: jpg, png, webp or tiff, in any case (jpeg and tif are "
        "accepted as aliases).",
    )
    # The bounds before the validator, so that the schema says minimum and maximum.
    quality: Annotated[int, Field(ge=1, le=100), BeforeValidator(whole)] | None = Field(
        None, description="JPEG/WebP quality, 1-100."
    )


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


PARAMS_ADAPTER: TypeAdapter[RenderParams] = TypeAdapter(ParamsOverride)
STYLE_ADAPTER: TypeAdapter[StyleSpec] = TypeAdapter(StyleSpec)
OUTPUT_ADAPTER: TypeAdapter[OutputOptions] = TypeAdapter(OutputOptions)
SIDECAR_ADAPTER: TypeAdapter[Sidecar] = TypeAdapter(Sidecar)


def given(params: RenderParams) -> dict[str, Any]:
    """The params set explicitly, in the order of the fields, not of a set: the notes that list
    them (a style's defaults taken) read the same each time."""
    return {
        name: getattr(params, name)
        for name in RenderParams.model_fields
        if name in params.model_fields_set
    }
