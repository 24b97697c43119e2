"""A flood of files that each get a report, and one good pair beside it: `stylefold run` on
temporary folders, N empty photos dropped into `inbox/flood/`, then a good pair at the top of
the inbox two seconds later. Prints how long until every report was written, how long the
good pair took to be answered, the reports per second in each fifth of the flood (flat
when each report costs the same however many came before), and the oldest `status` was
(state/status.json's age, looked at twice a second: the daemon rewrites it at least every
2 s while its loop turns), and the daemon's resident memory before and after (the files stay
in the inbox, each tracked: an upper bound of what a file left there costs).

    python -m bench.flood --files 6000
    python -m bench.flood --files 20000 --daemon-src /path/to/an/older/checkout
    python -m bench.flood --files 2000 --broken-sidecars

`--broken-sidecars` gives each empty photo a sidecar that is not JSON (`{`): pairs that the
intake emits and a claim rejects, where lone photos are reported by the intake itself.

`--daemon-src` runs the daemon from another checkout (the same flood before and after a change,
one after the other on the same machine).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import machine
from bench.daemon_latency import REPO, photo

SETTINGS = """\
settle_seconds = 0.2
poll_interval = 0.2
pair_timeout = 2.0
arriving_timeout = 2.0
log_format = "json"
[defaults]
size = 48
iterations = 2
"""


@dataclass(frozen=True)
class Flood:
    all_reported_s: float  # from the first empty photo dropped to the last report written
    reporting_s: float  # from the first report written to the last
    good_pair_s: float  # from the good pair dropped to its answer
    rates: list[float]  # reports per second in each fifth of the flood
    status_age_s: float  # the oldest status.json was, from the flood's start to its end
    rss_before_mib: float  # the daemon's (not its workers') resident memory before the flood
    rss_after_mib: float  # ... once every file was reported (each still in the inbox, tracked)


def flood(files: int, source: Path, broken_sidecars: bool = False) -> Flood:
    with tempfile.TemporaryDirectory(prefix="stylefold-flood-") as tmp:
        root = Path(tmp)
        for name in ("inbox/flood", "outbox", "styles", "state"):
            (root / name).mkdir(parents=True)
        (root / "styles" / "mosaic.jpg").write_bytes(photo(999, (64, 48)))
        folders = "".join(
            f'{name} = "{root / name}"\n' for name in ("inbox", "outbox", "styles", "state")
        )
        config = root / "stylefold.toml"
        config.write_text(folders + 'devices = ["cpu"]\n' + SETTINGS)
        env = {**os.environ, "PYTHONPATH": str(source)}
        with (root / "daemon.log").open("wb") as log:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)],
                cwd=source, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            while b"daemon.ready" not in (root / "daemon.log").read_bytes():
                time.sleep(0.2)
            rss_before = _rss_mib(daemon.pid)
            began = time.monotonic()
            for index in range(files):
                (root / "inbox" / "flood" / f"e{index:06d}.jpg").touch()
                if broken_sidecars:
                    (root / "inbox" / "flood" / f"e{index:06d}.json").write_text("{")
            time.sleep(2)
            (root / "inbox" / "good.jpg").write_bytes(photo(1, (64, 48)))
            (root / "inbox" / "good.json").write_text(json.dumps({"style": "mosaic"}))
            dropped = time.monotonic()
            good, reported, counts, oldest = None, 0, [], 0.0
            status = root / "state" / "status.json"
            answers = root / "outbox" / "flood"
            while reported < files or good is None:
                if good is None and (root / "outbox" / "good.stylised.jpg").exists():
                    good = time.monotonic() - dropped
                reported = sum(1 for _ in answers.glob("*.error.json")) if answers.is_dir() else 0
                counts.append((time.monotonic(), reported))
                oldest = max(oldest, time.time() - status.stat().st_mtime)
                time.sleep(0.5)
            ended = time.monotonic()
            time.sleep(2)  # a turn or two after the last report
            rss_after = _rss_mib(daemon.pid)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(60)
    first = next(at for at, count in counts if count > 0)
    rates = []
    for fifth in range(5):
        low, high = files * fifth // 5, files * (fifth + 1) // 5
        start = next(at for at, count in counts if count >= max(low, 1))
        end = next(at for at, count in counts if count >= high)
        rates.append((high - low) / max(end - start, 0.5))
    return Flood(ended - began, ended - first, good or 0.0, rates, oldest, rss_before, rss_after)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=6000)
    parser.add_argument("--daemon-src", type=Path, default=REPO, help="a checkout to run")
    parser.add_argument("--broken-sidecars", action="store_true")
    args = parser.parse_args()
    print(json.dumps(machine.describe("cpu", args.daemon_src)))
    result = flood(args.files, args.daemon_src.resolve(), args.broken_sidecars)
    rates = ", ".join(f"{rate:.0f}" for rate in result.rates)
    what = "empty photos with broken sidecars" if args.broken_sidecars else "empty photos"
    inbox_files = args.files * (2 if args.broken_sidecars else 1)
    print(
        f"{args.files} {what}: all reported after {result.all_reported_s:.1f} s "
        f"({result.reporting_s:.1f} s from the first report); the good pair answered "
        f"{result.good_pair_s:.1f} s after it was dropped; reports/s by fifth: {rates}; "
        f"status at most {result.status_age_s:.1f} s old; the daemon's RSS "
        f"{result.rss_before_mib:.1f} MiB before, {result.rss_after_mib:.1f} MiB after "
        f"({(result.rss_after_mib - result.rss_before_mib) * 1024 / inbox_files:.2f} KiB "
        f"for each of the {inbox_files} files left in the inbox)"
    )


if __name__ == "__main__":
    main()
