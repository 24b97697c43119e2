"""Races at the trust boundary, on the spool itself: a file or folder swapped for a link at the
exact instant between the claim's checks and its moves, or before originals go back, through
the `handover.race_hook` seam. Each test proves the decoy outside is byte-for-byte unchanged,
where every original is, and that the spool still claims a new photo afterwards."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Folders, image_bytes
from hostile import Decoy, arrival, pair

from daemon.config import Settings, load_settings
from daemon.intake.jsonload import read_inbox
from daemon.intake.pairing import Arrival
from daemon.intake.resolve import Rejected, resolve
from daemon.intake.styles import StyleLibrary
from daemon.jobs import answers, handover
from daemon.jobs.lifecycle import Lifecycle
from daemon.jobs.ready import READY_FULL, READY_IN_TURN
from daemon.jobs.record import Job
from daemon.jobs.spool import CLAIM_FILE, ClaimIntent, Spool
from daemon.jobs.states import State
from daemon.jobs.store import Store
from daemon.metrics import Metrics
from daemon.pool import make_pool
from daemon.safefs import Changed

Hook = Callable[[str, Path], None]


@pytest.fixture
def decoy(tmp_path: Path) -> Decoy:
    return Decoy(tmp_path / "outside")


@pytest.fixture
def settings(folders: Folders) -> Settings:
    return load_settings(folders.config(), {})


@pytest.fixture
def race() -> Iterator[Callable[[str, Hook], None]]:
    """Install a hook that runs once, at the named moment."""

    def install(moment: str, action: Hook) -> None:
        def hook(when: str, where: Path) -> None:
            if when == moment:
                handover.race_hook = None
                action(when, where)

        handover.race_hook = hook

    yield install
    handover.race_hook = None


def _claim(settings: Settings, spool: Spool, rel: str) -> Job:
    image, sidecar = pair(settings.inbox, rel)
    came = arrival(settings.inbox, image, sidecar)
    return spool.claim(came, resolve(came, settings, StyleLibrary.from_settings(settings)))


def _still_claims(settings: Settings, spool: Spool) -> None:
    """The spool is not wedged: a new photo is claimed normally."""
    job = _claim(settings, spool, "after/new.jpg")
    assert spool.input_path(job).read_bytes() == image_bytes(seed=0)


def _lifecycle(settings: Settings, store: Store) -> Lifecycle:
    return Lifecycle(
        settings, store, make_pool(settings), StyleLibrary.from_settings(settings),
        Metrics.disabled(), 1.0,
    )  # fmt: skip


def _no_claims_left(spool: Spool) -> None:
    assert [p.name for p in spool.root.iterdir()] == []


def test_a_photo_swapped_for_a_link_after_the_checks_is_not_taken(
    settings: Settings, decoy: Decoy, race: Callable[[str, Hook], None]
) -> None:
    spool = Spool(settings, Store(settings.state))
    image, sidecar = pair(settings.inbox, "trip/photo.jpg")
    original = image.read_bytes()
    came = arrival(settings.inbox, image, sidecar)
    resolved = resolve(came, settings, StyleLibrary.from_settings(settings))

    def swap(_when: str, _where: Path) -> None:
        image.rename(image.with_name("kept.jpg"))
        image.symlink_to(decoy.root / "photo.jpg")

    race("claim", swap)
    with pytest.raises(Changed):
        spool.claim(came, resolved)
    assert decoy.unchanged()
    assert image.is_symlink() and os.readlink(image) == str(decoy.root / "photo.jpg")
    assert image.with_name("kept.jpg").read_bytes() == original
    assert sidecar.exists()
    _no_claims_left(spool)
    _still_claims(settings, spool)
    assert decoy.unchanged()


def test_a_folder_swapped_for_a_link_after_the_checks_is_not_entered(
    settings: Settings, decoy: Decoy, race: Callable[[str, Hook], None]
) -> None:
    spool = Spool(settings, Store(settings.state))
    image, sidecar = pair(settings.inbox, "trip/photo.jpg")
    came = arrival(settings.inbox, image, sidecar)
    resolved = resolve(came, settings, StyleLibrary.from_settings(settings))

    def swap(_when: str, where: Path) -> None:
        where.rename(where.with_name("trip-kept"))
        where.symlink_to(decoy.root / "dir")  # holds a photo.jpg and photo.json of its own

    race("claim", swap)
    with pytest.raises(Changed):
        spool.claim(came, resolved)
    assert decoy.unchanged()
    kept = settings.inbox / "trip-kept"
    assert sorted(p.name for p in kept.iterdir()) == ["photo.jpg", "photo.json"]
    _no_claims_left(spool)
    _still_claims(settings, spool)


def test_a_late_companion_swapped_for_a_link_does_not_follow_into_the_archive(
    settings: Settings, decoy: Decoy, race: Callable[[str, Hook], None]
) -> None:
    """An attacker's trial: a `._` file written after the claim follows the photo into the
    archive, and one swapped for a link just before that rename planted the link there."""
    spool = Spool(settings, Store(settings.state))
    job = _claim(settings, spool, "trip/photo.jpg")
    late = settings.inbox / "trip" / "._photo.jpg"
    late.write_bytes(b"\x00\x05\x16\x07 finder")

    def swap(_when: str, _where: Path) -> None:
        late.rename(late.with_name("finder-kept"))
        late.symlink_to(decoy.root / "photo.jpg")

    race("follow", swap)
    spool.release(job, archive=True)
    archive = settings.archive_path / "trip"
    assert sorted(p.name for p in archive.iterdir()) == ["photo.jpg", "photo.json"]
    assert late.is_symlink()  # back where it was put, never in the archive
    assert decoy.unchanged()
    _still_claims(settings, spool)


def test_a_second_hard_link_made_after_settling_is_refused_with_a_reason(
    settings: Settings, decoy: Decoy, race: Callable[[str, Hook], None]
) -> None:
    spool = Spool(settings, Store(settings.state))
    image, sidecar = pair(settings.inbox, "photo.jpg")
    came = arrival(settings.inbox, image, sidecar)
    resolved = resolve(came, settings, StyleLibrary.from_settings(settings))
    os.link(image, settings.inbox / ".another-name")  # same inode; nlink 2 at the claim
    with pytest.raises(Rejected, match=r"has 2 hard links.*copy the file"):
        spool.claim(came, resolved)
    assert image.exists() and sidecar.exists()
    _no_claims_left(spool)
    _still_claims(settings, spool)
    assert decoy.unchanged()


def test_a_hard_link_to_a_file_outside_is_never_read(settings: Settings, decoy: Decoy) -> None:
    photo = settings.inbox / "photo.jpg"
    photo.write_bytes(image_bytes(seed=3))
    sidecar = settings.inbox / "photo.json"
    os.link(decoy.root / "secret.json", sidecar)
    came = arrival(settings.inbox, photo, sidecar)
    with pytest.raises(Rejected, match=r"photo\.json has 2 hard links") as caught:
        resolve(came, settings, StyleLibrary.from_settings(settings))
    assert "password" not in str(caught.value) and "hunter2" not in str(caught.value)
    assert decoy.unchanged()


def test_a_sidecar_swapped_for_a_link_after_settling_is_not_read(
    settings: Settings, decoy: Decoy
) -> None:
    image, sidecar = pair(settings.inbox, "photo.jpg")
    came = arrival(settings.inbox, image, sidecar)
    sidecar.unlink()
    sidecar.symlink_to(decoy.root / "secret.json")
    with pytest.raises(Changed):
        resolve(came, settings, StyleLibrary.from_settings(settings))
    # Without a settled signature (a direct read), a link is refused, not followed.
    with pytest.raises(ValueError, match="symbolic link"):
        read_inbox(settings.inbox, Path("photo.json"), 65536, "sidecar", None)
    assert decoy.unchanged()


@pytest.mark.parametrize("change", ["swapped", "deleted"])
def test_originals_never_go_into_a_folder_that_is_gone_or_swapped(
    settings: Settings, decoy: Decoy, race: Callable[[str, Hook], None], change: str
) -> None:
    spool = Spool(settings, Store(settings.state))
    job = _claim(settings, spool, "trip/photo.jpg")
    original = spool.input_path(job).read_bytes()

    def swap(_when: str, where: Path) -> None:
        shutil.rmtree(where)
        if change == "swapped":
            where.symlink_to(decoy.root / "dir")

    race("return", swap)
    placed = spool.release(job, archive=False)
    rescue = settings.state / "returned" / job.id
    assert placed == [rescue / "photo.jpg", rescue / "photo.json"]
    assert (rescue / "photo.jpg").read_bytes() == original
    assert decoy.unchanged()
    text = answers.original_text(placed, settings.inbox, settings.state)
    assert f"returned/{job.id}/photo.jpg" in text and str(settings.state) not in text
    [kept] = spool.kept()  # listed by `status` until a person hands them back
    assert kept.where == str(rescue) and "give them back" in kept.fix
    spool.remove(job)
    _no_claims_left(spool)
    _still_claims(settings, spool)


def test_a_claim_cut_short_rolls_back_only_into_a_real_folder(
    settings: Settings, decoy: Decoy
) -> None:
    """A crash mid-claim, then the folder swapped for a link before the restart: recovery must
    not write through the link; the original is kept in state/returned/ and nothing is left in
    the spool."""
    store = Store(settings.state)
    job_id = "20250101-000000-000000-abcdef"
    data, intent, claim = _cut_short(settings, job_id)
    store.create(job_id, State.CLAIMING, "trip/photo.jpg", detail=intent)
    (settings.inbox / "trip").rename(settings.inbox / "trip-kept")
    (settings.inbox / "trip").symlink_to(decoy.root / "dir")

    _lifecycle(settings, store).recover()
    assert not claim.exists()
    row = store.get(job_id)
    assert row is not None and row.state is State.ROLLED_BACK
    assert decoy.unchanged()
    assert json.loads((settings.inbox / "trip-kept" / "photo.json").read_text())
    _kept_and_reported(settings, job_id, data)  # its sender hears of it in the outbox


def test_an_unrecorded_claim_whose_folder_went_is_reported(settings: Settings) -> None:
    """A newcomer's review: a claim folder with no record (the daemon died before recording
    it) given back while its inbox folder was gone kept the originals in state/returned/ with
    no report, as every roll-back did before the spool told the lifecycle of kept files."""
    job_id = "20250101-000000-000000-fedcba"
    data, intent, claim = _cut_short(settings, job_id)
    (claim / CLAIM_FILE).write_text(intent.model_dump_json())
    (settings.inbox / "trip").rename(settings.inbox / "trip-renamed")
    _lifecycle(settings, Store(settings.state)).recover()
    _kept_and_reported(settings, job_id, data)


def _cut_short(settings: Settings, job_id: str) -> tuple[bytes, ClaimIntent, Path]:
    """A claim cut short after its first move: trip/photo.jpg in the job's spool folder. Its
    bytes, what the claim meant to move, and the folder."""
    image, _sidecar = pair(settings.inbox, "trip/photo.jpg")
    data = image.read_bytes()
    claim = settings.state / "spool" / job_id
    claim.mkdir(parents=True)
    os.rename(image, claim / "input.jpg")
    return data, ClaimIntent(rel_dir="trip", moves=[("photo.jpg", "input.jpg")]), claim


def _kept_and_reported(settings: Settings, job_id: str, data: bytes) -> None:
    """The photo is kept in state/returned/, and its report in the outbox says where."""
    assert (settings.state / "returned" / job_id / "photo.jpg").read_bytes() == data
    report = json.loads((settings.outbox / "trip" / "photo.error.json").read_text())
    assert report["error"].startswith("photo.jpg was not answered: its claim was cut short")
    assert f"as returned/{job_id}/photo.jpg" in report["original"]


def test_a_style_file_that_is_the_photo_itself_is_refused_with_a_fix(settings: Settings) -> None:
    image, sidecar = pair(settings.inbox, "photo.jpg", {"style": {"file": "photo.jpg"}})
    came = arrival(settings.inbox, image, sidecar)
    with pytest.raises(Rejected, match=r"photo\.jpg is the photo itself; bring a different"):
        resolve(came, settings, StyleLibrary.from_settings(settings))
    assert image.exists()


def test_a_brought_along_style_swapped_for_a_link_is_not_read(
    settings: Settings, decoy: Decoy, race: Callable[[str, Hook], None]
) -> None:
    spool = Spool(settings, Store(settings.state))
    image, sidecar = pair(settings.inbox, "photo.jpg", {"style": {"file": "mine.jpg"}})
    style = settings.inbox / "mine.jpg"
    style.write_bytes(image_bytes(seed=5))
    seen = {**(arrival(settings.inbox, image, sidecar).seen or {})}
    seen.update(arrival(settings.inbox, style, None).seen or {})
    came = Arrival(image, sidecar, Path("."), style, seen)
    resolved = resolve(came, settings, StyleLibrary.from_settings(settings))
    style.unlink()
    style.symlink_to(decoy.root / "photo.jpg")
    with pytest.raises(Changed):
        spool.claim(came, resolved)
    assert list(spool.styles.folder.iterdir()) == []
    assert image.exists() and sidecar.exists()
    assert decoy.unchanged()


def test_a_brought_along_style_over_max_input_bytes_is_never_copied(folders: Folders) -> None:
    """An attacker's trial: the pairing checks the size of the style a sidecar names when the
    sidecar settles; rewritten in place with its old size and mtime, the sidecar named a sparse
    300 MiB file instead, and the claim copied all of it into the state folder (1.5 GB with
    five jobs queued). The claim sees the pair as the pairing emitted it, style unchecked."""
    settings = load_settings(folders.config(max_input_bytes=100_000), {})
    spool = Spool(settings, Store(settings.state))
    image, sidecar = pair(settings.inbox, "photo.jpg", {"style": {"file": "big.png"}})
    big = settings.inbox / "big.png"
    big.write_bytes(image_bytes(seed=5))
    os.truncate(big, 50_000_000)  # sparse: nothing for the writer, 50 MB for a copy
    came = arrival(settings.inbox, image, sidecar)
    resolved = resolve(came, settings, StyleLibrary.from_settings(settings))
    with pytest.raises(Rejected, match=r"style image big\.png is 50,000,000 bytes, more than max_"):
        spool.claim(came, resolved)
    assert list(spool.styles.folder.iterdir()) == []
    assert image.exists() and sidecar.exists() and big.exists()
    _no_claims_left(spool)


def test_a_full_queue_is_listed_and_further_photos_wait_in_the_inbox(folders: Folders) -> None:
    settings = load_settings(folders.config(queue_max=1), {})
    lifecycle = _lifecycle(settings, Store(settings.state))
    for index in range(3):
        image, sidecar = pair(settings.inbox, f"p{index}.jpg", seed=index)
        lifecycle.arrived(arrival(settings.inbox, image, sidecar))
    lifecycle.feed(float("inf"))
    assert len(lifecycle.jobs) == 1 and len(lifecycle.deferred) == 2
    assert (settings.inbox / "p2.jpg").exists()
    [item] = lifecycle.attention()
    assert "queue_max (1)" in item.what and "wait in the inbox" in item.what
    waiting = lifecycle.ready_items()
    assert [(item.path, item.note) for item in waiting] == [
        ("p1.jpg", READY_FULL),
        ("p2.jpg", READY_FULL),
    ]


def test_pairs_waiting_only_for_their_turn_are_not_said_to_wait_for_room(
    folders: Folders,
) -> None:
    """Claims are paced, a few per turn of the daemon's loop: an attacker's flood of 5,000
    junk pairs was listed as "waiting for room in the queue" while the queue was empty."""
    settings = load_settings(folders.config(), {})
    lifecycle = _lifecycle(settings, Store(settings.state))
    image, sidecar = pair(settings.inbox, "p.jpg", seed=1)
    lifecycle.arrived(arrival(settings.inbox, image, sidecar))
    lifecycle.feed(0.0)  # a turn whose time for claims is spent
    assert not lifecycle.jobs and lifecycle.pool.has_room()
    waiting = lifecycle.ready_items()
    assert [(item.path, item.note) for item in waiting] == [("p.jpg", READY_IN_TURN)]
