"""`stylefold demo`: a working folder, real sidecars and the real daemon, in one command.

Everything comes from images that ship inside scikit-image's wheel (the `demo` extra,
`demo_folder`), so the demo needs no network and no files of the user's. The daemon runs in
its `once` mode: the same intake, spool, worker pool and outbox as `stylefold run`, exiting
when the inbox is done.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from daemon.cli.common import number_flag
from daemon.cli.demo_folder import (
    DAEMON_LOG,
    STYLES,
    DemoError,
    DemoJob,
    demo_jobs,
    file_name,
    prepare,
)
from daemon.config import ConfigError, load_settings
from daemon.fsutil import read_json
from daemon.jobs.error_report import ErrorReport, as_report
from daemon.jobs.manifest import Manifest
from daemon.jobs.progress import ProgressReport
from daemon.jobs.store import Store
from service.params import STOPPED

if TYPE_CHECKING:
    from daemon.web.server import WebServer

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
# The page's daemon line while the demo's daemon is not running (before it starts, once done).
DEMO_STOPPED = (
    "not running now: the demo runs the daemon only until its photos are answered (the "
    "`stylefold once` command it prints last runs it again for photos of your own)"
)


# -- running the daemon -------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """Where one demo job stands, read from the outbox as a user would: its manifest means
    done (the daemon writes it last), an error report failed, a progress file running.
    `earlier`: answered by an earlier demo (--keep), so this run skipped it."""

    state: Literal["done", "failed", "running", "waiting", "earlier"]
    manifest: Manifest | None = None
    report: ErrorReport | None = None
    progress: ProgressReport | None = None


def job_state(outbox: Path, stem: str, before: frozenset[str] = frozenset()) -> Seen:
    """The job's state from the answers in `outbox` that were not there `before` it ran."""
    for path in _answers(outbox, stem, "manifest", before):
        with contextlib.suppress(ValueError):
            return Seen("done", manifest=Manifest.model_validate(read_json(path)))
    for path in _answers(outbox, stem, "error", before):
        if (report := as_report(read_json(path))) is not None:
            return Seen("failed", report=report)
    for path in _answers(outbox, stem, "progress", before):
        with contextlib.suppress(ValueError):
            return Seen("running", progress=ProgressReport.model_validate(read_json(path)))
    return Seen("waiting")


def final_state(outbox: Path, stem: str, before: frozenset[str]) -> Seen:
    """After the run: a photo an earlier demo answered was sent again and skipped."""
    seen = job_state(outbox, stem, before)
    if seen.state == "waiting" and (earlier := job_state(outbox, stem)).manifest is not None:
        return Seen("earlier", manifest=earlier.manifest)
    return seen


def _answers(outbox: Path, stem: str, kind: str, before: frozenset[str]) -> list[Path]:
    """`stem`'s answers of one kind, numbered ones too (`photo.manifest-2.json`)."""
    paths = [outbox / f"{stem}.{kind}.json", *sorted(outbox.glob(f"{stem}.{kind}-*.json"))]
    return [path for path in paths if path.name not in before and path.is_file()]


class Reporter(threading.Thread):
    """Prints each job's progress while the daemon (on the main thread, for its signal
    handlers) works; the daemon's own log goes to a file."""

    def __init__(
        self, outbox: Path, jobs: list[DemoJob], before: frozenset[str], interval: float = 1.0
    ) -> None:
        super().__init__(name="demo-reporter", daemon=True)
        self.outbox = outbox
        self.before = before
        self.stems = [job.photo for job in jobs]
        self.interval = interval
        self.finished = threading.Event()
        self._shown: dict[str, str] = {}

    def run(self) -> None:
        with contextlib.suppress(BrokenPipeError):  # `stylefold demo | head`; main() says 0
            while not self.finished.wait(self.interval):
                self.report()
            self.report()

    def report(self) -> None:
        for stem in self.stems:
            state_of = final_state if self.finished.is_set() else job_state
            seen = state_of(self.outbox, stem, self.before)
            # Running jobs are shown every 25 %, so a slow CPU does not flood the terminal.
            shown: str = seen.state
            if seen.progress is not None:
                shown = f"running {int(seen.progress.percent // 25)}"
            if self._shown.get(stem) != shown:
                self._shown[stem] = shown
                print(_describe(stem, seen), flush=True)


def _describe(stem: str, seen: Seen) -> str:
    if seen.manifest is not None:
        done = seen.manifest
        if seen.state == "earlier":
            return (
                f"  {stem}: answered by an earlier demo, sent again: skipped -> {done.output.file}"
            )
        return (
            f"  {stem}: done in {done.timings.render_seconds:.0f} s, {done.iterations} "
            f"iterations ({STOPPED[done.stop_reason]}) on {done.device} -> {done.output.file}"
        )
    if seen.report is not None:
        return f"  {stem}: FAILED: {seen.report.error}"
    if seen.progress is not None:
        eta = seen.progress.eta_seconds
        left = f", about {eta:.0f} s left" if eta is not None else ""
        return f"  {stem}: {seen.progress.percent:.0f}% on {seen.progress.device}{left}"
    return f"  {stem}: waiting"


def run_daemon(folder: Path, jobs: list[DemoJob], device: str, before: frozenset[str]) -> int:
    """`stylefold once` on the demo folder, in this process; its JSON log goes to daemon.log."""
    from daemon.app import Daemon
    from daemon.logs import setup_logging

    overrides: dict[str, Any] = {
        "inbox": folder / "inbox",
        "outbox": folder / "outbox",
        "styles": folder / "styles",
        "state": folder / "state",
        "archive": "move",
        "archive_dir": folder / "state" / "archive",
        "devices": device,
        "settle_seconds": 1.0,  # the demo wrote the files itself: no sync client to wait for
        "preview_every": 10,  # live previews for `--web`
        "log_format": "json",
    }
    try:
        settings = load_settings(None, overrides)
    except ConfigError as exc:
        raise DemoError(f"the demo's configuration is not usable:\n{exc}") from None
    reporter = Reporter(settings.outbox, jobs, before)
    with (folder / DAEMON_LOG).open("a", encoding="utf-8") as log_file:
        setup_logging("json", settings.log_level, stream=log_file)
        reporter.start()
        try:
            code = Daemon(settings, overrides=overrides, once=True).run()
        finally:
            reporter.finished.set()
            reporter.join()
    return code


def tidy_inbox(folder: Path, jobs: list[DemoJob], unfinished: list[str]) -> list[str]:
    """Remove the brought-along files of finished jobs (those of an unfinished one stay, for
    its retry), and the daemon's record of them as answered where they lay, which every later
    start in this folder told as "none of the 1 files answered in place is in the inbox" (a
    new user's trial); returns their names."""
    needed = {name for job in jobs if job.photo in unfinished for name in job.extra}
    removed = []
    for name in dict.fromkeys(name for job in jobs for name in job.extra):
        if name not in needed:
            (folder / "inbox" / file_name(name)).unlink(missing_ok=True)
            removed.append(file_name(name))
    if removed:
        store = Store(folder / "state")
        try:
            store.forget_seen(removed)
        finally:
            store.close()
    return removed


# -- the command --------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="try stylefold on sample images: a folder, sidecars and the real daemon",
        description="Create a working folder (inbox/, outbox/, styles/, state/) with sample "
        "photos and styles from scikit-image, drop real sidecars into the inbox, run the daemon "
        "until those jobs are done, and print where the results and logs are.",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path("stylefold-demo"),
        help="the working folder (default: ./stylefold-demo)",
    )
    parser.add_argument(
        "--device", default="auto", help="auto (a GPU if there is one), cpu, cuda:N or mps"
    )
    parser.add_argument(
        "--size",
        type=number_flag(int),
        default=224,
        metavar="PX",
        help="long side of the outputs (224)",
    )
    parser.add_argument(
        "--iterations",
        type=number_flag(int),
        default=80,
        metavar="N",
        help="iteration cap per job (80)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the results of an earlier demo in --dir (default: start afresh, which "
        "is refused while --dir holds files the demo did not make)",
    )
    parser.add_argument(
        "--web",
        action="store_true",
        help="watch it in a browser: serve `stylefold web` on 127.0.0.1 while the demo runs, "
        "and after it until Ctrl-C (needs the web extra)",
    )
    parser.add_argument(
        "--web-port",
        type=number_flag(int),
        default=8765,
        metavar="PORT",
        help="its port (8765; 0: any)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        port = args.web_port if args.web else None
        return _demo(args.dir, args.device, args.size, args.iterations, args.keep, port)
    except DemoError as exc:
        print(f"stylefold demo: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("stylefold demo: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _demo(
    folder: Path, device: str, size: int, iterations: int, keep: bool, web_port: int | None
) -> int:
    folder = folder.expanduser().resolve()
    jobs = demo_jobs(size, iterations)
    prepare(folder, jobs, keep)
    page = start_page(folder, web_port) if web_port is not None else None
    inbox = folder / "inbox"
    print(f"stylefold demo in {folder}")
    print(f"styles library {folder / 'styles'}: {', '.join(STYLES)}")
    print(f"inbox {inbox}:")
    for job in jobs:
        print(f"  {file_name(job.photo)} + {job.photo}.json  ({job.what}): "
              f"{json.dumps(job.sidecar['style'])}")  # fmt: skip
    print(f"running the daemon once (device {device}; its log: {folder / 'daemon.log'})")
    started = time.monotonic()
    outbox = folder / "outbox"
    before = frozenset(path.name for path in outbox.iterdir())  # --keep: earlier answers
    code = run_daemon(folder, jobs, device, before)
    states = {job.photo: final_state(outbox, job.photo, before) for job in jobs}
    failed = [stem for stem, seen in states.items() if seen.manifest is None]
    # `once` ends with every job answered, or early on Ctrl-C or SIGTERM (still exit 0).
    waiting = [stem for stem, seen in states.items() if seen.state in ("running", "waiting")]
    stopped = code == 0 and bool(waiting)
    ended = "stopped after" if stopped else "finished in"
    print(f"{ended} {time.monotonic() - started:.0f} s; results in {outbox}:")
    for job in jobs:
        seen = states[job.photo]
        if seen.manifest is not None:
            what = seen.manifest.output.file
        else:
            what = f"{job.photo}.error.json" if seen.state == "failed" else "no result"
        print(f"  {what:28}  {job.what}")
    print(f"per job: <name>.manifest.json (parameters, losses, timings) and <name>.log in {outbox}")
    print(f"daemon log: {folder / 'daemon.log'}; originals moved to {folder / 'state' / 'archive'}")
    for name in tidy_inbox(folder, jobs, failed):
        print(
            f"removed {name} from the inbox: the daemon leaves a style image brought along where "
            "it is (another sidecar may name it too); remove your own once its jobs are done"
        )
    print(
        "try your own: put a photo and a sidecar such as "
        '{"style": "cells"} into the inbox, then run\n'
        f"  stylefold once --inbox {inbox} --outbox {outbox} --styles {folder / 'styles'} "
        f"--state {folder / 'state'}\n"
        f"and `stylefold status --state {folder / 'state'}` shows what it did"
    )
    if stopped:
        print(
            f"stylefold demo: stopped before {', '.join(waiting)} finished; they wait in "
            f"{folder / 'state'}, and the `stylefold once` command above finishes them",
            file=sys.stderr,
        )
    elif code != 0 or failed:
        print(
            f"stylefold demo: error: {', '.join(failed) or 'the daemon'} did not finish; "
            f"see {folder / 'daemon.log'}",
            file=sys.stderr,
        )
    if page is not None:
        print(f"the page stays open at {page.url}; Ctrl-C stops it", flush=True)
        page.wait_for_ctrl_c()
    if stopped:
        return EXIT_INTERRUPTED
    return EXIT_ERROR if code != 0 or failed else 0


# -- the web page (--web) -----------------------------------------------------------------------


def start_page(folder: Path, port: int) -> WebServer:
    """`stylefold web` for the demo's folders, on a thread beside the daemon."""
    try:
        from daemon.web.server import bind
    except ImportError as exc:
        raise DemoError(
            f"--web needs the web extra ({exc.name} is missing): pip install 'stylefold[web]'"
        ) from None
    names = ("inbox", "outbox", "styles", "state")
    settings = load_settings(
        None,
        {**{name: folder / name for name in names}, "archive_dir": folder / "state" / "archive"},
        create_dirs=False,
    )
    try:
        page = bind(settings, "127.0.0.1", port, when_stopped=DEMO_STOPPED)
    except OSError as exc:
        raise DemoError(f"cannot serve the page on port {port} ({exc.strerror}); "
                        "choose another --web-port") from None  # fmt: skip
    page.start()
    print(f"watch it work in a browser: open {page.url}", flush=True)
    return page
