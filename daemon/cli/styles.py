"""`stylefold styles`: the style library as the daemon sees it, with the files it skipped."""

from __future__ import annotations

import argparse
import json
import unicodedata

from daemon.cli.common import (
    config_named,
    fail_config,
    folder_flags,
    style_library,
    subcommand,
)
from daemon.config import ConfigError
from daemon.visible import visible

TWINS = (
    "{names} differ in letter case or Unicode form alone: a sidecar must write each exactly, "
    "and a folder "
    "synced to a phone or an SMB share, which ignores case, keeps only one of them; rename one"
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommand(subparsers, "styles", "list the style library")
    folder_flags(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    try:
        library = style_library(args)
    except ConfigError as exc:
        # Not where --styles was given (a README trial: told to do what it had just done), nor
        # for a config file named, whose errors are the answer (a new user's trial: read as a
        # way around its typo).
        named = args.styles or config_named(args)
        hint = "" if named else "\n(or give the library: stylefold styles --styles DIR)"
        return fail_config(f"{exc}{hint}")
    styles = library.styles()
    # Like doctor, a file that is skipped fails the listing, so a script can tell.
    status = 1 if library.problems else 0
    if args.json:
        listing = {
            "library": str(library.root),
            "styles": [
                {"name": s.name, "file": str(s.path), "defaults": s.defaults} for s in styles
            ],
            "problems": [{"path": str(p.path), "reason": p.reason} for p in library.problems],
            "case_twins": library.case_twins(),
        }
        print(json.dumps(listing, indent=2))
        return status
    print(f"style library {library.root}: {len(styles)} style(s)")
    width = max((_shown_width(style.name) for style in styles), default=0)
    for style in styles:
        defaults = f"  defaults {json.dumps(style.defaults)}" if style.defaults else ""
        padding = " " * (width - _shown_width(style.name))
        print(f"  {style.name}{padding}  {style.path.name}{defaults}")
    for problem in library.problems:
        print(visible(f"  skipped {problem.path.name}: {problem.reason}"))
    for twins in library.case_twins():  # a phone user's re-test: listed without a word
        print(visible(f"  note: {TWINS.format(names=', '.join(twins))}"))
    if not styles and not library.problems:
        print("  (add images such as starry_night.jpg to the folder; the file name is the name)")
    return status


def _shown_width(name: str) -> int:
    """Columns a name takes: a combining accent (a Mac's decomposed names) takes none."""
    return sum(not unicodedata.combining(char) for char in name)
