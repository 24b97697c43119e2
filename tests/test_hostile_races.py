"""Races at the trust boundary, end to end: a real daemon (`once`, in this process so the
`handover.race_hook` seam reaches its spool) works off an inbox where an attacker swaps files
and folders for links at the exact instant between the claim's checks and its moves, and before
a failed job's originals go back, next to links, a link loop, a FIFO and hard links. In both
watch modes it proves: the decoy outside is byte-for-byte unchanged, every photo got exactly one
answer, a photo dropped after the races was taken too, and nothing is left in the spool."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import Folders, image_bytes
from hostile import Decoy, pair, run_once

from daemon.config import load_settings
from daemon.jobs import handover

pytestmark = pytest.mark.heavy


class Attacker:
    """What happens at each race moment, by the folder the daemon is working in (once each)."""

    def __init__(self, inbox: Path, decoy: Decoy) -> None:
        self.inbox = inbox
        self.decoy = decoy
        self.done: set[tuple[str, str]] = set()

    def __call__(self, moment: str, where: Path) -> None:
        key = (moment, where.name)
        if key in self.done:
            return
        self.done.add(key)
        if not (self.inbox / "after").exists():  # the first race: a new photo arrives
            pair(self.inbox, "after/new.jpg", seed=12)
        if key == ("claim", "file-swap"):
            (where / "photo.jpg").rename(where / "kept.jpg")
            (where / "photo.jpg").symlink_to(self.decoy.root / "photo.jpg")
        elif key == ("claim", "dir-swap") or key == ("return", "return-swap"):
            where.rename(where.with_name(f"{where.name}-kept"))
            where.symlink_to(self.decoy.root / "dir")
        elif key == ("claim", "late-link"):
            os.link(where / "photo.jpg", where / ".second-name")


def _answers(outbox: Path, rel_stem: str) -> list[str]:
    """The commit files (manifest or error report) answering one photo, numbered ones too."""
    folder = outbox / Path(rel_stem).parent
    stem = Path(rel_stem).name
    if not folder.is_dir():
        return []
    return sorted(
        name
        for name in os.listdir(folder)
        if name.startswith(f"{stem}.") or name.startswith(f"{stem}-")
        if name.endswith((".manifest.json", ".error.json"))
    )


@pytest.mark.parametrize("mode", ["native", "polling"])
def test_races_and_links_never_reach_outside_and_every_photo_gets_one_answer(
    folders: Folders, tmp_path: Path, mode: str
) -> None:
    inbox = folders.inbox
    decoy = Decoy(tmp_path / "outside")
    for folder in ("file-swap", "dir-swap", "late-link", "return-swap"):
        pair(inbox, f"{folder}/photo.jpg", seed=len(folder))
    (inbox / "return-swap" / "photo.jpg").write_bytes(b"not a photo at all\n" * 20)
    (inbox / "hardlink").mkdir()
    os.link(decoy.root / "photo.jpg", inbox / "hardlink" / "photo.jpg")
    (inbox / "hardlink" / "photo.json").write_text(json.dumps({"style": "mosaic"}))
    (inbox / "fifo").mkdir()
    os.mkfifo(inbox / "fifo" / "photo.jpg")
    (inbox / "fifo" / "photo.json").write_text(json.dumps({"style": "mosaic"}))
    (inbox / "linkdir").symlink_to(decoy.root / "dir")
    (inbox / "loop").symlink_to(inbox)
    (inbox / "album.jpg").mkdir()  # a folder named like a photo is just a folder
    pair(inbox, "album.jpg/inside.jpg", {"style": "no-such-style"})  # answered without a render
    # `once` stops when the inbox has been quiet for settle_seconds + 1 s (1.4 s here) and
    # leaves half pairs waiting; file-swap/kept.jpg appears mid-run without a sidecar, so its
    # report must come sooner than that, however quickly the renders end.
    config = folders.config(watch_mode=mode, pair_timeout=0.8)
    handover.race_hook = Attacker(inbox, decoy)

    run_once(load_settings(config, {}))

    assert decoy.unchanged()
    outbox = folders.outbox
    expected = {
        "file-swap/photo": "error.json",  # now a link: reported, not followed
        "file-swap/kept": "error.json",  # the original under its new name, without its sidecar
        "dir-swap-kept/photo": "manifest.json",  # taken where the folder went
        "late-link/photo": "error.json",  # a second hard link at the claim
        "return-swap/photo": "error.json",  # failed; its folder swapped before the return
        "hardlink/photo": "error.json",
        "fifo/photo": "error.json",
        "album.jpg/inside": "error.json",
        "after/new": "manifest.json",
    }
    for stem, kind in expected.items():
        assert _answers(outbox, stem) == [f"{Path(stem).name}.{kind}"], stem
    assert not (outbox / "linkdir").exists() and not (outbox / "loop").exists()
    assert not (outbox / "dir-swap").exists()

    def error(stem: str) -> str:
        return str(json.loads((outbox / f"{stem}.error.json").read_text())["error"])

    assert "symbolic link" in error("file-swap/photo")
    assert "has no sidecar" in error("file-swap/kept")
    assert "no-such-style" in error("album.jpg/inside")
    assert "2 hard links" in error("late-link/photo")
    assert "2 hard links" in error("hardlink/photo")
    assert "special file" in error("fifo/photo")
    report = json.loads((outbox / "return-swap/photo.error.json").read_text())
    [rescued] = list((folders.state / "returned").iterdir())
    assert f"returned/{rescued.name}/photo.jpg" in report["original"]
    assert (rescued / "photo.jpg").read_bytes() == b"not a photo at all\n" * 20
    assert (inbox / "file-swap" / "kept.jpg").read_bytes() == image_bytes(seed=len("file-swap"))
    assert (folders.state / "archive" / "dir-swap-kept" / "photo.jpg").exists()
    assert list((folders.state / "spool").iterdir()) == []
    for path in outbox.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert "hunter2" not in text and str(folders.root) not in text, path
