"""Reaching a Ray cluster from the driver process (daemon.pool.ray_driver): whether anything
answers at its address (before `ray.init`, which hangs for minutes where nothing does, and
while connected, to notice a lost head or connection), joining it, and what its nodes are.
Ray is imported only here and in the driver, never by the daemon."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from typing import Any, Literal

from daemon.pool.ray_actor import identify
from daemon.pool.ray_protocol import (
    NOTHING_ANSWERS,
    WRONG_PORT,
    Connected,
    NodeInfo,
    NothingListens,
    Open,
    WrongPort,
)

# Ray puts the driver's working directory first on the module path of every worker it starts
# for it, on every node. The daemon (or doctor) may have been started anywhere, e.g. in a
# stylefold checkout whose metadata and code would then shadow what each node has installed,
# and every node would seem to run the daemon's version. The root holds no Python packages
# (and is where systemd starts the daemon anyway).
DRIVER_CWD = "/"
GCS_METHOD = "/ray.rpc.NodeInfoGcsService/GetClusterId"  # the first call a driver makes
# What gRPC says of a server that answered in another protocol (HTTP/1.x): not a Ray port.
NOT_GRPC = ("Failed parsing HTTP/2", "http1.x server")


def endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) of a cluster address, or None for "local" and "auto"; an IPv6 host without
    its brackets ([::1]:6379: a re-test's listener there was "Name or service not known")."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    return (host, int(port)) if host and port.isdigit() else None


def shown(target: tuple[str, int]) -> str:
    """HOST:PORT as written in an address (an IPv6 host in brackets)."""
    host, port = target
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def probe(target: tuple[str, int], timeout: float = 1.0) -> str | None:
    """None when something accepts connections at `target`, else why not."""
    try:
        with socket.create_connection(target, timeout=timeout):
            return None
    except OSError as exc:
        return str(exc) or type(exc).__name__


def wait_listening(target: tuple[str, int], deadline: float) -> None:
    """Before `ray.init`, which hangs for minutes on an address where nothing answers."""
    while True:
        error = probe(target, timeout=max(0.1, min(1.0, deadline - time.monotonic())))
        if error is None:
            return
        if time.monotonic() + 0.5 >= deadline:
            raise NothingListens(f"{NOTHING_ANSWERS} {shown(target)} ({error})")
        time.sleep(0.5)


PortKind = Literal["gcs", "grpc", "not grpc"]


def port_kind(target: tuple[str, int], timeout: float) -> PortKind | None:
    """What answers at `target`: a Ray cluster's address (its GCS), another gRPC server (a Ray
    Client server has none of the GCS's methods), a server that does not speak gRPC (an HTTP
    one), or None when it cannot tell (no answer yet, a connection closed). Given the wrong
    kind of port, `ray.init` hangs to its own timeouts with a warning a second (a Ray
    operator's trial: 23 s for a 5 s ray_connect_timeout, 20 warnings, "no answer")."""
    import grpc

    with grpc.insecure_channel(shown(target)) as channel:
        try:
            channel.unary_unary(GCS_METHOD)(b"", timeout=timeout)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details()  # the call's error is also a grpc.Call
            if code == grpc.StatusCode.UNAUTHENTICATED:  # a GCS that asks for a token
                return "gcs"
            if code == grpc.StatusCode.UNIMPLEMENTED:
                return "grpc"
            if code == grpc.StatusCode.UNAVAILABLE and any(m in details for m in NOT_GRPC):
                return "not grpc"
            return None
    return "gcs"


def check_port(address: str, target: tuple[str, int], deadline: float) -> None:
    """WrongPort when `target` is not the kind of port `address`'s form
    names: the head's address written with ray://, the Ray Client port without it, or no Ray
    port at all."""
    timeout = max(0.1, min(2.0, deadline - time.monotonic()))
    kind = port_kind(target, timeout)
    where = shown(target)
    client = address.startswith("ray://")
    if kind == "gcs" and client:
        raise WrongPort(
            f"{WRONG_PORT} {where} is a Ray cluster's address (its GCS), not a Ray Client "
            f'server: write ray_address = "{where}" without ray://, or name the Ray Client '
            "port (10001 by default)"
        )
    if kind == "grpc" and not client:
        raise WrongPort(
            f"{WRONG_PORT} {where} answers, but not as a Ray cluster's address (a Ray Client "
            f"server answers this way): to connect through Ray Client write ray_address = "
            f'"ray://{where}", or name the head\'s address (port 6379 by default)'
        )
    if kind == "not grpc":
        raise WrongPort(
            f"{WRONG_PORT} {where} answers, but not as Ray does (not gRPC: a web server?); "
            "name the head's address (port 6379 by default) or its Ray Client port as "
            "ray://HOST:10001"
        )


def ignore_signals() -> None:
    """The daemon decides when this process ends (and ray.init installs its own handler)."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def connect(opening: Open, deadline: float) -> tuple[Any, tuple[str, int]]:
    """Join the cluster; Ray, and the address to watch for its health."""
    target = endpoint(opening.address)
    if target is not None:  # first: importing ray takes seconds
        wait_listening(target, deadline)
        check_port(opening.address, target, deadline)
    import ray

    os.chdir(DRIVER_CWD)  # before ray.init, which hands it to the workers
    options: dict[str, Any] = {"namespace": opening.namespace}
    if not opening.address.startswith("ray://"):  # Ray Client takes no log_to_driver
        options["log_to_driver"] = False  # the actors' output stays in the nodes' log files
    if opening.address == "local":
        options.update(num_cpus=opening.local_cpus, include_dashboard=False)
    else:
        options["address"] = opening.address
    ray.init(**options)
    ignore_signals()
    if target is None:
        target = endpoint(str(ray.get_runtime_context().gcs_address))
    assert target is not None, "a connected driver knows its GCS address"
    return ray, target


def versions(ray: Any, nodes: list[dict[str, Any]], until: float) -> list[str | None]:
    """Each node's stylefold version, from one tiny task per node; None where none came back
    by `until` (time.monotonic()), or where no stylefold could answer."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe_task = ray.remote(num_cpus=0, max_retries=0)(identify)
    refs = [
        probe_task.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ).remote()
        for node in nodes
    ]
    ray.wait(refs, num_returns=len(refs), timeout=max(0.1, until - time.monotonic()))
    answers: list[str | None] = []
    for ref in refs:
        try:
            answers.append(str(ray.get(ref, timeout=0)[0]))
        except Exception:  # no answer yet, or no stylefold there
            answers.append(None)
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
    return answers


def describe(ray: Any, version: str, probe_until: float | None) -> Connected:
    """The alive nodes with their resources, and their stylefold versions when asked to."""
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    found = [None] * len(nodes) if probe_until is None else versions(ray, nodes, probe_until)
    infos = []
    for node, answer in zip(nodes, found, strict=True):
        resources = node.get("Resources", {})
        infos.append(
            NodeInfo(
                name=str(node.get("NodeName") or node.get("NodeManagerAddress")),
                cpus=float(resources.get("CPU", 0.0)),
                gpus=float(resources.get("GPU", 0.0)),
                version=answer,
            )
        )
    return Connected(version, tuple(infos))
