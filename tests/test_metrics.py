"""The Prometheus endpoint, scraped over real HTTP on 127.0.0.1 with an ephemeral port."""

from __future__ import annotations

import socket
import sys
import urllib.request
from collections.abc import Iterator

import pytest

from daemon.metrics import Metrics, MetricsError

prometheus_parser = pytest.importorskip("prometheus_client.parser")


def _scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    url = f"http://127.0.0.1:{metrics.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in prometheus_parser.text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    started = Metrics.start("127.0.0.1", 0)
    yield started
    started.stop()


def test_fresh_endpoint_exports_zeros_for_every_outcome(metrics: Metrics) -> None:
    assert metrics.enabled and metrics.port
    samples = _scrape(metrics)
    for outcome in ("done", "failed", "rejected", "reused", "skipped", "retried"):
        assert samples[("stylefold_jobs_total", (("outcome", outcome),))] == 0
        assert samples[("stylefold_job_duration_seconds_count", (("outcome", outcome),))] == 0
    assert samples[("stylefold_queue_length", ())] == 0
    assert samples[("stylefold_gpu_memory_bytes", ())] == 0


def test_updates_show_in_the_scrape(metrics: Metrics) -> None:
    metrics.set_queue(3)
    metrics.job_finished("done", 42.0)
    metrics.job_finished("done", 8.0)
    metrics.job_finished("retried", 0.5)
    metrics.job_finished("rejected", None)  # nothing ran: counted, not timed
    metrics.set_gpu_memory(1_500_000_000)
    samples = _scrape(metrics)
    assert samples[("stylefold_queue_length", ())] == 3
    assert samples[("stylefold_jobs_total", (("outcome", "done"),))] == 2
    assert samples[("stylefold_jobs_total", (("outcome", "retried"),))] == 1
    assert samples[("stylefold_jobs_total", (("outcome", "failed"),))] == 0
    assert samples[("stylefold_jobs_total", (("outcome", "rejected"),))] == 1
    assert samples[("stylefold_job_duration_seconds_count", (("outcome", "rejected"),))] == 0
    assert samples[("stylefold_job_duration_seconds_sum", (("outcome", "done"),))] == 50.0
    assert (
        samples[("stylefold_job_duration_seconds_bucket", (("le", "10.0"), ("outcome", "done")))]
        == 1
    )
    assert samples[("stylefold_gpu_memory_bytes", ())] == 1_500_000_000


def test_unknown_outcome_is_refused(metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="unknown job outcome 'ok'"):
        metrics.job_finished("ok", 1.0)


def test_two_endpoints_do_not_share_series(metrics: Metrics) -> None:
    other = Metrics.start("127.0.0.1", 0)
    try:
        metrics.set_queue(7)
        assert _scrape(other)[("stylefold_queue_length", ())] == 0
    finally:
        other.stop()


def test_stop_frees_the_port_for_a_reload() -> None:
    first = Metrics.start("127.0.0.1", 0)
    port = first.port
    assert port is not None
    first.stop()
    assert not first.enabled
    first.set_queue(1)  # a stopped endpoint ignores updates
    second = Metrics.start("127.0.0.1", port)
    try:
        assert _scrape(second)[("stylefold_queue_length", ())] == 0
    finally:
        second.stop()


def test_busy_port_gives_a_clear_error() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        with pytest.raises(MetricsError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            Metrics.start("127.0.0.1", port)
    finally:
        holder.close()


def test_missing_prometheus_client_gives_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # makes the import fail
    with pytest.raises(MetricsError, match=r"pip install 'stylefold\[metrics\]'"):
        Metrics.start("127.0.0.1", 0)


def test_disabled_metrics_accept_every_call() -> None:
    metrics = Metrics.disabled()
    assert not metrics.enabled and metrics.port is None
    metrics.set_queue(2)
    metrics.job_finished("failed", 1.0)
    metrics.set_gpu_memory(10)
    metrics.stop()
