"""Text files people write in their editors (sidecars, the config): UTF-8, with or without the
byte-order mark Windows editors put first, and what else they may have saved said in words."""

from __future__ import annotations

_UTF32_MARKS = (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")
_UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")


class NotUtf8(ValueError):
    """Not UTF-8 text; `why` says what it is, or where it stops being UTF-8."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def text_of(data: bytes) -> str:
    """`data` as text, a leading byte-order mark dropped (a new user's trial: a config saved
    by Notepad was "not valid TOML (at line 1, column 1)", with nothing to see there)."""
    # Before decoding: UTF-16 of ASCII text is valid UTF-8 too, with a NUL after each letter.
    if data.startswith(_UTF32_MARKS):  # a re-test: it was called UTF-16
        raise NotUtf8("it is UTF-32 text")
    if data.startswith(_UTF16_MARKS) or _every_other_zero(data[:64]):
        raise NotUtf8('it is UTF-16 text, which Notepad calls "Unicode"')
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NotUtf8(f"bad byte at offset {exc.start}") from None


def _every_other_zero(head: bytes) -> bool:
    """UTF-16 without its mark: ASCII text with a zero byte after (or before) each letter."""
    odd, even = head[1::2], head[::2]
    return len(head) >= 4 and (odd.count(0) == len(odd) or even.count(0) == len(even))
