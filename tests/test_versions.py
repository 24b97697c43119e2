"""The build that Ray nodes compare: the version and a digest of the code actually imported."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

ASK = "from daemon.versions import *; print(stylefold_build(), stylefold_version())"


def build_of(code: Path) -> tuple[str, str]:
    """(build, version) of a stylefold whose code is at `code`, from a process started there."""
    done = subprocess.run(
        [sys.executable, "-c", ASK],
        capture_output=True,
        text=True,
        check=True,
        cwd=code,
        env={**os.environ, "PYTHONPATH": str(code)},
    )
    build, _, version = done.stdout.strip().rpartition(" ")
    return build, version


def test_a_checkout_whose_code_changed_since_its_install_is_another_build(tmp_path: Path) -> None:
    """An operator's Ray trial: a node that pulled new code without `pip install -e` again ran
    the old version's metadata and passed the daemon's version check."""
    copy = tmp_path / "checkout"
    for package in ("daemon", "service"):
        shutil.copytree(
            REPO / package, copy / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    ours, version = build_of(REPO)
    assert ours.startswith(f"{version} (code ") and version != "unknown"
    assert build_of(copy) == (ours, version)  # the same code, wherever it lies
    # An editor's lock file (a dangling link) and a backup are not code (a re-test: the lock
    # file failed every Ray start, told as a cluster that did not answer).
    (copy / "daemon" / ".#app.py").symlink_to("user@host.12345:1700000000")
    (copy / "daemon" / "app.py~.py").write_text("# a backup\n")
    assert build_of(copy) == (ours, version)
    changed = copy / "service" / "losses.py"
    changed.write_text(changed.read_text() + "\n# a newer commit\n")
    theirs, their_version = build_of(copy)
    assert their_version == version  # what --version and the metadata say alike ...
    assert theirs != ours  # ... while the code differs
