"""The ASGI application: the page, its poll, and the pictures and texts of the jobs and styles it
knows, each looked up by job id or style name. Anything else is a 404.

Read-only by design: there is no route that changes anything, so there is nothing a token would
have to guard. Every response carries a strict Content-Security-Policy (no inline script, so
even a name that slipped through escaping could not run), nosniff and no referrer.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from daemon.config import Settings
from daemon.intake.styles import StyleLibrary
from daemon.jobs.manifest import Manifest
from daemon.status import read_status, shut_out
from daemon.visible import visible
from daemon.web.files import open_inside, relative_to
from daemon.web.page import Page, build_page
from daemon.web.records import JobRecord, OutboxFile, Outputs
from daemon.web.thumbnails import THUMB_SIDE, Busy, Pictures

POLL_SECONDS = 2.0
LIBRARY_EVERY = 10.0  # seconds between rescans of the style library
TEXT_LIMIT = 2 * 1024 * 1024  # a longer log is shown from its end
SECTIONS = ("health", "queue", "gallery", "failures", "styles")
HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-resource-policy": "same-origin",
}
CACHED = "private, max-age=3600"  # pictures whose URL changes when they do
NOT_FOUND = "not found: this page only serves files of jobs and styles it knows\n"
BUSY = "busy: many pictures are being made for this page; reload it in a moment\n"


def finalize(value: Any) -> Any:
    """Jinja2's finalize: every printed value passes here before autoescaping, so control
    characters, lone surrogates and bidi overrides in file names show as `\\x1b`-style text."""
    if not isinstance(value, str) or isinstance(value, Markup):
        return value
    return visible(value)


class SecurityHeaders:
    """Adds HEADERS to every response (pure ASGI, so streaming and errors get them too)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("cache-control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HostCheck:
    """Answers only requests whose Host is an IP address or a name in `names`: a page that
    rebinds its own name to this machine's address (DNS rebinding) sends its own name, so a
    visitor's browser cannot be made to read the photos for it."""

    def __init__(self, app: ASGIApp, names: frozenset[str]) -> None:
        self.app = app
        self.names = names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = Headers(scope=scope).get("host", "")
            name = _without_port(host)
            if not _is_ip(name) and name not in self.names:
                refused = PlainTextResponse(
                    f"this page does not answer to the name {visible(host)!r}; to reach it by "
                    "that name (a reverse proxy passing it on), add it to web_allowed_hosts\n",
                    400,
                )
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


def own_names(settings: Settings) -> frozenset[str]:
    """localhost, this machine's name (and its .local mDNS form) and web_allowed_hosts."""
    machine = socket.gethostname().lower()
    short = machine.split(".")[0]
    return frozenset(["localhost", machine, short, f"{short}.local", *settings.web_allowed_hosts])


# A Host header: a name or an IPv4 address, or [an IPv6 address], then an optional :port and
# nothing else ("localhost:80@evil.example" and "[::1].evil.example" are no names of ours).
_HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[^:\[\]@/\\\s]+))(?::\d{1,5})?")


def _without_port(host: str) -> str:
    """The name or address a Host header gives, lowercase; "" for one that is malformed."""
    found = _HOST.fullmatch(host)
    if found is None:
        return ""
    name = (found["v6"] or found["name"]).lower()
    return name.removesuffix(".") if not name.endswith("..") else ""  # one root dot: FQDN form


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Site:
    """What the requests share: the settings, the style library (rescanned now and then),
    the job lookups and the picture encoder."""

    def __init__(
        self, settings: Settings, poll_seconds: float, when_stopped: str | None = None
    ) -> None:
        self.settings = settings
        self.poll_seconds = poll_seconds
        self.when_stopped = when_stopped
        self.outputs = Outputs(settings)
        self.pictures = Pictures(settings.state / "thumbnails", settings.max_pixels)
        # A result is shown at most as large as its manifest says, a preview as the engine
        # makes one (a web trial's 49 MP picture in a result's place took 1 GB to show);
        # originals and styles are up to max_pixels.
        self.output_pixels = settings.max_output_size**2
        self.templates = Environment(
            loader=PackageLoader("daemon.web"),
            autoescape=True,
            finalize=finalize,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._library = StyleLibrary.from_settings(settings)
        self._scanned = time.monotonic()
        self._lock = threading.Lock()

    def library(self) -> StyleLibrary:
        with self._lock:
            if time.monotonic() - self._scanned > LIBRARY_EVERY:
                self._library.reload()
                self._scanned = time.monotonic()
            return self._library

    def page(self) -> Page:
        report = read_status(self.settings.state)
        return build_page(report, self.settings, self.outputs, self.library(), self.when_stopped)

    def sections(self, page: Page) -> dict[str, str]:
        return {
            name: self.templates.get_template(f"_{name}.html").render(page=page)
            for name in SECTIONS
        }


def create_app(
    settings: Settings, *, poll_seconds: float = POLL_SECONDS, when_stopped: str | None = None
) -> Starlette:
    """The page for the daemon of `settings` (`when_stopped`: `page.health`'s)."""
    site = Site(settings, poll_seconds, when_stopped)
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(HostCheck, names=own_names(settings)),
    ]

    def index(request: Request) -> Response:
        page = site.page()
        sections = {name: (Markup(html), _hash(html)) for name, html in site.sections(page).items()}
        template = site.templates.get_template("page.html")
        html = template.render(page=page, sections=sections, poll=site.poll_seconds)
        return HTMLResponse(html)

    def poll(request: Request) -> Response:
        page = site.page()
        sections = {
            name: {"hash": _hash(html), "html": html} for name, html in site.sections(page).items()
        }
        # ASCII JSON: an undecodable file name travels as an escape, never as a broken byte.
        return Response(
            json.dumps({"at": page.at, "sections": sections}), 200, {}, "application/json"
        )

    def job_thumbnail(request: Request) -> Response:
        record = _record(site, request)
        which = request.path_params["which"]
        if record is None or which not in ("result", "original"):
            return _not_found()
        manifest = site.outputs.manifest(record)
        if manifest is None:
            return _not_found()
        if which == "result":  # only the job's own (a web trial swapped in a 49 MP picture)
            handle = site.outputs.open(record, "result")
            return _picture(handle, site.pictures, f"{record.id}:r", *_as_made(manifest))
        for root, relative in site.outputs.original_places(record):
            handle = open_inside(root, relative)
            if handle is not None:
                with handle:
                    key = f"{record.id}:o:{root}/{relative}"
                    data = site.pictures.thumbnail(handle, key, manifest.input.sha256)
                if data is not None:
                    return _jpeg(data)
        return _not_found()

    def job_picture(request: Request) -> Response:
        record = _record(site, request)
        kind: OutboxFile = "preview" if request.url.path.endswith("/preview") else "result"
        handle = site.outputs.open(record, kind) if record is not None else None
        if record is None or handle is None:
            return _not_found()
        with handle:
            if kind == "preview":  # a new one every few seconds: not worth keeping
                data = site.pictures.encode(handle, THUMB_SIDE, pixels=site.output_pixels)
            elif (manifest := site.outputs.manifest(record)) is not None:
                data = site.pictures.full(handle, f"{record.id}:full", *_as_made(manifest))
            else:
                data = None
        return _not_found() if data is None else _jpeg(data)

    def job_text(request: Request) -> Response:
        record = _record(site, request)
        kind: OutboxFile = "log" if request.url.path.endswith("/log") else "report"
        handle = site.outputs.open(record, kind) if record is not None else None
        if handle is None:
            return _not_found()
        with handle:
            return PlainTextResponse(_text(handle))

    def style_thumbnail(request: Request) -> Response:
        library = site.library()
        style = {s.name: s for s in library.styles()}.get(request.path_params["name"])
        root = library.root.resolve()
        relative = relative_to(style.path, root) if style is not None else None
        if style is None or relative is None:
            return _not_found()
        return _picture(open_inside(root, relative), site.pictures, f"style:{style.name}")

    static = Path(__file__).parent / "static"
    routes = [
        Route("/", index),
        Route("/api/page", poll),
        Route("/jobs/{job_id}/thumb/{which}", job_thumbnail),
        Route("/jobs/{job_id}/full", job_picture),
        Route("/jobs/{job_id}/preview", job_picture),
        Route("/jobs/{job_id}/log", job_text),
        Route("/jobs/{job_id}/report", job_text),
        Route("/styles/{name}/thumb", style_thumbnail),
        Mount("/static", StaticFiles(directory=static), name="static"),
    ]
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            404: lambda request, exc: _not_found(),
            # The page's unit run as another user than the daemon's: a page that says so.
            PermissionError: lambda request, exc: PlainTextResponse(shut_out(exc), 503),
            Busy: lambda request, exc: PlainTextResponse(BUSY, 503, {"retry-after": "2"}),
        },
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _record(site: Site, request: Request) -> JobRecord | None:
    return site.outputs.record(str(request.path_params["job_id"]))


def _hash(html: str) -> str:
    return hashlib.sha256(html.encode("utf-8", "backslashreplace")).hexdigest()[:16]


def _picture(
    handle: BinaryIO | None,
    pictures: Pictures,
    key: str,
    sha256: str | None = None,
    pixels: int | None = None,
) -> Response:
    if handle is None:
        return _not_found()
    with handle:
        data = pictures.thumbnail(handle, key, sha256, pixels)
    return _not_found() if data is None else _jpeg(data)


def _as_made(manifest: Manifest) -> tuple[str, int]:
    """What a file must be to be shown as the job's result: its manifest's hash, and pixels
    no more than its size."""
    return manifest.output.sha256, math.prod(manifest.output.size)


def _jpeg(data: bytes) -> Response:
    return Response(data, media_type="image/jpeg", headers={"cache-control": CACHED})


def _text(handle: BinaryIO) -> str:
    """A log or report as text; a long one from its end (where the outcome is)."""
    size = handle.seek(0, 2)
    handle.seek(max(0, size - TEXT_LIMIT))
    text = handle.read(TEXT_LIMIT).decode("utf-8", "replace")
    return f"[first {size - TEXT_LIMIT} bytes left out]\n{text}" if size > TEXT_LIMIT else text


def _not_found() -> Response:
    return PlainTextResponse(NOT_FOUND, status_code=404)
