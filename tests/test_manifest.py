"""The manifest contract: the shipped schema is the model's, and real manifests fit the model."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

from conftest import CLI, REPO, Folders, image_bytes, write_json
from icc_profiles import rgb_profile
from PIL import Image

from daemon.jobs.manifest import SCHEMA_PATH, Manifest, schema_text, write_schema

KEYS = {
    "job_id", "status", "reused", "input", "sidecar", "styles", "params", "style_weight_used",
    "start_style_colours", "requested_params", "output", "device", "node", "attempt",
    "iterations", "stop_reason", "losses", "scales", "scale_iterations", "notes",
    "peak_memory_bytes", "batch_size", "timings",
    "versions", "claimed_at", "finished_at",
}  # fmt: skip


def test_shipped_schema_matches_model(tmp_path: Path) -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text(), (
        "daemon/manifest.schema.json is stale; regenerate it with `python -m daemon.jobs.manifest`"
    )
    document = json.loads(write_schema(tmp_path / "schema.json").read_text())
    assert document["additionalProperties"] is False
    assert set(document["properties"]) == KEYS
    assert set(document["required"]) == KEYS  # a manifest as written has every key
    for name, prop in document["properties"].items():
        assert prop.get("description"), f"{name} has no description in the schema"


def _once(config: Path) -> None:
    done = subprocess.run(
        [*CLI, "once", "--config", str(config), "--log-format", "json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _read(folders: Folders, rel: str) -> tuple[Manifest, dict[str, object]]:
    text = (folders.outbox / rel).read_text(encoding="utf-8")
    return Manifest.model_validate_json(text), json.loads(text)


def test_manifests_of_real_runs_fit_the_model(folders: Folders) -> None:
    """A rendered job with a blend and (second run) one reused from that earlier identical job
    (the same photo under another name in its folder):
    each validates, and the model writes back exactly its keys and values (plus `node`, the one
    key the model added). (A photo without a sidecar waits pair_timeout, which `once` does not.)"""
    blend = {"style": [{"name": "mosaic", "weight": 2}, {"name": "waves"}]}
    (folders.inbox / "a").mkdir()
    photo = io.BytesIO()
    Image.open(io.BytesIO(image_bytes(seed=1))).save(
        photo, "JPEG", icc_profile=rgb_profile("P3 (test)")
    )
    (folders.inbox / "a/photo.jpg").write_bytes(photo.getvalue())
    write_json(folders.inbox / "a/photo.json", blend)
    # A partly transparent photo, answered in a format that holds transparency and in one that
    # does not (said in the notes).
    cutout = Image.open(io.BytesIO(image_bytes(seed=2))).convert("RGBA")
    cutout.putalpha(Image.linear_gradient("L").resize(cutout.size))  # transparent at the top
    for stem, output in (("cutout", {}), ("sticker", {"output": {"format": "png"}})):
        cutout.save(folders.inbox / f"{stem}.png")
        write_json(folders.inbox / f"{stem}.json", {"style": "mosaic", **output})
    config = folders.config()
    _once(config)
    cut, _ = _read(folders, "cutout.manifest.json")
    assert any("partly transparent and a jpg result" in note for note in cut.notes), cut.notes
    sticker, _ = _read(folders, "sticker.manifest.json")
    assert not sticker.notes, sticker.notes
    with Image.open(folders.outbox / sticker.output.file) as painted:
        alpha = painted.getchannel("A")
        assert alpha.getpixel((5, 0)) < 8 and alpha.getpixel((5, painted.height - 1)) > 247
    (folders.inbox / "a/copy.jpg").write_bytes(photo.getvalue())
    write_json(folders.inbox / "a/copy.json", blend)
    _once(config)

    rendered, raw = _read(folders, "a/photo.manifest.json")
    reused, reused_raw = _read(folders, "a/copy.manifest.json")
    for model, data in ((rendered, raw), (reused, reused_raw)):
        assert model.model_dump(mode="json") == {"node": None, **data}
        assert model.node is None  # the local pool
    assert rendered.reused is None
    assert len(rendered.scale_iterations) == len(rendered.scales)
    assert sum(rendered.scale_iterations) == rendered.iterations > 0
    assert rendered.input.colour_profile == "P3 (test)"  # its pixels were converted to sRGB
    assert rendered.sidecar is not None and rendered.sidecar.content == blend
    assert [style.weight for style in rendered.styles] == [2.0, 1.0]
    assert reused.reused is not None and reused.reused.job_id == rendered.job_id
    assert reused.output.sha256 == rendered.output.sha256
    assert (reused.input.path, reused.output.file) == ("a/copy.jpg", "copy.stylised.jpg")
