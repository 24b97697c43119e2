"""stylefold's style-transfer engine: Gatys et al. as a library, with no knowledge of the daemon."""

from service.errors import (
    CancelledError,
    DeviceOutOfMemoryError,
    EngineError,
    ImageInputError,
    WeightsError,
)
from service.params import RenderParams

__all__ = [
    "CancelledError",
    "DeviceOutOfMemoryError",
    "EngineError",
    "ImageInputError",
    "RenderParams",
    "WeightsError",
]
