"""A real Ray cluster on 127.0.0.1 for the tests, and a TCP proxy to cut a connection with.

Every node is its own `ray start --block` process in its own session, so a test can kill one
node, with everything it started, as a crash would, and restart the head on the same ports.
The cluster uses a token of its own (RAY_AUTH_TOKEN), so nothing is read from or written to
~/.ray; `env` is what a daemon needs to join it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = [sys.executable, str(REPO / "tests" / "ray_loopback.py")]
STARTED = "Ray runtime started"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def node_ports() -> list[str]:
    names = [
        "node-manager-port",
        "object-manager-port",
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "runtime-env-agent-port",
        "metrics-export-port",
    ]
    return [f"--{name}={free_port()}" for name in names]


@dataclass
class RayNode:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    again: Callable[[], RayNode]  # starts the same node anew

    def wait_started(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while STARTED not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"Ray node {self.name} did not start:\n{self.output()}")
            time.sleep(0.2)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        """SIGKILL to the node and everything it started (its session), as a crash would."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop_as_ray_stop_does(self, lead: float = 2.0) -> None:
        """As `ray stop` on this node: SIGTERM to the raylet and the node's other processes (its
        actors among them), and `lead` seconds later the GCS goes, whose address the daemon
        watches. Their deaths reach a driver before the cluster's does (half of the runs)."""

        def comm(pid: int) -> str:
            with contextlib.suppress(OSError):
                return Path(f"/proc/{pid}/comm").read_text().strip()
            return ""

        pids = self.pids() - {self.process.pid}  # `ray start --block` would stop them all
        raylets = [pid for pid in pids if comm(pid) == "raylet"]
        assert raylets, f"no raylet among node {self.name}'s processes"
        others = [pid for pid in pids if comm(pid) not in ("raylet", "gcs_server")]
        for pid in raylets + others:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        time.sleep(lead)
        self.kill()

    def pids(self) -> set[int]:
        """Processes of this node (its session), e.g. its actors' workers."""
        found = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getsid(int(entry.name)) == self.process.pid:
                        found.add(int(entry.name))
                except OSError:
                    continue
        return found


@dataclass
class RayCluster:
    root: Path
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    gcs_port: int = field(default_factory=free_port)
    client_port: int = field(default_factory=free_port)
    nodes: list[RayNode] = field(default_factory=list)

    @classmethod
    def create(cls) -> RayCluster:
        # Short: Ray's unix sockets live under it (at most 107 characters).
        return cls(Path(tempfile.mkdtemp(prefix="sfray-", dir="/tmp")))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def env(self) -> dict[str, str]:
        """For a process that joins the cluster (a daemon, doctor)."""
        return {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # 127.0.0.1 stays 127.0.0.1
            "RAY_USAGE_STATS_ENABLED": "0",
        }

    def _start(
        self, name: str, args: list[str], cpus: int, gpus: int = 0, pythonpath: str = str(REPO)
    ) -> RayNode:
        log = self.root / f"{name}-{len(self.nodes)}.log"
        # Unset, as on a node's service: Ray gives each actor a thread per CPU it reserves
        # (conftest sets one thread for this suite's own daemons).
        inherited = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        env = {
            **inherited,
            **self.env,
            "PYTHONPATH": pythonpath,  # the actors import this checkout's stylefold
            "RAY_CLIENT_RECONNECT_GRACE_PERIOD": "5",  # a cut client's actors go sooner
        }
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    *LOOPBACK,
                    "start",
                    "--block",
                    "--node-ip-address=127.0.0.1",
                    f"--node-name={name}",
                    f"--num-cpus={cpus}",
                    f"--num-gpus={gpus}",  # a pretend GPU: resources are what Ray is told
                    "--object-store-memory=100000000",
                    "--min-worker-port=0",
                    "--max-worker-port=0",
                    "--disable-usage-stats",
                    *node_ports(),
                    *args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.root,
                start_new_session=True,
            )
        node = RayNode(name, process, log, lambda: self._start(name, args, cpus, gpus, pythonpath))
        self.nodes = [old for old in self.nodes if old.name != name or old.process.poll() is None]
        self.nodes.append(node)
        return node

    def up(self, node: RayNode) -> RayNode:
        """`node`, once it runs. Ray gives a node 30 s to register with the head, which a loaded
        machine can miss: then it is started once more."""
        try:
            node.wait_started()
        except AssertionError:
            node.kill()
            node = node.again()
            node.wait_started()
        return node

    def node(self, name: str) -> RayNode:
        return next(node for node in reversed(self.nodes) if node.name == name)

    def start_head(self, cpus: int = 2) -> RayNode:
        args = [
            "--head",
            f"--port={self.gcs_port}",
            f"--ray-client-server-port={self.client_port}",
            f"--dashboard-port={free_port()}",
            "--include-dashboard=false",
            f"--temp-dir={self.root / 'ray'}",
        ]
        return self._start("head", args, cpus)

    def add_node(
        self, name: str, cpus: int = 2, gpus: int = 0, pythonpath: str = str(REPO)
    ) -> RayNode:
        return self._start(name, [f"--address={self.address}"], cpus, gpus, pythonpath)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.root, ignore_errors=True)


class TcpProxy:
    """127.0.0.1:port -> target, until `cut` (the listener and every connection close at
    once, as when a network goes); `restore` listens on the same port again. `sent` counts
    the bytes the clients sent through it."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.sent = 0
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    restore = start

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                return
            with self._lock:
                self._sockets += [client, upstream]
            for a, b, out in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(a, b, out), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, out: bool) -> None:
        try:
            while data := source.recv(65536):
                if out:
                    with self._lock:
                        self.sent += len(data)
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self._listener is not None:  # shut down first: that wakes its accept()
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
