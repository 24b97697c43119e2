"""A job as the pool sees it: files in, parameters, files out. It crosses into the worker
process (or Ray actor), so it holds only plain, picklable values."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from service.params import RenderParams

RESULT_INFO = "result.json"  # daemon.pool.events.ResultInfo, beside the result in the job folder


def result_file(job_dir: Path, output_format: str) -> Path:
    """Where a worker leaves a job's rendered image in its spool folder."""
    return job_dir / f"result.{output_format}"


@dataclass(frozen=True)
class StyleRef:
    path: Path
    weight: float
    label: str = "a style image"  # what a report calls it: the file and where it lives
    name: str = ""  # what a note calls it in a blend: the style's name or file


@dataclass(frozen=True)
class Task:
    """One render. `job_dir` receives `result.<output_format>` and `result.json` before the
    pool reports the job done."""

    job_id: str
    job_dir: Path
    content: Path
    styles: tuple[StyleRef, ...]
    params: RenderParams
    output_format: str
    output_quality: int
    max_pixels: int
    max_bytes: int | None = None  # of each image file (max_input_bytes): it may grow once claimed
    attempt: int = 1
    lost: int = 0  # times its worker went with its Ray cluster, from the job's durable record
    device: str | None = None  # only a worker on this device may take it (OOM fallback to CPU)
    batch_key: str | None = None  # tasks with one key may be optimised together; None: alone
    preview_every: int = 0  # a JPEG preview with the progress every this many iterations; 0: off
    strip_location: bool = False  # leave the photo's GPS location out of the result's EXIF
    share: str = ""  # the photo's top inbox folder: the queue takes turns between them
    # What a report calls the photo: its name as sent, as reports begin (a photographer's
    # trial: "the photo is not an image format" where every other report named the file).
    content_label: str = "the photo"

    @property
    def result_path(self) -> Path:
        return result_file(self.job_dir, self.output_format)

    @property
    def info_path(self) -> Path:
        return self.job_dir / RESULT_INFO
