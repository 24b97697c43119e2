"""`stylefold doctor` with backend = "ray": the cluster answers within ray_connect_timeout,
holds the actors the settings ask for, and runs the daemon's stylefold version on every node.
One short-lived driver process asks (daemon.pool.ray_backend.probe_cluster), so a cluster that
does not answer costs ray_connect_timeout at most, and an address that refuses, nothing."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from functools import cache

from daemon.config import Settings
from daemon.pool.api import ClusterUnavailable, PoolError, SetupError
from daemon.pool.ray_protocol import NOTHING_ANSWERS, Connected

# How long doctor waits for a TCP answer before leaving it to the full probe.
REFUSED_WAIT = 3.0

RayCheck = tuple[str, Callable[[], tuple[bool, str]]]


def ray_checks(settings: Settings) -> list[RayCheck]:
    if settings.ray_address == "local":
        return [("ray", lambda: _local(settings))]

    @cache
    def probe() -> tuple[Connected | PoolError, float]:
        from daemon.pool.ray_backend import probe_cluster

        started = time.monotonic()
        if (refused := _refused_now(settings.ray_address)) is not None:
            return refused, time.monotonic() - started
        try:
            found: Connected | PoolError = probe_cluster(
                settings.ray_address, settings.ray_connect_timeout
            )
        except PoolError as exc:
            found = exc
        return found, time.monotonic() - started

    def reachable() -> tuple[bool, str]:
        found, seconds = probe()
        if isinstance(found, PoolError):
            if isinstance(found, SetupError):  # the wrong port, or no ray: it says what to do
                return False, f"ray: {found}"
            return False, (
                f"ray: {found}; start the cluster (systemctl start ray-head) or fix ray_address"
            )
        nodes = ", ".join(node.name for node in found.nodes)
        return True, (
            f"ray: {settings.ray_address} answers ({seconds:.1f} s): "
            f"{len(found.nodes)} node(s): {nodes}"
        )

    def resources() -> tuple[bool, str]:
        from daemon.pool.ray_backend import misfit

        found, _ = probe()
        if isinstance(found, PoolError):
            return False, f"ray resources: unknown, {_unasked(found)}"
        text = f"ray resources: {found.cpus:g} CPUs, {found.gpus} GPUs"
        problem = misfit(found, settings.ray_cpu_actors, settings.ray_actor_cpus)
        if problem is not None:
            return False, f"{text}; {problem}"
        return True, (
            f"{text}: room for {found.gpus} GPU actor(s) and {settings.ray_cpu_actors} CPU "
            f"actor(s) of {settings.ray_actor_cpus} CPU(s)"
        )

    def versions() -> tuple[bool, str]:
        found, _ = probe()
        if isinstance(found, PoolError):
            return False, f"ray versions: unknown, {_unasked(found)}"
        named = "; ".join(
            [f"{node.name} runs {node.version}" for node in found.strangers()]
            + [f"{node.name} did not answer (is stylefold installed?)" for node in found.silent()]
        )
        if not named:
            return True, f"ray versions: every node runs stylefold {found.version}"
        return False, (
            f"ray versions: {named}; the daemon runs {found.version} and refuses actors of "
            "another version: install the same version on every node "
            "(from a checkout, the same code)"
        )

    return [("ray", reachable), ("ray resources", resources), ("ray versions", versions)]


def _local(settings: Settings) -> tuple[bool, str]:
    """The private cluster is this machine: what the daemon would find, without starting it."""
    import torch

    from daemon.pool.ray_backend import local_cluster, misfit

    found = local_cluster(
        settings.ray_cpu_actors, settings.ray_actor_cpus, torch.cuda.device_count()
    )
    text = (
        "ray: ray_address is local: the daemon starts a private cluster of this machine "
        f"({found.cpus:g} CPUs, {found.gpus} GPUs)"
    )
    problem = misfit(found, settings.ray_cpu_actors, settings.ray_actor_cpus)
    return (True, text) if problem is None else (False, f"{text}; {problem}")


def _unasked(problem: PoolError) -> str:
    """Why the cluster could not be asked: it did answer, as the wrong kind of port (a
    re-test read "did not answer" after "answers, but not as ...")."""
    return (
        "see the ray line above"
        if isinstance(problem, SetupError)
        else "the cluster did not answer"
    )


def _refused_now(address: str) -> ClusterUnavailable | None:
    """Why nothing can answer at `address` now, when that is known at once (connection refused,
    an unknown host): doctor says so then, where the daemon waits ray_connect_timeout for a
    cluster that may be booting (an operator's trial: doctor sat 30 s on a refused address).
    None for a timeout, "auto", or something listening."""
    from daemon.pool.ray_connect import endpoint, shown

    target = endpoint(address)
    if target is None:
        return None
    try:
        with socket.create_connection(target, timeout=REFUSED_WAIT):
            return None
    except TimeoutError:
        return None
    except OSError as exc:
        return ClusterUnavailable(f"{NOTHING_ANSWERS} {shown(target)} ({exc})")
