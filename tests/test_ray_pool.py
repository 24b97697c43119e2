"""The daemon on a real Ray cluster, through the faults a cluster has.

The cluster is separate `ray start` processes on 127.0.0.1 (tests/ray_cluster.py): a head,
`second`, and `stranger`, a node whose stylefold is another version (and which pretends to have
a GPU, so the daemon places an actor there to refuse). Daemons are real `stylefold run`
processes; nodes, actors and connections are really killed or cut. One cluster serves the
module, in order: a start without a cluster (while the cluster boots), `doctor`, then one
daemon through a refused node, jobs on both nodes, a killed actor, a lost node, a node lost
while its actor was idle and a lost head (restarted on the same port). Ray Client daemons
have a head of their own (test_ray_client).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import (
    CLI,
    REPO,
    Daemon,
    Folders,
    make_folders,
    start_daemon,
    wait_for,
)

pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'stylefold[ray]'")

from ray_cluster import RayCluster, free_port
from ray_daemon import (
    LONG_SECONDS,
    PACE,
    alive,
    answered_once,
    assert_json_log,
    assert_no_cluster_started_by,
    descendants,
    doctor,
    drop,
    events,
    long_job,
    started,
    wait_answered,
)

pytestmark = [pytest.mark.ray, pytest.mark.heavy]


@pytest.fixture(scope="module")
def nodes(cluster: RayCluster) -> RayCluster:
    cluster.up(cluster.node("head"))
    site = cluster.root / "stranger-site"  # first on its path: stylefold 9.9.9 "installed"
    info = site / "stylefold-9.9.9.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: stylefold\nVersion: 9.9.9\n")
    cluster.up(cluster.add_node("second", cpus=2))  # one at a time: each must register in 30 s
    cluster.up(cluster.add_node("stranger", cpus=1, gpus=1, pythonpath=f"{site}:{REPO}"))
    return cluster


# -- no cluster --------------------------------------------------------------------------------


def test_start_without_a_cluster_fails_in_bounded_time(
    cluster: RayCluster, folders: Folders
) -> None:
    """Exit 75 (EX_TEMPFAIL: systemd restarts it) after ray_connect_timeout, with one line that
    says why; doctor fails sooner."""
    nowhere = f"127.0.0.1:{free_port()}"
    config = folders.config(
        backend="ray", ray_address=nowhere, ray_cpu_actors=1, ray_connect_timeout=5.0
    )
    begun = time.monotonic()
    daemon = start_daemon(folders, config=config, env=cluster.env, ready=False)
    assert daemon.process.wait(60) == 75
    assert time.monotonic() - begun < 30
    (failed,) = events(daemon, "daemon.start_failed")
    assert f"cannot reach the Ray cluster at '{nowhere}' within 5 s" in failed["error"]
    assert "nothing answers" in failed["error"] and "start the cluster" in failed["error"]
    # refused at once: no token was asked for (an operator's trial was told of tokens here)
    assert "token" not in failed["error"], failed["error"]
    assert_json_log(daemon)

    code, out, seconds = doctor(config, cluster.env)
    assert code == 1
    assert f"FAIL ray: nothing answers at {nowhere} (" in out  # refused: said at once
    assert seconds < 60


def test_sigterm_while_waiting_for_the_cluster_stops_cleanly(
    cluster: RayCluster, folders: Folders
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    config = folders.config(
        backend="ray", ray_address=nowhere, ray_cpu_actors=1, ray_connect_timeout=120.0
    )
    daemon = start_daemon(folders, config=config, env=cluster.env, ready=False)
    daemon.wait_for_log("pool.ray_connecting", timeout=30)
    children = wait_for(lambda: descendants(daemon.process.pid), 30, "the driver process")
    assert daemon.stop(signal.SIGTERM, timeout=20) == 0
    assert not events(daemon, "daemon.start_failed")
    wait_for(lambda: not any(map(alive, children)), 10, "the driver to end with the daemon")
    assert_json_log(daemon)


# -- doctor ------------------------------------------------------------------------------------


def test_doctor_checks_the_cluster(nodes: RayCluster, folders: Folders) -> None:
    config = folders.config(
        backend="ray",
        ray_address=nodes.address,
        ray_cpu_actors=2,
        ray_actor_cpus=2,
        ray_connect_timeout=30.0,
    )
    code, out, _ = doctor(config, nodes.env)
    assert code == 1, out  # the stranger
    assert f"ok   ray: {nodes.address} answers" in out
    assert "3 node(s)" in out
    assert "ok   ray resources: 5 CPUs, 1 GPUs" in out
    assert "FAIL ray versions: stranger runs 9.9.9" in out
    assert "install the same version on every node" in out
    # A wrong token only times out: it read as a cluster down (a Ray operator's trial).
    wrong = folders.config(backend="ray", ray_address=nodes.address, ray_connect_timeout=5.0)
    code, out, _ = doctor(wrong, {**nodes.env, "RAY_AUTH_TOKEN": "0" * 64})
    assert code == 1 and "FAIL ray: " in out, out
    assert "check that RAY_AUTH_TOKEN in this daemon's environment is the head's" in out, out


def test_doctor_reads_the_versions_the_nodes_have_wherever_it_is_started(
    nodes: RayCluster, folders: Folders
) -> None:
    """Ray puts its driver's working directory first on the module path of every worker, on
    every node: started in a folder that holds another stylefold (a checkout, say), doctor still
    reads the version each node has installed."""
    elsewhere = folders.root / "elsewhere"
    info = elsewhere / "stylefold-7.7.7.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: stylefold\nVersion: 7.7.7\n")
    config = folders.config(backend="ray", ray_address=nodes.address, ray_connect_timeout=30.0)
    done = subprocess.run(  # -P: like the `stylefold` command, not from its working directory
        [sys.executable, "-P", "-m", "daemon.cli", "doctor", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env={**os.environ, **nodes.env},
        timeout=180,
    )
    out = done.stdout + done.stderr
    assert "FAIL ray versions: stranger runs 9.9.9" in out, out
    assert "7.7.7" not in out, out


# -- one daemon through the faults -------------------------------------------------------------


@pytest.fixture(scope="class")
def daemon(nodes: RayCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """Through TestDaemonThroughFaults, in order."""
    folders = make_folders(tmp_path_factory.mktemp("ray"))
    config = folders.config(
        backend="ray",
        ray_address=nodes.address,
        ray_cpu_actors=2,
        ray_actor_cpus=2,
        retries=1,
        ray_connect_timeout=10.0,
    )
    running = start_daemon(folders, config=config, env=nodes.env)
    yield running
    assert running.stop() == 0
    assert_json_log(running)


class TestDaemonThroughFaults:
    def test_refuses_the_actor_of_another_version(self, nodes: RayCluster, daemon: Daemon) -> None:
        failed = wait_for(lambda: events(daemon, "pool.worker_load_failed"), 60, "the refusal")
        assert "the Ray node stranger runs stylefold 9.9.9" in failed[0]["error"]
        # Said by `status` too, not only in the log (a Ray operator's trial: after a reconnect
        # to nodes upgraded meanwhile, a job waited for good and status listed nothing).
        status = daemon.folders.state / "status.json"

        def told() -> list[dict[str, Any]]:
            attention = json.loads(status.read_text())["attention"] if status.exists() else []
            return [item for item in attention if "failed to load the engine" in item["what"]]

        [item] = wait_for(told, 30, "the refusal in status")
        assert "stranger runs stylefold 9.9.9" in item["where"] and "doctor" in item["fix"]
        nodes.node("stranger").kill()  # no more refusals to wait through

    def test_jobs_run_on_both_nodes_and_name_them(self, daemon: Daemon) -> None:
        ready = events(daemon, "pool.worker_ready")
        assert {line["node"] for line in ready} == {"head", "second"}
        assert {line["threads"] for line in ready} == {2}  # ray_actor_cpus
        folders = daemon.folders
        names = [f"flow{index}" for index in range(4)]
        for index, name in enumerate(names):
            drop(folders, name, long_job() if name == "flow3" else {}, seed=index)
        wait_answered(folders, names)
        manifests = answered_once(folders, names)
        per_iteration = manifests["flow3"]["timings"]["render_seconds"] / PACE["iterations"]
        PACE["iterations"] = max(60, min(3000, round(LONG_SECONDS / per_iteration)))
        assert {manifest["node"] for manifest in manifests.values()} == {"head", "second"}
        assert "iteration" in (folders.outbox / "flow0.log").read_text()  # progress came back
        status = subprocess.run(
            [*CLI, "status", "--config", str(folders.root / "stylefold.toml")],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=True,
        ).stdout
        assert "cpu on head" in status and "cpu on second" in status, status

    def test_killed_actor_mid_job_is_retried_once(self, daemon: Daemon) -> None:
        folders = daemon.folders
        drop(folders, "kill", long_job(), seed=7)
        worker = started(daemon, "kill")["worker"]
        ready = {line["worker"]: line["pid"] for line in events(daemon, "pool.worker_ready")}
        os.kill(ready[worker], signal.SIGKILL)  # the actor's process
        wait_answered(folders, ["kill"])
        assert answered_once(folders, ["kill"])["kill"]["attempt"] == 2
        (retry,) = events(daemon, "job.retry")
        assert "Ray actor died" in retry["error"]
        wait_for(lambda: len(events(daemon, "pool.worker_ready")) >= 3, 90, "a replacement actor")

    def test_node_loss_mid_job_retries_on_the_head(self, nodes: RayCluster, daemon: Daemon) -> None:
        folders = daemon.folders
        drop(folders, "node0", long_job(), seed=10)
        drop(folders, "node1", long_job(), seed=11)
        on = {name: started(daemon, name)["node"] for name in ("node0", "node1")}
        (victim,) = [name for name, node in on.items() if node == "second"]

        def both_running() -> list[str | None]:  # status.json is written after job.started
            status = json.loads((folders.state / "status.json").read_text())
            found = [job["node"] for job in status["jobs"] if job["state"] == "running"]
            return found if len(found) == 2 else []

        running = wait_for(both_running, 10, "status.json to show both jobs running")
        assert set(running) == {"head", "second"}  # status names each job's node
        nodes.node("second").kill()
        wait_answered(folders, ["node0", "node1"])
        manifest = answered_once(folders, ["node0", "node1"])[victim]
        assert manifest["node"] == "head" and manifest["attempt"] == 2
        assert daemon.process.poll() is None

    def test_an_actor_whose_node_dies_while_idle_costs_no_job_an_attempt(
        self, nodes: RayCluster, daemon: Daemon
    ) -> None:
        """An operator's trial: a node killed while its actors were idle, the next photo was
        sent to them one after the other and failed ("the Ray actor died ... this usually
        means the machine ran out of memory") without being rendered, and status counted both
        as idle. `third` takes the actor the head has no room for (the second node is gone)."""
        nodes.up(nodes.add_node("third", cpus=2))
        on_third = wait_for(
            lambda: [
                line for line in events(daemon, "pool.worker_ready") if line["node"] == "third"
            ],
            90,
            "an actor on the third node",
        )
        lost_before = len(events(daemon, "pool.worker_lost"))
        nodes.node("third").kill()
        lost = wait_for(
            lambda: events(daemon, "pool.worker_lost")[lost_before:], 30, "the idle actor's loss"
        )
        assert lost[0]["worker"] == on_third[-1]["worker"] and lost[0]["job_ids"] == []
        folders = daemon.folders
        retries = len(events(daemon, "job.retry"))
        for index in range(2):
            drop(folders, f"idle{index}", {}, seed=30 + index)
        wait_answered(folders, ["idle0", "idle1"])
        manifests = answered_once(folders, ["idle0", "idle1"])
        assert {m["attempt"] for m in manifests.values()} == {1}
        assert {m["node"] for m in manifests.values()} == {"head"}
        assert len(events(daemon, "job.retry")) == retries

    def test_head_loss_mid_job_reconnects_and_answers_once(
        self, nodes: RayCluster, daemon: Daemon
    ) -> None:
        # The head is the last node (the tests before killed the others, unless one failed):
        # `ray start --head` refuses its old port while a raylet on this machine still names it.
        for other in {node.name for node in nodes.nodes} - {"head"}:
            nodes.node(other).kill()
        folders = daemon.folders
        drop(folders, "head0", long_job(), seed=20)
        drop(folders, "head1", {}, seed=21)
        started(daemon, "head0")
        # As `ray stop` does: the head's raylet, with the actors, first (a Ray operator's
        # trial: that charged head0 an attempt, as if its actor alone had died).
        nodes.node("head").stop_as_ray_stop_does()
        lost = daemon.wait_for_log("pool.ray_lost", timeout=30)
        assert "stopped answering" in lost["error"] or "Ray driver" in lost["error"]
        daemon.wait_for_log("job.requeued", timeout=10)
        daemon.wait_for_log("pool.ray_unreachable", timeout=60)  # it keeps trying, and lives
        assert daemon.process.poll() is None
        assert_no_cluster_started_by(daemon)
        # status says so (a Ray soak trial's operator saw only "1 starting" and a queue)
        outage = wait_for(lambda: _ray_attention(folders), 10, "status to name the outage")
        assert outage["what"] == f"the Ray cluster at {nodes.address} does not answer"
        assert "the Ray cluster" not in outage["where"], outage  # not said twice
        assert "connects again by itself" in outage["fix"] and outage["since"] <= time.time()
        nodes.up(nodes.start_head(cpus=2))
        daemon.wait_for_log("pool.ray_connected", timeout=120, count=2)
        wait_for(lambda: _ray_attention(folders) is None, 30, "status to drop the outage")
        wait_answered(folders, ["head0", "head1"])
        manifests = answered_once(folders, ["head0", "head1"])
        assert manifests["head0"]["attempt"] == 1  # the lost run did not count
        # The outage is logged, not every member each try started and lost at once (an
        # operator's trial: eight lines a minute for as long as it lasted).
        lines = daemon.log_lines()
        names = [line.get("event") for line in lines]
        lost_at = len(names) - names[::-1].index("pool.ray_lost")
        back_at = lost_at + names[lost_at:].index("pool.ray_connected")
        during = lines[lost_at:back_at]
        tries = {"pool.worker_started", "pool.worker_lost", "pool.ray_connecting"}
        loud = [line for line in during if line["event"] in tries and line["level"] != "debug"]
        assert [line["event"] for line in loud] == ["pool.worker_lost"] * len(loud), loud
        assert len(loud) <= 2  # the actors the loss took, each said once
        assert any(line["event"] == "pool.worker_started" for line in during)  # it did try


def _ray_attention(folders: Folders) -> dict[str, Any] | None:
    status = json.loads((folders.state / "status.json").read_text())
    found = [item for item in status["attention"] if "Ray cluster" in item["what"]]
    return found[0] if found else None
