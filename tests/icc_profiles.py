"""ICC profiles written byte by byte (ICC.1:2001, version 2 matrix/TRC), for photos in colour
spaces other than sRGB: Pillow's ImageCms only creates sRGB, and a user's clone has no profile
files to borrow."""

import struct

# Display P3's primaries adapted to the D50 connection space (the columns of its RGB -> XYZ
# matrix), as Apple's "Display P3" profile gives them.
DISPLAY_P3_D50 = ((0.5151, 0.2412, -0.0011), (0.2919, 0.6922, 0.0419), (0.1572, 0.0666, 0.7841))
D50 = (0.9642, 1.0, 0.8249)


def _s15f16(*values: float) -> bytes:
    return b"".join(struct.pack(">i", round(v * 65536)) for v in values)


def _xyz(value: tuple[float, float, float]) -> bytes:
    return b"XYZ \0\0\0\0" + _s15f16(*value)


def _curve(gamma: float) -> bytes:
    return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"


def _description(name: str) -> bytes:
    ascii_name = name.encode("ascii") + b"\0"
    return (
        b"desc\0\0\0\0"
        + struct.pack(">I", len(ascii_name))
        + ascii_name
        + struct.pack(">II", 0, 0)  # no Unicode description
        + struct.pack(">HB", 0, 0)
        + bytes(67)  # no ScriptCode description
    )


def _profile(space: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    table_size = 4 + 12 * len(tags)
    offset = 128 + table_size
    entries, bodies = [], b""
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        entries.append(struct.pack(">4sII", signature, offset + len(bodies), len(body)))
        bodies += body
    size = 128 + table_size + len(bodies)
    header = (
        struct.pack(">I4sI4s4s4s", size, b"none", 0x02100000, b"mntr", space, b"XYZ ")
        + struct.pack(">6H", 2026, 12, 4, 0, 0, 0)
        + b"acsp"
        + bytes(4 * 4 + 8 + 4)  # platform, flags, manufacturer, model; attributes; intent
        + _s15f16(*D50)
        + bytes(4 + 44)  # creator, reserved
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + b"".join(entries) + bodies


def rgb_profile(
    name: str,
    primaries: tuple[tuple[float, float, float], ...] = DISPLAY_P3_D50,
    gamma: float = 2.2,
) -> bytes:
    """An RGB profile: three primaries (D50 XYZ) and one tone curve for all channels."""
    tags = [(b"desc", _description(name)), (b"wtpt", _xyz(D50))]
    columns = zip((b"rXYZ", b"gXYZ", b"bXYZ"), primaries, strict=True)
    tags += [(tag, _xyz(xyz)) for tag, xyz in columns]
    tags += [(tag, _curve(gamma)) for tag in (b"rTRC", b"gTRC", b"bTRC")]
    return _profile(b"RGB ", tags)


def grey_profile(name: str, gamma: float) -> bytes:
    """A grey profile: one tone curve."""
    tags = [(b"desc", _description(name)), (b"wtpt", _xyz(D50)), (b"kTRC", _curve(gamma))]
    return _profile(b"GRAY", tags)
