"""`stylefold web` in a real browser: the real daemon renders real photos while headless
Chromium (Debian's, driven by Playwright) watches the real page that uvicorn serves.

One daemon, one page server and one browser for the module; the tests run in file order and
build on each other's jobs (one held mid-render to watch it running, then failures and hostile
names).
Set STYLEFOLD_WEB_SCREENSHOT=docs/web.png to refresh the README's screenshot.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import (
    CLI,
    REPO,
    Daemon,
    Folders,
    image_bytes,
    make_folders,
    start_daemon,
    wait_for,
    write_json,
)

pytest.importorskip("starlette", reason="the page needs the web extra")
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright")
CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)

expect = sync_api.expect
WAIT_MS = 120_000  # a loaded 2-core machine renders slowly
SLOW = {"size": 48, "iterations": 30, "tolerance": 0.0}  # held mid-way to be watched running
HOSTILE = "<img src=x onerror=alert(1)>.jpg"
QUOTED = 'it\'s "quoted" & <b>bold\x1b[31m.jpg'
QUOTED_SHOWN = 'it\'s "quoted" & <b>bold\\x1b[31m.jpg'  # the escape character made visible


@dataclass
class Site:
    folders: Folders
    daemon: Daemon
    web: subprocess.Popen[str]
    url: str
    page: sync_api.Page
    browser: sync_api.Browser
    dialogs: list[str] = field(default_factory=list)

    def get(
        self, path: str, host: str | None = None, port: int | None = None
    ) -> http.client.HTTPResponse:
        """A request for exactly `path` (no client-side normalisation of `..` or `%2f`)."""
        where = urlsplit(self.url)
        connection = http.client.HTTPConnection("127.0.0.1", port or where.port, timeout=30)
        connection.putrequest("GET", path, skip_host=host is not None)
        if host is not None:
            connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        response.read()
        connection.close()
        return response


def start_web(config: Path, *args: str) -> tuple[subprocess.Popen[str], str, str]:
    """`stylefold web` on a free port: the process, its URL and what it printed until then."""
    web = subprocess.Popen(
        [*CLI, "web", "--config", str(config), "--port", "0", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert web.stdout is not None
    lines = []
    for line in web.stdout:
        lines.append(line)
        found = re.search(r"open (http://\S+/)", line)
        if found:
            return web, found[1], "".join(lines)
    raise AssertionError(f"stylefold web did not say where to open it:\n{''.join(lines)}")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folders = make_folders(tmp_path_factory.mktemp("web"))
    config = folders.config(preview_every=2)
    daemon = start_daemon(folders, config=config)
    web, url, _ = start_web(config, "--poll", "1")
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1100, "height": 1000})
            site = Site(folders, daemon, web, url, page, browser)
            page.on(
                "dialog", lambda dialog: (site.dialogs.append(dialog.message), dialog.dismiss())
            )
            page.goto(url)
            yield site
            browser.close()
    finally:
        web.terminate()
        web.wait(30)
        daemon.stop()


def drop(
    folders: Folders, name: str, sidecar: dict[str, object], data: bytes | None = None
) -> None:
    """A photo and its sidecar, sidecar last (as a careful sync client writes them)."""
    (folders.inbox / name).write_bytes(image_bytes(seed=len(name)) if data is None else data)
    write_json(folders.inbox / f"{Path(name).stem}.json", sidecar)


def loaded(page: sync_api.Page, selector: str) -> None:
    """Wait until the picture at `selector` has been decoded by the browser."""
    page.wait_for_function(
        "s => { const i = document.querySelector(s); return i?.complete && i.naturalWidth > 0 }",
        arg=selector,
        timeout=WAIT_MS,
    )


def render_held(folders: Folders, name: str) -> int:
    """Wait until the worker rendering the photo `name` has sent a preview (its progress is
    past iteration 0), then stop that worker process (SIGSTOP) and return its pid. A render of
    a few seconds on a quiet machine would otherwise end between two of the daemon's status
    reports (progress is published every few seconds) and never show a percent on the page."""
    status = folders.state / "status.json"

    def worker() -> int | None:
        try:
            report = json.loads(status.read_text())
        except (OSError, ValueError):
            return None  # not written yet, or replaced while read
        jobs = [j for j in report["jobs"] if j["input"] == name and j["state"] == "running"]
        pids = {w["worker"]: w["pid"] for w in report["daemon"]["workers"]}
        return pids.get(jobs[0]["worker"]) if jobs else None

    pid: int = wait_for(worker, timeout=WAIT_MS / 1000, what=f"{name} running on a worker")
    preview = folders.outbox / f"{Path(name).stem}.preview.jpg"
    deadline = time.monotonic() + WAIT_MS / 1000
    while not preview.exists():  # polled closely: the render may be short
        assert time.monotonic() < deadline, f"no preview of {name} within {WAIT_MS} ms"
        time.sleep(0.005)
    os.kill(pid, signal.SIGSTOP)
    progress = folders.outbox / f"{Path(name).stem}.progress.json"
    if not progress.exists():  # removed when the answer lands
        os.kill(pid, signal.SIGCONT)
        raise AssertionError(f"{name} was done before its worker could be held")
    return pid


def test_a_running_job_shows_its_percent_and_live_preview(site: Site) -> None:
    drop(site.folders, "cat.jpg", {"style": "mosaic", "params": SLOW})
    worker = render_held(site.folders, "cat.jpg")
    try:
        # Photos dropped now wait behind it: the queue, as the README's screenshot shows it.
        drop(site.folders, HOSTILE, {"style": "waves", "params": {"iterations": 4}})
        drop(site.folders, QUOTED, {"style": "mosaic", "params": {"iterations": 4}})
        drop(site.folders, "unknown.jpg", {"style": "no_such_style"})
        running = site.page.locator("li.job[data-state=running]", has_text="cat.jpg")
        expect(running).to_be_visible(timeout=WAIT_MS)
        percent = running.locator(".percent")
        expect(percent).to_have_text(re.compile(r"^[1-9][\d.]*%$"), timeout=WAIT_MS)
        expect(running).to_contain_text("/30 iterations")
        loaded(site.page, "li.job[data-state=running] img.preview")
        failure = site.page.locator("li.failure", has_text="unknown.jpg")
        expect(failure).to_be_visible(timeout=WAIT_MS)
        if os.environ.get("STYLEFOLD_WEB_SCREENSHOT"):
            site.page.screenshot(path=os.environ["STYLEFOLD_WEB_SCREENSHOT"], full_page=True)
    finally:
        os.kill(worker, signal.SIGCONT)


def test_the_result_appears_in_the_gallery_with_thumbnails_and_parameters(site: Site) -> None:
    card = site.page.locator("article.card", has_text="cat.jpg")
    expect(card).to_be_visible(timeout=WAIT_MS)
    expect(card.locator(".styles")).to_have_text("style: mosaic")
    expect(card.locator(".summary")).to_contain_text("size 48 · iterations 30 · strength 0.9")
    expect(card.locator(".summary")).not_to_contain_text("None")  # an unset style_weight
    expect(card.locator("dl.facts")).to_contain_text("30 (at the iteration cap)")
    job = card.get_attribute("data-job")
    loaded(site.page, f'article.card[data-job="{job}"] figure.result img')
    # The original was moved to the archive; found there and checked against the manifest.
    loaded(site.page, f'article.card[data-job="{job}"] figure.original img')
    full = site.page.request.get(f"{site.url}jobs/{job}/full")
    assert full.status == 200 and full.headers["content-type"] == "image/jpeg"
    log = site.page.request.get(f"{site.url}jobs/{job}/log")
    assert log.status == 200 and "done: 30 iterations" in log.text()
    assert log.headers["content-type"].startswith("text/plain")
    assert log.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in log.headers["content-security-policy"]


def test_a_picture_that_did_not_come_is_asked_for_again(site: Site) -> None:
    """A regression trial: three people opening the page at once were refused most pictures
    (503, many waiting to be made), and the page hid them for good. A picture that does not
    come is asked for again, later each time, and shown once it comes."""
    card = f'article.card[data-job="{_job_of(site, "cat.jpg")}"]'
    result = site.folders.outbox / "cat.stylised.jpg"
    away = result.with_name("elsewhere.bin")
    context = site.browser.new_context()  # a second viewer: nothing in its cache
    page = context.new_page()
    result.rename(away)  # gone for a moment, as while a sync tool replaces it
    try:
        page.goto(site.url)
        missing = f"{card} figure.result img.missing"
        page.wait_for_selector(missing, state="attached", timeout=WAIT_MS)
    finally:
        away.rename(result)
    try:
        loaded(page, f"{card} figure.result img")
        expect(page.locator(f"{card} figure.result img")).not_to_have_class(re.compile("missing"))
    finally:
        context.close()


def _job_of(site: Site, name: str) -> str:
    job = site.page.locator("article.card", has_text=name).get_attribute("data-job")
    assert job is not None
    return job


def test_a_failed_job_shows_its_reason(site: Site) -> None:
    drop(site.folders, "broken.jpg", {"style": "mosaic"}, data=b"<html>not a picture</html>")
    unknown = site.page.locator("li.failure", has_text="unknown.jpg")
    expect(unknown.locator(".reason")).to_contain_text(
        "'no_such_style' is not in the style library"
    )
    expect(unknown.locator(".original")).to_contain_text("left in the inbox")
    broken = site.page.locator("li.failure", has_text="broken.jpg")
    expect(broken.locator(".reason")).to_contain_text("not an image", timeout=WAIT_MS)
    report = broken.locator("a", has_text="error report").get_attribute("href")
    response = site.page.request.get(f"{site.url}{(report or '').lstrip('/')}")
    assert response.status == 200 and "not an image" in response.text()


def test_hostile_file_names_render_as_text(site: Site) -> None:
    for shown in (HOSTILE, QUOTED_SHOWN):
        card = site.page.locator("article.card h3.name", has_text=shown)
        expect(card).to_have_text(shown, timeout=WAIT_MS)
    assert site.page.locator("img[src=x]").count() == 0
    assert site.page.locator("main b").count() == 0
    site.page.reload()
    expect(site.page.locator("article.card h3.name", has_text=HOSTILE)).to_have_text(HOSTILE)
    assert site.page.locator("img[src=x]").count() == 0
    assert site.dialogs == []


def test_only_files_of_known_jobs_are_served(site: Site) -> None:
    job = site.page.locator("article.card", has_text="cat.jpg").get_attribute("data-job")
    assert site.get(f"/jobs/{job}/log").status == 200
    for path in (
        "/jobs/..%2f..%2f..%2fetc%2fpasswd/log",
        "/jobs/%2e%2e/log",
        f"/jobs/{job}/../../../etc/passwd",
        f"/jobs/{job}%2f..%2f..%2fstylefold.toml/log",
        "/jobs/20990101-000000-000000-abcdef/log",
        "/jobs/not-a-job/full",
        f"/jobs/{job}/thumb/secret",
        f"/jobs/{job}/preview",  # done: its preview is gone
        "/styles/..%2fmosaic/thumb",
        "/styles/no_such_style/thumb",
        "/static/..%2fapp.py",
        "/static/../records.py",
        "/etc/passwd",
    ):
        assert site.get(path).status == 404, path


def test_links_and_look_alikes_in_the_outbox_are_not_served(site: Site) -> None:
    """A sync peer may replace a job's files: a log turned into a link to a secret, a result
    turned into HTML under the result's name."""
    card = site.page.locator("article.card", has_text="cat.jpg")
    job = card.get_attribute("data-job")
    outbox = site.folders.outbox
    secret = site.folders.root / "secret.txt"
    secret.write_text("password=hunter2\n")
    (outbox / "cat.log").unlink()
    (outbox / "cat.log").symlink_to(secret)
    assert site.get(f"/jobs/{job}/log").status == 404
    (outbox / "cat.log").unlink()
    os.link(secret, outbox / "cat.log")  # a hard link: the same file under a second name
    assert site.get(f"/jobs/{job}/log").status == 404
    result = outbox / "cat.stylised.jpg"
    result.write_bytes(b"<script>alert(1)</script>")
    assert site.get(f"/jobs/{job}/full").status == 404
    # Another picture under its name, not the job's by its manifest's hash (a web trial's
    # 49 MP picture took 4 GB to show; this one is small).
    result.write_bytes(image_bytes(seed=99))
    assert site.get(f"/jobs/{job}/full").status == 404
    assert site.get(f"/jobs/{job}/thumb/result").status == 404


def test_requests_naming_another_host_are_refused(site: Site) -> None:
    """The page answers to IP addresses and this machine's names only (DNS rebinding: a page
    that rebinds its own name to this address sends that name)."""
    port = urlsplit(site.url).port
    refused = site.get("/", host="evil.example")
    assert refused.status == 400
    # What a browser never sends, but a parser must not take for ours (an attacker's trial).
    for host in (
        f"localhost:{port}@evil.example",
        "[::1].evil.example",
        "localhost:x",
        "localhost..",
    ):
        assert site.get("/", host=host).status == 400, host
    for host in (
        f"localhost:{port}",
        "localhost.",
        f"10.1.2.3:{port}",
        "[::1]",
        socket.gethostname(),
    ):
        assert site.get("/", host=host).status == 200, host


def test_binding_to_every_address_warns_and_still_checks_the_host(site: Site) -> None:
    """Found by an attacker's trial: bound to 0.0.0.0 (the LAN), any name was answered, so any
    web page a LAN user visited could rebind its name and read the photos."""
    config = site.folders.root / "stylefold-lan.toml"
    text = (site.folders.root / "stylefold.toml").read_text()
    config.write_text(
        text.replace("[defaults]", 'web_allowed_hosts = ["Photos.Example.org"]\n[defaults]')
    )
    web, url, printed = start_web(config, "--host", "0.0.0.0")
    port = urlsplit(url).port
    try:
        wait_for(lambda: site.get("/", host=f"127.0.0.1:{port}", port=port).status == 200)
        assert site.get("/", host="evil.example", port=port).status == 400
        assert site.get("/", host=f"photos.example.org:{port}", port=port).status == 200
    finally:
        web.send_signal(signal.SIGINT)  # Ctrl-C
        assert web.wait(30) == 0
    assert "web.exposed" in printed and "sees the photos" in printed


def test_the_page_fits_a_phone(site: Site) -> None:
    phone = site.browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.goto(site.url)
    expect(phone.locator("article.card").first).to_be_visible()
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide on a 390 px screen"
    box = phone.locator("article.card").first.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    phone.close()
