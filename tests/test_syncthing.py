"""Two real Syncthing instances on 127.0.0.1 around one real daemon, as deploy/README.md sets
them up: the phone's photo folder is Send Only, the server's copy of it (the daemon's inbox)
Receive Only; the server's outbox is Send Only and the phone receives it (Receive Only).

The daemon archives each original (archive = "move"), which the Receive Only inbox lists as
locally deleted; pressing "Revert Local Changes" (POST /rest/db/revert) brings every original
back. The phone must still see exactly one result set per photo, and never a temporary,
progress or preview file (the outbox's .stignore, as documented, keeps those home).

Discovery, relays, NAT, global announcements and usage reporting are off; each instance has its
own home, API key and loopback ports.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, Folders, image_bytes, make_folders, start_daemon, wait_for

pytestmark = [
    pytest.mark.heavy,
    pytest.mark.skipif(
        not shutil.which("syncthing"),
        reason="needs syncthing (Debian package syncthing; .ci/run installs it)",
    ),
]

PHOTOS = ("beach.jpg", "trip/dinner.jpg", "trip/sunset.jpg")
# Long enough that a job's progress file lives for seconds in the outbox (and would be synced
# without the ignore patterns), short enough for 2 CPU cores.
SIDECAR = {"style": "mosaic", "params": {"size": 32, "iterations": 4, "tolerance": 0.0}}
# deploy/README.md, section 4: the outbox folder's .stignore on the server.
STIGNORE = ".stylefold-*.tmp\n*.progress.json\n*.preview.jpg\n"
NOT_FOR_THE_PHONE = re.compile(r"\.stylefold-.*\.tmp|\.progress\.json|\.preview\.jpg")
SETTLE = 1.0
PAIR_TIMEOUT = 15.0  # a photo alone is reported after this (the default, 600 s, is for people)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Node:
    """One Syncthing instance: its home, identity, loopback ports and REST API key."""

    name: str
    home: Path
    device_id: str
    gui: int
    listen: int
    key: str
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def generate(cls, name: str, home: Path) -> Node:
        made = subprocess.run(
            ["syncthing", "generate", f"--home={home}", "--no-default-folder",
             "--skip-port-probing"],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        found = re.search(r"Device ID:\s*(\S+)", made.stdout + made.stderr)
        assert found, made.stdout + made.stderr
        return cls(name, home, found[1], _free_port(), _free_port(), secrets.token_hex(16))

    def configure(self, peer: Node, folders: dict[str, tuple[Path, str]]) -> None:
        """config.xml: the folders (id -> path, type) shared with `peer`; loopback only."""
        devices = f'<device id="{self.device_id}"></device><device id="{peer.device_id}"></device>'
        shared = "".join(
            f'<folder id="{folder}" label="{folder}" path="{path}" type="{kind}" '
            'rescanIntervalS="60" fsWatcherEnabled="true" fsWatcherDelayS="1">'
            f"<filesystemType>basic</filesystemType>{devices}</folder>"
            for folder, (path, kind) in folders.items()
        )
        options = {
            "listenAddress": f"tcp://127.0.0.1:{self.listen}",
            "globalAnnounceEnabled": "false",
            "localAnnounceEnabled": "false",
            "relaysEnabled": "false",
            "natEnabled": "false",
            "urAccepted": "-1",
            "crashReportingEnabled": "false",
            "startBrowser": "false",
            "autoUpgradeIntervalH": "0",
            "setLowPriority": "false",
            "reconnectionIntervalS": "2",
        }
        (self.home / "config.xml").write_text(
            f'<configuration version="36">{shared}'
            f'<device id="{self.device_id}" name="{self.name}"><address>dynamic</address></device>'
            f'<device id="{peer.device_id}" name="{peer.name}">'
            f"<address>tcp://127.0.0.1:{peer.listen}</address></device>"
            f'<gui enabled="true" tls="false"><address>127.0.0.1:{self.gui}</address>'
            f"<apikey>{self.key}</apikey></gui>"
            "<options>" + "".join(f"<{k}>{v}</{k}>" for k, v in options.items()) + "</options>"
            "</configuration>"
        )

    def start(self) -> None:
        log = (self.home / "syncthing.log").open("wb")
        self.process = subprocess.Popen(
            ["syncthing", "serve", f"--home={self.home}", "--no-browser", "--no-restart",
             "--no-upgrade"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "STNOUPGRADE": "1", "STNODEFAULTFOLDER": "1"},
        )  # fmt: skip

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # its own session: syncthing and its child
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def api(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.gui}{path}", method=method, headers={"X-API-Key": self.key}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def connected_to(self, peer: Node) -> bool:
        with contextlib.suppress(OSError, ValueError, KeyError):
            connections = self.api("/rest/system/connections")["connections"]
            return bool(connections[peer.device_id]["connected"])
        return False

    def log_tail(self) -> str:
        return (self.home / "syncthing.log").read_text(errors="replace")[-3000:]


class Watch:
    """Lists the phone's result folder every 50 ms, collecting every name ever seen there."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            for _root, _dirs, names in os.walk(self.folder):
                self.seen.update(names)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Cluster:
    phone: Node
    server: Node
    folders: Folders
    daemon: Daemon
    photos: Path  # the phone's Send Only folder
    results: Path  # the phone's Receive Only copy of the outbox
    watch: Watch


def _result_sets(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.startswith(".st")
    }


def _expected_names() -> list[str]:
    names = []
    for photo in PHOTOS:
        stem = photo.rsplit(".", 1)[0]
        names += [f"{stem}.log", f"{stem}.manifest.json", f"{stem}.stylised.jpg"]
    return sorted(names)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("syncthing")
    folders = make_folders(root / "server")
    (folders.outbox / ".stignore").write_text(STIGNORE)
    photos, results = root / "phone" / "photos", root / "phone" / "results"
    for folder in (photos, results):
        folder.mkdir(parents=True)
    phone = Node.generate("phone", root / "phone-home")
    server = Node.generate("server", root / "server-home")
    phone.configure(server, {"photos": (photos, "sendonly"), "results": (results, "receiveonly")})
    server.configure(
        phone, {"photos": (folders.inbox, "receiveonly"), "results": (folders.outbox, "sendonly")}
    )
    watch = Watch(results)
    config = folders.config(settle_seconds=SETTLE, pair_timeout=PAIR_TIMEOUT)
    daemon = start_daemon(folders, config=config, ready=False)
    try:
        phone.start()
        server.start()
        watch.start()
        wait_for(lambda: phone.connected_to(server), 90, "the two Syncthing instances connected")
        daemon.wait_for_log("daemon.ready", timeout=120)
        yield Cluster(phone, server, folders, daemon, photos, results, watch)
    finally:
        watch.stop()
        for node in (phone, server):
            node.stop()
        assert daemon.stop() == 0


@pytest.fixture(scope="module")
def synced(cluster: Cluster) -> Cluster:
    """The phone's photos sent to the daemon, the results back on the phone."""
    for index, photo in enumerate(PHOTOS):
        path = cluster.photos / photo
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".json").write_text(json.dumps(SIDECAR))
        path.write_bytes(image_bytes(seed=30 + index))
    try:
        wait_for(
            lambda: sorted(_result_sets(cluster.results)) == _expected_names(),
            180,
            "every result set on the phone",
        )
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nphone results: {sorted(_result_sets(cluster.results))}\n"
            f"server outbox: {sorted(_result_sets(cluster.folders.outbox))}\n"
            f"{cluster.server.log_tail()}"
        ) from None
    return cluster


@pytest.fixture(scope="module")
def reverted(synced: Cluster) -> tuple[Cluster, dict[str, bytes]]:
    """Press Revert Local Changes on the server's Receive Only inbox, once the daemon's
    archiving of the originals shows there as local deletions."""
    before = _result_sets(synced.results)
    originals = 2 * len(PHOTOS)  # photos and sidecars

    def deletions() -> bool:
        status = synced.server.api("/rest/db/status?folder=photos")
        return int(status["receiveOnlyChangedDeletes"]) >= originals

    wait_for(deletions, 60, "the archived originals listed as locally deleted")
    synced.server.api("/rest/db/revert?folder=photos", method="POST")

    def skipped() -> bool:
        lines = [line for line in synced.daemon.log_lines() if line.get("event") == "job.skipped"]
        return len(lines) >= len(PHOTOS)

    wait_for(skipped, 90, "every re-sent original recognised")
    wait_for(lambda: deletions() and not _result_sets(synced.folders.inbox), 60, "inbox empty")
    time.sleep(4)  # time for anything new in the outbox to reach the phone
    return synced, before


def test_each_photo_comes_back_as_exactly_one_result_set(synced: Cluster) -> None:
    manifests = {
        name: json.loads(data)
        for name, data in _result_sets(synced.results).items()
        if name.endswith(".manifest.json")
    }
    assert sorted(m["input"]["path"] for m in manifests.values()) == sorted(PHOTOS)
    assert not [p for p in synced.results.rglob("*.error.json")]


def test_revert_local_changes_brings_no_new_result(
    reverted: tuple[Cluster, dict[str, bytes]],
) -> None:
    cluster, before = reverted
    assert _result_sets(cluster.results) == before
    assert sorted(_result_sets(cluster.results)) == _expected_names()
    claimed = [line for line in cluster.daemon.log_lines() if line.get("event") == "job.claimed"]
    assert len(claimed) == 2 * len(PHOTOS)  # each photo: its job, then its recognised re-send


def test_no_temporary_progress_or_preview_file_reaches_the_phone(
    reverted: tuple[Cluster, dict[str, bytes]],
) -> None:
    cluster, _ = reverted
    assert sorted(name for name in cluster.watch.seen if NOT_FOR_THE_PHONE.search(name)) == []
    assert {n for n in cluster.watch.seen if not n.startswith(".")} == {
        name.rsplit("/", 1)[-1] for name in _expected_names()
    }


def test_a_photo_touched_on_the_phone_gets_no_second_answer(
    reverted: tuple[Cluster, dict[str, bytes]],
) -> None:
    """A sync user's trial: Syncthing sends a photo touched on the phone without its sidecar,
    which is unchanged (and archived on the server), and at pair_timeout the photo got a
    second answer, "no sidecar"."""
    cluster, before = reverted
    photo = cluster.photos / PHOTOS[0]
    later = time.time() + 10
    os.utime(photo, (later, later))
    cluster.phone.api("/rest/db/scan?folder=photos", method="POST")
    wait_for((cluster.folders.inbox / PHOTOS[0]).exists, 60, "the touched photo in the inbox")
    assert not (cluster.folders.inbox / PHOTOS[0]).with_suffix(".json").exists()
    said = cluster.daemon.wait_for_log("job.resent_alone", timeout=PAIR_TIMEOUT + 60)
    assert said["input"] == PHOTOS[0]
    time.sleep(4)  # time for anything new in the outbox to reach the phone
    assert _result_sets(cluster.results) == before
