"""The installed stylefold version (for `--version`, manifests and `status`)."""

import functools
import importlib.metadata


@functools.cache
def stylefold_version() -> str:
    """The version this process runs (read once: status is published at every change of a
    job's state, and the metadata lookup scans sys.path each time)."""
    try:
        return importlib.metadata.version("stylefold")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
