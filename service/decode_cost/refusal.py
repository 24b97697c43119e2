"""How a refusal for what reading a file would cost is worded, for every format alike."""


def refused(what: str, usual: str, fix: str) -> str:
    return f"{what} ({usual}), which would take very long to read; save it again as {fix}"
