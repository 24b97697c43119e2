"""ICC colour profiles: what LittleCMS would take very long to build a transform from."""

from __future__ import annotations

MAX_PROFILE_TAGS = 1_000
MAX_PROFILE_ELEMENTS = 64


def profile_problem(icc: bytes) -> str | None:
    """What makes the ICC colour profile `icc` costly for LittleCMS to build a transform from,
    or None. A multi-process-element tag (`mpet`, which the float D2Bx tags hold) whose
    elements all point at one 60-byte matrix costs 8 bytes an element in the file and time
    quadratic in their count: 20,000 of them, a 640-byte PNG, held a worker 14 s, and a JPEG
    can carry a profile of 2,000,000 (an attacker's fourth round). Profiles carry a few dozen
    tags, and such a tag a few elements. A profile is metadata: `service.imageio` takes the
    pixels as sRGB without it, as it does an unreadable one."""
    tags = int.from_bytes(icc[128:132], "big")
    if len(icc) < 132 or icc[36:40] != b"acsp" or 132 + 12 * tags > len(icc):
        # Not a profile, or a damaged one (a tag table longer than the profile), which
        # LittleCMS refuses at once: "unreadable", not costly (an attacker's trial: 140 bytes
        # of text were told "would take very long (1,919,050,087 tags...)").
        return None
    if tags > MAX_PROFILE_TAGS:
        return f"{tags:,} tags, where profiles carry a few dozen"
    for index in range(tags):
        entry = 132 + 12 * index
        at = int.from_bytes(icc[entry + 4 : entry + 8], "big")
        if icc[at : at + 4] == b"mpet":
            elements = int.from_bytes(icc[at + 12 : at + 16], "big")
            if elements > MAX_PROFILE_ELEMENTS:
                return f"{elements:,} processing elements, where profiles use a few"
    return None
