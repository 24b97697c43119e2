"""Reading JSON that other people wrote (sidecars, a style's default params): bounded in size
before it is read, in nesting depth before it is parsed, strict about numbers and duplicate keys;
and, for files in the inbox, read only through `daemon.safefs` (no link followed, one hard link,
still the file that settled). Every problem is a `SidecarError` naming the file and the fix.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path, PurePath
from typing import Any

from daemon.intake import reasons
from daemon.safefs import Changed, Identity, NotUsable, UnsafePath, folder, open_file
from daemon.utf8 import NotUtf8, text_of
from service.files import NotAFile, open_regular

CURLY_QUOTES = "\u201c\u201d\u2018\u2019\u201e\u00ab\u00bb"  # what editors' smart quotes make
LEADING_POINT = re.compile(r"(-?)(\.\d+)")  # .5, which JSON writes 0.5
MAX_DEPTH = 16  # real sidecars nest 3 deep; anything near the parser's recursion limit is hostile
_SHOWN_INPUT = 60


MAX_TOLD = 10  # problems an error report spells out; `stylefold validate` lists every one


class SidecarError(ValueError):
    """A sidecar (or a style's default-params file) is unusable. `problems` holds one sentence
    per problem, each naming the key and the fix; str() joins the first MAX_TOLD of them for
    error reports (an attacker's trial: 6,500 unknown keys in 64 KiB made a 1.8 MB report, log,
    database row and status entry each, status.json 42 MB with 26 such sidecars)."""

    def __init__(self, *problems: str) -> None:
        self.problems = list(problems)
        told = "; ".join(problems[:MAX_TOLD])
        if (more := len(problems) - MAX_TOLD) > 0:
            told += f"; and {more} more (`stylefold validate` on the sidecar lists them all)"
        super().__init__(told)


def shown(value: object) -> str:
    """A value as people read it in an error message, cut to a sensible length (true, false
    and null as JSON writes them)."""
    text = json.dumps(value) if value is None or isinstance(value, bool) else repr(value)
    return text if len(text) <= _SHOWN_INPUT else text[: _SHOWN_INPUT - 3] + "..."


def json_kind(value: object) -> str:
    """A parsed value's type in JSON's words (a sender wrote an array, not a Python list)."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    kinds = {dict: "an object", list: "an array", str: "a string"}
    return next((word for kind, word in kinds.items() if isinstance(value, kind)), "a number")


def check_depth(text: str, what: str = "sidecar", limit: int = MAX_DEPTH) -> None:
    """Refuse deep nesting with a linear scan, before any recursive parser sees it."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                raise SidecarError(f"{what}: nested more than {limit} levels deep; flatten it")
        elif char in "]}":
            depth -= 1


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range; use a finite number")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 20:
        raise ValueError(f"number {text[:20]}... has more than 20 digits; use a smaller number")
    return int(text)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON; use a finite number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {shown(key)} appears twice in one object; keep one")
        result[key] = value
    return result


def load_json(data: bytes | str, what: str = "sidecar") -> Any:
    """Strict JSON: UTF-8 (BOM allowed), bounded depth, no NaN/Infinity, no duplicate keys."""
    if isinstance(data, bytes):
        try:
            text = text_of(data)
        except NotUtf8 as exc:
            from service.imageio import claimed_format  # Pillow, only for this mistake

            if (kind := claimed_format(data)) is not None:  # a new user's `validate photo.jpg`
                raise SidecarError(
                    f"{what}: this is {kind} image, not JSON text; give the photo's sidecar "
                    "(its .json file) instead"
                ) from None
            raise SidecarError(f"{what}: not UTF-8 text ({exc.why}); save it as UTF-8") from None
    else:
        text = data.removeprefix("\ufeff")
    if not text.strip():
        raise SidecarError(
            f'{what}: the file is empty; write a JSON object such as {{"style": "name"}}'
        )
    check_depth(text, what)
    try:
        return json.loads(
            text,
            parse_float=_finite_float,
            parse_int=_bounded_int,
            parse_constant=_reject_constant,
            object_pairs_hook=_unique_keys,
        )
    except json.JSONDecodeError as exc:
        raise SidecarError(f"{what}: {_syntax_error(exc)}") from None
    except (ValueError, RecursionError) as exc:
        raise SidecarError(f"{what}: {exc}") from None


def _syntax_error(exc: json.JSONDecodeError) -> str:
    """The JSON mistakes people make by hand, named: the parser's own words ("Expecting property
    name enclosed in double quotes") do not point at a trailing comma or a comment."""
    text, pos = exc.doc, exc.pos
    if text.lstrip().startswith("{\\rtf"):  # a re-test: TextEdit's rich text, "fix the syntax"
        return (
            "not valid JSON: it is rich text (RTF), as TextEdit saves by default; "
            f"{reasons.PLAIN_TEXT} with the JSON alone"
        )
    ahead = text[pos:].lstrip()
    before = text[:pos].rstrip()
    if before.endswith(",") and ahead[:1] in ("}", "]"):
        comma = len(before) - 1
        line, column = text.count("\n", 0, comma) + 1, comma - text.rfind("\n", 0, comma)
        return (
            f"not valid JSON: a comma after the last item (line {line} column {column}); "
            "JSON allows none there, remove it"
        )
    where = f"line {exc.lineno} column {exc.colno}"
    if text.startswith(("//", "/*", "#"), pos):
        return f"not valid JSON: a comment at {where}; JSON has no comments, remove it"
    if text.startswith("'", pos):
        return (
            f"not valid JSON: a single quote at {where}; JSON writes keys and text in double quotes"
        )
    if (quote := text[pos : pos + 1]) and quote in CURLY_QUOTES:  # as iOS Notes writes them
        return (
            f"not valid JSON: a curly quote ({quote}) at {where}; JSON needs straight double "
            'quotes ("): turn off smart quotes in the editor, or retype them'
        )
    value = before[-1:] in (":", ",", "[")  # where a value starts, not 1.5.3's second point
    if value and (number := LEADING_POINT.match(text, pos)):
        shown, sign, digits = number.group(), number.group(1), number.group(2)
        return (
            f"not valid JSON: the number {shown} at {where} needs a 0 before its point "
            f"({sign}0{digits})"
        )
    return f"not valid JSON ({exc.msg} at {where}); fix the syntax"


def read_limited(path: Path, max_bytes: int, what: str) -> bytes:
    """Read at most max_bytes, refusing larger files before reading them (and files that grow
    past the limit while being read). For files in folders the daemon's owner controls (the
    style library, a file given on the command line); inbox files go through `read_inbox`."""
    try:
        with open_regular(path) as handle:
            fd = os.dup(handle.fileno())  # _read_fd closes it
    except OSError as exc:
        raise _unreadable(exc, path.name, what) from None
    return _read_fd(fd, path.name, max_bytes, what)


def read_inbox(
    inbox: Path, relative: PurePath, max_bytes: int, what: str, expect: Identity | None
) -> bytes:
    """`read_limited` for a file in the inbox: reached without following any link, taken only
    if it is a regular file with one link, and (with `expect`) still the file that settled;
    raises Changed when it is not (or a folder on its way was swapped)."""
    try:
        with folder(inbox, relative.parent) as dir_fd:
            fd = open_file(dir_fd, relative.name, expect)
    except UnsafePath:
        raise Changed(f"{relative.parent.as_posix()} is not the folder it was") from None
    except NotUsable as exc:
        raise SidecarError(f"{what}: {relative.name} {exc.reason}") from None
    except PermissionError as exc:  # the daemon's user, shut out by a sync tool's modes
        raise SidecarError(f"{what}: {relative.name} {reasons.unreadable(exc.strerror)}") from None
    except OSError as exc:
        raise _unreadable(exc, relative.name, what) from None
    return _read_fd(fd, relative.name, max_bytes, what)


def _unreadable(exc: OSError, name: str, what: str) -> SidecarError:
    if isinstance(exc, FileNotFoundError):
        return SidecarError(f"{what}: {name} disappeared before it could be read")
    if isinstance(exc, IsADirectoryError):
        return SidecarError(f"{what}: {name} is a folder, not a JSON file")
    if isinstance(exc, NotAFile):
        return SidecarError(f"{what}: {name} is {exc.strerror}; give a JSON file")
    return SidecarError(f"{what}: cannot read {name} ({exc.strerror}); check its permissions")


def _read_fd(fd: int, name: str, max_bytes: int, what: str) -> bytes:
    try:
        result = os.fstat(fd)
        if stat.S_ISDIR(result.st_mode):
            raise SidecarError(f"{what}: {name} is a folder, not a JSON file")
        if result.st_size > max_bytes:
            raise SidecarError(
                f"{what}: {result.st_size} bytes is larger than max_sidecar_bytes ({max_bytes}); "
                "shorten it or raise max_sidecar_bytes"
            )
        data = b""
        while len(data) <= max_bytes and (chunk := os.read(fd, max_bytes + 1 - len(data))):
            data += chunk  # a network file system may return less than asked
    except OSError as exc:
        raise _unreadable(exc, name, what) from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise SidecarError(
            f"{what}: larger than max_sidecar_bytes ({max_bytes}); shorten it or raise "
            "max_sidecar_bytes"
        )
    return data
