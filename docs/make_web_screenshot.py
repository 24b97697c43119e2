"""Remake docs/web.png, the README's picture of `stylefold web`: the real demo (`stylefold demo
--web`) on scikit-image's sample photos, photographed by headless Chromium while one job is
running with its live preview and earlier ones are in the gallery.

    python docs/make_web_screenshot.py [--out docs/web.png]

Needs the test extra (Playwright) and Debian's chromium.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 1000, 1250
MAX_BYTES = 300_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "web.png")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("needs Debian's chromium: apt-get install chromium")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "demo"
        demo = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "demo", "--dir", str(folder), "--size", "160",
             "--iterations", "60", "--web", "--web-port", "0"],
            cwd=REPO, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert demo.stdout is not None
        url = None
        for line in demo.stdout:
            found = re.search(r"open (http://\S+/)", line)
            if found:
                url = found[1]
                # A sidecar with a typo, so the failures section has something to show.
                (folder / "inbox" / "typo.jpg").write_bytes(
                    (folder / "styles/retina.jpg").read_bytes()
                )
                (folder / "inbox" / "typo.json").write_text(json.dumps({"style": "retna"}))
                break
        assert url, "the demo did not say where the page is"
        try:
            shoot(chromium, url, args.out)
        finally:
            demo.send_signal(signal.SIGINT)
            demo.wait(120)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")
    return 0


def shoot(chromium: str, url: str, out: Path) -> None:
    """Wait for two results and a running job's preview, then photograph the page."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        page.goto(url)
        page.wait_for_function(
            "() => document.querySelectorAll('article.card').length >= 2"
            " && [...document.querySelectorAll('li.job img.preview, article.card img')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
            " && document.querySelector('li.job img.preview') !== null",
            timeout=600_000,
            polling=500,
        )
        png = page.screenshot()
        browser.close()
    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = 256
    while True:  # a palette PNG keeps the page's text sharp at a fraction of the size
        data = io.BytesIO()
        image.quantize(colours, dither=Image.Dither.FLOYDSTEINBERG).save(data, "PNG", optimize=True)
        if data.tell() <= MAX_BYTES or colours <= 32:
            break
        colours //= 2
    out.write_bytes(data.getvalue())


if __name__ == "__main__":
    sys.exit(main())
