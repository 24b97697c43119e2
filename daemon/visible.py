"""Names from the inbox as text a person can trust: a file name may carry terminal escape
sequences (clear the screen, retitle the window) or bidirectional overrides ("photo\u202egpj.exe"
reads as photo.exe...), and every place that shows one to a person (the status command, the
console log, the web page) prints it through `visible`."""

from __future__ import annotations

import unicodedata

# Bidirectional overrides and isolates make a name read differently from what it is.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def visible(text: str) -> str:
    """`text` with control characters, lone surrogates (undecodable bytes) and bidi overrides
    shown as `\\x1b`-style escapes; printable text is returned as it is."""
    if text.isprintable():
        return text
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if char in _BIDI or unicodedata.category(char) in ("Cc", "Cs")
        else char
        for char in text
    )


def visible_lines(text: str) -> str:
    """`visible` line by line: the line breaks of a report stay, any others are shown."""
    return "\n".join(visible(line) for line in text.split("\n"))
