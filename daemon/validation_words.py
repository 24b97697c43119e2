"""Pydantic's messages in the words of someone writing a sidecar, a flag or a config file:
"Input should be a valid integer" names a Python type and an "input" (a new user's trial:
`params.size: Input should be a valid integer (got 'big')` read as library text). One place
for sidecars, `render`'s flags and settings alike."""

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
