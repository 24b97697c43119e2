"""What an admin must act on reaches the metrics and the status report: answers blocked behind
an outbox that cannot be written (how many, why, how often writing failed), and the workers
that are ready. The outbox is a tmpfs remounted read-only as root, else a chmod-read-only
folder."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Callable

import pytest
from conftest import CLI, Folders, image_bytes, mount_tmpfs, start_daemon, wait_for
from test_sdnotify import _free_port

from daemon.status import read_status


def _samples(port: int) -> dict[str, float]:
    parser = pytest.importorskip("prometheus_client.parser")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        sample.name: sample.value
        for family in parser.text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


def _lockable_outbox(folders: Folders) -> tuple[Callable[[], None], Callable[[], None]]:
    if os.geteuid() != 0:
        return lambda: folders.outbox.chmod(0o555), lambda: folders.outbox.chmod(0o755)
    mount_tmpfs(folders.outbox, "4m")

    def remount(mode: str) -> Callable[[], None]:
        return lambda: subprocess.run(["mount", "-o", f"remount,{mode}", str(folders.outbox)])

    return remount("ro"), remount("rw")


@pytest.mark.heavy
def test_blocked_answers_show_in_metrics_and_status(folders: Folders) -> None:
    lock, unlock = _lockable_outbox(folders)
    port = _free_port()
    try:
        daemon = start_daemon(
            folders,
            config=folders.config(metrics_port=port),
            env={"STYLEFOLD_TEST_PUBLISH_RETRY": "0.5"},
        )
        wait_for(lambda: _samples(port)["stylefold_ready_workers"] == 1, 10, "the first report")
        ready = _samples(port)
        lock()
        (folders.inbox / "photo.jpg").write_bytes(image_bytes())
        (folders.inbox / "photo.json").write_text(json.dumps({"style": "mosaic"}))
        refused = daemon.wait_for_log("job.outbox_unwritable", timeout=120)
        assert refused["input"] == "photo.jpg"  # not the job id alone (an operator's trial)
        wait_for(lambda: _samples(port)["stylefold_outbox_write_errors_total"] >= 2, 30, "a retry")
        wait_for(lambda: _samples(port)["stylefold_blocked_jobs"] == 1, 10, "the gauge")
        blocked = _samples(port)
        report = read_status(folders.state)
        assert daemon.stop() == 0
        # Stopped, it tries nothing in a few seconds (an operator's trial: "next try in 17 s").
        stopped = subprocess.run(
            [*CLI, "status", "--config", str(folders.config(metrics_port=port))],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert "tried again when the daemon starts" in stopped.stdout, stopped.stdout
        assert "next try in" not in stopped.stdout
        unlock()
        daemon = start_daemon(folders, config=folders.config(metrics_port=port))
        wait_for((folders.outbox / "photo.manifest.json").exists, 60, "the result")
        wait_for(lambda: _samples(port)["stylefold_blocked_jobs"] == 0, 10, "the gauge")
        assert daemon.stop() == 0
    finally:
        unlock()
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(folders.outbox)], check=False)
    assert ready["stylefold_blocked_jobs"] == 0
    assert ready["stylefold_outbox_write_errors_total"] == 0
    assert blocked["stylefold_outbox_write_errors_total"] >= 2  # the first try and a retry
    assert [job.state for job in report.jobs] == ["blocked"]
    attention = [item for item in report.attention if "outbox" in item.what]
    assert len(attention) == 1, report.attention
    assert attention[0].what == "1 answer(s) cannot be written to the outbox"
    assert attention[0].where and attention[0].where == report.jobs[0].reason
    assert "free space in the outbox or fix its permissions" in attention[0].fix
