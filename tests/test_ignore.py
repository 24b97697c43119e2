"""Ignore rules: sync-tool temporaries, OS metadata, user patterns, the extension allow-list."""

from pathlib import PurePath

import pytest

from daemon.intake.ignore import BUILTIN_IGNORES, IgnoreRules

RULES = IgnoreRules()


@pytest.mark.parametrize(
    "name",
    [
        ".syncthing.photo.jpg.tmp",  # Syncthing
        "~syncthing~photo.jpg.tmp",  # Syncthing on Windows
        ".photo.jpg.~1a2b3c4d",  # Nextcloud / ownCloud
        "photo.jpg.a1b2c3d4.partial",  # rclone
        ".photo.jpg.Xa9bQ2",  # rsync
        "photo.jpg.part",
        "photo.jpg.filepart",
        "photo.jpg.crdownload",
        "photo.jpg.download",
        "photo.jpg.tmp",
        "photo.jpg.!sync",
        ".~lock.photo.json#",
        "._photo.jpg",  # AppleDouble over SMB
        "._photo.json",
        ".DS_Store",
        "Thumbs.db",
        "THUMBS.DB",
        "desktop.ini",
        ".stylefold-1234.tmp",
        # conflict copies, for a person to resolve in the sync tool (a sync user's trial: each
        # got a report asking for a sidecar of the same odd name)
        "s.sync-conflict-20261203-235900-ABCDEFG.jpg",  # Syncthing
        "t.sync-conflict-20261203-235900-ABCDEFG.json",
        "photo (conflicted copy 2026-12-03 235900).jpg",  # Nextcloud, ownCloud
        "photo (Ann's conflicted copy 2026-12-03).json",  # Dropbox
        "photo_conflict-20180220-141213.jpg",  # ownCloud before 2.5
        "photo_conflict-20180220-141213.json",
        "Photo (case clash from 2026-12-03 235900).jpg",  # Nextcloud
        ".hidden.jpg",
        ".json",
    ],
)
def test_sync_tool_and_os_names_ignored(name: str) -> None:
    assert RULES.ignored_name(name)
    assert not RULES.is_candidate(PurePath(name))


@pytest.mark.parametrize(
    "folder",
    [
        ".stfolder",
        ".stversions",
        "@eaDir",
        ".Spotlight-V100",
        ".Trashes",
        "__MACOSX",
        "$RECYCLE.BIN",
    ],
)
def test_metadata_folders_ignored_with_their_contents(folder: str) -> None:
    assert RULES.ignored_dir(PurePath("trip", folder))
    assert not RULES.is_candidate(PurePath("trip", folder, "photo.jpg"))
    assert not RULES.is_candidate(PurePath(folder, "deep", "photo.json"))


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("photo.jpg", "image"),
        ("Photo.JPEG", "image"),
        ("IMG_0001.HEIC", "image"),
        ("scan.tif", "image"),
        ("a.b.c.png", "image"),
        ("trip/day 1/photo.webp", "image"),
        ("photo.json", "sidecar"),
        ("photo.jpg.json", "sidecar"),
        ("PHOTO.JSON", "sidecar"),
        ("notes.txt", None),
        ("photo.gif", "image"),
        ("border_conflict-zone.jpg", "image"),  # no conflict copy: no date in its name
        ("photo (case study).jpg", "image"),
        ("clip.mp4", None),
        ("jpg", None),
        ("noext", None),
    ],
)
def test_kind_and_allow_list(path: str, kind: str | None) -> None:
    assert RULES.kind(PurePath(path)) == kind
    assert RULES.is_candidate(PurePath(path)) == (kind is not None)


def test_user_patterns_add_to_builtins() -> None:
    rules = IgnoreRules(["draft-*", "*.bak.jpg"])
    assert rules.ignored_name("draft-photo.jpg")
    assert rules.ignored_name("x.BAK.jpg")
    assert rules.ignored_name(".syncthing.x.tmp")  # built-ins still there
    assert rules.is_candidate(PurePath("final.jpg"))
    assert len(rules.patterns) == len(BUILTIN_IGNORES) + 2


def test_extension_allow_list_is_configurable() -> None:
    rules = IgnoreRules(image_extensions=["png", ".GIF"])
    assert rules.kind(PurePath("a.gif")) == "image"
    assert rules.kind(PurePath("a.jpg")) is None
    assert rules.kind(PurePath("a.json")) == "sidecar"


def test_builtin_list_documents_each_pattern() -> None:
    patterns = [rule.pattern for rule in BUILTIN_IGNORES]
    assert len(patterns) == len(set(patterns))
    for rule in BUILTIN_IGNORES:
        assert rule.source.strip()
    for required in (".syncthing.*.tmp", "~syncthing~*.tmp", ".stfolder", ".stversions", "*.part",
                     "*.filepart", ".~lock.*", "*.partial", "*.crdownload", "._*", ".DS_Store",
                     "Thumbs.db", "desktop.ini", "@eaDir", ".Spotlight-V100", ".Trashes",
                     "__MACOSX", ".stylefold-*"):  # fmt: skip
        assert required in patterns
