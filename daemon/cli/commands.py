"""The daemon's subcommands: `run`, `once`, `status`, `styles`, `validate`, `doctor`.

Only `run` and `once` start workers (and so import torch, in the worker processes); the others
read files and answer at once, so they are safe to call from scripts and monitoring.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.config import ConfigError, Settings, load_settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, help_text, func in (
        ("run", "run the watch-folder daemon (until SIGTERM)", cmd_run),
        ("once", "process what is in the inbox now, then exit", cmd_once),
    ):
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
        _folder_flags(parser)
        parser.add_argument(
            "--device",
            action="append",
            metavar="DEV",
            help="auto, cpu, mps, cuda or cuda:N (repeat or comma-separate)",
        )
        parser.add_argument("--workers", type=int, metavar="N", help="workers per device")
        parser.add_argument("--backend", choices=("local", "ray"), help="worker pool backend")
        parser.add_argument("--log-format", choices=("auto", "json", "console"))
        parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
        parser.set_defaults(func=func)

    parser = subparsers.add_parser(
        "status", help="queue, running jobs and recent failures (reads the state folder)"
    )
    _folder_flags(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--failures", type=int, default=10, metavar="N", help="how many recent failures to show"
    )
    parser.set_defaults(func=cmd_status)

    parser = subparsers.add_parser("styles", help="list the style library")
    _folder_flags(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=cmd_styles)

    parser = subparsers.add_parser(
        "validate",
        help="check a sidecar JSON file",
        description="Check FILE.json against the sidecar contract; with a config (or --styles) "
        "also check that its styles exist and its params are within the daemon's limits.",
    )
    parser.add_argument("file", type=Path, metavar="FILE.json")
    _folder_flags(parser)
    parser.set_defaults(func=cmd_validate)

    parser = subparsers.add_parser(
        "doctor", help="check config, devices, weights, folders and inotify limits"
    )
    _folder_flags(parser)
    parser.set_defaults(func=cmd_doctor)


def _folder_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML config file")
    for name in ("inbox", "outbox", "styles", "state"):
        parser.add_argument(f"--{name}", type=Path, metavar="DIR")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
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


def _fail(message: str) -> int:
    print(f"stylefold: {message}", file=sys.stderr)
    return 1


# -- run / once -------------------------------------------------------------------------------


def _daemon(args: argparse.Namespace, once: bool) -> int:
    from daemon.app import Daemon
    from daemon.logs import setup_logging

    overrides = _overrides(args)
    try:
        settings = load_settings(args.config, overrides)
    except ConfigError as exc:
        return _fail(f"configuration error:\n{exc}")
    setup_logging(settings.log_format, settings.log_level)
    return Daemon(settings, config_path=args.config, overrides=overrides, once=once).run()


def cmd_run(args: argparse.Namespace) -> int:
    return _daemon(args, once=False)


def cmd_once(args: argparse.Namespace) -> int:
    return _daemon(args, once=True)


# -- status -----------------------------------------------------------------------------------


def _state_dir(args: argparse.Namespace) -> Path:
    """--state alone is enough for `status`; otherwise the config (file or environment)."""
    if args.state is not None and args.config is None:
        return Path(os.path.abspath(args.state))
    return load_settings(args.config, _overrides(args), create_dirs=False).state


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def status_report(state: Path, failures: int = 10) -> dict[str, Any]:
    """Everything `status` shows, from the state folder alone."""
    from daemon.fsutil import read_json
    from daemon.jobs.spool import STARTED_FILE, Job, read_journal
    from daemon.lock import holder

    pid = holder(state)
    snapshot = read_json(state / "status.json") if pid else None
    progress = {
        entry["job_id"]: entry
        for entry in (snapshot or {}).get("running", [])
        if isinstance(entry, dict) and "job_id" in entry
    }
    queued, running = [], []
    spool = state / "spool"
    for folder in sorted(spool.iterdir()) if spool.is_dir() else []:
        if folder.name.startswith(".") or not (folder / "job.json").is_file():
            continue
        try:
            job = Job.model_validate_json((folder / "job.json").read_bytes())
        except (OSError, ValueError):
            continue
        entry: dict[str, Any] = {
            "job_id": job.id,
            "input": job.source,
            "waiting_seconds": round(time.time() - job.claimed_at, 1),
        }
        if job.id in progress:
            running.append({**entry, **progress[job.id]})
        else:
            started = read_json(folder / STARTED_FILE)
            if isinstance(started, dict) and started.get("starts"):
                entry["interrupted_starts"] = started["starts"]
            queued.append(entry)
    recent = [e for e in read_journal(state) if e.get("outcome") in ("failed", "rejected")]
    return {
        "state": str(state),
        "daemon_pid": pid,
        "running": running,
        "queued": queued,
        "watch_mode": (snapshot or {}).get("watch_mode"),
        "paused": (snapshot or {}).get("paused"),
        "recent_failures": recent[-failures:] if failures > 0 else [],
    }


def cmd_status(args: argparse.Namespace) -> int:
    try:
        state = _state_dir(args)
    except ConfigError as exc:
        return _fail(f"{exc}\n(or give the state folder: stylefold status --state DIR)")
    if not state.is_dir():
        return _fail(f"{state} does not exist; is --state right?")
    report = status_report(state, args.failures)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    pid = report["daemon_pid"]
    print(f"daemon: {'running, pid ' + str(pid) if pid else 'not running'} (state {state})")
    if report["paused"]:
        print(f"inbox: unavailable, paused ({report['paused']})")
    print(f"running: {len(report['running'])}")
    for job in report["running"]:
        eta = job.get("eta_seconds")
        eta_text = f", about {_age(eta)} left" if isinstance(eta, int | float) else ""
        print(
            f"  {job['input']}  {job.get('percent', 0):g}% "
            f"({job.get('iteration')}/{job.get('total')}) on {job.get('device')}{eta_text}"
        )
    print(f"queued: {len(report['queued'])}")
    for job in report["queued"][:20]:
        print(f"  {job['input']}  waiting {_age(job['waiting_seconds'])}")
    if len(report["queued"]) > 20:
        print(f"  ... and {len(report['queued']) - 20} more")
    print(f"recent failures: {len(report['recent_failures'])}")
    for entry in report["recent_failures"]:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(entry.get("at", 0))))
        print(f"  {when}  {entry.get('input')}: {entry.get('error')}")
    return 0


# -- styles -----------------------------------------------------------------------------------


def _library_settings(args: argparse.Namespace) -> Settings | None:
    """Full settings when the config allows it; None when only --styles was given."""
    try:
        return load_settings(args.config, _overrides(args), create_dirs=False)
    except ConfigError:
        if args.styles is None:
            raise
        return None


def _library(args: argparse.Namespace) -> Any:
    from daemon.intake.styles import StyleLibrary

    settings = _library_settings(args)
    if settings is not None:
        return StyleLibrary.from_settings(settings)
    return StyleLibrary(Path(os.path.abspath(args.styles)))


def cmd_styles(args: argparse.Namespace) -> int:
    try:
        library = _library(args)
    except ConfigError as exc:
        return _fail(f"{exc}\n(or give the library: stylefold styles --styles DIR)")
    styles = library.styles()
    if args.json:
        print(
            json.dumps(
                {
                    "library": str(library.root),
                    "styles": [
                        {"name": s.name, "file": str(s.path), "defaults": s.defaults}
                        for s in styles
                    ],
                    "problems": [
                        {"path": str(p.path), "reason": p.reason} for p in library.problems
                    ],
                },
                indent=2,
            )
        )
        return 0
    print(f"style library {library.root}: {len(styles)} style(s)")
    width = max((len(style.name) for style in styles), default=0)
    for style in styles:
        defaults = f"  defaults {json.dumps(style.defaults)}" if style.defaults else ""
        print(f"  {style.name.ljust(width)}  {style.path.name}{defaults}")
    for problem in library.problems:
        print(f"  skipped {problem.path.name}: {problem.reason}")
    if not styles:
        print("  (add images such as starry_night.jpg to the folder; the file name is the name)")
    return 0


# -- validate ---------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from daemon.intake.sidecar import SidecarError, merge_params, read_sidecar
    from daemon.intake.styles import StyleError, StyleLibrary, blend_defaults

    path: Path = args.file
    try:
        settings = load_settings(args.config, _overrides(args), create_dirs=False)
    except ConfigError:
        settings = None  # the contract alone can still be checked
    max_bytes = settings.max_sidecar_bytes if settings is not None else 65536
    try:
        sidecar = read_sidecar(path, max_bytes)
    except SidecarError as exc:
        print(f"{path}: invalid sidecar", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    library = None
    if settings is not None:
        library = StyleLibrary.from_settings(settings)
    elif args.styles is not None:
        library = StyleLibrary(Path(os.path.abspath(args.styles)))
    if library is not None:
        try:
            styles = library.resolve(
                sidecar.style,
                beside=path.resolve().parent,
                default=settings.default_style if settings else None,
            )
            if settings is not None:
                merge_params(
                    settings.defaults,
                    blend_defaults(styles),
                    sidecar.overrides(),
                    max_size=settings.max_output_size,
                    max_iterations=settings.max_iterations,
                )
        except (StyleError, SidecarError) as exc:
            print(f"{path}: valid JSON, but it would fail: {exc}", file=sys.stderr)
            return 1
        print(f"{path}: ok (styles: {', '.join(s.name for s in styles)})")
    else:
        print(f"{path}: ok (styles not checked: give --config or --styles to check them)")
    return 0


# -- doctor -----------------------------------------------------------------------------------

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

    from daemon.pool.local import expand_devices
    from service.devices import resolve
    from service.errors import EngineError

    found = []
    for name in expand_devices(devices):
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


def _lock_check(state: Path) -> tuple[bool, str]:
    from daemon.lock import holder

    pid = holder(state)
    return True, (f"daemon: running (pid {pid})" if pid else "daemon: not running")


def cmd_doctor(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config, _overrides(args), create_dirs=False)
    except ConfigError as exc:
        print(f"FAIL config:\n{exc}")
        return 1
    print(f"ok   config: inbox {settings.inbox}, outbox {settings.outbox}, state {settings.state}")
    checks: list[tuple[str, Check]] = [
        ("folders", lambda: _folders_check(settings)),
        ("styles", lambda: _styles_check(settings)),
        ("devices", lambda: _device_check(settings.devices)),
        ("weights", lambda: _weights_check(settings)),
        ("inotify", lambda: _inotify_check(settings.inbox)),
        ("outbox space", lambda: _space_check("outbox", _existing(settings.outbox))),
        ("state space", lambda: _space_check("state", _existing(settings.state))),
        ("lock", lambda: _lock_check(settings.state)),
    ]
    failed = 0
    for name, check in checks:
        try:
            ok, text = check()
        except Exception as exc:  # a broken check is itself a finding
            ok, text = False, f"{name}: check failed ({type(exc).__name__}: {exc})"
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {text}")
    print("all checks passed" if not failed else f"{failed} check(s) failed; see the fixes above")
    return 1 if failed else 0


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _folders_check(settings: Settings) -> tuple[bool, str]:
    from daemon.config import check_folders

    try:
        check_folders(settings, create=False)
    except ConfigError as exc:
        return False, f"folders: {exc}"
    problems = []
    for name, path in (
        ("outbox", settings.outbox),
        ("state", settings.state),
        ("archive", settings.archive_path),
    ):
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
    if not names:
        return (
            False,
            f"styles: no usable style in {settings.styles}; add images (e.g. "
            f"starry_night.jpg){'; ' + problems if problems else ''}",
        )
    if settings.default_style is not None and settings.default_style not in names:
        return False, (
            f"styles: default_style {settings.default_style!r} is not in the library "
            f"({', '.join(names)}); add it or change default_style"
        )
    text = f"styles: {len(names)} ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})"
    return True, text + (f"; skipped: {problems}" if problems else "")
