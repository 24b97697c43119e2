"""Pydantic's messages in the words of someone writing a sidecar, a flag or a config file:
"Input should be a valid integer" names a Python type and an "input" (a new user's trial:
`params.size: Input should be a valid integer (got 'big')` read as library text). One place
for sidecars, `render`'s flags and settings alike."""

import difflib
import json
import re

_WORDS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), words)
    for pattern, words in (
        (r"^Input should be a valid integer\b.*", "must be a whole number"),
        (r"^Input should be a valid number\b.*", "must be a number"),
        (r"^Input should be a valid boolean\b.*", "must be true or false"),
        (r"^Input should be a valid string\b.*", "must be text in quotes"),
        (r"^Input should be a valid (list|tuple)\b.*", "must be a list in square brackets"),
        (r"^Input should be greater than or equal to (.+)$", r"must be at least \1"),
        (r"^Input should be less than or equal to (.+)$", r"must be at most \1"),
        (r"^Input should be greater than (.+)$", r"must be above \1"),
        (r"^Input should be less than (.+)$", r"must be below \1"),
        (r"^Input should be ", "must be "),
    )
)


def plain(message: str) -> str:
    """`message` (one pydantic error's `msg`) as people read it."""
    message = message.removeprefix("Value error, ")
    for pattern, words in _WORDS:
        if pattern.match(message):
            return pattern.sub(words, message, count=1)
    return message


def spelling_of(name: str, allowed: list[str]) -> str | None:
    """The allowed name that `name` is in another letter case, or itself (JSON keys are exact:
    a sender's "Strength" is params' "strength")."""
    return next((known for known in allowed if known.casefold() == name.casefold()), None)


def as_word(got: object) -> str | None:
    return got.strip().casefold() if isinstance(got, str) else None


YES, NO = ("yes", "y", "on", "1", "enabled"), ("no", "n", "off", "0", "disabled")
# Words people write for a value that spelling alone does not find (a re-test: "mean" pooling).
_SAME_AS = {"mean": "avg", "average": "avg", "photo": "content"}


def value_hint(values: list[str], got: object) -> str:
    """The advice for a value in other letter case (a new user's "Luminance" was told only the
    values, where a key's "Strength" is told its spelling) or misspelt, as keys are (a new
    user's "recoloured", the README's spelling in prose, and "luminence"), or a switch given
    as true or false (a re-test's `"multiscale": true`)."""
    word = as_word(got)
    if {"on", "off"} <= set(values) and (isinstance(got, bool) or word in (*YES, *NO)):
        return f"; write {json.dumps('on' if got is True or word in YES else 'off')}"
    if not isinstance(got, str):
        return ""
    if (spelt := spelling_of(got, values)) is not None:
        return f"; write it {json.dumps(spelt)} (values are lower case)"
    close = difflib.get_close_matches(got.casefold(), values, n=1)
    if not close and _SAME_AS.get(got.casefold()) in values:  # a word no spelling is near
        close = [_SAME_AS[got.casefold()]]
    return f"; did you mean {close[0]!r}?" if close else ""


def number_text_fix(text: str, whole: bool, example: str | None, quoted: bool) -> str:
    """What to write for a number given as text (in a sidecar, in quotes; on the command line,
    in a config file or a variable, as typed): a percentage as its fraction, a decimal comma as
    a point, thousands without commas (a photographer's trial: "50%" and "0,5" were told only
    to write a number). `whole`: the field takes whole numbers; `example`, if any, is offered
    for other text."""
    unquoted = ", without quotes" if quoted else ""
    grouped = re.fullmatch(r"\d{1,3}([,.]\d{3})+", text, re.ASCII)  # 1,024 or 1.024: thousands
    if not whole and grouped and "." in text:  # 1.000: one, or a thousand (a re-test)
        return f"; write {text} without quotes, or {text.replace('.', '')} for thousands"
    if _is_number(text) and not (whole and "." in text):
        return f"; write the number without quotes: {text}" if quoted else ""
    if whole and grouped:  # never a fraction here (a re-test: "1.024" told to drop quotes)
        return f"; write it without the {_marks(text)}{unquoted}: {re.sub('[,.]', '', text)}"
    if not whole and (percent := re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", text, re.ASCII)):
        return f"; a percentage is written as a fraction{unquoted}: {float(percent[1]) / 100:g}"
    if not whole and re.fullmatch(r"\d+,\d+", text, re.ASCII):  # 0,5; 1,000 may be either
        point = f"write a decimal point, not a comma{unquoted}: {text.replace(',', '.')}"
        whole_number = text.replace(",", "")
        return f"; {point}" if not grouped else f"; {point}, or {whole_number} for thousands"
    if example is None:
        return ""
    return f"; write a {'whole ' if whole else ''}number such as {example}{unquoted}"


def _is_number(text: str) -> bool:
    """Digits as JSON writes them: not "²" or full-width ones, which `str.isdigit` takes."""
    return re.fullmatch(r"-?\d+(\.\d+)?", text, re.ASCII) is not None


def _marks(text: str) -> str:
    return "commas" if "," in text else "dots"
