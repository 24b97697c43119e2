"""The installed stylefold version (for `--version`, manifests and `status`), and the build the
Ray nodes must share."""

import functools
import hashlib
import importlib.metadata
from pathlib import Path

PACKAGES = ("daemon", "service")  # stylefold's code, as imported by this process


@functools.cache
def stylefold_version() -> str:
    """The version this process runs (read once: status is published at every change of a
    job's state, and the metadata lookup scans sys.path each time)."""
    try:
        return importlib.metadata.version("stylefold")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def code_digest() -> str:
    """A digest of the Python code this process imports as stylefold. The version is read
    from the install's metadata, which a checkout installed in place (`pip install -e`) keeps
    from its last install: two nodes whose checkouts differ would show the same version."""
    digest = hashlib.blake2b(digest_size=6)
    for package in PACKAGES:
        root = Path(__file__).resolve().parent.parent / package
        for path in sorted(root.rglob("*.py")):
            # Modules only: an editor's lock file (.#app.py, a dangling link) in a checkout
            # failed every Ray start, as if the cluster did not answer (a re-test).
            if not path.stem.isidentifier() or not path.is_file():
                continue
            digest.update(path.relative_to(root.parent).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


@functools.cache
def stylefold_build() -> str:
    """What every Ray node must run alike: the version and its code."""
    return f"{stylefold_version()} (code {code_digest()})"
