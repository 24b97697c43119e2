"""The shapes of style image that can carry a texture at a bearable cost. The engine enlarges a
style until its short side reaches the network's minimum (`params.STYLE_MIN_SIDE`), so a strip
costs in proportion to its length, not its file size: an attacker's 2 KB PNG of 30000x16 px
became a 240000x128 px style and ran the worker out of memory at any output size."""

MIN_SIDE = 16  # below this a style has too few pixels to carry a texture
MAX_ASPECT = 10.0  # a thinner strip is enlarged to the network's minimum side, at great cost


def shape_problem(name: str, size: tuple[int, int]) -> str | None:
    """What is wrong with a decoded style image's shape (too small, a strip), or None."""
    width, height = size
    if min(width, height) < MIN_SIDE:
        return (
            f"{name} is only {width}x{height} pixels; a style image needs at least "
            f"{MIN_SIDE} pixels on each side (use a larger picture of the style)"
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        return (
            f"{name} is {width}x{height}, a strip over {MAX_ASPECT:g} times longer than it "
            "is wide; crop it to a squarer part of the style"
        )
    return None
