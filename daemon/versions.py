"""The installed stylefold version (for `--version`, manifests and `status`)."""

import importlib.metadata


def stylefold_version() -> str:
    try:
        return importlib.metadata.version("stylefold")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
