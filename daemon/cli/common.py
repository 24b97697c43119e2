"""What several subcommands share: the folder flags, their mapping onto settings, the style
library they name, the version, and the one-line error."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from daemon.config import ConfigError, Settings, load_settings
from daemon.config.fields import ENV_PREFIX
from daemon.config.loading import named_config, read_toml
from daemon.exitcodes import ExitCode
from daemon.validation_words import value_hint

if TYPE_CHECKING:
    from daemon.intake.styles import StyleLibrary


def subcommand(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, what: str
) -> argparse.ArgumentParser:
    """A subcommand whose one line in `stylefold --help` opens its own --help too."""
    return subparsers.add_parser(name, help=what, description=what)


def refuse_unknown_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Name a flag the command does not know, and the nearest one it does, before argparse
    parses: argparse first complains of a required argument (`render --outptu x.jpg`: "-o/--output
    is required"), and of an unknown one only in the top command's words, without a suggestion."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command is None or (sub := commands.choices.get(command)) is None:
        return  # argparse's own error lists the commands
    known = [flag for action in sub._actions for flag in action.option_strings]
    for arg in argv[list(argv).index(command) + 1 :]:
        if arg == "--":
            break
        flag = arg.split("=", 1)[0]
        if not flag.startswith("--") or any(option.startswith(flag) for option in known):
            continue  # argparse takes an unambiguous abbreviation, and names an ambiguous one
        close = difflib.get_close_matches(flag, known, n=1)
        sub.error(
            f"unknown option {flag}; "
            + (f"did you mean {close[0]}?" if close else f"stylefold {command} --help lists them")
        )


def described(text: str | None) -> str:
    """A setting's description as a flag's help: argparse %-formats help, so a "%" in a
    description ("0.01: 1 %") made `render --help` crash."""
    return (text or "").replace("%", "%%")


def folder_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML config file")
    for name in ("inbox", "outbox", "styles", "state"):
        what = described(Settings.model_fields[name].description).rstrip(".")
        parser.add_argument(
            f"--{name}", type=Path, metavar="DIR", help=f"{what}; over the config file's"
        )


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags as settings overrides; None means 'not given', so the config file decides."""
    values: dict[str, Any] = {
        name: getattr(args, name, None) for name in ("inbox", "outbox", "styles", "state")
    }
    devices = getattr(args, "device", None)
    values["devices"] = ",".join(devices) if devices else None
    values["workers_per_device"] = getattr(args, "workers", None)
    values["backend"] = getattr(args, "backend", None)
    values["log_format"] = getattr(args, "log_format", None)
    values["log_level"] = getattr(args, "log_level", None)
    return values


def read_settings(args: argparse.Namespace) -> Settings:
    """The settings for a command that only reads (status, validate, reload, doctor, web):
    missing output folders are not created, and the existing ones need only be readable, so
    an admin or the web page's unit with a read-only view of the state can use them (doctor
    says itself what is not writable)."""
    return load_settings(args.config, overrides(args), create_dirs=False, writable=False)


def config_file(args: argparse.Namespace) -> str | None:
    """The config file asked for (--config, then STYLEFOLD_CONFIG), as given; None if none."""
    given = named_config(args.config)
    return str(given) if given else None


def config_named(args: argparse.Namespace) -> bool:
    """Whether a config file was asked for (--config or STYLEFOLD_CONFIG): its errors are then
    the answer, not a reason to go on without it."""
    return config_file(args) is not None


def state_folder(args: argparse.Namespace) -> Path | None:
    """The state folder as the settings would name it (--state, then STYLEFOLD_STATE, then the
    config file's `state`), read even when the rest of the configuration is broken: the
    daemon's lock and status are there, so `status` and `reload` still find a running daemon
    whose config file someone is editing. None when nothing names it."""
    named = args.state or os.environ.get(ENV_PREFIX + "STATE")
    config = config_file(args)
    if not named and config:
        try:
            named = read_toml(Path(config)).get("state")
        except ConfigError:
            return None
    return Path(os.path.abspath(named)) if isinstance(named, str | Path) and named else None


def style_library(args: argparse.Namespace, given: Mapping[str, Any] | None = None) -> StyleLibrary:
    """The library of the config when it loads (with `given`, by default the folder flags, as
    overrides), else of --styles alone (no other folder is needed to read a library);
    ConfigError when there is neither."""
    from daemon.intake.styles import StyleLibrary

    try:
        settings = load_settings(
            args.config,
            overrides(args) if given is None else given,
            create_dirs=False,
            writable=False,
        )
        return StyleLibrary.from_settings(settings)
    except ConfigError:
        if args.styles is None:
            raise
    return folder_library(args.styles)


def folder_library(styles: Path) -> StyleLibrary:
    """The library of the --styles folder alone; ConfigError when it is not a folder."""
    from daemon.intake.styles import StyleLibrary

    root = Path(os.path.abspath(styles))
    if not root.is_dir():
        raise ConfigError(f"--styles: {root} is not a folder; give the style library's folder")
    return StyleLibrary(root)


def fail(message: str) -> int:
    print(f"stylefold: {message}", file=sys.stderr)
    return ExitCode.FAILURE


def fail_config(message: str) -> int:
    """`fail` for a configuration that cannot be used: 78 (EX_CONFIG), as `run` exits, so a
    script tells it from the command's own verdict (`styles` skipped a file: 1) and systemd
    does not restart on it."""
    fail(message)
    return ExitCode.CONFIG


def number_flag(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    """argparse's `type` for a number flag: a value that is not one is told as a sidecar's is
    ("must be a whole number (got 'big')"), not as argparse's "invalid int value"."""
    adapter: TypeAdapter[int | float] = TypeAdapter(kind)

    def number(given: str) -> int | float:
        from daemon.intake.sidecar_errors import error_text

        try:
            return adapter.validate_python(given.strip())
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(error_text(exc.errors()[0])) from None

    number.__name__ = kind.__name__  # argparse names the type in some of its own messages
    return number


def one_of_flag(*values: str, also: Mapping[str, str] | None = None) -> dict[str, Any]:
    """argparse's `type` and `metavar` for a flag that takes one of `values` (or a word of
    `also`, for the value it means): a value it does not take is told as a sidecar's is,
    with its likely meaning (a re-test: "invalid choice: 'mean'" where a sidecar's "mean"
    is asked "did you mean 'avg'?")."""

    def one_of(given: str) -> str:
        value = (also or {}).get(given.lower(), given)
        if value not in values:
            named = ", ".join(map(repr, values))
            hint = value_hint(list(values), given)
            raise argparse.ArgumentTypeError(f"must be one of {named} (got {given!r}){hint}")
        return value

    return {"type": one_of, "metavar": "|".join(values)}
