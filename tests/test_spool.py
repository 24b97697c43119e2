"""The spool with real files and the state database: claims, recovery, originals, the index."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import Folders, make_image, write_json
from outbox_files import a_manifest, a_report

from daemon.config import Settings, load_settings
from daemon.intake.pairing import Arrival
from daemon.intake.resolve import Rejected, resolve
from daemon.intake.styles import StyleLibrary
from daemon.jobs import handover, outbox
from daemon.jobs.lifecycle import Lifecycle
from daemon.jobs.record import Job
from daemon.jobs.spool import ClaimIntent, Spool
from daemon.jobs.states import State
from daemon.jobs.store import Answer, Store
from daemon.metrics import Metrics
from daemon.pool import make_pool
from daemon.status import from_store
from daemon.status_model import DaemonInfo


def _settings(folders: Folders, **extra: object) -> Settings:
    return load_settings(folders.config(**extra), {})


def _pair(
    folders: Folders, rel: str = "photo.jpg", sidecar: object = None, seed: int = 0
) -> Arrival:
    image = make_image(folders.inbox / rel, seed=seed)
    side = None
    if sidecar is not None:
        side = write_json(image.with_suffix(".json"), sidecar)
    return Arrival(image, side, image.parent.relative_to(folders.inbox))


def _spool(settings: Settings) -> Spool:
    return Spool(settings, Store(settings.state))


def _claim(spool: Spool, settings: Settings, arrival: Arrival) -> Job:
    return spool.claim(arrival, resolve(arrival, settings, StyleLibrary.from_settings(settings)))


def _lifecycle(settings: Settings) -> Lifecycle:
    store = Store(settings.state)
    library = StyleLibrary.from_settings(settings)
    return Lifecycle(settings, store, make_pool(settings), library, Metrics.disabled(), 1.0)


def test_claim_moves_the_pair_and_records_everything(folders: Folders) -> None:
    settings = _settings(folders)
    spool = _spool(settings)
    arrival = _pair(folders, "trip/day1/photo.jpg", {"style": "mosaic", "params": {"seed": 3}})
    data = arrival.image.read_bytes()
    job = _claim(spool, settings, arrival)

    assert (
        not arrival.image.exists() and arrival.sidecar is not None and not arrival.sidecar.exists()
    )
    folder = spool.job_dir(job)
    assert (folder / "input.jpg").read_bytes() == data
    assert json.loads((folder / "sidecar.json").read_text()) == {
        "style": "mosaic",
        "params": {"seed": 3},
    }
    row = Store(settings.state).get(job.id)
    assert row is not None and row.state is State.QUEUED and row.job == job
    assert job.rel_dir == "trip/day1"
    assert job.input_sha256 == hashlib.sha256(data).hexdigest()
    assert job.params.seed == 3 and job.params.size == 48
    assert job.styles[0].name == "mosaic"
    assert (folder / job.styles[0].file).read_bytes() == (
        folders.styles / "mosaic.jpg"
    ).read_bytes()
    assert spool.names(job).image == folders.outbox / "trip/day1/photo.stylised.jpg"
    lifecycle = _lifecycle(settings)
    lifecycle.recover()
    assert [j.id for j in lifecycle.for_pool] == [job.id]


def test_two_photos_with_one_stem_get_different_names(folders: Folders) -> None:
    settings = _settings(folders)
    spool = _spool(settings)
    first = _claim(spool, settings, _pair(folders, "photo.jpg", {"style": "mosaic"}))
    png = make_image(folders.inbox / "photo.png", seed=5)
    write_json(folders.inbox / "photo.png.json", {"style": "waves"})
    second = _claim(spool, settings, Arrival(png, folders.inbox / "photo.png.json", Path(".")))
    assert spool.names(first).image.name == "photo.stylised.jpg"
    assert spool.names(second).image.name == "photo.stylised-2.jpg"


def test_bad_sidecar_or_style_is_rejected_before_anything_moves(folders: Folders) -> None:
    settings = _settings(folders)
    library = StyleLibrary.from_settings(settings)
    for sidecar, expected in (
        ({"style": "mosaic", "params": {"sise": 5}}, "did you mean 'size'"),
        ({"style": "../etc/passwd"}, "is a path; name a library style alone"),
        ({"style": "missing"}, "not in the style library"),
        ({"style": "mosaic", "params": {"size": 9999}}, "max_output_size"),
        (
            {"style": "mosaic", "params": {"size": 99999}},
            "max_output_size (4096); ask for size 4096",
        ),
    ):
        arrival = _pair(folders, "photo.jpg", sidecar)
        with pytest.raises(Rejected, match=re.escape(expected)):
            resolve(arrival, settings, library)
        assert arrival.image.exists()
    # A misspelt param and an unknown style are told in one report, not one after the other
    # (a new user's trial: a round trip per mistake).
    for style, told in (
        ("mosaik", "style 'mosaik' is not in the style library (did you mean 'mosaic'?"),
        ([{"name": "mosaic"}, {"name": "wave"}], "style 'wave' is not in the style library"),
        ({"file": "gone.png"}, "gone.png"),
    ):
        arrival = _pair(folders, "photo.jpg", {"style": style, "params": {"strenght": 0.5}})
        with pytest.raises(Rejected) as rejected:
            resolve(arrival, settings, library)
        assert "params.strenght: unknown key" in str(rejected.value)
        assert told in str(rejected.value), rejected.value
    arrival = _pair(folders, "photo.jpg", {"style": "mosaic", "params": {"strenght": 0.5}})
    with pytest.raises(Rejected, match="strenght") as rejected:
        resolve(arrival, settings, library)
    assert "style" not in str(rejected.value).replace("strenght", "")  # a good style: silent


def test_an_interrupted_claim_is_rolled_back_into_the_inbox(folders: Folders) -> None:
    settings = _settings(folders)
    store = Store(settings.state)
    spool = Spool(settings, store)
    arrival = _pair(folders, "sub/photo.jpg", {"style": "mosaic"})
    data = arrival.image.read_bytes()
    # What a kill -9 between the two moves of a claim leaves behind.
    intent = ClaimIntent(
        rel_dir="sub", moves=[("photo.jpg", "input.jpg"), ("photo.json", "sidecar.json")]
    )
    store.create("20250101-000000-000000-abcdef", State.CLAIMING, "sub/photo.jpg", detail=intent)
    claim = spool.job_dir("20250101-000000-000000-abcdef")
    claim.mkdir()
    os.rename(arrival.image, claim / "input.jpg")

    lifecycle = _lifecycle(settings)
    lifecycle.recover()
    assert not lifecycle.jobs and not lifecycle.for_pool
    assert (
        arrival.image.read_bytes() == data
        and arrival.sidecar is not None
        and arrival.sidecar.exists()
    )
    assert not claim.exists()
    row = store.get("20250101-000000-000000-abcdef")
    assert row is not None and row.state is State.ROLLED_BACK


def _lose_the_database(settings: Settings) -> None:
    """What an operator does with a damaged database (the fix `status` gives): move it aside."""
    for name in ("stylefold.db", "stylefold.db-wal", "stylefold.db-shm"):
        path = settings.state / name
        if path.exists():
            path.rename(path.with_name(f"{name}.damaged"))


def test_claimed_photos_go_back_to_the_inbox_when_the_database_is_lost(folders: Folders) -> None:
    settings = _settings(folders)
    spool = _spool(settings)
    arrivals = [_pair(folders, rel, {"style": "mosaic"}, seed=i) for i, rel in
                enumerate(["photo.jpg", "trip/beach.jpg"])]  # fmt: skip
    photos = {a.image: a.image.read_bytes() for a in arrivals}
    jobs = [_claim(spool, settings, arrival) for arrival in arrivals]
    spool.store.close()
    _lose_the_database(settings)

    lifecycle = _lifecycle(settings)
    lifecycle.recover()
    assert not lifecycle.jobs and not lifecycle.for_pool
    assert {path: path.read_bytes() for path in photos} == photos
    assert all(a.sidecar is not None and a.sidecar.exists() for a in arrivals)
    assert list(spool.root.iterdir()) == []
    for job in jobs:
        row = lifecycle.store.get(job.id)
        assert row is not None and row.state is State.ROLLED_BACK and row.input == job.source


def test_an_answered_job_lost_with_the_database_is_not_answered_again(folders: Folders) -> None:
    """A database lost between a job's answer and the release of its originals (a full disk,
    an operator moving it aside): the originals went back to the inbox as new arrivals and
    got a second answer, `photo.stylised-2.jpg`. Found answered in the outbox (by the job id
    inside its manifest or report), they go back remembered as answered; a job without an
    answer goes back to be taken again."""
    settings = _settings(folders)
    spool = _spool(settings)
    arrivals = [_pair(folders, rel, {"style": "mosaic"}, seed=i) for i, rel in
                enumerate(["trip/photo.jpg", "trip/failed.jpg", "trip/open.jpg"])]  # fmt: skip
    jobs = [_claim(spool, settings, arrival) for arrival in arrivals]
    result = spool.input_path(jobs[0])  # any image will do as the answer
    outbox.publish_result(spool.names(jobs[0]), result, a_manifest(jobs[0].id), "")
    failed = a_report(job_id=jobs[1].id, input="trip/failed.jpg")
    outbox.publish_error(spool.names(jobs[1]), failed, "")
    spool.store.close()
    _lose_the_database(settings)

    lifecycle = _lifecycle(settings)
    lifecycle.recover()
    handled = [lifecycle.spool.in_place.already_handled([a.image, a.sidecar]) for a in arrivals]
    assert handled == [True, True, False]
    assert all(arrival.image.exists() for arrival in arrivals)
    row = lifecycle.store.get(jobs[0].id)
    assert row is not None and row.state is State.ROLLED_BACK
    [*_, last] = lifecycle.store.transitions(jobs[0].id)
    assert "answered by trip/photo.manifest.json" in last.note


def test_an_unknown_spool_folder_without_its_claim_file_is_set_aside(folders: Folders) -> None:
    settings = _settings(folders)
    spool = _spool(settings)
    job = _claim(spool, settings, _pair(folders, "photo.jpg", {"style": "mosaic"}))
    (spool.job_dir(job) / "claim.json").unlink()  # a folder claimed by an older version
    spool.store.close()
    _lose_the_database(settings)

    lifecycle = _lifecycle(settings)
    lifecycle.recover()
    row = lifecycle.store.get(job.id)
    assert row is not None and row.state is State.BROKEN
    assert "not in the state database" in (row.reason or "")
    kept = spool.root / f".broken-{job.id}"
    assert (kept / "input.jpg").exists() and (kept / "sidecar.json").exists()
    report = from_store(lifecycle.store, DaemonInfo(running=False, version="x"))
    assert [item.what for item in report.attention] == [f"job {job.id} (unknown photo) is broken"]


def test_originals_are_archived_or_returned_and_remembered(folders: Folders) -> None:
    settings = _settings(folders)
    spool = _spool(settings)
    job = _claim(spool, settings, _pair(folders, "a/photo.jpg", {"style": "mosaic"}))
    placed = spool.release(job, archive=True)
    assert placed == [settings.archive_path / "a/photo.jpg", settings.archive_path / "a/photo.json"]

    arrival = _pair(folders, "a/photo.jpg", {"style": "mosaic"}, seed=1)
    job = _claim(spool, settings, arrival)
    spool.release(job, archive=False)
    assert arrival.image.exists()
    assert spool.in_place.already_handled([arrival.image, arrival.sidecar])
    # Editing the sidecar makes it a new job.
    assert arrival.sidecar is not None
    write_json(arrival.sidecar, {"style": "waves"})
    assert not spool.in_place.already_handled([arrival.image, arrival.sidecar])


def test_archive_never_overwrites_an_earlier_original(folders: Folders) -> None:
    settings = _settings(folders)
    spool = _spool(settings)
    for seed in (1, 2):
        job = _claim(spool, settings, _pair(folders, "photo.jpg", {"style": "mosaic"}, seed=seed))
        spool.release(job, archive=True)
    names = sorted(p.name for p in settings.archive_path.iterdir())
    assert names == ["photo.jpg", "photo.json", "photo.returned-2.jpg", "photo.returned-2.json"]


@pytest.mark.parametrize("length", [238, 240])
def test_an_original_with_a_long_name_and_its_sidecar_in_another_case_are_archived_again(
    folders: Folders, length: int
) -> None:
    """An attacker's trial: `p...p.jpg` (240 characters) paired with `P...P.json`; the second
    such pair's renaming carried the sidecar's whole name (`.returned-2-PPP...json`, 257 bytes):
    its originals stayed in the spool for good, retried every 30 s with advice about free
    space. At 238 characters the photo's stem was cut to nothing: `.returned-2.jpg`, hidden."""
    settings = _settings(folders)
    spool = _spool(settings)
    for seed in (1, 2):
        image = make_image(folders.inbox / ("p" * length + ".jpg"), seed=seed)
        sidecar = write_json(folders.inbox / ("P" * length + ".json"), {"style": "mosaic"})
        job = _claim(spool, settings, Arrival(image, sidecar, Path()))
        spool.release(job, archive=True)
    names = sorted(p.name for p in settings.archive_path.iterdir())
    kept = ("p" * length)[: 255 - len(".returned-2.json")]  # one stem for the pair, as it fits
    first = ["p" * length + ".jpg", "P" * length + ".json"]
    assert names == sorted([*first, f"{kept}.returned-2.jpg", f"{kept}.returned-2.json"])


def test_names_given_back_fit_and_keep_a_stem_whatever_they_are() -> None:
    """The class of the trial above: whatever files go back beside a photo, their renamings fit
    the file system's limit and keep a visible stem."""
    wanted = ["p" * 240 + ".jpg", "x" * 250 + ".json", "._" + "p" * 240 + ".jpg"]
    for renamed in itertools.islice(handover.numbered(wanted), 1, 4):
        assert all(len(os.fsencode(name)) <= 255 for name in renamed), renamed
        assert all(name.lstrip("._").startswith("ppp") for name in renamed), renamed
        assert len(set(renamed)) == len(renamed)


def test_originals_given_back_take_no_name_that_pairs_with_anothers(tmp_path: Path) -> None:
    """A re-test: photo.jpg and PHOTO.json given back beside Photo.jpg (a case-keeping share)
    took their plain names, and the two photos then shared one sidecar: neither was taken.
    Names are taken as pairing compares them, without case or Unicode form."""
    inbox, job_dir = tmp_path / "inbox", tmp_path / "job"
    inbox.mkdir()
    job_dir.mkdir()
    (inbox / "Photo.jpg").write_bytes(b"theirs")
    (inbox / "cafe\u0301.JPG").write_bytes(b"theirs")  # NFD, as macOS writes it
    for name in ("input.jpg", "sidecar.json", "input2.jpg"):
        (job_dir / name).write_bytes(name.encode())
    files = [("input.jpg", "photo.jpg"), ("sidecar.json", "PHOTO.json")]
    back = handover.give_back(inbox, "", job_dir, files, tmp_path / "rescue")
    assert back.names == {
        "photo.jpg": "photo.returned-2.jpg",
        "PHOTO.json": "photo.returned-2.json",
    }
    back = handover.give_back(inbox, "", job_dir, [("input2.jpg", "caf\u00e9.jpg")], tmp_path / "r")
    assert back.names == {"caf\u00e9.jpg": "caf\u00e9.returned-2.jpg"}


def test_a_sidecar_whose_lower_case_is_longer_keeps_pairing_when_renamed() -> None:
    """A re-test: `İx.jpg` pairs with `i̇x.json` (U+0130 is two characters in lower case), and
    the sidecar's renaming carried its whole name: `İx.returned-2-i̇x.json`, no pair."""
    photo, sidecar = "\u0130" + "x" * 20 + ".jpg", "i\u0307" + "x" * 20 + ".json"
    renamed = next(itertools.islice(handover.numbered([photo, sidecar]), 1, None))
    assert renamed == [
        "\u0130" + "x" * 20 + ".returned-2.jpg",
        "\u0130" + "x" * 20 + ".returned-2.json",
    ]


def test_earlier_result_is_found_only_while_it_is_intact(folders: Folders) -> None:
    settings = _settings(folders)
    spool = _spool(settings)
    first = _claim(spool, settings, _pair(folders, "photo.jpg", {"style": "mosaic"}))
    output = folders.outbox / "photo.stylised.jpg"
    output.write_bytes(b"result")
    spool.store.record_answer(
        Answer(first.reuse_key, first.id, output, hashlib.sha256(b"result").hexdigest(), output)
    )
    spool.release(first, archive=True)
    again = _claim(spool, settings, _pair(folders, "photo.jpg", {"style": "mosaic"}))
    assert again.key == first.key
    earlier = spool.earlier_answer(again)
    assert earlier is not None and earlier.job_id == first.id
    elsewhere = _claim(spool, settings, _pair(folders, "bob/photo.jpg", {"style": "mosaic"}))
    assert elsewhere.key == first.key and spool.earlier_answer(elsewhere) is None
    output.write_bytes(b"edited by someone")
    assert spool.earlier_answer(again) is None
    other = _claim(
        spool, settings, _pair(folders, "x.jpg", {"style": "mosaic", "params": {"seed": 9}})
    )
    assert other.key != first.key


def test_a_published_job_is_not_rendered_again_after_a_restart(folders: Folders) -> None:
    """Crash after the manifest was renamed into place but before the original moved on."""
    settings = _settings(folders)
    spool = _spool(settings)
    arrival = _pair(folders, "photo.jpg", {"style": "mosaic"})
    job = _claim(spool, settings, arrival)
    spool.store.move(job.id, State.RUNNING, started=True)
    rendered = spool.job_dir(job) / "result.jpg"
    rendered.write_bytes(b"\xff\xd8done")
    outbox.publish_result(spool.names(job), rendered, a_manifest(job.id), "log\n")
    info = {
        "iterations": 4, "stop_reason": "iterations", "losses": {}, "scales": [[48, 36]],
        "device": "cpu", "output_size": [48, 36], "input_size": [64, 48], "input_format": "JPEG",
        "peak_memory_bytes": 0, "params": job.params.model_dump(mode="json"),
        "versions": {"torch": "2", "pillow": "11"},
        "timings": {"decode_seconds": 0.1, "render_seconds": 1, "encode_seconds": 0.1,
                    "worker_total_seconds": 1.2},
    }  # fmt: skip
    (spool.job_dir(job) / "result.json").write_text(json.dumps(info))

    lifecycle = _lifecycle(settings)
    lifecycle.recover()
    assert not lifecycle.jobs and not lifecycle.for_pool and not lifecycle.pool.queued
    assert Store(settings.state).get(job.id).state is State.DONE  # type: ignore[union-attr]
    assert (settings.archive_path / "photo.jpg").exists()
    assert not spool.job_dir(job).exists()
    assert sorted(p.name for p in folders.outbox.iterdir()) == [
        "photo.log",
        "photo.manifest.json",
        "photo.stylised.jpg",
    ]


def test_claim_across_file_systems_copies_and_verifies(folders: Folders, tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a second file system")
    state = shm / f"stylefold-spool-test-{os.getpid()}"
    try:
        settings = _settings(folders, state=str(state))
        spool = _spool(settings)
        arrival = _pair(folders, "photo.jpg", {"style": "mosaic"})
        data = arrival.image.read_bytes()
        job = _claim(spool, settings, arrival)
        assert spool.input_path(job).read_bytes() == data and not arrival.image.exists()
        spool.release(job, archive=False)
        assert arrival.image.read_bytes() == data
    finally:
        shutil.rmtree(state, ignore_errors=True)


@pytest.mark.parametrize("style", ["mosaic", {"file": "mine.png"}])
def test_jobs_share_one_stored_copy_of_a_style(folders: Folders, style: object) -> None:
    """A style brought along in the inbox too (an attacker's trial: each claim's copy replaced
    the stored one, so every queued job kept a copy of its own: ten jobs bringing one 20 MB
    style held 200 MB of the state folder)."""
    settings = _settings(folders)
    spool = _spool(settings)
    make_image(folders.inbox / "mine.png", seed=9)
    jobs = [
        _claim(spool, settings, _pair(folders, f"p{i}.jpg", {"style": style}, seed=i))
        for i in range(3)
    ]
    inodes = {os.stat(spool.job_dir(job) / job.styles[0].file).st_ino for job in jobs}
    assert len(inodes) == 1
    stored = list(spool.styles.folder.iterdir())
    assert [p.stem for p in stored] == [jobs[0].styles[0].sha256]
    for job in jobs:
        spool.release(job, archive=True)
        spool.remove(job)
    _spool(settings).styles.collect()
    assert list(spool.styles.folder.iterdir()) == []


def test_names_that_are_not_utf8_survive_every_record(folders: Folders) -> None:
    settings = _settings(folders)
    spool = _spool(settings)
    name = os.fsdecode(b"caf\xe9.jpg")  # Latin-1 bytes from an old SMB client
    image = make_image(folders.inbox / name)
    sidecar = write_json(folders.inbox / os.fsdecode(b"caf\xe9.json"), {"style": "mosaic"})
    job = _claim(spool, settings, Arrival(image, sidecar, Path(".")))
    spool.append_log(job, f"claimed {job.source}")
    outbox.publish_error(spool.names(job), a_report(f"test {job.source}"), spool.read_log(job))
    spool.release(job, archive=False)
    assert image.exists() and spool.in_place.already_handled([image, sidecar])
    assert (folders.outbox / os.fsdecode(b"caf\xe9.error.json")).exists()


def test_appledouble_companions_travel_with_the_photo(folders: Folders) -> None:
    settings = _settings(folders)
    spool = _spool(settings)
    arrival = _pair(folders, "mac/photo.jpg", {"style": "mosaic"})
    (folders.inbox / "mac/._photo.jpg").write_bytes(b"\x00\x05\x16\x07")
    (folders.inbox / "mac/._photo.json").write_bytes(b"\x00\x05\x16\x07")
    job = _claim(spool, settings, arrival)
    assert sorted(p.name for p in (folders.inbox / "mac").iterdir()) == []
    spool.release(job, archive=True)
    archived = sorted(p.name for p in (settings.archive_path / "mac").iterdir())
    assert archived == ["._photo.jpg", "._photo.json", "photo.jpg", "photo.json"]

    # One no AppleDouble file can be (sparse: nothing on disk here, its size in bytes on a
    # copy to another file system) stays in the inbox, untouched (an attacker's trial).
    arrival = _pair(folders, "mac/big.jpg", {"style": "mosaic"})
    with (folders.inbox / "mac/._big.jpg").open("wb") as handle:
        handle.truncate(300 << 20)
    job = _claim(spool, settings, arrival)
    assert sorted(p.name for p in (folders.inbox / "mac").iterdir()) == ["._big.jpg"]
    assert sorted(p.name for p in spool.job_dir(job).iterdir() if "companion" in p.name) == []


def test_a_late_companion_of_a_newer_version_stays_with_it(folders: Folders) -> None:
    """An attacker's trial: a new photo.jpg and its `._photo.jpg` arrived while the old one
    rendered; the release archived the old photo with the new version's companion."""
    settings = _settings(folders)
    spool = _spool(settings)
    job = _claim(spool, settings, _pair(folders, "mac/photo.jpg", {"style": "mosaic"}))
    (folders.inbox / "mac/._photo.jpg").write_bytes(b"\x00\x05\x16\x07 the newer one's")
    make_image(folders.inbox / "mac/photo.jpg", seed=42)  # the newer version
    (folders.inbox / "mac/._photo.json").write_bytes(b"\x00\x05\x16\x07 late, the old one's")
    spool.release(job, archive=True, answered=True)
    archived = sorted(p.name for p in (settings.archive_path / "mac").iterdir())
    assert archived == ["._photo.json", "photo.jpg", "photo.json"]
    assert sorted(p.name for p in (folders.inbox / "mac").iterdir()) == ["._photo.jpg", "photo.jpg"]


def test_a_returned_pair_keeps_pairing_when_its_name_was_taken_meanwhile(folders: Folders) -> None:
    settings = _settings(folders)
    spool = _spool(settings)
    job = _claim(spool, settings, _pair(folders, "photo.jpg", {"style": "mosaic"}))
    newer = make_image(folders.inbox / "photo.jpg", seed=42)  # a new photo under the old name
    spool.release(job, archive=False)
    returned = folders.inbox / "photo.returned-2.jpg"
    assert returned.exists() and (folders.inbox / "photo.returned-2.json").exists()
    assert not (folders.inbox / "photo.json").exists()  # the new photo is not given our sidecar
    assert spool.in_place.already_handled([returned, folders.inbox / "photo.returned-2.json"])
    assert not spool.in_place.already_handled([newer, None])


def test_a_state_folder_of_the_previous_version_is_upgraded_and_nothing_is_lost(
    folders: Folders,
) -> None:
    """Version 0.1 kept job.json in each spool folder, .claim-<id>/intent.json for claims in
    progress and index/ files; the first start of this version imports them all."""
    settings = _settings(folders)
    spool = _spool(settings)
    # A claimed job, written the way 0.1 wrote it (job.json with params as a plain dict).
    job = _claim(spool, settings, _pair(folders, "old/photo.jpg", {"style": "mosaic"}))
    old = json.loads(job.model_dump_json())
    (spool.job_dir(job) / "job.json").write_text(json.dumps(old))
    with sqlite3.connect(settings.state / "stylefold.db") as db:  # as if there were no database
        db.execute("DELETE FROM jobs")
        db.execute("DELETE FROM transitions")
    # An old claim cut short after its first move.
    half = _pair(folders, "old/half.jpg", {"style": "mosaic"}, seed=3)
    data = half.image.read_bytes()
    claim = spool.root / ".claim-20250101-000000-000000-abcdef"
    claim.mkdir()
    moves = [["half.jpg", "input.jpg"], ["half.json", "sidecar.json"]]
    (claim / "intent.json").write_text(json.dumps({"rel_dir": "old", "moves": moves}))
    os.rename(half.image, claim / "input.jpg")
    # 0.1's index of answered inbox files.
    seen = settings.state / "index" / "seen"
    seen.mkdir(parents=True)
    (folders.inbox / "kept.jpg").write_bytes(b"returned earlier")  # still there: still answered
    (seen / "a.json").write_text(
        json.dumps({"path": "kept.jpg", "signatures": [[1, 2]], "job_id": "x"})
    )

    lifecycle = _lifecycle(settings)
    lifecycle.recover()
    assert [j.id for j in lifecycle.for_pool] == [job.id]  # queued again, originals in place
    assert lifecycle.spool.input_path(job).exists()
    assert half.image.read_bytes() == data and not claim.exists()  # rolled back to the inbox
    assert Store(settings.state).seen("kept.jpg") == [[1, 2]]
    assert not (spool.job_dir(job) / "job.json").exists() and not list(seen.iterdir())


def test_what_a_sidecar_asked_for_and_did_not_get_is_noted(folders: Folders) -> None:
    """A new user's trials: a PNG's quality was taken without a word, and a job in the default
    style never said where its style came from."""
    settings = _settings(folders, default_style="waves")
    library = StyleLibrary.from_settings(settings)
    sidecar = {"style": "mosaic", "output": {"format": "png", "quality": 50}}
    png = resolve(_pair(folders, "photo.jpg", sidecar), settings, library)
    assert png.notes == ("note: output.quality 50 is not used: a png is lossless",)
    jpeg = {"style": "mosaic", "output": {"format": "jpg", "quality": 50}}
    assert resolve(_pair(folders, "other.jpg", jpeg), settings, library).notes == ()
    unnamed = resolve(_pair(folders, "third.jpg", {"params": {"size": 64}}), settings, library)
    assert unnamed.notes == (
        "the sidecar names no style, so the default style waves (default_style)",
    )


def test_a_styles_defaults_are_named_in_the_jobs_log(folders: Folders) -> None:
    """A style's JSON set strength 0.3 for a sidecar that gave none: the log and manifest
    showed strength 0.3 without where it came from (a photographer's trial)."""
    write_json(folders.styles / "mosaic.json", {"strength": 0.3})
    settings = _settings(folders)
    library = StyleLibrary.from_settings(settings)
    resolved = resolve(_pair(folders, "photo.jpg", {"style": "mosaic"}), settings, library)
    assert resolved.params.strength == 0.3
    assert "style mosaic's defaults from the style library: strength 0.3" in resolved.notes
    # Not used where the sidecar's style_weight decides (a re-test: not said).
    sent = {"style": "mosaic", "params": {"style_weight": 500}}
    weighed = resolve(_pair(folders, "weighed.jpg", sent), settings, library)
    assert weighed.notes[0] == (
        "style mosaic's defaults from the style library: strength 0.3 (not used: style_weight "
        "500.0 from the sidecar decides)"
    )
    # A photographer's trial: the same line when the sidecar's strength was the one used.
    sent = {"style": "mosaic", "params": {"strength": 0.9}}
    overridden = resolve(_pair(folders, "strong.jpg", sent), settings, library)
    assert overridden.params.strength == 0.9
    assert overridden.notes == (
        "style mosaic's defaults from the style library: strength 0.3 (overridden by the "
        "sidecar: 0.9)",
    )
    # A style's style_weight gives way to the sidecar's strength, and says so (a trial).
    write_json(folders.styles / "waves.json", {"style_weight": 5})
    library = StyleLibrary.from_settings(settings)
    sent = {"style": "waves", "params": {"strength": 0.9}}
    strong = resolve(_pair(folders, "waves.jpg", sent), settings, library)
    assert strong.params.style_weight is None and strong.params.strength == 0.9
    assert strong.notes == (
        "style waves's defaults from the style library: style_weight 5.0 (not used: strength "
        "0.9 from the sidecar decides)",
    )
    write_json(folders.styles / "waves.json", {"style_weight": 5, "strength": 0.2})
    library = StyleLibrary.from_settings(settings)
    both = resolve(_pair(folders, "both.jpg", {"style": "waves"}), settings, library)
    assert both.params.style_weight == 5
    assert both.notes == (
        "style waves's defaults from the style library: strength 0.2 (not used: its "
        "style_weight 5.0 decides), style_weight 5.0",
    )
    (folders.styles / "waves.json").unlink()
    library = StyleLibrary.from_settings(settings)
    plain = resolve(_pair(folders, "other.jpg", {"style": "waves"}), settings, library)
    assert plain.notes == ()
    # In a blend only the heaviest style's apply; the others' are named (a photographer's
    # trial: dropped without a word).
    lighter = [{"name": "waves", "weight": 2}, {"name": "mosaic"}]
    mixed = resolve(_pair(folders, "blend.jpg", {"style": lighter}), settings, library)
    assert mixed.notes == (
        "style waves has no defaults in the style library; mosaic's left out: a blend takes "
        "the heaviest style's (the first among equals)",
    )
    heavier = [{"name": "mosaic", "weight": 2}, {"name": "waves"}]
    mixed = resolve(_pair(folders, "blend2.jpg", {"style": heavier}), settings, library)
    assert mixed.notes == ("style mosaic's defaults from the style library: strength 0.3",)
    spool = _spool(settings)
    job = _claim(spool, settings, _pair(folders, "third.jpg", {"style": "mosaic"}))
    assert job.params.strength == 0.3


def test_a_start_after_an_unrecorded_return_to_the_queue_is_recorded(folders: Folders) -> None:
    """A newcomer's reading: with the state folder full, a job's way back to the queue (a
    retry) may go unrecorded, and its next start asked for RUNNING -> RUNNING, which the table
    refuses: the job ran on without its progress file or its start counted."""
    from daemon.pool.events import Started

    settings = _settings(folders)
    job = _claim(_spool(settings), settings, _pair(folders, "photo.jpg", {"style": "mosaic"}))
    lifecycle = _lifecycle(settings)
    lifecycle.store.move(job.id, State.RUNNING, started=True)  # then back to the pool, unrecorded
    lifecycle.at_work.started(job, Started(job.id, worker=2, device="cpu"))
    row = lifecycle.store.get(job.id)
    assert row is not None and row.state is State.RUNNING and row.starts == 2
    moves = [(t.old, t.new) for t in lifecycle.store.transitions(job.id)]
    assert moves[-2:] == [("running", "queued"), ("queued", "running")]
    assert job.id in lifecycle.running
    assert (folders.outbox / "photo.progress.json").exists()


def test_a_kept_photo_whose_inode_change_time_alone_moved_is_read_once(tmp_path: Path) -> None:
    """An operator's trial: after a chmod, a kept photo whose sidecar had gone was read in
    full again at every start (its record was refreshed on the pair's path alone). Its record
    takes the new inode change time the first time it is compared by content, whichever way;
    content changed under the same mtime and inode is still a new file."""
    from daemon import safefs
    from daemon.jobs.in_place import AnsweredInPlace

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    photo = inbox / "p.jpg"
    photo.write_bytes(b"x" * 5000)
    store = Store(tmp_path)
    store.create("j1", State.CLAIMING, "p.jpg")
    kept = AnsweredInPlace(inbox, store)
    read = safefs.version(os.stat(photo), hashlib.sha256(photo.read_bytes()).hexdigest())
    kept.remember_read(photo, [read, None], "j1")
    assert kept.answered_as_is(photo)
    photo.chmod(0o600)
    ctime = os.stat(photo).st_ctime_ns
    assert ctime != read[3]
    assert kept.answered_alone(photo)  # the lone photo's path: compared by content
    [record, _] = store.seen("p.jpg") or []
    assert record is not None and record[3] == ctime and record[4] == read[4]
    mtime = os.stat(photo).st_mtime_ns
    with photo.open("r+b") as handle:  # written over in place, its mtime put back
        handle.write(b"y")
    os.utime(photo, ns=(mtime, mtime))
    assert not kept.answered_as_is(photo)
    assert not kept.already_handled([photo, None])
