"""The optional Prometheus endpoint: queue length, jobs by outcome, job duration, GPU memory,
and what an admin must act on: blocked answers, failed outbox writes, ready workers, a GPU host
running on the CPU.

prometheus-client is the optional extra `metrics` and is imported only when the endpoint is
turned on, so a daemon without it runs unchanged. Each `Metrics` owns its own CollectorRegistry:
a reload (or a test) that starts a second endpoint never collides with the first one's series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import threading
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import Counter, Gauge, Histogram

OUTCOMES = ("done", "failed", "rejected", "reused", "skipped", "retried")
"""What became of a job attempt: rendered, failed for good, rejected (the sender's input: a bad
sidecar, an unknown style, a photo its worker refused as damaged or too costly to decode),
answered from an earlier result, skipped as sent again (the earlier answer stands), retried.
Rejections are apart from failures so that an alert on failures is not set off by what senders
get wrong."""

# Style transfer takes seconds on a GPU and many minutes on a CPU: buckets span both.
DURATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)


MISSING_EXTRA = (
    "metrics_port is set but prometheus-client is not installed: "
    "pip install 'stylefold[metrics]', or unset metrics_port"
)


class MetricsError(RuntimeError):
    """The endpoint was asked for and cannot run; the message says what to change."""


@dataclass(frozen=True)
class _Instruments:
    queue: Gauge
    jobs: Counter
    duration: Histogram
    gpu_memory: Gauge
    blocked: Gauge
    outbox_errors: Counter
    ready_workers: Gauge
    gpu_fallback: Gauge


@dataclass(frozen=True)
class _Endpoint:
    server: WSGIServer
    thread: threading.Thread
    instruments: _Instruments


class Metrics:
    """Counters the daemon updates; every method is a no-op on `Metrics.disabled()`."""

    def __init__(self, endpoint: _Endpoint | None = None) -> None:
        self._endpoint = endpoint

    @classmethod
    def disabled(cls) -> Metrics:
        return cls()

    @classmethod
    def start(cls, host: str, port: int) -> Metrics:
        """Serve /metrics on host:port (port 0 picks a free one; see `port`)."""
        try:
            import prometheus_client as prom
        except ImportError as exc:
            raise MetricsError(MISSING_EXTRA) from exc
        registry = prom.CollectorRegistry()
        prom.ProcessCollector(registry=registry)
        jobs = prom.Counter(
            "stylefold_jobs", "Job attempts by outcome.", ["outcome"], registry=registry
        )
        duration = prom.Histogram(
            "stylefold_job_duration_seconds",
            "Wall time of a job attempt, by outcome.",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        for outcome in OUTCOMES:  # export zeros, so rates work before the first job
            jobs.labels(outcome)
            duration.labels(outcome)
        instruments = _Instruments(
            queue=prom.Gauge(
                "stylefold_queue_length", "Jobs waiting or running.", registry=registry
            ),
            jobs=jobs,
            duration=duration,
            gpu_memory=prom.Gauge(
                "stylefold_gpu_memory_bytes",
                "Peak GPU memory of the last finished job (0 on CPU).",
                registry=registry,
            ),
            blocked=prom.Gauge(
                "stylefold_blocked_jobs",
                "Jobs whose answer or originals wait: the outbox, the state folder or the "
                "originals' way out refused them (retried).",
                registry=registry,
            ),
            outbox_errors=prom.Counter(
                "stylefold_outbox_write_errors",
                "Failed attempts to write an answer into the outbox.",
                registry=registry,
            ),
            ready_workers=prom.Gauge(
                "stylefold_ready_workers",
                "Workers that have loaded the network.",
                registry=registry,
            ),
            gpu_fallback=prom.Gauge(
                "stylefold_gpu_fallback",
                "1 when an NVIDIA driver is present but CUDA is unusable, so jobs run on the CPU.",
                registry=registry,
            ),
        )
        try:
            server, thread = prom.start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise MetricsError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; "
                "choose another metrics_port or metrics_host"
            ) from exc
        return cls(_Endpoint(server, thread, instruments))

    @property
    def enabled(self) -> bool:
        return self._endpoint is not None

    @property
    def port(self) -> int | None:
        """The port actually bound (useful when started on port 0), None when disabled."""
        return None if self._endpoint is None else int(self._endpoint.server.server_address[1])

    def set_queue(self, n: int) -> None:
        if self._endpoint is not None:
            self._endpoint.instruments.queue.set(n)

    def job_finished(self, outcome: str, seconds: float | None) -> None:
        """`seconds` of the attempt; None where none ran (a rejection) or its start is not
        known (published after a restart): counted, not timed."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown job outcome {outcome!r}; expected one of {OUTCOMES}")
        if self._endpoint is not None:
            self._endpoint.instruments.jobs.labels(outcome).inc()
            if seconds is not None:
                self._endpoint.instruments.duration.labels(outcome).observe(seconds)

    def set_gpu_memory(self, n_bytes: int) -> None:
        if self._endpoint is not None:
            self._endpoint.instruments.gpu_memory.set(n_bytes)

    def set_health(self, *, blocked: int, ready_workers: int) -> None:
        if self._endpoint is not None:
            self._endpoint.instruments.blocked.set(blocked)
            self._endpoint.instruments.ready_workers.set(ready_workers)

    def outbox_write_failed(self) -> None:
        if self._endpoint is not None:
            self._endpoint.instruments.outbox_errors.inc()

    def set_gpu_fallback(self, fallback: bool) -> None:
        if self._endpoint is not None:
            self._endpoint.instruments.gpu_fallback.set(int(fallback))

    def stop(self) -> None:
        """Close the listening socket, so a reload can bind the same port again."""
        endpoint, self._endpoint = self._endpoint, None
        if endpoint is None:
            return
        endpoint.server.shutdown()
        endpoint.server.server_close()
        endpoint.thread.join(timeout=5)
