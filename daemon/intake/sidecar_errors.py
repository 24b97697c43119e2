"""What is wrong with a sidecar, told as one sentence per problem: `where: what is wrong (got
...); what to do`. Sidecars are written by people and by other programs, and a report they
cannot act on costs a round trip each, so a key is told its spelling in other letter case, its
right level when put at the wrong one, its close match, and a value its allowed range with the
daemon's own lower limit, all at once.
"""

import difflib
import json
import math
from collections.abc import Mapping
from typing import Any, get_args

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from daemon.config.render_limits import OverLimit, breach_text
from daemon.intake.jsonload import shown
from daemon.intake.sidecar_model import (
    OUTPUT_ADAPTER,
    PARAMS_ADAPTER,
    SIDECAR_ADAPTER,
    STYLE_TAGS,
    OutputOptions,
    Sidecar,
    StyleFile,
    StyleRef,
    name_in,
)
from daemon.validation_words import (
    NO,
    YES,
    as_word,
    number_text_fix,
    plain,
    spelling_of,
    value_hint,
)
from service.params import NAMED_INITS, RenderParams, beyond_strength


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
    if spelling_of(key, _allowed_keys(path)) is not None or _names_a_style(key, path, value):
        return None  # its own level's key in other letter case, or a blend's item's style
    here = sidecar.get(path[0], {}) if path else sidecar
    if path in sections and (twin := _kept_twin(key, here)):  # a re-test: both told to move
        return twin
    for section, place in sections.items():
        spelt = spelling_of(key, _allowed_keys(section))
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
    if (spelt := spelling_of(key, allowed)) is not None:
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
        example = json.dumps({"name": name_in(str(value)) or "starry", "weight": 1})
        if key.casefold() == "file":  # a re-test: told a name no library style had
            last = str(value).replace("\\", "/").rpartition("/")[2]
            if name_in(str(value)) == last:  # no image's name: e.JSON was to go in the library
                example = json.dumps({"name": "starry", "weight": 1})
                return (
                    f"unknown key; a blend mixes styles of the library only, and {shown(value)} "
                    f"is no image: name a library style, as {example}"
                )
            return (
                f"unknown key; a blend mixes styles of the library only: put {shown(value)} in "
                f"the style library and name it, as {example}"
            )
        return f"unknown key; a blend's item names a library style, as {example}"
    close = _close(key.lower(), allowed)
    if not close:
        return f"unknown key; remove it (allowed: {', '.join(allowed)})"
    # "remove it" alone would throw away what the sender meant (a photographer's trial)
    meant = " or ".join(map(repr, close))
    return f"unknown key; did you mean {meant}? rename it, or remove it"


def _close(key: str, allowed: list[str]) -> list[str]:
    """The allowed keys `key` may be a misspelling of: the closest, and a second as close
    ("scale": multiscale or style_scale, where "strenght" is strength alone)."""
    ratio = {name: difflib.SequenceMatcher(None, key, name).ratio() for name in allowed}
    close = difflib.get_close_matches(key, allowed, n=2)
    return [name for name in close if ratio[name] >= ratio[close[0]] - 0.1]


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
            if part not in STYLE_TAGS:  # a tag of the style's union is not in the sidecar
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


def _refused_at(section: tuple[str, ...], given: dict[str, object]) -> list[str]:
    """What the section would say of the moved key (`_elsewhere`)."""
    models: dict[tuple[str, ...], TypeAdapter[Any]] = {
        (): SIDECAR_ADAPTER,
        ("params",): PARAMS_ADAPTER,
        ("output",): OUTPUT_ADAPTER,
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
            is_tag = part in STYLE_TAGS and index > 0 and loc[index - 1] == "style"
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
        elif kind == "literal_error" and (values := _values(model_path)):
            got = item.get("input")
            named = ", ".join(map(repr, values))
            told = f"must be one of {named} (got {shown(got)}){value_hint(values, got)}"
            if not told.endswith("?") and (switch := _switch_hint(model_path, got)):
                told += switch
            problems.append(f"{where}: {told}")
        else:
            numbers = model_path[-1:] == ["style_layer_weights"]
            told = error_text(item, _example(model_path), numbers)
            problems.append(f"{where}: {told}")
    return problems


def _values(model_path: list[str]) -> list[str]:
    """The values a sidecar may give the field at `model_path` ("image" is one of init's, but
    only `render --init PATH` can give it)."""
    if model_path[-1:] == ["init"]:
        return list(NAMED_INITS)
    model = _model_at(tuple(model_path[:-1]))
    field = model.model_fields.get(model_path[-1]) if model and model_path else None
    return [] if field is None else _literals(field.annotation)


def _literals(annotation: object) -> list[str]:
    """The strings of the Literal inside an annotation (through Annotated, Optional, ...)."""
    found: list[str] = []
    for arg in get_args(annotation):
        found.extend([arg] if isinstance(arg, str) else _literals(arg))
    return found


def _switch_hint(model_path: list[str], got: object) -> str:
    """For a yes or no written in words to a field that also takes true and false (a new
    user's `"preserve_colors": "yes"` was told its modes alone): what true and false mean."""
    word = as_word(got)
    model = _model_at(tuple(model_path[:-1]))
    if word not in (*YES, *NO) or model is None or not model_path:
        return ""
    try:
        meant = [model.model_validate({model_path[-1]: flag}) for flag in (True, False)]
    except ValidationError:
        return ""
    yes, no = (getattr(params, model_path[-1]) for params in meant)
    flag = "true" if word in YES else "false"
    return f"; or write {flag} (true means {yes!r}, false {no!r})"


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
    message = plain(item["msg"])
    kind, got = item["type"], item.get("input")
    context = item.get("ctx", {})
    if kind == "too_long":  # "... after validation, not 17" is pydantic's wording
        message = f"has {context.get('actual_length')} items; at most {context.get('max_length')}"
        message += " are allowed"
    if kind == "too_short":
        message = f"has {context.get('actual_length')} items; at least {context.get('min_length')}"
        message += " needed"
    if isinstance(got, float) and not math.isfinite(got):  # `render --strength nan`: "<= 1"
        return f"must be a finite number (got {shown(got)})"
    beyond = beyond_strength(kind, item["loc"], got)
    value = ""
    bound = kind.startswith(("greater_than", "less_than"))  # "> 0" is not "got 0"
    if isinstance(got, str | int | float | bool) and (bound or shown(got) not in message):
        value = f" (got {shown(got)})"
    return (
        f"{message}{value}{_type_fix(kind, got, example, numbers)}{beyond}{_one_style(kind, got)}"
    )


def _one_style(kind: str, got: object) -> str:
    """For a blend's item written as the whole style (a new user's trial: `{"name": "noise"}`
    was told the three shapes, not the one it was nearly)."""
    if kind != "style_shape" or not isinstance(got, dict) or not isinstance(got.get("name"), str):
        return ""
    name = json.dumps(got["name"])
    return (
        f'; for one style write "style": {name} ({{"name": ..., "weight": ...}} objects go in '
        f'a list, to blend: [{{"name": {name}, "weight": 1}}, ...])'
    )


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
    if kind not in ("int_type", "float_type", "int_from_float", "float_parsing", "int_parsing"):
        return ""
    whole = kind not in ("float_type", "float_parsing")
    example = example or ("256" if whole else "0.5")
    if isinstance(got, bool):
        return f"; true and false are not numbers, write a number such as {example}"
    if isinstance(got, str):
        return number_text_fix(got.strip(), whole, example, quoted=kind.endswith("_type"))
    if isinstance(got, float) and whole:
        return f"; write a whole number such as {example}"
    return f"; write a number such as {example}"
