"""The job lifecycle's rules (daemon.jobs.states) and their durable record (daemon.jobs.store)."""

from __future__ import annotations

import itertools
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CLI, REPO, Folders

from daemon.exitcodes import ExitCode
from daemon.jobs.states import (
    ACTIVE,
    ANSWERED_INTO,
    ANSWERING,
    END_OF,
    ENDS_WITH_REPORT,
    ENDS_WITH_RESULT,
    MOVING_ORIGINALS,
    NEW,
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    State,
    check,
)
from daemon.jobs.store import NEWER_FIX, Answer, NewerStateError, Store
from daemon.jobs.store_schema import SCHEMA, STATE_FORMAT
from daemon.status import read_status
from daemon.supervision import exit_code_for


def test_every_state_has_its_rules_and_terminal_states_lead_nowhere() -> None:
    assert set(TRANSITIONS) == set(State)
    assert set(State) == ACTIVE | TERMINAL and not ACTIVE & TERMINAL
    for state in TERMINAL:
        assert TRANSITIONS[state] == frozenset()
    # Every active state can reach an end.
    for state in ACTIVE:
        seen, frontier = {state}, [state]
        while frontier:
            for nxt in TRANSITIONS[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert seen & TERMINAL, state


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (None, State.QUEUED),
        (State.QUEUED, State.DONE),
        (State.RUNNING, State.RELEASING),
        (State.DONE, State.QUEUED),
        (State.BLOCKED, State.RELEASING),
        (State.BROKEN, State.BROKEN),
        (State.QUEUED, State.SKIPPED),  # a skip is recorded (publishing), then released
        (State.SKIPPED, State.QUEUED),
    ],
)
def test_illegal_transitions_are_refused(old: State | None, new: State) -> None:
    with pytest.raises(IllegalTransition):
        check(old, new)


def test_every_listed_transition_is_allowed() -> None:
    for old, targets in TRANSITIONS.items():
        for new in targets:
            check(old, new)
    for new in NEW:
        check(None, new)
    for old in ACTIVE:
        check(old, State.BROKEN)


def test_each_outcome_ends_where_the_transitions_lead_once_its_answer_is_out() -> None:
    # A report ends the moment it is written; the others pass RELEASING, in which the originals
    # leave the spool. Either way the answer is out on entering one of ANSWERED_INTO.
    for outcome, end in END_OF.items():
        landed = State.REJECTED if outcome == "report" else State.RELEASING
        assert landed in ANSWERED_INTO & TRANSITIONS[State.PUBLISHING]
        assert landed is end or end in TRANSITIONS[landed]
    assert set(END_OF.values()) == ENDS_WITH_RESULT | ENDS_WITH_REPORT
    assert not ENDS_WITH_RESULT & ENDS_WITH_REPORT and ENDS_WITH_RESULT <= TERMINAL
    # What a restart takes up: an answer being written, or retried after a block (a blocked
    # report may also end unwritten, outdated by its input)...
    outdated = {State.ROLLED_BACK}
    assert {State.PUBLISHING} | {
        s for s in State if TRANSITIONS[s] - outdated == {State.PUBLISHING}
    } == ANSWERING
    # ...and originals on their way, rolled back.
    rolled_back = {s for s in ACTIVE if State.ROLLED_BACK in TRANSITIONS[s]}
    assert rolled_back == MOVING_ORIGINALS | {State.BLOCKED}


def test_a_job_s_life_is_journalled_and_survives_reopening(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.create("j1", State.CLAIMING, "trip/photo.jpg")
    store.move("j1", State.QUEUED, note="claimed")
    store.move("j1", State.RUNNING, started=True)
    store.move("j1", State.QUEUED, reason="crash", note="retry")
    store.move("j1", State.RUNNING, started=True)
    store.move("j1", State.PUBLISHING, outcome="result")
    store.close()

    again = Store(tmp_path)
    row = again.get("j1")
    assert row is not None
    assert row.state is State.PUBLISHING and row.outcome == "result" and row.starts == 2
    assert row.reason == "crash"  # kept until a transition changes it
    history = [(t.old, t.new) for t in again.transitions("j1")]
    assert history == [
        (None, "claiming"),
        ("claiming", "queued"),
        ("queued", "running"),
        ("running", "queued"),
        ("queued", "running"),
        ("running", "publishing"),
    ]
    assert [r.id for r in again.active()] == ["j1"]
    with pytest.raises(IllegalTransition):
        again.move("j1", State.RUNNING)
    assert again.get("j1").state is State.PUBLISHING  # type: ignore[union-attr]
    again.move("j1", State.RELEASING)
    again.move("j1", State.DONE)
    assert again.active() == [] and [r.id for r in again.finished(10)] == ["j1"]
    assert again.counts() == {"done": 1}


def test_losses_with_the_cluster_are_counted_with_the_job_only_when_said(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.create("j1", State.CLAIMING, "photo.jpg")
    store.move("j1", State.QUEUED)
    for lost in (True, False, True):  # lost, the daemon stopped, lost
        store.move("j1", State.RUNNING, started=True)
        store.move("j1", State.QUEUED, note="put back in the queue", lost=lost)
    store.close()
    row = Store(tmp_path).get("j1")
    assert row is not None and (row.starts, row.lost) == (3, 2)


def test_a_database_without_the_lost_column_is_read_then_upgraded(tmp_path: Path) -> None:
    """A state folder of the previous release: `status` reads it as it is (the old daemon may
    still run), the new daemon adds the column when it opens it."""
    old = sqlite3.connect(tmp_path / "stylefold.db")
    old.executescript(SCHEMA.replace(",\n    lost INTEGER NOT NULL DEFAULT 0", ""))
    old.execute("INSERT INTO jobs (id, state, since, input, starts) VALUES ('j1','queued',1,'a',2)")
    old.commit()
    assert "lost" not in {row[1] for row in old.execute("PRAGMA table_info(jobs)")}
    old.close()
    row = Store(tmp_path, readonly=True).get("j1")
    assert row is not None and (row.state, row.starts, row.lost) == (State.QUEUED, 2, 0)

    store = Store(tmp_path)
    store.move("j1", State.RUNNING)
    store.move("j1", State.QUEUED, lost=True)
    assert [(r.id, r.starts, r.lost) for r in store.active()] == [("j1", 2, 1)]


def test_renders_again_of_an_older_database_are_counted_once_into_their_column(
    tmp_path: Path,
) -> None:
    """A newcomer's reading: a job's renders again for a vanished result were counted from
    the journal's note, which a rewording would have reset. They have a column now; a database
    of an earlier release gets its notes counted into it when the daemon opens it."""
    old = sqlite3.connect(tmp_path / "stylefold.db")
    old.executescript(SCHEMA)
    old.execute("INSERT INTO jobs (id, state, since, input) VALUES ('j1','queued',1,'a')")
    for note in ("rendered again", "on cpu (worker 1)", "rendered again"):
        old.execute(
            "INSERT INTO transitions (job_id, at, from_state, to_state, note) "
            "VALUES ('j1', 1, 'publishing', 'queued', ?)",
            (note,),
        )
    old.commit()
    old.close()
    assert (row := Store(tmp_path, readonly=True).get("j1")) is not None
    assert row.rendered_again == 0  # read as it is, before the daemon upgrades it
    store = Store(tmp_path)
    assert (row := store.get("j1")) is not None and row.rendered_again == 2
    store.move("j1", State.RUNNING)
    store.move("j1", State.PUBLISHING, outcome="result")
    store.move("j1", State.QUEUED, note="reworded", rendered_again=True)
    assert (row := store.get("j1")) is not None and row.rendered_again == 3


def test_a_withdrawn_report_s_end_reads_from_an_older_database_then_is_marked(
    tmp_path: Path,
) -> None:
    """`status` lists ends of a database not yet upgraded (the old daemon may still run) as
    not withdrawn; the new daemon marks one whose report went with its input."""
    old = sqlite3.connect(tmp_path / "stylefold.db")
    old.executescript(SCHEMA)
    old.execute("INSERT INTO jobs (id, state, since, input) VALUES ('j1','rejected',1,'a.jpg')")
    old.commit()
    old.close()
    assert [(e.id, e.withdrawn) for e in Store(tmp_path, readonly=True).ends(5)] == [("j1", False)]
    store = Store(tmp_path)
    store.withdrawn("j1")
    assert [(e.id, e.withdrawn) for e in store.ends(5)] == [("j1", True)]
    assert (row := store.get("j1")) is not None and row.withdrawn == 1


def test_a_photo_sent_again_ends_skipped_through_publishing_and_releasing(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.create("j2", State.CLAIMING, "photo.jpg")
    store.move("j2", State.QUEUED)
    store.move("j2", State.PUBLISHING, outcome="skip")
    store.move("j2", State.RELEASING, note="photo.stylised.jpg")
    store.move("j2", State.SKIPPED)
    assert State.SKIPPED in TERMINAL and store.active() == []
    assert store.counts() == {"skipped": 1}


def test_the_database_is_wal_and_readable_while_written(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.create("j1", State.CLAIMING, "photo.jpg")
    reader = Store(tmp_path, readonly=True)
    assert reader.get("j1") is not None
    mode = sqlite3.connect(tmp_path / "stylefold.db").execute("PRAGMA journal_mode").fetchone()
    assert mode == ("wal",)
    with pytest.raises(OSError):
        reader.create("j2", State.CLAIMING, "other.jpg")


@pytest.mark.parametrize("name", ["state?mode=rw#1", "100% state", "état ünïcode"])
def test_the_database_reads_in_any_folder_name(tmp_path: Path, name: str) -> None:
    """The read-only open goes through an SQLite URI, where '?', '#' and '%' have meanings."""
    state = tmp_path / name
    state.mkdir()
    Store(state).create("j1", State.CLAIMING, "photo.jpg")
    reader = Store(state, readonly=True)
    assert reader.get("j1") is not None
    with pytest.raises(OSError):
        reader.create("j2", State.CLAIMING, "other.jpg")


def test_answers_seen_files_and_pruning(tmp_path: Path) -> None:
    store = Store(tmp_path)
    answer = Answer("k", "j1", tmp_path / "o.jpg", "abc", tmp_path / "o.manifest.json")
    store.record_answer(answer)
    assert store.answer_for("k") == answer and store.answer_for("other") is None
    store.remember("a/photo.jpg", [[10, 20], None], "j1")
    assert store.seen("a/photo.jpg") == [[10, 20], None]
    store.forget_seen(["a/photo.jpg"])
    assert store.seen("a/photo.jpg") is None
    for index in range(5):
        store.create(f"r{index}", State.PUBLISHING, "x.jpg", outcome="report")
        store.move(f"r{index}", State.REJECTED)
    assert store.prune(keep=2).jobs == 3
    assert [row.id for row in store.finished(10)] == ["r4", "r3"]
    assert store.transitions("r0") == []


def test_a_file_answered_for_another_input_is_told_apart(tmp_path: Path) -> None:
    """A style image a sidecar brought along is remembered with the job of the photo it
    styled; a reported photo (its name not UTF-8 here) with its own job."""
    store = Store(tmp_path)
    odd = os.fsdecode(b"caf\xe9.jpg")
    store.create("j1", State.PUBLISHING, "a/photo.jpg", outcome="result")
    store.create("j2", State.PUBLISHING, odd, outcome="report")
    store.remember("a/mine.jpg", [[10, 20]], "j1")
    store.remember("a/photo.jpg", [[10, 20], None], "j1")
    store.remember(odd, [[10, 20]], "j2")
    store.remember("gone.jpg", [[10, 20]], "pruned")
    assert store.seen_for_another("a/mine.jpg")
    assert not store.seen_for_another("a/photo.jpg")
    assert not store.seen_for_another(odd)
    assert not store.seen_for_another("gone.jpg") and not store.seen_for_another("never.jpg")


def test_answers_are_pruned_oldest_first(tmp_path: Path) -> None:
    """Found in a soak trial's database: answers (about 0.7 KB each) were never pruned, so a
    GPU daemon answering 3,000 photos an hour grew it by 1.5 GB a month."""
    store = Store(tmp_path)
    for index in range(8):
        answer = Answer(f"k{index}", f"j{index}", tmp_path / f"o{index}.jpg", "abc", tmp_path)
        store.record_answer(answer)
        store.record_input_answer(f"photo{index}.jpg", answer)
        time.sleep(0.002)  # `at` orders them
    pruned = store.prune(keep_answers=3)
    assert pruned.answers == 10 and pruned.jobs == 0
    kept = [store.answer_for(f"k{index}") is not None for index in range(8)]
    assert kept == [False] * 5 + [True] * 3
    assert store.input_answer("photo4.jpg", "k4") is None
    assert store.input_answer("photo5.jpg", "k5") is not None
    assert store.prune(keep_answers=3).answers == 0


def _work(store: Store, ask: Callable[[], object]) -> int:
    """SQLite virtual-machine steps (in thousands) that `ask` costs on the store's connection:
    a measure of the rows it visits, without a clock."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0  # go on

    store._db.set_progress_handler(count, 1000)
    try:
        ask()
    finally:
        store._db.set_progress_handler(None, 1000)
    return steps[0]


def test_the_queries_run_at_every_change_do_not_grow_with_the_history(tmp_path: Path) -> None:
    """Found by a soak trial: status is published at every change of a job's state, and its
    queries read every finished job (unfinished ones by `state NOT IN`, the latest ends by
    sorting all of them), so the daemon's CPU per job tripled with a history of 10,000."""
    store = Store(tmp_path)
    for n in range(3):
        store.create(f"20260101-000000-{n:06d}-aaaaaa", State.CLAIMING, f"new{n}.jpg")

    def cost() -> tuple[int, int, int, int]:
        return (
            _work(store, store.active),
            _work(store, lambda: store.finished(50)),
            _work(store, lambda: store.ends(50)),
            _work(store, lambda: store.latest_results(24)),
        )

    def add_history(count: int) -> None:
        """Finished jobs, each with the transitions of a job that was rendered."""
        path = [None, "claiming", "queued", "running", "publishing", "releasing", "done"]
        with sqlite3.connect(tmp_path / "stylefold.db") as db:
            start = db.execute("SELECT count(*) FROM jobs").fetchone()[0]
            ids = [f"20250101-000000-{n:06d}-bbbbbb" for n in range(start, start + count)]
            db.executemany(
                "INSERT INTO jobs (id, state, since, input, record) VALUES (?,?,?,?,?)",
                # The first ends are the newest: their transitions lie at the journal's start.
                [
                    (job, "done", 1e9 - start - n, "old.jpg", "x" * 5000)
                    for n, job in enumerate(ids)
                ],
            )
            db.executemany(
                "INSERT INTO transitions (job_id, at, from_state, to_state, note) "
                "VALUES (?,?,?,?,?)",
                [
                    (job, 0.0, old, new, "old.stylised.jpg")
                    for job in ids
                    for old, new in itertools.pairwise(path)
                ],
            )

    add_history(100)
    small = cost()
    add_history(10_000)
    large = cost()
    assert len(store.active()) == 3 and len(store.finished(50)) == len(store.ends(50)) == 50
    assert len(store.latest_results(24)) == 24
    assert all(large[n] <= small[n] + 2 for n in range(4)), (small, large)


def test_the_recent_ends_name_their_answers_as_their_transitions_do(tmp_path: Path) -> None:
    """`ends` (one query, for status) against the journal read job by job: each end's answer is
    the note of its last move to RELEASING or REJECTED, None without one."""
    store = Store(tmp_path)
    paths = {
        "done": [State.QUEUED, State.RUNNING, State.PUBLISHING, State.RELEASING, State.DONE],
        "again": [  # blocked, then rendered again
            State.QUEUED,
            State.PUBLISHING,
            State.BLOCKED,
            State.PUBLISHING,
            State.QUEUED,
            State.RUNNING,
            State.PUBLISHING,
            State.RELEASING,
            State.DONE,
        ],
        "failed": [State.QUEUED, State.RUNNING, State.PUBLISHING, State.RELEASING, State.FAILED],
        "rolled_back": [State.QUEUED, State.RETURNING, State.ROLLED_BACK],
        "broken": [State.QUEUED, State.BROKEN],
        "still_queued": [State.QUEUED],
    }
    for n, (name, path) in enumerate(paths.items()):
        job = f"20260101-000000-{n:06d}-aaaaaa"
        store.create(job, State.CLAIMING, f"{name}.jpg")
        for step, state in enumerate(path):
            note = "" if name == "failed" else f"{name}-{step}.jpg"
            store.move(job, state, note=note, reason="why" if state == State.FAILED else None)
    store.create("20260101-000000-000099-aaaaaa", State.PUBLISHING, "lonely.json")
    store.move("20260101-000000-000099-aaaaaa", State.REJECTED, note="lonely.error.json")

    expected = []
    for row in store.finished(50):
        notes = [
            t.note for t in store.transitions(row.id) if t.new in (State.RELEASING, State.REJECTED)
        ]
        expected.append(
            (row.id, row.state, row.since, row.input, row.reason, notes[-1] if notes else None)
        )
    ends = [(e.id, e.state, e.since, e.input, e.reason, e.answer) for e in store.ends(50)]
    assert ends == expected
    answers = {end.input: end.answer for end in store.ends(50)}
    assert answers == {
        "done.jpg": "done-3.jpg",
        "again.jpg": "again-7.jpg",
        "failed.jpg": "",
        "rolled_back.jpg": None,
        "broken.jpg": None,
        "lonely.json": "lonely.error.json",
    }


def test_a_database_of_a_newer_format_is_refused_untouched(tmp_path: Path) -> None:
    """An operator's trial: rolled back one day, a version set every unfinished job aside as
    broken (its records held fields it did not know). A database says its format; a version
    refuses a newer one, by the daemon (exit 78, not restarted) and by `status`, and writes
    nothing to it."""
    Store(tmp_path).close()
    db = sqlite3.connect(tmp_path / "stylefold.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == STATE_FORMAT
    db.execute(f"PRAGMA user_version = {STATE_FORMAT + 1}")
    db.commit()
    db.close()  # the last connection: the journal is folded into the file
    before = (tmp_path / "stylefold.db").read_bytes()
    for readonly in (False, True):
        with pytest.raises(NewerStateError, match=r"written by a newer stylefold \(state format"):
            Store(tmp_path, readonly=readonly)
    assert (tmp_path / "stylefold.db").read_bytes() == before
    assert exit_code_for(NewerStateError("x")) is ExitCode.CONFIG


def test_the_daemon_and_doctor_refuse_a_state_folder_of_a_newer_version(folders: Folders) -> None:
    Store(folders.state).close()
    db = sqlite3.connect(folders.state / "stylefold.db")
    db.execute(f"PRAGMA user_version = {STATE_FORMAT + 1}")
    db.commit()
    db.close()
    config = str(folders.config())
    for command, code in (("once", ExitCode.CONFIG), ("doctor", 1)):
        done = subprocess.run(
            [*CLI, command, "--config", config],
            cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == code, (command, done.stdout[-2000:], done.stderr[-2000:])
        assert "written by a newer stylefold" in done.stdout + done.stderr, command
    report = read_status(folders.state)
    [item] = report.attention
    assert item.what.startswith("the state database") and "newer stylefold" in item.what
    assert item.fix == NEWER_FIX
