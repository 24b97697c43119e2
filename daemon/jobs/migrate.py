"""Upgrading a state folder written before the state database existed (stylefold <= 0.1 kept
each job's record in `spool/<id>/job.json`, claims in progress as `spool/.claim-<id>/` with an
`intent.json`, results in `index/*.json` and answered inbox files in `index/seen/*.json`).

Run once at start-up, before recovery: every old job becomes a QUEUED job in the database (its
originals stay where they are), an interrupted old claim is rolled back into the inbox, and the
old indexes are copied. Each old file is removed only after its content is in the database, so
a crash during the upgrade just repeats it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import structlog
from pydantic import ValidationError

from daemon.fsutil import read_json
from daemon.jobs.record import Job
from daemon.jobs.spool import ClaimIntent, Spool
from daemon.jobs.states import State
from daemon.jobs.store import Answer, Store

log = structlog.get_logger("stylefold.jobs")

OLD_JOB = "job.json"
OLD_INTENT = "intent.json"
OLD_CLAIM = ".claim-"


def migrate(store: Store, spool: Spool, state: Path) -> int:
    """Import an old state folder's records; returns how many jobs were imported."""
    imported = 0
    for folder in sorted(spool.root.iterdir()) if spool.root.is_dir() else []:
        if folder.name.startswith(OLD_CLAIM):
            _roll_back_old_claim(store, spool, folder)
        elif (folder / OLD_JOB).is_file() and store.get(folder.name) is None:
            imported += _import_job(store, folder)
    _import_index(store, state / "index")
    if imported:
        log.warning("state.migrated", jobs=imported, note="jobs from an older version queued")
    return imported


def _import_job(store: Store, folder: Path) -> int:
    try:
        job = Job.model_validate_json((folder / OLD_JOB).read_bytes())
    except (OSError, ValidationError) as exc:
        log.error("state.migration_skipped", folder=str(folder), error=str(exc))
        return 0
    intent = ClaimIntent(rel_dir=job.rel_dir, moves=[])
    store.create(job.id, State.CLAIMING, job.source, detail=intent, note="from an older version")
    store.move(job.id, State.QUEUED, job=job, detail=None, note="imported")
    for name in (OLD_JOB, "started.json"):
        with contextlib.suppress(OSError):
            (folder / name).unlink()
    return 1


def _roll_back_old_claim(store: Store, spool: Spool, folder: Path) -> None:
    """An old claim cut short: its files go back to the inbox, as the old version would have."""
    value = read_json(folder / OLD_INTENT)
    job_id = folder.name.removeprefix(OLD_CLAIM)
    if not isinstance(value, dict):
        if not any(folder.iterdir()):
            folder.rmdir()
        return
    intent = ClaimIntent(
        rel_dir=str(value.get("rel_dir", "")),
        moves=[(str(a), str(b)) for a, b in value.get("moves", [])],
    )
    if store.get(job_id) is None:  # recorded first: a crash after this repeats the roll-back
        store.create(job_id, State.CLAIMING, intent.rel_dir, detail=intent, note="old claim")
    os.rename(folder, spool.job_dir(job_id))
    spool.roll_back(job_id, intent, note="an interrupted claim of an older version")


def _import_index(store: Store, index: Path) -> None:
    for entry in sorted(index.glob("*.json")) if index.is_dir() else []:
        value = read_json(entry)
        if isinstance(value, dict) and {"key", "job_id", "output", "sha256"} <= value.keys():
            store.record_answer(
                Answer(
                    str(value["key"]),
                    str(value["job_id"]),
                    Path(str(value["output"])),
                    str(value["sha256"]),
                    Path(str(value.get("manifest", ""))),
                )
            )
        entry.unlink(missing_ok=True)
    seen = index / "seen"
    for entry in sorted(seen.glob("*.json")) if seen.is_dir() else []:
        value = read_json(entry)
        if isinstance(value, dict) and isinstance(value.get("path"), str):
            store.remember(value["path"], value.get("signatures") or [], str(value.get("job_id")))
        entry.unlink(missing_ok=True)
