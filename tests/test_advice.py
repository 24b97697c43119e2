"""Advice that follows through, with a real daemon: when a report's fix lies outside the photo
and its sidecar (a style added to the library, a setting changed and reloaded, a brought-along
style image replaced), doing it gets the photo done without anyone touching its sidecar. And a
broken style image is refused at library load, by name."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from conftest import (
    Daemon,
    Folders,
    image_bytes,
    make_image,
    start_daemon,
    status_json,
    wait_for,
    write_json,
)

from daemon.config import load_settings
from daemon.intake.ignore import IgnoreRules
from daemon.intake.pairing import Arrival, Intake, Problem
from daemon.status_model import open_failures


def _photo(
    folders: Folders, stem: str, sidecar: dict[str, Any] | None, seed: int, wide: bool = False
) -> None:
    """A 48x48 photo (64x48 if `wide`) and its sidecar."""
    size = (64, 48) if wide else (48, 48)
    (folders.inbox / f"{stem}.jpg").write_bytes(image_bytes(size=size, seed=seed))
    if sidecar is not None:
        write_json(folders.inbox / f"{stem}.json", sidecar)


def _report(folders: Folders, stem: str) -> str:
    path = folders.outbox / f"{stem}.error.json"
    wait_for(path.exists, 90, f"{path.name} in the outbox")
    return str(json.loads(path.read_text())["error"])


def _done(folders: Folders, stem: str) -> None:
    wait_for(lambda: list(folders.outbox.glob(f"{stem}.manifest*.json")), 90, f"{stem}'s result")


def _retries(daemon: Daemon) -> dict[str, str]:
    return {
        str(line["input"]): str(line["because"])
        for line in daemon.log_lines()
        if line.get("event") == "job.retry_after_fix"
    }


def test_fixes_outside_the_sidecar_get_the_photo_done(
    folders: Folders, daemon_factory: Any
) -> None:
    """Photos b, c and d are a's photo: once a is done they are answered from its result
    (dedupe), which keeps the test short; e and f are rendered."""
    (folders.styles / "broken.jpg").write_bytes(b"")
    _photo(folders, "a", {"style": "coffee"}, 1)  # the style is added to the folder later
    _photo(folders, "b", {"style": "latte"}, 1)  # ... added, then SIGHUP
    padded = '{"style": "coffee"}' + " " * 300  # over max_sidecar_bytes
    _photo(folders, "c", None, 1)
    (folders.inbox / "c.json").write_text(padded)
    _photo(folders, "d", None, 1)  # no sidecar: default_style is configured later
    # An undecodable style brought along (a truncated one would be "still arriving": issue 13).
    _photo(folders, "e", {"style": {"file": "mine.jpg"}}, 5)
    (folders.inbox / "mine.jpg").write_bytes(b"not an image, only named like one\n" * 20)
    _photo(folders, "f", {"style": "waves"}, 9, wide=True)  # above max_pixels: it fails
    sidecars = {stem: (folders.inbox / f"{stem}.json").read_bytes() for stem in "abcf"}
    limits: dict[str, Any] = {"max_sidecar_bytes": 200, "max_pixels": 3000, "pair_timeout": 3.0}
    daemon = daemon_factory(config=folders.config(**limits))

    refused = daemon.wait_for_log("styles.problem")  # at library load, by file name
    assert refused["path"] == str(folders.styles / "broken.jpg")
    assert "broken.jpg is empty (0 bytes)" in refused["reason"]
    assert "style 'coffee' is not in the style library" in _report(folders, "a")
    assert "available: mosaic, waves)" in _report(folders, "a")  # not the broken one
    assert "larger than max_sidecar_bytes (200)" in _report(folders, "c")
    lone = _report(folders, "d")
    assert '{"style": "mosaic"}' in lone and "starry_night" not in lone
    failed = _report(folders, "e")
    assert "the style image mine.jpg (brought along in the inbox)" in failed
    assert "raise the daemon's max_pixels setting" in _report(folders, "f")

    make_image(folders.styles / "coffee.jpg", size=(48, 48), seed=7)  # no SIGHUP
    _done(folders, "a")
    assert _retries(daemon)["a.jpg"] == "the style library changed"

    shutil.copy(folders.styles / "coffee.jpg", folders.styles / "latte.jpg")
    limits.update(max_sidecar_bytes=1000, max_pixels=10**6)
    folders.config(**limits, default_style="coffee", no_sidecar="default")
    daemon.process.send_signal(signal.SIGHUP)
    for stem in "bcdf":
        _done(folders, stem)
    retried = _retries(daemon)
    assert retried["b.jpg"] == retried["c.jpg"] == retried["f.jpg"] == "the daemon reloaded"
    assert "e.jpg" not in retried  # its report names no setting, and mine.jpg is unchanged

    (folders.inbox / "mine.jpg").write_bytes(image_bytes(size=(64, 64), seed=6))
    _done(folders, "e")
    assert _retries(daemon)["e.jpg"] == "its style image was replaced"

    archive = folders.state / "archive"
    assert {stem: (archive / f"{stem}.json").read_bytes() for stem in "abcf"} == sidecars
    assert not list(folders.inbox.glob("[a-f].*"))
    # A change that did not fix a report (coffee added while b waits for latte) brought no
    # second report, and b's one report went when its result came (no stale report, issue 13).
    assert sorted(p.name for p in folders.outbox.glob("b*.error*.json")) == []
    assert (folders.outbox / "b.stylised.jpg").exists()
    assert daemon.stop() == 0


def test_a_default_style_not_in_the_library_is_told_from_the_start(
    folders: Folders, daemon_factory: Any
) -> None:
    """A new user's trial: `run` and `reload` took default_style = "mosaik" without a word, and
    a photo without a sidecar was then told to name another style in its sidecar, as if the
    name were its own. Status says so from the start; the report names the setting; adding the
    style clears both and renders the photo."""
    daemon = daemon_factory(
        config=folders.config(default_style="mosaik", no_sidecar="default", pair_timeout=1.0)
    )

    def told() -> list[str]:
        attention = status_json(folders).attention
        return [f"{a.what} | {a.where} | {a.fix}" for a in attention if "default_style" in a.what]

    [item] = wait_for(told, 10, "status to tell of default_style")
    assert "default_style = 'mosaik' (did you mean 'mosaic'?)" in item
    assert "set default_style to a style of the library" in item
    assert daemon.logged("limit.reached") == 1
    (folders.inbox / "lone.jpg").write_bytes(image_bytes(seed=3))
    assert "the daemon's default style (its default_style setting) cannot be used: style " in (
        _report(folders, "lone")
    )
    make_image(folders.styles / "mosaik.jpg", size=(48, 48), seed=7)  # no SIGHUP
    _done(folders, "lone")
    wait_for(lambda: not told(), 10, "the attention item gone")
    # Its file broken: told so, with the fix for that (a re-test: "add the style's image").
    data = (folders.styles / "mosaik.jpg").read_bytes()
    (folders.styles / "mosaik.jpg").write_bytes(data[: len(data) // 2])
    [item] = wait_for(told, 10, "status to tell of the broken default style")
    assert "names a style whose file cannot be used" in item
    assert "mosaik.jpg" in item and "fix or replace that file" in item
    assert daemon.stop() == 0


def test_a_lone_photo_is_decided_again_after_a_reload(folders: Folders) -> None:
    """The intake's part: the no-sidecar advice names a style of this library, the same answer
    is not given twice, and a reload that configures default_style turns it into a job."""
    intake = Intake(folders.inbox, IgnoreRules(), settle_seconds=1.0, pair_timeout=5.0)
    intake.style_names = lambda: ["mosaic", "waves"]
    photo = folders.inbox / "lone.jpg"
    photo.write_bytes(image_bytes())
    intake.observe(photo, 0.0)
    [problem] = intake.poll(10.0)
    assert isinstance(problem, Problem)
    assert '{"style": "mosaic"} (styles: mosaic, waves;' in problem.reason
    intake.reconsider()
    assert intake.poll(11.0) == []
    config = folders.config(default_style="mosaic", no_sidecar="default", pair_timeout=5.0)
    settings = load_settings(config, {})
    intake.configure(settings, IgnoreRules())
    assert intake.poll(12.0) == []  # configured, but not decided again until asked
    intake.reconsider()
    assert intake.poll(13.0) == [Arrival(photo, None, Path("."))]


def test_a_lone_photo_is_told_of_the_default_style_already_set(folders: Folders) -> None:
    """A re-test's finding: with default_style set and no_sidecar = "wait", a lone photo was
    told to ask the administrator for "a default_style" too."""
    settings = load_settings(folders.config(default_style="mosaic", pair_timeout=5.0), {})
    intake = Intake.from_settings(settings)
    photo = folders.inbox / "lone.jpg"
    photo.write_bytes(image_bytes())
    intake.observe(photo, 0.0)
    [problem] = intake.poll(10.0)
    assert isinstance(problem, Problem) and problem.reason.endswith(
        'or ask the administrator to set no_sidecar = "default", and photos without a sidecar '
        "are then rendered in the default style mosaic"
    )


def test_a_photo_and_a_sidecar_alone_in_one_folder_are_told_of_each_other(
    folders: Folders,
) -> None:
    """A new user's trial: p11.jpg renamed holiday.jpg the moment it came with p11.json got
    "holiday.jpg has no sidecar" and "p11.json has no photo beside it", neither naming the
    other. The one lone file of the other kind is named, with the rename that pairs them
    (the sidecar's: the photo's name is the sender's); with two, neither is guessed."""
    intake = Intake(folders.inbox, IgnoreRules(), settle_seconds=1.0, pair_timeout=5.0)
    intake.style_names = lambda: ["mosaic"]
    files = {
        "holiday.jpg": image_bytes(),
        "p11.json": b'{"style": "mosaic"}',
        "two/a.jpg": image_bytes(seed=1),
        "two/b.json": b"{}",
        "two/c.json": b"{}",
    }
    for name, data in files.items():
        (folders.inbox / name).parent.mkdir(exist_ok=True)
        (folders.inbox / name).write_bytes(data)
        intake.observe(folders.inbox / name, 0.0)
    told = {p.path.name: p.reason for p in intake.poll(10.0) if isinstance(p, Problem)}
    assert told["holiday.jpg"].endswith(
        "; p11.json beside it has no photo either: if it is this photo's sidecar, rename it "
        "holiday.json"
    )
    assert told["p11.json"].endswith(
        "; holiday.jpg beside it has no sidecar either: if it is this sidecar's photo, rename "
        "the sidecar holiday.json"
    )
    # one photo and two sidecars alone: none is guessed (a re-test: both were told a.json)
    assert not any("beside it has no" in told[name] for name in ("a.jpg", "b.json", "c.json"))
    # with a default style, a lone photo is rendered in it: its sidecar is not guessed
    config = folders.config(default_style="mosaic", no_sidecar="default", pair_timeout=5.0)
    intake.configure(load_settings(config, {}), IgnoreRules())
    (folders.inbox / "p11.json").write_bytes(b'{"style": "mosaic"} ')
    intake.observe(folders.inbox / "p11.json", 20.0)
    [again] = [p for p in intake.poll(30.0) if isinstance(p, Problem)]
    assert again.path.name == "p11.json" and "beside it has no" not in again.reason


def test_a_sidecar_the_photo_s_own_comes_before_is_told_so(folders: Folders) -> None:
    """An attacker's trial: beside both.jpg and both.jpg.json, both.json was told that both.jpg
    "is not one of gif, heic, ..., jpg, ..." and to save the photo as one of those, when the
    photo's pair was rejected (a rendered one was told what happened, from its job)."""
    intake = Intake(folders.inbox, IgnoreRules(), settle_seconds=1.0, pair_timeout=5.0)
    files = {"both.jpg": image_bytes(), "both.jpg.json": b'{"style": "nope"}'}
    files["both.json"] = b'{"style": "mosaic"}'
    for name, data in files.items():
        (folders.inbox / name).write_bytes(data)
        intake.observe(folders.inbox / name, 0.0)
    # once its photo is decided, not after pair_timeout: status said it waited for its photo
    pair = Arrival(folders.inbox / "both.jpg", folders.inbox / "both.jpg.json", Path("."))
    assert intake.poll(2.0) == [pair]
    [item] = [item for item in intake.items(2.0, 2.0) if item.path == "both.json"]
    assert item.note == "waiting for both.jpg to be taken with both.jpg.json, which comes first"
    assert item.gives_up_in is None, item  # not pair_timeout's to end
    [problem] = intake.poll(2.2)
    assert isinstance(problem, Problem) and problem.path == folders.inbox / "both.json"
    assert problem.reason == (
        "both.json is not used: both.jpg goes with both.jpg.json, the sidecar named after the "
        "photo's whole file name, which comes first; remove both.json (or, to render the photo "
        "with it, remove both.jpg.json)"
    )
    # A file named like the photo in a type the inbox does not take is still told as one.
    (folders.inbox / "raw.nef").write_bytes(b"raw")
    (folders.inbox / "raw.json").write_bytes(b'{"style": "mosaic"}')
    intake.observe(folders.inbox / "raw.nef", 7.0)
    intake.observe(folders.inbox / "raw.json", 7.0)
    [told] = intake.poll(9.0)
    assert isinstance(told, Problem) and "raw.nef is not one of gif, heic" in told.reason


def test_a_sidecar_saved_with_an_extension_after_json_is_named(folders: Folders) -> None:
    """A phone user's trial: a notes app saved t.json as t.json.txt, and the photo was told to
    add t.json, with no word of the file beside it."""
    intake = Intake(folders.inbox, IgnoreRules(), settle_seconds=1.0, pair_timeout=5.0)
    (folders.inbox / "t.jpg").write_bytes(image_bytes())
    (folders.inbox / "t.json.txt").write_bytes(b'{"style": "mosaic"}')
    intake.observe(folders.inbox / "t.jpg", 0.0)
    [problem] = intake.poll(6.0)
    assert isinstance(problem, Problem) and problem.reason == (
        "t.jpg has no sidecar: t.json.txt beside it ends in .txt after .json (a notes app or an "
        "editor added it?), so it is not read as one; rename it t.json"
    )
    # With a default style too: a re-test's t.json.txt got the default style, without a word.
    settings = load_settings(folders.config(default_style="mosaic", no_sidecar="default"), {})
    by_default = Intake.from_settings(settings, IgnoreRules())
    (folders.inbox / "lone.jpg").write_bytes(image_bytes())
    for name in ("t.jpg", "lone.jpg"):
        by_default.observe(folders.inbox / name, 0.0)
    [arrival, problem] = sorted(by_default.poll(settings.pair_timeout + 1.0), key=str)
    assert isinstance(problem, Problem) and "rename it t.json" in problem.reason
    assert isinstance(arrival, Arrival) and arrival.image.name == "lone.jpg"
    (folders.inbox / "lone.jpg").unlink()
    (folders.inbox / "t.json.txt").rename(folders.inbox / "t.json.rtf")  # TextEdit's rich text
    intake.reconsider()
    [told] = intake.poll(6.5)
    assert isinstance(told, Problem) and told.reason.endswith(
        "rename it t.json, and save it as plain text (TextEdit: Format > Make Plain Text)"
    )
    (folders.inbox / "t.json.rtf").rename(folders.inbox / "T.JSON.TXT")  # said as it is written
    intake.reconsider()  # decided again, as after a reload
    [told] = intake.poll(13.0)
    assert (
        isinstance(told, Problem) and "T.JSON.TXT beside it ends in .TXT after .JSON" in told.reason
    )


def test_a_name_with_a_space_or_dot_after_its_extension_is_named(folders: Folders) -> None:
    """A re-test on shares: t5.jpg beside `t5.json ` was told to add t5.json, t2.json beside
    `t2.jpg.` to add the photo, t1.json beside `t1.jpg ` that it is not one of the types the
    inbox takes, and `t6.jpg.` alone got no answer; a Mac writes a trailing space or dot on an
    SMB share as U+F028/U+F029."""
    intake = Intake(folders.inbox, IgnoreRules(), settle_seconds=1.0, pair_timeout=5.0)
    files = {
        "t5.jpg": image_bytes(),
        "t5.json ": b'{"style": "mosaic"}',
        "t2.jpg.": image_bytes(),
        "t2.json": b'{"style": "mosaic"}',
        "t1.jpg ": image_bytes(),
        "t1.json": b'{"style": "mosaic"}',
        "s1.jpg\uf028": image_bytes(),
        "s1.json": b'{"style": "mosaic"}',
    }
    for name, data in files.items():
        (folders.inbox / name).write_bytes(data)
        intake.observe(folders.inbox / name, 0.0)
    # t6.jpg. alone had no answer at all; t9.jpg beside t9.jpg. and t9.json was refused as
    # sharing its sidecar, and t9.jpg. told to take the name of t9.jpg
    more = {"t6.jpg.": image_bytes(), "t4.jpg..": image_bytes(), "t9.jpg": image_bytes()}
    more |= {"t9.jpg.": image_bytes(), "t9.json": b'{"style": "mosaic"}'}
    for name, data in more.items():
        (folders.inbox / name).write_bytes(data)
        intake.observe(folders.inbox / name, 0.0)
    events = intake.poll(6.0)
    assert Arrival(folders.inbox / "t9.jpg", folders.inbox / "t9.json", Path(".")) in events
    told = {p.path.name: p.reason for p in events if isinstance(p, Problem)}
    share = "(a Mac or Windows share or a phone may add it), so it is not taken;"
    for photo, ends in (("t6.jpg.", "a dot"), ("t2.jpg.", "a dot"), ("t1.jpg ", "a space")):
        assert told.pop(photo) == (
            f"{photo} (written {photo!r}) ends in {ends} after .jpg {share} rename it {photo[:-1]}"
        )
    assert told.pop("t4.jpg..").endswith(
        "ends in 2 characters (a dot) after .jpg " + share + " rename it t4.jpg"
    )
    assert told.pop("t9.jpg.").endswith(
        f"{share} t9.jpg would clash with 't9.jpg' there: rename it another name"
    )
    # an attacker's trial: both told "rename it u.jpg" (the second mv replacing the first),
    # and a folder v.jpg/ was called a copy to remove
    (folders.inbox / "v.jpg").mkdir()
    for name in ("u.jpg.", "U.JPG ", "v.jpg."):
        (folders.inbox / name).write_bytes(image_bytes())
        intake.observe(folders.inbox / name, 7.0)
    told |= {p.path.name: p.reason for p in intake.poll(13.0) if isinstance(p, Problem)}
    assert told.pop("u.jpg.").endswith(
        "u.jpg would clash with 'U.JPG ' there: rename it another name"
    )
    assert told.pop("U.JPG ").endswith(
        "U.JPG would clash with 'u.jpg.' there: rename it another name"
    )
    assert told.pop("v.jpg.").endswith(
        "v.jpg would clash with 'v.jpg' there: rename it another name"
    )
    assert told.pop("s1.jpg\uf028").endswith(f"ends in U+F028 after .jpg {share} rename it s1.jpg")
    # the photos' reports answer for their sidecars, which pair with them
    assert told == {
        "t5.jpg": f"t5.jpg has no sidecar: 't5.json ' beside it ends in a space after .json "
        f"{share} rename it t5.json",
    }
    assert intake.poll(14.0) == [] and intake.items(14.0, 14.0) == []  # told once, none waits


def test_a_sidecar_named_for_another_type_of_the_photo_is_named(folders: Folders) -> None:
    """A re-test: c1.jpeg beside c1.jpg.json (a system that hides extensions) got two reports,
    "add c1.json" and "add the photo c1.jpg", neither naming the other file; one is enough.
    Where c1.jpg is there, c1.jpg.json is its sidecar, and c1.jpeg is a lone photo as any."""
    intake = Intake(folders.inbox, IgnoreRules(), settle_seconds=1.0, pair_timeout=5.0)
    names = {"c1.jpeg": image_bytes(), "c1.jpg.json": b'{"style": "mosaic"}'}
    names |= {"d1.png": image_bytes(), "d1.jpg": image_bytes(), "d1.jpg.json": b"{}"}
    for name, data in names.items():
        (folders.inbox / name).write_bytes(data)
        intake.observe(folders.inbox / name, 0.0)
    told = {p.path.name: p.reason for p in intake.poll(6.0) if isinstance(p, Problem)}
    assert told.pop("c1.jpeg") == (
        "c1.jpeg has no sidecar: c1.jpg.json beside it is named for c1.jpg, not c1.jpeg (a "
        "system that hides extensions?); rename it c1.jpeg.json or c1.json"
    )
    # one report, the photo's: both took the stem's name, and which got -2 changed
    assert list(told) == ["d1.png"] and "has no sidecar; add d1.json" in told["d1.png"]
    assert intake.poll(7.0) == [] and intake.items(7.0, 7.0) == []


def test_a_misnamed_photo_s_report_goes_once_it_is_taken_renamed(folders: Folders) -> None:
    """A re-test: `t1.jpg ` was told to be renamed, and once it was, its report and log stayed
    beside its result."""
    config = folders.config(pair_timeout=1.0)
    _photo(folders, "t1", {"style": "mosaic"}, seed=3)
    (folders.inbox / "t1.jpg").rename(folders.inbox / "t1.jpg ")
    for _ in range(2):
        once = start_daemon(folders, config=config, ready=False, command="once")
        assert once.process.wait(90) == 0
        if (folders.inbox / "t1.jpg ").exists():
            assert "rename it t1.jpg" in _report(folders, "t1.jpg")
            (folders.inbox / "t1.jpg ").rename(folders.inbox / "t1.jpg")
    _done(folders, "t1")
    assert sorted(path.name for path in folders.outbox.iterdir()) == [
        "t1.log",
        "t1.manifest.json",
        "t1.stylised.jpg",
    ]
    # An attacker's trial: taking u.jpg deleted the report of another photo, u.jpg., which
    # stays in the inbox.
    _photo(folders, "u", {"style": "mosaic"}, seed=4)
    (folders.inbox / "u.jpg.").write_bytes(image_bytes(seed=5))
    once = start_daemon(folders, config=config, ready=False, command="once")
    assert once.process.wait(90) == 0
    _done(folders, "u")
    # told that u.jpg is there, or, once u.jpg was taken out of the inbox, to take its name
    assert "u.jpg. (written 'u.jpg.') ends in a dot" in _report(folders, "u.jpg")
    assert (folders.inbox / "u.jpg.").exists()


def test_a_misnamed_photo_is_told_anew_when_the_name_it_was_told_to_take_is_taken(
    folders: Folders, daemon_factory: Any
) -> None:
    """A re-test: `u.jpg.` was told "rename it u.jpg", and kept that advice once another u.jpg
    came, which following it would replace; it is told anew, and again once u.jpg goes."""
    daemon = daemon_factory(config=folders.config(pair_timeout=1.0))
    (folders.inbox / "u.jpg.").write_bytes(image_bytes(seed=5))
    report = folders.outbox / "u.jpg.error.json"
    wait_for(report.exists, 60, "u.jpg.'s report")
    assert _report(folders, "u.jpg").endswith("so it is not taken; rename it u.jpg")
    (folders.inbox / "u.jpg").write_bytes(image_bytes(seed=6))  # another photo, no sidecar
    told = "u.jpg would clash with 'u.jpg' there: rename it another name"
    wait_for(lambda: _report(folders, "u.jpg").endswith(told), 60, "the report told anew")
    (folders.inbox / "u.jpg").unlink()
    wait_for(lambda: _report(folders, "u.jpg").endswith("rename it u.jpg"), 60, "told again")
    assert sorted(path.name for path in folders.outbox.glob("u.jpg.error*")) == [report.name]
    assert daemon.stop() == 0


def test_google_takeout_metadata_alone_is_told_as_what_it_is(folders: Folders) -> None:
    """A phone user's trial: Takeout's IMG_1.jpg.supplemental-metadata.json was told to add the
    photo IMG_1.jpg.supplemental-metadata.jpg."""
    intake = Intake(folders.inbox, IgnoreRules(), settle_seconds=1.0, pair_timeout=5.0)
    metadata = folders.inbox / "IMG_1.jpg.supplemental-metadata.json"
    metadata.write_text(json.dumps({"title": "IMG_1.jpg", "photoTakenTime": {"timestamp": "1"}}))
    intake.observe(metadata, 0.0)
    [problem] = intake.poll(6.0)
    assert isinstance(problem, Problem) and problem.reason == (
        "IMG_1.jpg.supplemental-metadata.json is Google Photos' metadata (a Google Takeout "
        "file), not a stylefold sidecar; delete it: stylefold does not need it"
    )


def test_google_takeout_metadata_is_no_photo_s_sidecar(folders: Folders) -> None:
    """A re-test: Takeout's IMG_1.jpg.json beside the user's own IMG_1.json took the photo, and
    the user's sidecar was told it is not used and to be removed."""
    intake = Intake(folders.inbox, IgnoreRules(), settle_seconds=1.0, pair_timeout=5.0)
    takeout = folders.inbox / "IMG_1.jpg.json"
    takeout.write_text(json.dumps({"title": "IMG_1.jpg", "photoTakenTime": {"timestamp": "1"}}))
    (folders.inbox / "IMG_1.json").write_text('{"style": "mosaic"}')
    (folders.inbox / "IMG_1.jpg").write_bytes(image_bytes())
    for name in ("IMG_1.jpg.json", "IMG_1.json", "IMG_1.jpg"):
        intake.observe(folders.inbox / name, 0.0)
    pair = Arrival(folders.inbox / "IMG_1.jpg", folders.inbox / "IMG_1.json", Path("."))
    assert intake.poll(2.0) == [pair]
    [problem] = intake.poll(6.0)
    assert isinstance(problem, Problem) and problem.path == takeout
    assert problem.reason.endswith("not a stylefold sidecar; delete it: stylefold does not need it")
    assert problem.stem == "IMG_1.jpg"  # its report is IMG_1.jpg.error.json, not the photo's


def test_a_lone_photo_is_answered_by_a_later_once_run(folders: Folders) -> None:
    """`stylefold once` from cron stops while a lone photo still waits for its sidecar (it stops
    once the inbox is quiet); a later run must not start that wait again (it counts from the
    photo's arrival), or a photo left without a sidecar would never get its report."""
    config = folders.config(pair_timeout=3.0)  # longer than once's quiet period (settle + 1 s)
    _photo(folders, "lone", None, seed=7)
    wait_for(lambda: _age(folders.inbox / "lone.jpg") > 3.0, 30, "the photo's pair_timeout")
    later = start_daemon(folders, config=config, ready=False, command="once")
    assert later.process.wait(90) == 0
    assert "has no sidecar" in _report(folders, "lone")
    assert (folders.inbox / "lone.jpg").exists(), "a reported photo stays where it was"


def test_a_photo_reported_by_an_earlier_process_is_taken_after_a_reload(
    folders: Folders, daemon_factory: Any
) -> None:
    """A README trial: a lone photo's report asks for no_sidecar = "default" and a reload;
    done with a daemon started after the report, the reload left the photo in the inbox."""
    config = folders.config(pair_timeout=1.0)
    _photo(folders, "lone", None, seed=7)
    once = start_daemon(folders, config=config, ready=False, command="once")
    assert once.process.wait(90) == 0
    assert "has no sidecar" in _report(folders, "lone")
    daemon = daemon_factory(config=config)
    time.sleep(3.0)  # settle_seconds 0.4 and pair_timeout 1: decided (as answered) by then
    folders.config(pair_timeout=1.0, default_style="mosaic", no_sidecar="default")
    daemon.process.send_signal(signal.SIGHUP)
    _done(folders, "lone")
    assert not (folders.outbox / "lone.error.json").exists()  # outdated by its result
    assert daemon.stop() == 0


def test_a_photo_whose_refused_sidecar_is_deleted_is_decided_again_alone(
    folders: Folders, daemon_factory: Any
) -> None:
    """A new user's trial: a sidecar refused for a trailing comma, then deleted, left its photo
    silent for ever (not in status, no default style, a reload did nothing) under a report
    telling to mend a file no longer there. Alone now, the photo is told it has no sidecar,
    or, with a default style, rendered in it (and its earlier report goes)."""
    config = folders.config(pair_timeout=1.0)
    daemon = daemon_factory(config=config)
    _photo(folders, "q", None, seed=3)
    (folders.inbox / "q.json").write_text('{"style": "waves",}')
    assert "a comma after the last item" in _report(folders, "q")
    (folders.inbox / "q.json").unlink()
    wait_for(lambda: "has no sidecar" in _report(folders, "q"), 30, "q's report renewed")

    folders.config(pair_timeout=1.0, default_style="mosaic", no_sidecar="default")
    daemon.process.send_signal(signal.SIGHUP)
    _done(folders, "q")
    _photo(folders, "r", None, seed=4)
    (folders.inbox / "r.json").write_text('{"style": "waves",}')
    assert "a comma after the last item" in _report(folders, "r")
    (folders.inbox / "r.json").unlink()
    _done(folders, "r")
    manifest = json.loads(next(folders.outbox.glob("r.manifest*.json")).read_text())
    assert manifest["styles"][0]["name"] == "mosaic"
    wait_for(lambda: not (folders.outbox / "r.error.json").exists(), 10, "r's report gone")
    assert daemon.stop() == 0


def test_a_refused_pair_s_report_goes_with_its_sidecar(
    folders: Folders, daemon_factory: Any
) -> None:
    """A sync trial: the report "rb.json: zz: unknown key" stayed pair_timeout after rb.json
    was deleted (10 minutes by default). It goes with the sidecar; the photo, alone, is told
    so after pair_timeout. A photo still paired (its other sidecar there) keeps its report."""
    daemon = daemon_factory(config=folders.config(pair_timeout=6.0))
    _photo(folders, "rb", {"style": "mosaic", "zz": 1}, seed=3)
    _photo(folders, "kk", None, seed=4)
    write_json(folders.inbox / "kk.jpg.json", {"style": "nope"})  # kk.jpg's, before kk.json
    write_json(folders.inbox / "kk.json", {"style": "mosaic"})
    assert "zz: unknown key" in _report(folders, "rb")
    assert "style 'nope'" in _report(folders, "kk")  # kk.json's is kk.error-2.json
    (folders.inbox / "rb.json").unlink()
    (folders.inbox / "kk.json").unlink()
    wait_for(lambda: not (folders.outbox / "rb.error.json").exists(), 4, "rb's report withdrawn")
    wait_for(lambda: "has no sidecar" in _report(folders, "rb"), 30, "rb told it has none")
    assert "style 'nope'" in _report(folders, "kk")
    assert daemon.stop() == 0


def test_a_report_goes_when_its_file_leaves_the_inbox(
    folders: Folders, daemon_factory: Any
) -> None:
    """A new user's trial: q.jpg, refused, renamed q2.jpg and answered; q.error.json stayed for
    good, saying the photo was left in the inbox. A report about a file gone from the inbox
    (renamed, deleted) goes with it; one about a file still there stays."""
    daemon = daemon_factory(config=folders.config(pair_timeout=1.0))
    _photo(folders, "q", {"style": "nope"}, seed=3)
    _photo(folders, "k", {"style": "nope"}, seed=4)
    write_json(folders.inbox / "lone.json", {"style": "waves"})
    assert "style 'nope' is not in the style library" in _report(folders, "q")
    assert "style 'nope' is not in the style library" in _report(folders, "k")
    assert "has no photo beside it" in _report(folders, "lone")
    assert (folders.outbox / "q.log").exists()
    (folders.inbox / "q.jpg").rename(folders.inbox / "q2.jpg")
    (folders.inbox / "q.json").unlink()
    write_json(folders.inbox / "q2.json", {"style": "waves"})
    (folders.inbox / "lone.json").unlink()
    _done(folders, "q2")
    gone = [folders.outbox / name for name in ("q.error.json", "q.log", "lone.error.json")]
    wait_for(lambda: not any(path.exists() for path in gone), 10, "the reports withdrawn")
    assert (folders.outbox / "k.error.json").exists()  # k.jpg is still in the inbox
    withdrawn = {
        line["input"] for line in daemon.log_lines() if line["event"] == "report.withdrawn"
    }
    assert withdrawn == {"q.jpg", "lone.json"}
    # Nothing left for a person to do about them (two helpers' finding: status still listed
    # them among the failures to fix), while k.jpg still waits for its fix.
    failures = open_failures(status_json(folders).recent)
    assert sorted(end.input for end in failures) == ["k.jpg"]
    assert daemon.stop() == 0
    # Deleted while the daemon was stopped (a re-test: withdrawn by no start, scan or reload),
    # beside a file still there (were none, the inbox might be a share not mounted yet).
    _photo(folders, "s", {"style": "nope"}, seed=5)
    daemon = daemon_factory(config=folders.config(pair_timeout=1.0))
    _report(folders, "s")
    assert daemon.stop() == 0
    (folders.inbox / "k.jpg").unlink()
    (folders.inbox / "k.json").unlink()
    daemon = daemon_factory(config=folders.config(pair_timeout=1.0))
    wait_for(lambda: not (folders.outbox / "k.error.json").exists(), 30, "k's report withdrawn")
    assert not (folders.outbox / "k.log").exists()
    assert (folders.outbox / "s.error.json").exists()
    assert daemon.stop() == 0


def test_the_reports_of_a_folder_moved_out_of_the_inbox_go_at_once(
    folders: Folders, daemon_factory: Any
) -> None:
    """A re-test: inotify tells of the folder alone, and its photos' reports stayed until the
    next full scan (rescan_interval: 30 s here, 300 by default)."""
    daemon = daemon_factory(config=folders.config(pair_timeout=1.0))
    (folders.inbox / "sub").mkdir()
    for stem in ("f1", "f2"):
        _photo(folders, f"sub/{stem}", {"style": "nope"}, seed=3)
        assert "style 'nope'" in _report(folders, f"sub/{stem}")
    (folders.inbox / "sub").rename(folders.root / "moved-out")
    reports = [folders.outbox / "sub" / name for name in ("f1.error.json", "f2.error.json")]
    wait_for(lambda: not any(path.exists() for path in reports), 10, "the reports withdrawn")
    # Nor is the folder left behind, empty (an operator's finding); one with other files stays.
    wait_for(lambda: not (folders.outbox / "sub").exists(), 5, "the empty folder removed")
    (folders.inbox / "two" / "deep").mkdir(parents=True)
    _photo(folders, "two/deep/g", {"style": "nope"}, seed=3)
    _photo(folders, "two/h", {"style": "nope"}, seed=4)
    assert "style 'nope'" in _report(folders, "two/deep/g")
    assert "style 'nope'" in _report(folders, "two/h")
    (folders.inbox / "two" / "deep").rename(folders.root / "deep-out")
    wait_for(lambda: not (folders.outbox / "two" / "deep").exists(), 10, "deep withdrawn")
    assert (folders.outbox / "two" / "h.error.json").exists()
    assert daemon.stop() == 0


def test_a_report_in_an_outbox_folder_swapped_for_a_link_is_withdrawn_at_the_next_start(
    folders: Folders, daemon_factory: Any
) -> None:
    """An attacker's trial: the withdrawal met the link, crashed with a traceback, and the real
    report stayed once the folder was put back. Nothing is read or removed through the link;
    the next start withdraws it."""
    daemon = daemon_factory(config=folders.config(pair_timeout=1.0))
    (folders.inbox / "sub").mkdir()
    _photo(folders, "sub/bad", {"style": "nope"}, seed=3)
    _photo(folders, "stays", {"style": "nope"}, seed=4)  # the inbox is not an empty mount
    assert "style 'nope'" in _report(folders, "sub/bad")
    assert "style 'nope'" in _report(folders, "stays")
    real, elsewhere = folders.root / "sub.real", folders.root / "elsewhere"
    shutil.copytree(folders.outbox / "sub", elsewhere)
    (folders.outbox / "sub").rename(real)
    (folders.outbox / "sub").symlink_to(elsewhere)
    (folders.inbox / "sub" / "bad.jpg").unlink()
    daemon.wait_for_log("report.not_withdrawn")
    assert daemon.logged("report.withdraw_crashed") == 0
    assert sorted(p.name for p in elsewhere.iterdir()) == ["bad.error.json", "bad.log"]
    assert daemon.stop() == 0
    (folders.outbox / "sub").unlink()
    real.rename(folders.outbox / "sub")
    daemon = daemon_factory(config=folders.config(pair_timeout=1.0))
    wait_for(lambda: not (folders.outbox / "sub").exists(), 30, "the report withdrawn")
    assert daemon.stop() == 0


def _age(path: Path) -> float:
    return time.time() - path.stat().st_ctime


def test_a_photo_refused_for_its_links_is_taken_once_the_other_name_is_removed(
    folders: Folders, daemon_factory: Any
) -> None:
    """An attacker's trial: a photo refused for a second hard link stayed refused after the
    link was removed, though its report said it is taken again once that is fixed. Removing a
    name (or a chmod) moves only the inode change time, which a full scan now looks at."""
    outside = folders.root / "outside"
    outside.mkdir()
    _photo(folders, "linked", {"style": "mosaic"}, 3)
    (outside / "other-name.jpg").hardlink_to(folders.inbox / "linked.jpg")
    daemon = daemon_factory(config=folders.config(rescan_interval=1.0))
    assert "or remove its other names: it is then taken by itself within rescan_interval" in (
        _report(folders, "linked")
    )
    (outside / "other-name.jpg").unlink()
    _done(folders, "linked")
    assert daemon.stop() == 0


def test_a_pair_refused_at_its_claim_is_retried_once_its_permissions_or_links_change(
    folders: Folders,
) -> None:
    """The same at the claim: a second name made while the photo was being taken (the
    attacker's race) refused it there. Removing that name moves only the photo's inode change
    time; the look every rescan_interval finds it, and only then is the pair claimed again."""
    from structlog.testing import capture_logs

    from daemon.intake.styles import StyleLibrary
    from daemon.jobs import handover
    from daemon.jobs.lifecycle import Lifecycle
    from daemon.jobs.retry_on_fix import FixWatch
    from daemon.jobs.store import Store
    from daemon.metrics import Metrics
    from daemon.pool import make_pool

    settings = load_settings(folders.config(rescan_interval=60.0), {})
    lc = Lifecycle(
        settings,
        Store(settings.state),
        make_pool(settings),
        StyleLibrary.from_settings(settings),
        Metrics.disabled(),
        1.0,
    )
    _photo(folders, "raced", {"style": "mosaic"}, 4)
    photo, other = folders.inbox / "raced.jpg", folders.root / "other-name.jpg"

    def link_at_claim(moment: str, where: Path) -> None:
        if moment == "claim" and not other.exists():
            other.hardlink_to(photo)

    handover.race_hook = link_at_claim
    try:
        lc.claim(Arrival(photo, folders.inbox / "raced.json", Path(".")))
    finally:
        handover.race_hook = None
    assert "has 2 hard links" in _report(folders, "raced")
    assert lc.jobs == {} and photo.exists()
    fixes = FixWatch(lc)
    with capture_logs() as logs:
        fixes.tick(1000.0)  # nothing changed since the report: nothing is taken again
        assert not lc.deferred
        time.sleep(0.05)
        other.unlink()
        fixes.tick(1030.0)  # before rescan_interval: not looked at yet
        assert not lc.deferred
        fixes.tick(1060.0)
    assert [arrival.image for arrival in lc.deferred] == [photo]
    because = [line["because"] for line in logs if line["event"] == "job.retry_after_fix"]
    assert because == ["its permissions or links changed"]
    [again] = lc.deferred
    lc.claim(again)
    assert [job.source for job in lc.jobs.values()] == ["raced.jpg"]


def test_a_fix_made_the_moment_its_report_appeared_counts(tmp_path: Path) -> None:
    """A CI run under load: the folder's chmod came right after the report, its change time
    (the kernel's coarse clock) fell before the answer's record, and the photo was never
    taken again. A change up to CTIME_SLACK before the record counts."""
    from daemon.jobs.retry_on_fix import CTIME_SLACK, _touched_since

    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o755)
    changed = folder.lstat().st_ctime
    assert _touched_since(changed + CTIME_SLACK / 2, folder, slack=CTIME_SLACK)  # just after
    assert not _touched_since(changed + CTIME_SLACK * 2, folder, slack=CTIME_SLACK)  # before


def test_a_pair_refused_by_an_earlier_version_is_still_taken_once_its_fix_is_done(
    folders: Folders, daemon_factory: Any
) -> None:
    """Whether a refused pair is resolved again is a flag of its record; a record written
    before the flag existed (an upgrade with the pair waiting in the inbox) is told by the
    words its report used then."""
    import sqlite3

    from daemon.jobs.store import DB_FILE

    _photo(folders, "old", {"style": "coffee"}, seed=3)
    once = start_daemon(folders, config=folders.config(), ready=False, command="once")
    assert once.process.wait(90) == 0
    assert "style 'coffee' is not in the style library" in _report(folders, "old")
    with sqlite3.connect(folders.state / DB_FILE) as db:
        changed = db.execute(
            "UPDATE jobs SET detail = json_remove(detail, '$.resolve_again') "
            "WHERE state = 'rejected' AND json_extract(detail, '$.resolve_again') = 1"
        ).rowcount
    assert changed == 1
    make_image(folders.styles / "coffee.jpg", size=(48, 48), seed=7)
    daemon = daemon_factory(config=folders.config())
    _done(folders, "old")
    assert _retries(daemon)["old.jpg"] == "the daemon started"
    assert daemon.stop() == 0


def test_a_report_of_a_crashed_claim_waits_for_a_change_of_its_pair() -> None:
    """Not resolved again after a reload or a library change: the claim crashed on the pair's
    files, and would crash again on the same ones."""
    from daemon.jobs import answers, reports

    inbox = Path("/inbox")
    arrival = Arrival(inbox / "a.jpg", inbox / "a.json", Path("."))
    refused = reports.about_arrival(arrival, inbox, "no such style")
    crashed = reports.about_arrival(arrival, inbox, "internal error", crashed=True)
    assert (refused.resolve_again, refused.original) == (True, answers.LEFT_REJECTED)
    assert (crashed.resolve_again, crashed.original) == (False, answers.LEFT_PROBLEM)
    for detail in (refused, crashed):  # read back as stored
        assert type(detail).model_validate_json(detail.model_dump_json()) == detail
