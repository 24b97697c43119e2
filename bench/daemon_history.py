"""The daemon's own CPU per job on a fresh state database and on one holding a long history.

A daemon that runs for months keeps up to `KEEP_FINISHED` finished jobs. This starts `stylefold
run` on temporary folders, drops `--jobs` pairs at once and divides the daemon process's user
and system CPU (not its workers') by the jobs done; then it stops the daemon, copies the
finished jobs' rows (and their transitions) until the database holds `--history` of them,
starts it again and repeats the burst. `--drop N` adds one burst of N pairs on the fresh
database: the queue a first sync of a phone's whole camera roll makes.

    python -m bench.daemon_history [--jobs 100] [--history 10000] [--rounds 2] [--drop 1000]

A soak trial found the figure growing with the history (status queries read every finished
job); the two lines printed should be close.
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from bench.daemon_latency import REPO, Run, cpu_seconds, launch, photo, prepare
from daemon.jobs.store import DB_FILE


def _burst(run: Run, first: int, jobs: int) -> float:
    """Milliseconds of the daemon's CPU per job for `jobs` pairs dropped at once."""
    inbox = run.folder / "inbox"
    done = len(run.events("job.done"))
    before = cpu_seconds(run.process.pid)
    for index in range(first, first + jobs):
        (inbox / f"p{index}.json").write_text('{"style": "mosaic"}')
        (inbox / f"p{index}.jpg").write_bytes(photo(index, (64, 48)))
    run.wait_for("job.done", done + jobs, 60 + 5 * jobs)
    return 1000 * (cpu_seconds(run.process.pid) - before) / jobs


def _grow_history(database: Path, target: int) -> int:
    """Copies of the finished jobs (new ids, same records) until `target` rows; the count."""
    db = sqlite3.connect(database)
    with db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(jobs)")]
        rows = db.execute(f"SELECT {', '.join(columns)} FROM jobs WHERE state = 'done'").fetchall()
        marks = ", ".join("?" * len(columns))
        count = db.execute("SELECT count(*) FROM jobs").fetchone()[0]
        copy = 0
        while count < target and rows:
            for row in rows[: target - count]:
                copy += 1
                job_id = f"{row[0]}-copy{copy}"
                db.execute(
                    f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({marks})", (job_id, *row[1:])
                )
                db.execute(
                    "INSERT INTO transitions (job_id, at, from_state, to_state, note) "
                    "SELECT ?, at, from_state, to_state, note FROM transitions WHERE job_id = ?",
                    (job_id, row[0]),
                )
            count = db.execute("SELECT count(*) FROM jobs").fetchone()[0]
    db.close()
    return int(count)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100, help="pairs per burst")
    parser.add_argument("--history", type=int, default=10_000, help="finished jobs to grow to")
    parser.add_argument("--rounds", type=int, default=2, help="bursts on each database")
    parser.add_argument(
        "--drop", type=int, default=0, help="then, on the fresh database, one burst this big"
    )
    args = parser.parse_args(argv)
    settings = argparse.Namespace(settle=0.3, poll_interval=2.0, size=32, iterations=2)

    from bench.machine import describe

    print(json.dumps(describe("cpu", REPO)))
    with tempfile.TemporaryDirectory(prefix="stylefold-bench-history-") as tmp:
        root = Path(tmp)
        prepare(root, "native", settings)
        sent = 0
        for label in ("fresh database", "long history"):
            if label == "long history":
                rows = _grow_history(root / "state" / DB_FILE, args.history)
                label = f"{rows} jobs in the database"
            run = launch(root)
            try:
                figures = []
                sizes = [args.jobs] * args.rounds
                if args.drop and label == "fresh database":
                    sizes.append(args.drop)
                for size in sizes:
                    figures.append(_burst(run, sent, size))
                    sent += size
            finally:
                run.process.send_signal(signal.SIGTERM)
                run.process.wait(60)
            shown = ", ".join(
                f"{f:.1f} ms ({n} pairs)" for f, n in zip(figures, sizes, strict=True)
            )
            print(f"{label}: daemon CPU per job {shown}")
            time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
