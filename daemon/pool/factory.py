"""The pool the settings ask for. The backends are imported here only when chosen: Ray (large,
optional) is imported only for `backend = "ray"`, and neither backend imports the other."""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemon.pool.api import PoolPolicy, WorkerPool
from daemon.pool.core import Members, Pool
from daemon.pool.render import EngineSetup

if TYPE_CHECKING:
    from daemon.config import Settings


def make_pool(settings: Settings) -> WorkerPool:
    """Local worker processes, or actors on a Ray cluster; not started yet."""
    setup = EngineSetup(
        warm_params=settings.defaults, weights=settings.weights, compile=settings.compile
    )
    members: Members
    if settings.backend == "ray":
        from daemon.pool.ray_backend import RayActors

        members = RayActors(
            settings.ray_address,
            settings.ray_cpu_actors,
            setup,
            actor_cpus=settings.ray_actor_cpus,
            connect_timeout=settings.ray_connect_timeout,
        )
    else:
        from daemon.pool.local import WorkerProcesses

        members = WorkerProcesses(settings.devices, settings.workers_per_device, setup)
    return Pool(members, PoolPolicy.from_settings(settings))
