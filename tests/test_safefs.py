"""The folder-descriptor primitives the inbox is handled with, on real files, links and FIFOs:
no replacing rename, moves that never leave zero copies, and no link followed below the root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon import safefs


def test_a_rename_never_replaces_anything(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.jpg").write_bytes(b"one")
    with safefs.folder(tmp_path) as top, safefs.folder(tmp_path, "sub") as sub:
        safefs.move(top, "a.jpg", sub, "b.jpg")
        (tmp_path / "a.jpg").write_bytes(b"two")
        with pytest.raises(FileExistsError):
            safefs.move(top, "a.jpg", sub, "b.jpg")
    assert (tmp_path / "a.jpg").read_bytes() == b"two"
    assert (tmp_path / "sub" / "b.jpg").read_bytes() == b"one"


def test_a_move_across_file_systems_copies_verifies_and_keeps_mtime(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a second file system")
    source = tmp_path / "photo.jpg"
    source.write_bytes(os.urandom(100_000))
    os.utime(source, (1_000_000, 1_000_000))
    data = source.read_bytes()
    expect = safefs.Identity.of(os.lstat(source))
    target = shm / f"stylefold-test-{os.getpid()}"
    target.mkdir()
    try:
        with safefs.folder(tmp_path) as src, safefs.folder(target) as dst:
            assert safefs.move(src, "photo.jpg", dst, "photo.jpg", expect) is False
        assert (target / "photo.jpg").read_bytes() == data and not source.exists()
        assert (target / "photo.jpg").stat().st_mtime == 1_000_000
        source.write_bytes(b"changed since it settled")
        with (
            safefs.folder(tmp_path) as src,
            safefs.folder(target) as dst,
            pytest.raises(safefs.Changed),
        ):
            safefs.move(src, "photo.jpg", dst, "other.jpg", expect)
        assert source.exists() and not (target / "other.jpg").exists()
    finally:
        for path in target.iterdir():
            path.unlink()
        target.rmdir()


def test_no_link_is_followed_below_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text("{}")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "dir").symlink_to(outside)
    (inbox / "file.json").symlink_to(outside / "secret.json")
    os.mkfifo(inbox / "fifo.json")
    os.link(outside / "secret.json", inbox / "hard.json")
    with pytest.raises(safefs.UnsafePath):
        safefs.lstat_under(inbox, Path("dir/secret.json"))
    with safefs.folder(inbox) as fd:
        for name, words in (
            ("file.json", "symbolic link"),
            ("fifo.json", "special file"),
            ("hard.json", "2 hard links"),
        ):
            with pytest.raises(safefs.NotUsable, match=words):
                safefs.open_file(fd, name)
    with pytest.raises(safefs.UnsafePath):
        safefs.open_folder(inbox, "../outside")
