"""`stylefold doctor`: every check an admin would otherwise do by hand, each failure with its
fix. A broken check is itself a finding, so the report always runs to the end."""

from __future__ import annotations

import argparse
import itertools
import os
import pwd
import shlex
import shutil
import stat
import time
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path

from daemon.cli.common import config_file, folder_flags, read_settings, subcommand
from daemon.config import ConfigError, Settings
from daemon.config.loading import misspelt_variables, nearest_existing
from daemon.fsutil import user_name
from daemon.visible import visible_lines


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommand(
        subparsers,
        "doctor",
        "check config, devices, weights, folders, inotify limits and the Ray cluster",
    )
    folder_flags(parser)
    parser.set_defaults(func=command)


Check = Callable[[], tuple[bool, str]]


def _inotify_check(inbox: Path) -> tuple[bool, str]:
    try:
        watches = int(Path("/proc/sys/fs/inotify/max_user_watches").read_text())
        instances = int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())
    except (OSError, ValueError):
        return True, "inotify limits unreadable (not Linux?); polling works everywhere"
    folders = sum(1 for _ in os.walk(inbox)) if inbox.is_dir() else 0
    text = (
        f"inotify: {folders} folder(s) in the inbox, max_user_watches {watches}, "
        f"max_user_instances {instances}"
    )
    if folders * 2 > watches or instances < 8:
        return False, (
            f"{text}; raise them: sysctl fs.inotify.max_user_watches=524288 "
            "fs.inotify.max_user_instances=1024 (and persist in /etc/sysctl.d/), or set "
            'watch_mode = "polling"'
        )
    return True, text


def _space_check(name: str, folder: Path) -> tuple[bool, str]:
    free = shutil.disk_usage(folder).free
    text = f"{name}: {free / 2**30:.1f} GiB free in {folder}"
    if free < 1 << 30:
        return False, f"{text}; free some space (results and originals need room)"
    return True, text


def _device_check(devices: list[str]) -> tuple[bool, str]:
    import torch

    from daemon.gpu_probe import GPU_FIX, probe_devices
    from service.devices import resolve
    from service.errors import EngineError

    if devices == ["auto"]:
        probe = probe_devices()
        if probe.problem is not None:
            return False, f"devices: auto would run on {', '.join(probe.devices)}: " + (
                f"{probe.problem}; fix: {GPU_FIX}"
            )
        devices = probe.devices
    found = []
    for name in devices:
        try:
            device = resolve(name)
        except EngineError as exc:
            return False, f"device {name}: {exc}"
        if device.type == "cuda":
            props = torch.cuda.get_device_properties(device)
            found.append(f"{device} ({props.name}, {props.total_memory / 2**30:.0f} GiB)")
        else:
            found.append(str(device))
    return True, f"devices: {', '.join(found)} (torch {torch.__version__})"


def _weights_check(settings: Settings) -> tuple[bool, str]:
    from service.engine import Engine
    from service.errors import EngineError

    started = time.monotonic()
    try:
        Engine(device="cpu", weights=settings.weights).network(settings.defaults)
    except EngineError as exc:
        return False, f"weights: {exc}"
    return True, (
        f"weights: {settings.defaults.network} loads ({time.monotonic() - started:.1f} s)"
    )


def _database_check(state: Path) -> tuple[bool, str]:
    from daemon.jobs.store import (
        DB_FILE,
        Store,
        StoreError,
        damage_fix,
        read_only_fix,
        unwritable_file,
    )

    path = state / DB_FILE
    if not path.exists():
        return True, "state database: none yet (the daemon creates it)"
    if (shut := unwritable_file(path)) is not None:
        return False, f"state database: {shut} {read_only_fix(shut)}"
    try:
        store = Store(state, readonly=True)
    except StoreError as exc:
        return False, f"state database: {exc.strerror}"
    try:
        damage = store.damage()
    finally:
        store.close()
    if damage is not None:
        return (
            False,
            f"state database: {path} is damaged ({damage}); {damage_fix(path)}",
        )
    return True, "state database: intact"


def _lock_check(state: Path, inbox: Path) -> tuple[bool, str]:
    from daemon.lock import holder, inbox_holder, state_of

    pid = holder(state)
    if pid is not None:
        return True, f"daemon: running (pid {pid})"
    other = inbox_holder(inbox)
    if other is None:
        return True, "daemon: not running"
    where = state_of(other)
    return False, (
        f"daemon: another stylefold daemon (pid {other}"
        f"{f', state {where}' if where else ''}) is watching the inbox {inbox}, so this one "
        "would exit 78; stop it first, or give this one its own inbox"
    )


def command(args: argparse.Namespace) -> int:
    from daemon.intake.sidecar import defaults_notes

    try:
        settings = read_settings(args)
    except ConfigError as exc:
        print(f"FAIL config:\n{exc}")
        return 1
    print(f"ok   config: inbox {settings.inbox}, outbox {settings.outbox}, state {settings.state}")
    for problem in misspelt_variables(os.environ):
        print(f"WARN environment: {problem}")
    for note in defaults_notes(settings.defaults):
        print(f"WARN config: {note}")
    if (synced := _syncthing_folder(settings.inbox)) is not None and settings.archive == "move":
        print(
            f'WARN inbox: {synced} is a Syncthing folder and archive is "move": make it '
            'Receive Only on this server (or set archive = "keep"); Send & Receive passes '
            "each archived original's removal on to the phones (deploy/README.md, Syncthing)"
        )
    if (owner := _other_owner(settings.state)) is not None:  # root passes every permission
        # with the config it was given, and runuser where sudo is missing (an operator's trial)
        again = f"stylefold doctor{_config_flag(args)}"
        print(
            f"WARN user: run as root, which every folder lets in; the state folder belongs to "
            f"{owner}: run `runuser -u {owner} -- {again}` (or `sudo -u {owner} {again}`) to "
            "check what the daemon may do"
        )
    checks: list[tuple[str, Check]] = [
        ("extras", lambda: _extras_check(settings)),
        ("folders", lambda: _folders_check(settings)),
        ("styles", lambda: _styles_check(settings)),
        ("devices", lambda: _device_check(settings.devices)),
        ("weights", lambda: _weights_check(settings)),
        ("inotify", lambda: _inotify_check(settings.inbox)),
        ("outbox space", lambda: _space_check("outbox", nearest_existing(settings.outbox))),
        ("state space", lambda: _space_check("state", nearest_existing(settings.state))),
        ("state database", lambda: _database_check(settings.state)),
        ("state contents", lambda: _state_contents_check(settings.state)),
        ("lock", lambda: _lock_check(settings.state, settings.inbox)),
    ]
    if settings.backend == "ray":
        from daemon.cli.ray_doctor import ray_checks

        checks += ray_checks(settings)
    failed = 0
    for name, check in checks:
        try:
            ok, text = check()
        except Exception as exc:  # a broken check is itself a finding
            ok, text = False, f"{name}: check failed ({type(exc).__name__}: {exc})"
        failed += not ok
        print(visible_lines(f"{'ok  ' if ok else 'FAIL'} {text}"))  # names from the folders
    print("all checks passed" if not failed else f"{failed} check(s) failed; see the fixes above")
    return 1 if failed else 0


def _syncthing_folder(inbox: Path) -> Path | None:
    """The Syncthing folder the inbox is in (its root holds `.stfolder`), or None. Whether it
    is Receive Only is in Syncthing's own config, not here (a Syncthing user's trial: a Send &
    Receive inbox lost the phone's originals, and doctor said all checks passed)."""
    for folder in (inbox, *inbox.parents):
        if os.path.lexists(folder / ".stfolder"):  # never raises, unlike Path.exists
            return folder
    return None


WALK_LIMIT = 10_000  # folders of the state looked into; a spool or archive may hold many


def _state_contents_check(state: Path) -> tuple[bool, str]:
    """The state folder's own files and every folder in it that the daemon may not write: a
    command run as root (`once`, `demo`, a restore) leaves root's, and the daemon then fails
    at its start (an operator's trial: doctor passed, then `once` failed on the lock). The
    files in its folders are left out: spooled and archived originals keep their sender's
    owner. Root may write anything, so as root the owner is compared with the state's."""
    if not state.is_dir():
        return True, "state contents: none yet"
    owner, as_root = state.stat().st_uid, os.geteuid() == 0
    blocked: list[tuple[Path, int]] = []
    for folder, folders, files in itertools.islice(os.walk(state), WALK_LIMIT):
        here = Path(folder)
        for name in folders + (files if here == state else []):
            path = here / name
            try:
                seen = path.lstat()
            except OSError:
                continue
            if stat.S_ISLNK(seen.st_mode):
                continue
            need = os.W_OK | (os.X_OK if stat.S_ISDIR(seen.st_mode) else 0)
            if seen.st_uid != owner if as_root else not os.access(path, need):
                blocked.append((path, seen.st_uid))
    if not blocked:
        return True, "state contents: writable"
    (first, uid), more = blocked[0], len(blocked) - 1
    return False, (
        f"state contents: {first} belongs to {user_name(uid)}"
        + (f" (and {more} more like it)" if more else "")
        + f", which the daemon's user ({user_name(owner)}, the state folder's owner) may not "
        f"write: a command run as another user left it; give them back: chown -R "
        f"{user_name(owner)}: {state}"
    )


def _config_flag(args: argparse.Namespace) -> str:
    config = config_file(args)
    return "" if config is None else f" --config {shlex.quote(os.path.abspath(config))}"


def _other_owner(state: Path) -> str | None:
    """The state folder's owner when doctor runs as root and the daemon as someone else."""
    if os.geteuid() != 0:
        return None
    try:
        uid = state.stat().st_uid
        return None if uid == 0 else pwd.getpwuid(uid).pw_name
    except (OSError, KeyError):
        return None


def _extras_check(settings: Settings) -> tuple[bool, str]:
    """The optional packages the settings need: without one the daemon cannot start."""
    from daemon import metrics
    from daemon.pool import ray_backend

    needed = {
        "ray": (settings.backend == "ray", ray_backend.MISSING_EXTRA),
        "prometheus_client": (settings.metrics_port is not None, metrics.MISSING_EXTRA),
    }
    missing = [
        text for module, (used, text) in needed.items() if used and find_spec(module) is None
    ]
    if missing:
        return False, "extras: " + "; ".join(missing)
    used = [module for module, (wanted, _) in needed.items() if wanted]
    return True, f"extras: {', '.join(used)} installed" if used else "extras: none needed"


def _folders_check(settings: Settings) -> tuple[bool, str]:
    from daemon.config import check_folders

    try:
        check_folders(settings, create=False)
    except ConfigError as exc:
        return False, f"folders: {exc}"
    from daemon.lock import holder

    problems = []
    running = holder(settings.state) is not None
    for name, path in (
        ("outbox", settings.outbox),
        ("state", settings.state),
        ("archive", settings.archive_path),
    ):
        if not path.exists() and running:
            # made at its start only: a folder gone since may be a share not mounted (an
            # operator's trial: "ok, the daemon creates it" while its jobs waited for it)
            return False, (
                f"folders: the {name} {path} is missing, and the running daemon waits for it "
                "(a share or stick not mounted?); mount it, or make the folder, and it carries on"
            )
        if not path.exists():
            problems.append(f"{name} {path} does not exist yet (the daemon creates it)")
    if not os.access(settings.inbox, os.W_OK | os.X_OK):
        return False, (
            f"folders: the inbox {settings.inbox} is not writable, so originals cannot be moved "
            "out of it; give the daemon's user write access (e.g. chgrp + chmod g+w)"
        )
    return True, "folders: readable and writable" + (
        f" ({'; '.join(problems)})" if problems else ""
    )


def _styles_check(settings: Settings) -> tuple[bool, str]:
    from daemon.intake.styles import StyleLibrary

    library = StyleLibrary.from_settings(settings)
    names = library.names()
    problems = "; ".join(f"{p.path.name}: {p.reason}" for p in library.problems)
    if not names and problems:  # not "add images" where they are (a photographer's trial)
        return False, f"styles: no usable style in {settings.styles}; fix or remove: {problems}"
    if not names:
        return False, f"styles: no style in {settings.styles}; add images (e.g. starry_night.jpg)"
    if settings.default_style is not None and library.find(settings.default_style) is None:
        return False, (
            f"styles: default_style {settings.default_style!r} is not in the library "
            f"({', '.join(names)}); add it or change default_style"
        )
    text = f"styles: {len(names)} ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})"
    if problems:  # each image was decoded as a worker will; a broken one would fail its jobs
        return False, f"{text}; unusable, fix or remove: {problems}"
    return True, text
