"""The `stylefold` entry point: --version, and pipes whose reader goes away."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from conftest import CLI, REPO, Folders, write_json

STYLEFOLD = shlex.join(CLI)


def bash(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )


def test_version() -> None:
    done = subprocess.run([*CLI, "--version"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout == f"stylefold {metadata.version('stylefold')}\n"


@pytest.mark.parametrize(
    ("args", "told"),
    [
        # Before the fix: "the following arguments are required: -o/--output".
        (["render", "a.jpg", "b.jpg", "--outptu", "x.jpg"], "did you mean --output?"),
        (["render", "a.jpg", "b.jpg", "-o", "x.jpg", "--strenght=0.5"], "did you mean --strength?"),
        # Before: "stylefold: error: unrecognized arguments", in the top command's words.
        (["run", "--confg", "x.toml"], "did you mean --config?"),
        (["status", "--zzzz"], "stylefold status --help lists them"),
    ],
)
def test_an_unknown_option_is_named_with_the_nearest_known_one(
    tmp_path: Path, args: list[str], told: str
) -> None:
    done = subprocess.run([*CLI, *args], cwd=tmp_path, capture_output=True, text=True)
    flag = next(arg for arg in args if arg.startswith("--")).split("=")[0]
    assert done.returncode == 2 and done.stderr.splitlines()[0].startswith(
        f"usage: stylefold {args[0]} "
    ), done.stderr
    assert (
        done.stderr.splitlines()[-1] == f"stylefold {args[0]}: error: unknown option {flag}; {told}"
    )
    assert not list(tmp_path.iterdir())  # nothing was run


def test_an_abbreviated_option_is_still_taken(tmp_path: Path) -> None:
    done = subprocess.run(
        [*CLI, "status", "--state", str(tmp_path), "--js"], cwd=tmp_path, capture_output=True,
        text=True,
    )  # fmt: skip
    assert "unknown option" not in done.stderr and done.stdout.lstrip().startswith("{"), (
        done.stdout + done.stderr
    )


def test_a_build_names_the_commit_it_was_built_from(tmp_path: Path) -> None:
    """An upgrade trial: every commit said "stylefold 0.1.0", so an administrator could not
    tell which one ran, nor Ray's refusal of an actor of another version two commits apart.
    The wheel pip builds from a checkout names its commit (or its tag)."""
    if not (REPO / ".git").exists():
        pytest.skip("a copy without its git history builds the fallback version, 0.1.0")
    clone = tmp_path / "src"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=60)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True, check=True
    ).stdout.strip()
    wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*wheel, "-w", str(tmp_path / "out"), str(clone)], check=True, timeout=300)
    [built] = (tmp_path / "out").glob("stylefold-*.whl")
    tag = subprocess.run(
        ["git", "describe", "--exact-match", "--tags"], cwd=clone, capture_output=True, text=True
    )
    if tag.returncode == 0:  # a release: its own number
        assert built.name.startswith(f"stylefold-{tag.stdout.strip().lstrip('v')}-"), built.name
        return
    named = re.search(r"\+g([0-9a-f]{7,})", built.name)
    assert named is not None and head.startswith(named[1]), built.name


@pytest.mark.parametrize(
    "args",
    [
        "--help",
        "--version",
        "status --state {state}",
        "status --state {state} --json",
        "styles --styles {styles}",
        "styles --styles {styles} --json",
        "validate {sidecar}",
    ],
)
def test_a_reader_that_has_gone_is_not_an_error(folders: Folders, args: str) -> None:
    """What `stylefold ... | head -1` meets once head has its line: the command's stdout is a
    pipe nobody reads any more. The left side starts only after the right side has closed
    its end (and said so with a file), so every write meets the closed pipe."""
    sidecar = write_json(folders.root / "photo.json", {"style": "mosaic"})
    values = {"state": folders.state, "styles": folders.styles, "sidecar": sidecar}
    command = f"{STYLEFOLD} {args.format(**values)}"
    script = (
        f"(until [ -e closed ]; do sleep 0.05; done; exec {command}) "
        "| { exec <&-; touch closed; }"
    )
    done = bash(script, folders.root)
    assert (done.returncode, done.stderr) == (0, "")


def test_styles_into_head(folders: Folders) -> None:
    """A listing longer than a pipe holds (64 KiB), so `head -1` quits while stylefold still
    writes. The styles are real images (hard links to one): `styles` decodes each."""
    for n in range(1200):
        name = f"a-style-with-a-rather-long-name-{n:04}.jpg"
        os.link(folders.styles / "mosaic.jpg", folders.styles / name)
    done = bash(f"{STYLEFOLD} styles --styles {folders.styles} | head -1", folders.root)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"style library {folders.styles}: 1202 style(s)\n"


def test_a_config_file_here_but_not_given_is_pointed_to(folders: Folders) -> None:
    """A new user's trial: `stylefold status` and `styles` beside their stylefold.toml said
    that every folder was not set. It is still not read unasked (a service must not change
    with its working folder), but the error says it is there and how to pass it."""
    env = {k: v for k, v in os.environ.items() if k != "STYLEFOLD_CONFIG"}
    # None here: "set it in the config file" sent a new user looking for one after the demo.
    done = subprocess.run(
        [*CLI, "styles"], cwd=folders.root, capture_output=True, text=True, env=env
    )
    assert done.returncode == 78 and "inbox: not set" in done.stderr, done.stderr
    assert "(no config file was given: pass --config FILE, or set STYLEFOLD_CONFIG)" in done.stderr
    config = folders.config()
    config.rename(folders.root / "stylefold.toml")
    for command in ("status", "styles"):
        done = subprocess.run(
            [*CLI, command], cwd=folders.root, capture_output=True, text=True, env=env
        )
        assert done.returncode == 78  # EX_CONFIG: not `styles`' 1 for a skipped file
        assert "inbox: not set" in done.stderr
        assert "stylefold.toml is in this folder: pass --config stylefold.toml" in done.stderr
        given = subprocess.run(
            [*CLI, command, "--config", "stylefold.toml"],
            cwd=folders.root,
            capture_output=True,
            text=True,
            env=env,
        )
        assert given.returncode == 0, given.stderr
