"""One bounded walk of the inbox, used by full scans and by polling.

The inbox is written by others, so the walk must not be steerable: it never follows a symbolic
link (each folder is opened name by name from the inbox with O_NOFOLLOW, entries are looked at
with lstat), so link loops cannot exist; it is iterative, so no nesting depth can exhaust the
stack; it does not enter folders deeper than `max_depth` (they are listed in `deep`); and it
keeps at most `max_entries` files (plus the partners of files it kept: a photo's sidecar is
never cut off from it), so its memory is bounded whatever the inbox holds.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePath

from daemon.intake.ignore import IgnoreRules
from daemon.safefs import UnsafePath, open_folder

ROOT = PurePath()  # the inbox itself, as a path relative to the inbox
# What polling compares between two walks: (device, inode, size, mtime) of each photo/sidecar.
Stamp = tuple[int, int, int, int]


@dataclass
class Tree:
    """What one walk found below a folder of the inbox (paths relative to the inbox)."""

    files: dict[PurePath, Stamp] = field(default_factory=dict)
    deep: list[PurePath] = field(default_factory=list)  # folders not entered: too deep
    links: list[PurePath] = field(default_factory=list)  # links not followed (not photo names)
    unreadable: list[PurePath] = field(default_factory=list)  # folders the daemon may not list
    truncated: bool = False  # stopped after max_entries files
    complete: bool = True  # False when stopped early (stop requested)


def depth(relative: PurePath) -> int:
    """How deep a folder lies in the inbox: the inbox itself is 0."""
    return len(relative.parts)


def walk(
    root: os.PathLike[str] | str,
    rules: IgnoreRules,
    *,
    start: PurePath = ROOT,
    max_depth: int,
    max_entries: int,
    stop: Callable[[], bool] = lambda: False,
) -> Tree:
    """Photos and sidecars below `root/start`, skipping ignored names, links and special files
    (a link named like a photo is listed, so that it gets its report; other links, such as a
    folder linked into the inbox, are noted in `links` for the status), never entering a
    folder deeper than `max_depth`."""
    tree = Tree()
    pending = [start]
    while pending:
        if stop():
            tree.complete = False
            return tree
        relative = pending.pop()
        if depth(relative) > max_depth:
            tree.deep.append(relative)
            continue
        if rules.ignored_dir(relative):
            continue
        try:
            fd = open_folder(root, relative)
        except PermissionError:
            tree.unreadable.append(relative)  # a non-root trial: skipped without a word
            continue
        except (UnsafePath, FileNotFoundError):
            continue  # swapped for a link or gone: nothing to look at here
        kept: set[str] = set()  # stems of the files kept in this folder
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    name = entry.name
                    if rules.ignored_name(name):
                        continue
                    try:
                        result = entry.stat(follow_symlinks=False)
                    except PermissionError:  # listed but not entered (a `chmod -R 644`):
                        tree.unreadable.append(relative)  # no entry of it can be looked at
                        break
                    except OSError:
                        continue
                    path = relative / name
                    if stat.S_ISDIR(result.st_mode):
                        pending.append(path)
                    elif rules.is_candidate(path):
                        stem = name.partition(".")[0]
                        if len(tree.files) >= max_entries and stem not in kept:
                            tree.truncated = True
                            continue
                        kept.add(stem)
                        tree.files[path] = (
                            result.st_dev,
                            result.st_ino,
                            result.st_size,
                            result.st_mtime_ns,
                        )
                    elif stat.S_ISLNK(result.st_mode):
                        tree.links.append(path)
        except PermissionError:  # opened, but may not be listed (search without read)
            tree.unreadable.append(relative)
        except OSError:
            continue
        finally:
            os.close(fd)
    return tree


def changes(before: dict[PurePath, Stamp], after: dict[PurePath, Stamp]) -> list[PurePath]:
    """Files that appeared, changed or went between two walks."""
    changed = [path for path, stamp in after.items() if before.get(path) != stamp]
    return changed + [path for path in before if path not in after]
