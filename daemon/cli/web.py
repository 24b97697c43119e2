"""`stylefold web`: the read-only page (queue, live previews, results, styles, health) for the
daemon of a configuration, in a process of its own (see docs/DESIGN.md, "Web page")."""

from __future__ import annotations

import argparse
import signal

from daemon.cli.common import fail, fail_config, folder_flags, number_flag, read_settings
from daemon.config import ConfigError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "web",
        help="a read-only web page that watches the daemon work (needs the web extra)",
        description="Serve a page with the queue, live previews, the results beside their "
        "originals, the style library and the daemon's health. It only reads the daemon's "
        "folders and changes nothing. Bound to 127.0.0.1 unless --host (or web_host) says "
        "otherwise.",
    )
    folder_flags(parser)
    parser.add_argument("--host", help="address to listen on (default: web_host, 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=number_flag(int),
        help="TCP port (default: web_port, 8765; 0 picks a free one)",
    )
    parser.add_argument(
        "--poll",
        type=number_flag(float),
        default=2.0,
        metavar="SECONDS",
        help="how often the open page asks for news (default: 2)",
    )
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM, and exit 0 after either, at any moment (start-up
    included), like `stylefold run`. uvicorn stops gracefully on both, then raises the signal
    again for the handler it found: SIGTERM's default would kill the process (status -15), so
    SIGTERM is made to interrupt like Ctrl-C does."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return _serve(args)
    except KeyboardInterrupt:
        return 0


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = read_settings(args)  # it only reads the folders
    except ConfigError as exc:
        return fail_config(f"configuration error:\n{exc}")
    try:
        from daemon.web.server import bind
    except ImportError as exc:
        return fail(f"the web page needs the web extra ({exc.name} is missing): "
                    "pip install 'stylefold[web]'")  # fmt: skip
    from daemon.logs import setup_logging

    setup_logging(settings.log_format, settings.log_level)
    host = args.host or settings.web_host
    port = settings.web_port if args.port is None else args.port
    try:
        server = bind(settings, host, port, poll_seconds=args.poll)
    except OSError as exc:  # as the daemon's metrics port: 78, not restarted (a new user's trial)
        return fail_config(
            f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port (or web_port)"
        )
    print(f"stylefold web: open {server.url} (Ctrl-C stops it)", flush=True)
    server.run()  # returns after SIGINT/SIGTERM, or raises KeyboardInterrupt once it stopped
    return 0
