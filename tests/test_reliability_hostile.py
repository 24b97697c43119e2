"""Hostile input: one real daemon, some 250 pairs dropped at once, each answered.

Every case ends with `<stem>.error.json` whose `error` says what to fix, or, for legitimately
odd images (CMYK, 16-bit, palette, alpha, animated, multi-page, wrong extension), a correct
result. Afterwards the daemon is still running and nothing outside its folders was read or
touched (a canary and symlink targets keep their bytes and their access times).
"""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import Daemon, Folders, image_bytes, make_folders, make_image, start_daemon, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from reliability_report import Collector

pytestmark = pytest.mark.heavy

SIZE = 32
VALID = {"style": "mosaic"}


@dataclass
class Case:
    rel: str  # the image's path inside the inbox
    kind: str  # what the case exercises, for the report
    expect: str  # "error" | "result" | "either"
    hint: tuple[str, ...] = ()  # words the error must contain (any of them)


@dataclass
class World:
    folders: Folders
    outside: Path
    watched: dict[Path, tuple[bytes, float]]  # files outside the daemon's folders: bytes, atime


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("hostile")
    folders = make_folders(root)
    outside = root / "outside"
    outside.mkdir()
    make_image(outside / "canary.jpg", seed=9)
    (outside / "canary.json").write_text(json.dumps(VALID))
    make_image(outside / "dir" / "inner.jpg", seed=8)
    (outside / "dir" / "inner.json").write_text(json.dumps(VALID))
    return World(folders, outside, {})


def _freeze(world: World) -> None:
    """atime well before mtime: with relatime (or strictatime) any read moves it. Checked on a
    probe first: on a noatime file system the 'never read' check would see nothing."""
    probe = world.outside.parent / "atime-probe"
    probe.write_bytes(b"probe")
    before = probe.stat().st_mtime - 10_000
    os.utime(probe, (before, probe.stat().st_mtime))
    probe.read_bytes()
    assert probe.stat().st_atime != before, "reads do not move atimes here (noatime)"
    for path in world.outside.rglob("*"):
        if path.is_file():
            st_ = path.stat()
            os.utime(path, (st_.st_mtime - 10_000, st_.st_mtime))
            world.watched[path] = (path.read_bytes(), path.stat().st_atime)
    # read_bytes above moved the atimes again: set them back and record.
    for path in list(world.watched):
        st_ = path.stat()
        os.utime(path, (st_.st_mtime - 10_000, st_.st_mtime))
        world.watched[path] = (world.watched[path][0], path.stat().st_atime)
    assert len(world.watched) == 4, sorted(world.watched)  # canary and dir/inner: .jpg, .json


@pytest.fixture(scope="module")
def daemon(world: World) -> Iterator[Daemon]:
    config = world.folders.config(
        pair_timeout=3.0,
        arriving_timeout=3.0,
        max_pixels=4_000_000,
        max_iterations=50,
        max_output_size=256,
        max_sidecar_bytes=65536,
        defaults={"size": SIZE, "iterations": 2},
    )
    running = start_daemon(world.folders, config=config)
    yield running
    assert running.stop() == 0


# -- crafted files -----------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int) -> bytes:
    """A ~100-byte PNG that declares width x height RGB pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 64, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", rows)
        + _png_chunk(b"IEND", b"")
    )


def _encoded(image: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _rgb(seed: int, size: tuple[int, int] = (40, 30)) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((4, 4, 3)) * 255).astype(np.uint8))
    return small.resize(size, Image.Resampling.BICUBIC)


def odd_images() -> dict[str, bytes]:
    """Legitimately odd images: each must give a correct result."""
    rgb = _rgb(1)
    frames = [_rgb(s) for s in (2, 3, 4)]
    gray16 = Image.fromarray((np.linspace(0, 65535, 40 * 30).reshape(30, 40)).astype(np.uint16))
    return {
        "cmyk.jpg": _encoded(rgb.convert("CMYK"), "JPEG"),
        "gray16.png": _encoded(gray16, "PNG"),
        "palette.png": _encoded(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "alpha.png": _encoded(rgb.convert("RGBA"), "PNG"),
        "gray-alpha.png": _encoded(rgb.convert("LA"), "PNG"),
        "animated.webp": _encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
        "animated-gif.gif": _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "pages.tiff": _encoded(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
        "png-named.jpg": _encoded(rgb, "PNG"),  # wrong extension, real image
    }


BAD_STYLES = [
    "..",
    "../styles/mosaic",
    "../../../../etc/passwd",
    "/etc/passwd",
    "mo/saic",
    "mosaic\x00",
    "mo\x00saic",
    "C:\\Windows\\win.ini",
    "~root",
    "",
    " ",
    "mosaic" * 200,
    "\u202emosaic",
    "nosuchstyle",
]


def crafted(inbox: Path, outside: Path) -> list[Case]:
    folder = inbox / "crafted"
    folder.mkdir(parents=True)
    photo = image_bytes(seed=7)
    cases: list[Case] = []

    def pair(stem: str, image: bytes | None, sidecar: Any, kind: str, expect: str = "error",
             hint: tuple[str, ...] = (), ext: str = ".jpg") -> None:  # fmt: skip
        if image is not None:
            (folder / f"{stem}{ext}").write_bytes(image)
        if isinstance(sidecar, bytes):
            (folder / f"{stem}.json").write_bytes(sidecar)
        elif sidecar is not None:
            (folder / f"{stem}.json").write_text(json.dumps(sidecar))
        cases.append(Case(f"crafted/{stem}{ext}", kind, expect, hint))

    # JSON that is not a sidecar.
    pair("json-invalid", photo, b'{"style": "mosaic",', "invalid JSON", hint=("JSON", "json"))
    pair("json-empty", photo, b"", "empty sidecar", hint=("JSON", "json", "empty"))
    pair("json-nan", photo, b'{"style": "mosaic", "params": {"size": NaN}}', "NaN", hint=("NaN",))
    pair("json-dupkey", photo, b'{"style": "mosaic", "style": "waves"}', "duplicate key")
    pair("json-bom-latin1", photo, '{"style": "mosa\xefc"}'.encode("latin-1"), "not UTF-8")
    pair("json-huge", photo, json.dumps({**VALID, "x": "a" * 300_000}).encode(),
         "huge JSON", hint=("max_sidecar_bytes",))  # fmt: skip
    pair("json-deep", photo, b"[" * 5000 + b"]" * 5000, "deeply nested JSON", hint=("deep", "nest"))
    pair("json-deep-dict", photo, b'{"a":' * 3000 + b"1" + b"}" * 3000, "deeply nested JSON")
    pair("json-bigint", photo, b'{"style": "mosaic", "params": {"size": 1' + b"0" * 5000 + b"}}",
         "huge integer")  # fmt: skip
    pair("json-list", photo, [VALID], "wrong top-level type")
    pair("json-string", photo, "mosaic", "wrong top-level type")
    # Wrong types and unknown keys.
    pair("type-style-int", photo, {"style": 5}, "wrong type")
    pair("type-size-str", photo, {"style": "mosaic", "params": {"size": "big"}}, "wrong type",
         hint=("size",))  # fmt: skip
    pair("type-params-list", photo, {"style": "mosaic", "params": []}, "wrong type")
    pair("type-weight-neg", photo, {"style": [{"name": "mosaic", "weight": -1}]}, "wrong value")
    pair("unknown-key", photo, {"style": "mosaic", "colour": "red"}, "unknown key",
         hint=("colour",))  # fmt: skip
    pair("unknown-param", photo, {"style": "mosaic", "params": {"iterashuns": 1}}, "unknown key",
         hint=("iterashuns",))  # fmt: skip
    # Style names that try to be paths.
    for n, name in enumerate(BAD_STYLES):
        pair(f"style-{n}", photo, {"style": name}, "hostile style name")
    for n, name in enumerate(["/etc/passwd", "../outside/canary.jpg", str(outside / "canary.jpg"),
                              "a\x00b.jpg", "../../x.jpg"]):  # fmt: skip
        pair(f"stylefile-{n}", photo, {"style": {"file": name}}, "hostile style file")
    # Parameters beyond the configured limits.
    pair("limit-size", photo, {"style": "mosaic", "params": {"size": 1000}}, "beyond limits",
         hint=("max_output_size",))  # fmt: skip
    pair("limit-size-absurd", photo, {"style": "mosaic", "params": {"size": 100_000}},
         "beyond limits", hint=("size",))  # fmt: skip
    pair("limit-iterations", photo, {"style": "mosaic", "params": {"iterations": 10**9}},
         "beyond limits", hint=("max_iterations", "iterations"))  # fmt: skip
    pair("limit-negative", photo, {"style": "mosaic", "params": {"size": -5}}, "beyond limits")
    pair("limit-pixels", bomb_png(3000, 3000), VALID, "beyond limits", ext=".png",
         hint=("max_pixels", "pixels"))  # fmt: skip
    # Images that are not images.
    pair("zero-byte", b"", VALID, "zero-byte image", hint=("empty", "zero", "0 bytes"))
    pair("truncated", photo[: len(photo) // 2], VALID, "truncated image",
         hint=("truncated", "corrupt", "decode"))  # fmt: skip
    pair("corrupt", photo[:20] + os.urandom(len(photo)), VALID, "corrupt image")
    pair("text-as-jpg", b"hello, this is not a photo\n" * 50, VALID, "wrong extension")
    pair("bomb", bomb_png(100_000, 100_000), VALID, "decompression bomb", ext=".png",
         hint=("max_pixels", "pixels"))  # fmt: skip
    pair("bomb-wide", bomb_png(2**31 - 1, 1), VALID, "decompression bomb", ext=".png")
    # Legitimately odd images: a correct result.
    for name, data in odd_images().items():
        stem, ext = os.path.splitext(name)
        pair(stem, data, VALID, f"odd image ({stem})", expect="result", ext=ext)
    # Names.
    for n, stem in enumerate(["ph\u00f6to-\u202e-\U0001f600", "cafe\u0301", "\u0000"[:0] + "-dash",
                              "sp ace  ", "日本語の写真", "x" * 200, "y" * 245]):  # fmt: skip
        long = len(stem.encode()) > 240  # its outputs' names would pass NAME_MAX (255 bytes)
        pair(stem if long else f"name-{n}-{stem}", photo, VALID, "odd or long file name",
             expect="either" if long else "result")  # fmt: skip
    # Files that are not files.
    os.symlink(outside / "canary.jpg", folder / "link.jpg")
    (folder / "link.json").write_text(json.dumps(VALID))
    cases.append(Case("crafted/link.jpg", "symlink to outside", "error", ("symbolic link",)))
    (folder / "linkside.jpg").write_bytes(photo)
    os.symlink(outside / "canary.json", folder / "linkside.json")
    cases.append(Case("crafted/linkside.jpg", "symlinked sidecar", "error"))
    os.symlink(outside / "dir", inbox / "linkdir")  # never traversed: no case, nothing read
    os.mkfifo(folder / "fifo.jpg")
    (folder / "fifo.json").write_text(json.dumps(VALID))
    cases.append(Case("crafted/fifo.jpg", "FIFO", "error", ("special file",)))
    os.mkfifo(folder / "fifoside.json")
    (folder / "fifoside.jpg").write_bytes(photo)
    cases.append(Case("crafted/fifoside.jpg", "FIFO sidecar", "error"))
    if os.geteuid() == 0:
        os.mknod(folder / "device.jpg", 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null
        (folder / "device.json").write_text(json.dumps(VALID))
        cases.append(Case("crafted/device.jpg", "device file", "error", ("special file",)))
    return cases


# -- hypothesis-generated sidecars --------------------------------------------------------------

KEYS = st.sampled_from(["style", "params", "output", "size", "iterations", "weight", "file",
                        "name", "format", "quality", "init", "content_weight", "x"])  # fmt: skip
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.sampled_from(BAD_STYLES)
)
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
HOSTILE_STYLE = st.sampled_from(BAD_STYLES) | st.text(min_size=1, max_size=20).map(
    lambda s: "../" + s
)
SIDECARS = (
    JSON
    | st.fixed_dictionaries({"style": HOSTILE_STYLE}, optional={"params": JSON, "output": JSON})
    | st.fixed_dictionaries(
        {"style": st.just("mosaic")},
        optional={
            "params": st.dictionaries(KEYS, SCALARS, min_size=1, max_size=3),
            "output": st.dictionaries(KEYS, SCALARS, min_size=1, max_size=2),
            "bogus": SCALARS,
        },
    ).filter(lambda d: len(d) > 1)
)


def generated(inbox: Path, count: int = 180) -> list[Case]:
    seen: dict[str, Any] = {}

    @settings(max_examples=count * 3, database=None, derandomize=True, deadline=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(SIDECARS)
    def collect(value: Any) -> None:
        if len(seen) < count:
            seen.setdefault(json.dumps(value, sort_keys=True), value)

    collect()
    folder = inbox / "generated"
    folder.mkdir(parents=True)
    photo = image_bytes(seed=11)
    cases = []
    for n, text in enumerate(seen):
        (folder / f"g{n:03d}.jpg").write_bytes(photo)
        (folder / f"g{n:03d}.json").write_text(text)
        # Most are rejected; a sidecar that happens to be valid renders (tiny, within limits).
        cases.append(Case(f"generated/g{n:03d}.jpg", "hypothesis sidecar", "either"))
    return cases


# -- the scenario ------------------------------------------------------------------------------


def _answer(folders: Folders, case: Case) -> tuple[str, Path] | None:
    """The case's error report or manifest; a name too long for the file system may have been
    shortened by the daemon, so a prefix of the stem is enough."""
    rel = Path(case.rel)
    out = folders.outbox / rel.parent
    prefix = rel.stem[:200]
    try:
        names = os.listdir(out)
    except FileNotFoundError:
        return None
    for outcome, suffix in (("error", ".error.json"), ("result", ".manifest.json")):
        exact = rel.stem + suffix
        if exact in names or (len(exact.encode()) > 255 and any(
            n.startswith(prefix) and n.endswith(suffix) for n in names
        )):  # fmt: skip
            found = (
                exact
                if exact in names
                else next(n for n in names if n.startswith(prefix) and n.endswith(suffix))
            )
            return outcome, out / found
    return None


def _check_result(folders: Folders, case: Case, manifest: Path) -> None:
    data = json.loads(manifest.read_text())
    output = manifest.parent / data["output"]["file"]
    with Image.open(output) as image:
        image.load()
        assert image.mode == "RGB", case
        assert list(image.size) == data["output"]["size"], case
        assert max(image.size) == SIZE, case


def test_hostile_inputs_each_get_an_answer_and_the_daemon_survives(
    world: World, daemon: Daemon, reliability: Collector
) -> None:
    folders = world.folders
    _freeze(world)
    started = time.monotonic()
    cases = crafted(folders.inbox, world.outside) + generated(folders.inbox)
    assert len(cases) >= 200

    def answered() -> bool:
        return all(_answer(folders, case) for case in cases) or daemon.process.poll() is not None

    try:
        wait_for(answered, 240, "an answer to every hostile case")
    finally:
        missing = [c.rel for c in cases if not _answer(folders, c)]
        assert daemon.process.poll() is None, daemon.log_path.read_text()[-4000:]
        assert not missing, f"{len(missing)} unanswered: {missing[:20]}"
    elapsed = time.monotonic() - started

    outcomes = {"error": 0, "result": 0}
    wrong = []
    for case in cases:
        outcome, path = _answer(folders, case)  # type: ignore[misc]
        outcomes[outcome] += 1
        if case.expect != "either" and outcome != case.expect:
            wrong.append((case, path.read_text()[:300]))
        elif outcome == "error":
            message = json.loads(path.read_text())["error"]
            if (
                not (isinstance(message, str) and len(message) > 15)
                or any(word in message for word in ("Traceback", "internal error"))
                or (case.hint and not any(h in message for h in case.hint))
            ):
                wrong.append((case, message))
        else:
            _check_result(folders, case, path)
    assert not wrong, "\n".join(map(str, wrong))

    # Nothing outside the daemon's folders was read, followed or touched.
    for path, (data, atime) in world.watched.items():
        assert path.stat().st_atime == atime, f"{path} was read by the daemon"
        assert path.read_bytes() == data  # after the atime check: this read moves it
    assert not any((folders.outbox / "linkdir").rglob("*"))
    assert sorted(p.name for p in world.outside.iterdir()) == ["canary.jpg", "canary.json", "dir"]
    assert "inner" not in daemon.log_path.read_text()
    # Still alive and still working.
    (folders.inbox / "after").mkdir()
    (folders.inbox / "after" / "ok.jpg").write_bytes(image_bytes(seed=12))
    (folders.inbox / "after" / "ok.json").write_text(json.dumps(VALID))
    wait_for((folders.outbox / "after" / "ok.manifest.json").exists, 120, "a job after the storm")
    assert daemon.process.poll() is None

    kinds = sorted({c.kind for c in cases if not c.kind.startswith("odd image")})
    reliability.record(
        "hostile input",
        len(cases),
        f"every case answered ({outcomes['error']} error reports naming the fix, "
        f"{outcomes['result']} correct results for CMYK/16-bit/palette/alpha/animated/multi-page/"
        "wrong-extension/odd names); daemon alive and serving; canary, symlink targets and a "
        f"symlinked folder outside untouched (bytes and atime). Kinds: {', '.join(kinds)}",
        f"{elapsed:.0f} s for all cases",
    )
