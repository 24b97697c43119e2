"""Nothing about the server reaches the outbox (it is synced to people who see neither the
server nor its folders): failure reports, rejection reports, reused results' manifests and the
published logs name files relative to the inbox or the outbox, never a server path, and carry
no traceback. Driven through the real lifecycle and publisher with real files."""

from __future__ import annotations

import json
import traceback
from pathlib import Path

from conftest import Folders
from hostile import arrival, pair
from outbox_files import a_manifest

from daemon.config import Settings, load_settings
from daemon.intake.styles import StyleLibrary
from daemon.jobs.answers import ReuseDetail, public
from daemon.jobs.lifecycle import Lifecycle
from daemon.jobs.store import Store
from daemon.metrics import Metrics
from daemon.pool import make_pool
from daemon.pool.events import Failed, Retrying, Started


def _lifecycle(settings: Settings) -> Lifecycle:
    return Lifecycle(
        settings, Store(settings.state), make_pool(settings), StyleLibrary.from_settings(settings),
        Metrics.disabled(), 1.0,
    )  # fmt: skip


def _outbox_texts(folders: Folders) -> dict[str, str]:
    return {
        path.relative_to(folders.outbox).as_posix(): path.read_text(errors="replace")
        for path in folders.outbox.rglob("*")
        if path.is_file()
    }


def _no_server_paths(folders: Folders) -> None:
    for name, text in _outbox_texts(folders).items():
        assert str(folders.root) not in text, (name, text)
        assert "Traceback" not in text and "/usr/" not in text, (name, text)


def test_a_failure_with_server_paths_in_its_error_is_published_without_them(
    folders: Folders,
) -> None:
    settings = load_settings(folders.config(), {})
    lifecycle = _lifecycle(settings)
    image, sidecar = pair(settings.inbox, "trip/photo.jpg")
    lifecycle.claim(arrival(settings.inbox, image, sidecar))
    [job] = lifecycle.jobs.values()
    spooled = lifecycle.spool.input_path(job)
    try:
        open("/usr/lib/no-such-module/x.py")  # noqa: SIM115 (a real traceback with a path)
    except OSError:
        trace = traceback.format_exc()
    retry = f"[Errno 28] No space left on device: '{spooled.parent / 'result.jpg'}'"
    lifecycle.handle(Started(job.id, 0, "cpu"))
    lifecycle.handle(Retrying(job.id, 2, "internal", retry, 48, None))
    lifecycle.handle(Started(job.id, 0, "cpu"))
    lifecycle.handle(
        Failed(job.id, "internal", f"internal error: {retry}; please report it", retry, trace)
    )

    report = json.loads((folders.outbox / "trip/photo.error.json").read_text())
    assert report["original"].startswith("returned to the inbox as trip/photo.jpg")
    assert f"state/spool/{job.id}/result.jpg" in report["error"]
    log = (folders.outbox / "trip/photo.log").read_text()
    assert "No space left on device: 'state/spool/" in log
    assert "the traceback is in the daemon's log" in log
    _no_server_paths(folders)
    assert (settings.inbox / "trip/photo.jpg").exists()


def test_rejections_and_reused_results_name_no_server_path(folders: Folders) -> None:
    settings = load_settings(folders.config(), {})
    lifecycle = _lifecycle(settings)
    image, sidecar = pair(settings.inbox, "a/photo.jpg", {"style": "not-in-the-library"})
    lifecycle.claim(arrival(settings.inbox, image, sidecar))
    report = json.loads((folders.outbox / "a/photo.error.json").read_text())
    assert "not-in-the-library" in report["error"] and "mosaic" in report["error"]

    image, sidecar = pair(settings.inbox, "b/photo.jpg")
    lifecycle.claim(arrival(settings.inbox, image, sidecar))
    [job] = lifecycle.jobs.values()
    earlier = folders.outbox / "old" / "photo.stylised.jpg"
    earlier.parent.mkdir()
    earlier.write_bytes(b"\xff\xd8 an earlier result")
    (earlier.parent / "photo.manifest.json").write_text(a_manifest("old").model_dump_json())
    detail = ReuseDetail(
        job_id="old", output=str(earlier), manifest=str(earlier.parent / "photo.manifest.json")
    )
    lifecycle.publisher.publish(job.id, job, "reuse", detail)
    manifest = json.loads((folders.outbox / "b/photo.manifest.json").read_text())
    assert manifest["reused"] == {
        "job_id": "old",
        "output": "old/photo.stylised.jpg",
        "manifest": "old/photo.manifest.json",
    }
    _no_server_paths(folders)


def test_public_names_folders_by_role_and_cuts_other_paths() -> None:
    roots = {Path("/srv/stylefold/state"): "state", Path("/srv/share/in"): "inbox"}
    assert public("cannot write /srv/stylefold/state/spool/x/r.jpg", roots) == (
        "cannot write state/spool/x/r.jpg"
    )
    assert public({"e": ["see /opt/weights/vgg19.pth"]}, roots) == {"e": ["see .../vgg19.pth"]}
    assert public("iteration 3/4, 50/50 blend, http://example.org/a/b", roots) == (
        "iteration 3/4, 50/50 blend, http://example.org/a/b"
    )
