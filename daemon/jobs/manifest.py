"""The manifest: what was done to one photo, exactly enough to reproduce it.

It is published beside every result as `<stem>.manifest.json` and read by people and by other
programs, so its keys are a contract. This model is their single source: the daemon builds a
`Manifest` and writes `model_dump(mode="json")`, and `python -m daemon.jobs.manifest` regenerates
the JSON Schema shipped as daemon/manifest.schema.json (a test keeps file and model equal).
"""

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.params import OutputFormat, RenderParams, StopReason

SCHEMA_PATH = Path(__file__).parent.parent / "manifest.schema.json"
SCHEMA_ID = "https://stylefold.invalid/manifest.schema.json"

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Pixels = tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]]


class _Part(BaseModel):
    """Manifests are written once and never changed; an unknown key is a contract drift."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_serialization_defaults_required=True
    )


class InputInfo(_Part):
    path: str = Field(description="The photo's path relative to the inbox.")
    sha256: Sha256 = Field(description="SHA-256 of the photo's bytes, as claimed.")
    format: str | None = Field(
        description="The format the photo decoded as (e.g. JPEG, PNG, HEIF); null if unknown."
    )
    size: Pixels = Field(description="[width, height] of the photo in pixels.")
    colour_profile: str | None = Field(
        default=None,
        description="The name of the photo's ICC colour profile, from which its pixels were "
        "converted to sRGB (results are sRGB); null if it had none (read as sRGB).",
    )


class SidecarEntry(_Part):
    path: str = Field(description="The sidecar's file name, beside the photo in the inbox.")
    content: dict[str, Any] = Field(description="The sidecar's JSON, as it was read.")


class StyleEntry(_Part):
    name: str = Field(description="Library name of the style (or the sidecar's style file).")
    weight: float = Field(description="The style's share of a blend, as given (1 alone).")
    sha256: Sha256 = Field(description="SHA-256 of the style image that was used.")
    size: Pixels | None = Field(
        None,
        description="[width, height] the style image was resized to for the output: its texture "
        "size follows from it (style_scale, and a short side of at least 128 px). Null in "
        "manifests written before it was recorded.",
    )


class OutputInfo(_Part):
    file: str = Field(description="File name of the stylised image, beside this manifest.")
    format: OutputFormat = Field(description="Its image format.")
    quality: int = Field(
        ge=1,
        le=100,
        description="Encoder quality 1-100 of a JPEG or WebP; a PNG's records the setting, "
        "which a lossless format does not use.",
    )
    size: Pixels = Field(description="[width, height] of the stylised image in pixels.")
    sha256: Sha256 = Field(description="SHA-256 of the stylised image's bytes.")


class Timings(_Part):
    decode_seconds: float = Field(ge=0, description="Worker: reading and decoding the images.")
    render_seconds: float = Field(
        ge=0, description="Worker: the optimisation (shared by the jobs of a batch)."
    )
    encode_seconds: float = Field(ge=0, description="Worker: encoding the stylised image.")
    worker_total_seconds: float = Field(ge=0, description="Worker: decode + render + encode.")
    queued_seconds: float | None = Field(
        description="From the claim until a worker started the attempt that made this "
        "result: the wait for a worker, and any earlier attempt cut short (a retry, a stop of "
        "the daemon) with the time the daemon was stopped; null where that start was not seen."
    )
    total_seconds: float = Field(ge=0, description="From the claim until the manifest was built.")


class Versions(_Part):
    stylefold: str = Field(description="The daemon's package version.")
    python: str = Field(description="The daemon's Python version.")
    torch: str = Field(description="PyTorch in the worker that rendered the job.")
    pillow: str = Field(description="Pillow in the worker that rendered the job.")


class ReusedFrom(_Part):
    job_id: str = Field(description="The earlier identical job whose result was copied.")
    output: str = Field(description="Path of that job's stylised image when it was copied.")
    manifest: str = Field(description="Path of that job's manifest.")


class Manifest(_Part):
    """One finished job. A reused result (an identical job done before) carries the earlier
    job's render facts, with its own job_id, input.path, sidecar, output.file, reused and times."""

    model_config = ConfigDict(
        title="stylefold manifest",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    job_id: str = Field(description="This job's id (sortable by claim time).")
    status: Literal["ok"] = Field("ok", description="Always ok: failures get an error report.")
    reused: ReusedFrom | None = Field(
        None, description="Set when the result is a copy of an earlier identical job's."
    )
    input: InputInfo = Field(description="The photo.")
    sidecar: SidecarEntry | None = Field(description="The sidecar; null for a photo without one.")
    styles: list[StyleEntry] = Field(min_length=1, description="The styles, in blend order.")
    params: RenderParams = Field(description="The parameters the render used.")
    style_weight_used: float | None = Field(
        None,
        description="The style loss's weight the render used: params.style_weight when given, "
        "else the one params.strength maps to; give it as style_weight to repeat the balance "
        "exactly. Null in manifests written before it was recorded.",
    )
    start_style_colours: float | None = Field(
        None,
        description="How much of the style's colours the start took: 1 all (the photo "
        "recoloured with the style's colour mean and covariance), 0 none (the photo's own: "
        "init content, preserve_colors, or no style weight), in between below the default "
        "strength's content:style balance. Null when the start is not the photo (init noise "
        "or image), and in manifests written before it was recorded.",
    )
    requested_params: RenderParams | None = Field(
        None,
        description="The parameters asked for, when a retry changed them (oom_fallback "
        "'smaller' renders at a smaller size); null when they were used as asked.",
    )
    output: OutputInfo = Field(description="The stylised image.")
    device: str = Field(description="The torch device that rendered it (cpu, cuda:0, mps).")
    node: str | None = Field(
        None, description="The Ray node (its IP address) that rendered it; null locally."
    )
    attempt: int = Field(ge=1, description="Which attempt succeeded (retries follow crashes).")
    iterations: int = Field(ge=0, description="Optimiser iterations run, all scales together.")
    stop_reason: StopReason = Field(
        description="Why the final scale stopped: converged (tolerance) or iterations (the cap)."
    )
    losses: dict[str, float] = Field(description="The final weighted losses by name.")
    scales: list[Pixels] = Field(description="[width, height] of each coarse-to-fine scale.")
    scale_iterations: list[int] = Field(
        default_factory=list,
        description="Iterations run at each scale, in the order of scales (empty in results "
        "rendered before stylefold recorded them).",
    )
    notes: list[str] = Field(
        default_factory=list,
        description="Where the picture differs from what the params seem to ask: a photo or a "
        "style image enlarged more than twice, a style_scale the style image's floor overrode, "
        "a partly transparent photo's result in a format without transparency, an animation or "
        "a multi-page file of which only the first frame was painted (the job log has these, "
        "and the claim's: weights, seeds and style defaults that did nothing).",
    )
    peak_memory_bytes: int = Field(
        ge=0, description="Peak device memory of the render (shared by the jobs of a batch)."
    )
    batch_size: int = Field(ge=1, description="How many jobs were rendered together with it.")
    timings: Timings = Field(description="Where the time went, in seconds.")
    versions: Versions = Field(description="The software that decides what a render looks like.")
    claimed_at: str = Field(description="When the job was claimed (local time, ISO 8601).")
    finished_at: str = Field(description="When the result was published (local time, ISO 8601).")


def schema_text() -> str:
    """The JSON Schema of a manifest as written (every key is always present)."""
    document = {"$id": SCHEMA_ID, **Manifest.model_json_schema(mode="serialization")}
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def write_schema(path: Path = SCHEMA_PATH) -> Path:
    path.write_text(schema_text(), encoding="utf-8")
    return path


if __name__ == "__main__":
    print(f"wrote {write_schema()}", file=sys.stderr)
