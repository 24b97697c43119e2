"""The folder-descriptor primitives the inbox is handled with, on real files, links and FIFOs:
no replacing rename, moves that never leave zero copies, and no link followed below the root."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import mount_tmpfs

from daemon import safefs
from daemon.fsutil import one_folder


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
            ("fifo.json", r"is a special file \(FIFO, socket or device\), not a regular file;"),
            ("hard.json", "2 hard links"),
        ):
            with pytest.raises(safefs.NotUsable, match=words):
                safefs.open_file(fd, name)
    with pytest.raises(safefs.UnsafePath):
        safefs.open_folder(inbox, "../outside")


def _grow_while(path: Path, until: int, copying: Path) -> threading.Thread:
    """A writer that extends `path` (sparse, so cheaply) up to `until` bytes, as one holding it
    open over SMB can (`ftruncate` adds bytes without writing any), once a copy into the folder
    `copying` has begun writing: after the copy took the size, whatever the machine's load."""

    def begun() -> bool:
        for entry in copying.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_size > 0:
                    return True
        return False

    def grow() -> None:
        deadline = time.monotonic() + 30
        while not begun() and time.monotonic() < deadline:
            time.sleep(0.001)
        with path.open("r+b") as handle:
            size = os.fstat(handle.fileno()).st_size
            while size < until:
                size += 1 << 20
                handle.truncate(size)

    writer = threading.Thread(target=grow)
    writer.start()
    return writer


def _copy(source: Path, store: Path) -> str:
    """`source` copied into `store` as copy.png, the way a claim copies: its SHA-256."""
    fd = os.open(source, os.O_RDONLY)
    try:
        with safefs.folder(store) as folder:
            return safefs.copy_open(fd, folder, "copy.png")
    finally:
        os.close(fd)


def test_a_copy_takes_the_size_it_began_with_and_no_more(tmp_path: Path) -> None:
    """An attacker's trial: a style image brought along was extended while it was copied into
    the state folder, and the copy read on to the end: 2 GB of real bytes from a sparse file."""
    source = tmp_path / "style.png"
    source.write_bytes(os.urandom(64 << 20))
    (tmp_path / "store").mkdir()
    fd = os.open(source, os.O_RDONLY)
    writer = _grow_while(source, 1 << 30, tmp_path / "store")
    try:
        with safefs.folder(tmp_path / "store") as store, pytest.raises(safefs.Changed):
            safefs.copy_open(fd, store, "copy.png")
    finally:
        writer.join()
        os.close(fd)
    assert list((tmp_path / "store").iterdir()) == []  # nothing of it is kept

    source.write_bytes(b"a style")
    digest = _copy(source, tmp_path / "store")
    assert (tmp_path / "store" / "copy.png").read_bytes() == b"a style"
    assert digest == hashlib.sha256(b"a style").hexdigest()


@pytest.mark.parametrize("tail", [b"", b"\x89 end"])
def test_a_sparse_file_is_copied_sparse(tmp_path: Path, tail: bytes) -> None:
    """An attacker's trial: four brought-along styles of 200 MB apparent size and a few real
    bytes each (`truncate -s 200M`, free for the writer) made 800 MB of real bytes in the state
    folder. The copy keeps their holes, and every byte and the size (also one ending in a
    hole)."""
    source = tmp_path / "style.png"
    with source.open("wb") as handle:
        handle.write(b"\x89PNG real bytes")
        handle.seek(1000)
        handle.write(b"more")
        handle.truncate(64 << 20)
        if tail:
            handle.seek(0, os.SEEK_END)
            handle.write(tail)
    data = source.read_bytes()
    (tmp_path / "store").mkdir()
    digest = _copy(source, tmp_path / "store")
    copy = tmp_path / "store" / "copy.png"
    assert copy.read_bytes() == data and digest == hashlib.sha256(data).hexdigest()
    assert copy.stat().st_blocks * 512 <= 4 << 20  # the chunks with real bytes, not 64 MiB


def test_a_claimed_file_must_still_be_what_settled(tmp_path: Path) -> None:
    """An attacker's trial: a writer holding the photo open extended it to 3 GiB just after the
    claim moved it; it was hashed, rendered and archived at that size."""
    photo = tmp_path / "input.jpg"
    photo.write_bytes(b"a photo")
    settled = safefs.Identity.of(os.stat(photo))
    assert safefs.digest_unchanged(photo, settled) == hashlib.sha256(b"a photo").hexdigest()
    with photo.open("r+b") as held:  # opened before the move, written after it
        moved = photo.rename(tmp_path / "claimed.jpg")
        held.truncate(3 << 30)
    with pytest.raises(safefs.Changed, match="grew past"):
        safefs.digest_unchanged(moved, settled)
    os.truncate(moved, 3)  # shorter: the bytes that settled are not all there
    with pytest.raises(safefs.Changed, match="shrank"):
        safefs.digest_unchanged(moved, settled)
    moved.write_bytes(b"A photo")  # the same size, written later
    with pytest.raises(safefs.Changed, match="changed after it was claimed"):
        safefs.digest_unchanged(moved, settled)


def test_a_folder_that_cannot_be_made_is_named_whole(tmp_path: Path) -> None:
    """An operator's trial on a read-only outbox was told of "outbox/ro/ro": the part that
    could not be made, put under the folder it was to be made in."""
    read_only = tmp_path / "ro"
    read_only.mkdir()
    mount_tmpfs(read_only, "1m")
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(read_only)], check=True)
        with pytest.raises(OSError) as caught, safefs.folder(tmp_path, "ro/x/y", make=True):
            pass
        assert caught.value.errno == errno.EROFS
        assert caught.value.filename == str(read_only / "x")
        with pytest.raises(OSError) as caught, one_folder(read_only / "x", tmp_path):
            pass
        assert caught.value.filename == str(read_only / "x")
    finally:
        subprocess.run(["umount", "-l", str(read_only)], check=False)
