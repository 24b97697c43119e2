"""README.md is a contract with the newcomer: its commands, examples, tables and links must be
the ones that work."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from daemon.cli import build_parser
from daemon.cli.demo_folder import STYLES
from daemon.config import Settings
from daemon.intake.sidecar import parse_sidecar

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"README.md has no section '## {title}'"
    return match.group(1)


def code_blocks(text: str, language: str) -> list[str]:
    """The fenced blocks of `language`, a regular expression (e.g. SHELL)."""
    return re.findall(rf"^```(?:{language})\n(.*?)^```", text, re.M | re.S)


SHELL = "sh|bash|shell|console"


def test_configuration_table_is_generated_from_settings() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "readme_config.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    for name in Settings.model_fields:
        assert f"`STYLEFOLD_{name.upper()}" in README


def test_every_value_the_configuration_table_offers_is_accepted(tmp_path: Path) -> None:
    """A photographer's trial was offered `image` for `defaults.init`, which a config file
    cannot give: each "One of" value is set alone and must load."""
    base: dict[str, object] = {}
    for name in ("inbox", "outbox", "styles", "state"):
        base[name] = tmp_path / name
        (tmp_path / name).mkdir()
    (tmp_path / "vgg16.pth").write_bytes(b"")  # the table says vgg16 needs weights.vgg16
    base["weights"] = {"vgg16": tmp_path / "vgg16.pth"}
    base["default_style"] = "mosaic"  # and no_sidecar = "default" a default_style
    rows = re.findall(r"^\| `([\w.]+)` \|.*One of ((?:`[^`]+`(?:, )?)+)\. \|$", README, re.M)
    assert len(rows) >= 10, "the table's choices were not found"
    for key, listed in rows:
        for choice in re.findall(r"`([^`]+)`", listed):
            *parents, name = key.split(".")
            value: dict[str, object] = {name: choice}
            for parent in reversed(parents):
                value = {parent: value}
            try:
                Settings(**{**base, **value})
            except ValueError as exc:
                raise AssertionError(f"{key} = {choice!r}, as the table offers: {exc}") from None


def test_test_command_is_what_ci_runs() -> None:
    """`.ci/run` installs and tests exactly as README says (minus its -q flags)."""
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    ci_steps = [
        re.sub(r" -q\b", "", line.strip())
        for line in ci
        if line.strip().startswith(("pip install", "pytest"))
    ]
    assert ci_steps, ".ci/run has no pip install / pytest lines"
    readme_lines = [
        line for block in code_blocks(section("Two commands"), "sh") for line in block.splitlines()
    ]
    test_line = next(line for line in readme_lines if "[test" in line)
    steps = [step.strip() for step in test_line.split("&&")]
    assert [step for step in steps if step.startswith(("pip install", "pytest"))] == ci_steps
    assert steps[0].startswith("python3.11 -m venv") and "python3.11 -m venv" in "\n".join(ci)


def test_sidecar_examples_are_valid_and_use_the_demo_styles() -> None:
    blocks = code_blocks(section("Sidecars"), "json")
    assert len(blocks) >= 5
    for block in blocks:
        sidecar = parse_sidecar(block)
        style = sidecar.style
        names = [style] if isinstance(style, str) else []
        names += [ref.name for ref in style] if isinstance(style, list) else []
        assert set(names) <= set(STYLES), f"{names}: use the demo's styles so examples run there"


def test_config_example_is_a_valid_config(tmp_path: Path) -> None:
    (block,) = code_blocks(section("Point it at a real shared folder"), "toml")
    values = tomllib.loads(block)
    for name in ("inbox", "outbox", "styles", "state"):
        values[name] = tmp_path / name
    Settings(**values)


def test_every_command_is_documented() -> None:
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if a.dest == "command"]
    commands = set(subparsers.choices)  # type: ignore[arg-type]
    table = section("Commands")
    documented = set(re.findall(r"^\| `stylefold (\w+)", table, re.M))
    assert documented == commands


def readme_commands(text: str = README) -> list[str]:
    """Every `stylefold ...` command in the shell blocks of `text` (continuations joined,
    prompts and comments dropped, `&&` chains split)."""
    commands = []
    for block in code_blocks(text, SHELL):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"^\s*\$ ", "", re.sub(r"(^|\s)#.*", "", line))
            for part in line.split("&&"):
                if part.strip().startswith("stylefold "):
                    commands.append(part.strip())
    return commands


def refusal(command: str) -> str | None:
    """What the real `stylefold` parser says against `command` (None: it parses)."""
    with contextlib.redirect_stderr(io.StringIO()) as stderr:
        try:
            build_parser().parse_args(shlex.split(command)[1:])
        except SystemExit as exc:
            return f"exit {exc.code}: {stderr.getvalue().strip()}"
    return None


@pytest.mark.parametrize("title", ["Two commands", "Commands"])
def test_the_command_sections_show_commands(title: str) -> None:
    assert readme_commands(section(title)), f"no `stylefold` command in a shell block of {title}"


@pytest.mark.parametrize("command", readme_commands())
def test_readme_commands_parse(command: str) -> None:
    error = refusal(command)
    assert error is None, f"README.md shows `{command}`, which the CLI refuses ({error})"


def test_an_unknown_flag_is_refused() -> None:
    """The check above can fail: a flag the CLI does not have is caught."""
    (command,) = readme_commands("```sh\n$ stylefold status --state s --colour  # no\n```\n")
    assert command == "stylefold status --state s --colour"
    assert "unrecognized arguments: --colour" in (refusal(command) or "")


@pytest.mark.parametrize(
    "target", sorted(set(re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README))), ids=str
)
def test_local_links_exist(target: str) -> None:
    assert (REPO / target).exists(), f"README.md links to {target}, which does not exist"
