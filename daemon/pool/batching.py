"""Which queued jobs may be optimised together: the batch key.

Jobs with equal keys have the same style images and blend weights, the same parameters and the
same image size at every scale of the schedule, so the engine can run them as one batch
(independent losses, one forward and backward pass). The size comes from the photo's header
(upright, after its EXIF orientation), read without decoding the pixels.
"""

import hashlib
import json
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from service import schedule
from service.errors import ImageInputError
from service.imageio import exif_orientation, opened_header
from service.params import RenderParams

SIDEWAYS = {5, 6, 7, 8}  # orientations that swap width and height


def upright_size(photo: Path | bytes) -> tuple[int, int] | None:
    """(w, h) as the photo (or its `read_header` bytes) is meant to be seen, or None when the
    header cannot be read (the job then runs alone, and the worker reports what is wrong with
    the file)."""
    try:
        with opened_header(photo) as image:
            w, h = image.size
            if exif_orientation(image) in SIDEWAYS:
                w, h = h, w
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
    except ImageInputError:  # costly to open (`service.decode_cost`): the worker tells it
        return None
    return w, h


def batch_key(
    photo: Path | bytes, styles: list[tuple[str, float]], params: RenderParams
) -> str | None:
    """`styles`: (content hash, blend weight) of each style image, in order."""
    size = upright_size(photo)
    if size is None:
        return None
    sizes = [schedule.dimensions(*size, stage.long_side) for stage in schedule.plan(params)]
    text = json.dumps([styles, params.model_dump(mode="json"), sizes], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]
