"""The record of a claimed job: everything needed to finish it after any restart. Written once
when the claim completes (into the state database), and changed only where its answer's names
are taken by another's meanwhile (`Spool.move_answer_if_taken`, through `Store.rewrite`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, JsonValue

from daemon.safefs import Identity
from service.params import RenderParams


class JobStyle(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    file: str  # inside the job's spool folder
    weight: float
    sha256: str


class AnswerNames(BaseModel):
    """The outbox names reserved for a job's answers (`outbox.OutputNames` without its folder,
    which follows the outbox setting and the job's subfolder)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stem: str
    image_ext: str
    number: int


class Companion(NamedTuple):
    """A `._` file that travels with the photo (stored as a two-item list)."""

    name: str  # in the inbox folder
    file: str  # in the job's spool folder


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    claimed_at: float
    rel_dir: str  # the photo's folder relative to the inbox ("" at the top)
    image_name: str
    sidecar_name: str | None
    sidecar: dict[str, JsonValue] | None  # as written: a re-send's key follows it (`sent_key`)
    input_file: str
    input_sha256: str
    styles: list[JobStyle]
    params: RenderParams
    output_format: str
    output_quality: int
    names: AnswerNames  # reserved at claim
    # The outbox folder of the answers where it is not rel_dir (outbox.answer_folder: a file
    # holds the name of a folder there), relative to the outbox.
    answer_dir: str | None = None
    key: str  # what identical resubmissions share
    companions: list[Companion] = []
    copied: bool = False  # archive = "keep": the originals stayed in the inbox, these are copies
    origin: list[Identity] = []  # copied: of the photo and its sidecar in the inbox, as claimed

    @property
    def source(self) -> str:
        """The photo's path relative to the inbox, for people and logs."""
        return str(Path(self.rel_dir) / self.image_name)

    @property
    def outbox_dir(self) -> str:
        """The folder of its answers, relative to the outbox."""
        return self.rel_dir if self.answer_dir is None else self.answer_dir

    @property
    def sent_key(self) -> str:
        """What a re-send of this pair shares (daemon.jobs.resend): the photo's bytes, the
        sidecar as written and the style images, not the parameters they resolve to. An upgrade
        or a config whose defaults changed gave every photo a sync tool sent again a second
        answer (an operator's trial: `init` changed between two releases)."""
        return _digest(
            {
                "input": self.input_sha256,
                "sidecar": self.sidecar,
                "styles": _style_material(self.styles),
            }
        )

    @property
    def reuse_key(self) -> str:
        """What an identical job of the same inbox folder shares (`dedupe`): the job key alone
        answered a photo from another folder's result, naming that folder's file (a family's
        trial: per-person folders on one daemon)."""
        return _digest({"key": self.key, "folder": self.rel_dir})

    @property
    def pair(self) -> list[str]:
        """The photo's and its sidecar's names in their inbox folder."""
        return [name for name in (self.image_name, self.sidecar_name) if name is not None]

    @property
    def inputs(self) -> list[str]:
        """The photo and its sidecar relative to the inbox, as error reports name them."""
        return inbox_paths(self.rel_dir, self.image_name, self.sidecar_name)


def inbox_paths(rel_dir: str, *names: str | None) -> list[str]:
    return [(Path(rel_dir) / name).as_posix() for name in names if name is not None]


def job_key(
    input_sha256: str, styles: list[JobStyle], params: RenderParams, output: dict[str, Any]
) -> str:
    return _digest(
        {
            "input": input_sha256,
            "styles": _style_material(styles),
            "params": params.model_dump(mode="json"),
            "output": output,
        }
    )


def _style_material(styles: list[JobStyle]) -> list[list[Any]]:
    return [[style.sha256, style.weight] for style in styles]


def _digest(material: dict[str, Any]) -> str:
    """The key of `material`: the same for equal values whatever the order of their keys."""
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
