"""Engine errors. Each message says what went wrong and what the user can do about it."""


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


class WeightsError(EngineError):
    """A weights file is missing, truncated or does not match the network."""


class DeviceError(EngineError):
    """The device named does not exist or cannot be used on this machine."""


class ImageInputError(EngineError):
    """An input is not a usable image (not decodable, too large, empty, ...)."""


class FileUnreadableError(ImageInputError):
    """The file could not be read from its disk at all (gone, refused, an I/O error): where the
    file is the caller's own copy, the fault is not the image's."""


class CancelledError(EngineError):
    """The caller's cancel check asked the optimisation to stop."""


class DeviceOutOfMemoryError(EngineError):
    """The device ran out of memory; the caller may retry smaller or on another device."""
