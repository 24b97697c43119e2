"""Writing into folders that sync tools watch: whole files only, never overwriting an earlier one.

Every file is written under a hidden temporary name (`.stylefold-*.tmp`, which Syncthing,
Nextcloud and rclone can be told to ignore), flushed with fsync, renamed into place, and the
folder itself is fsynced so the rename survives a power cut. A job's files share one set of
names (`OutputNames`) chosen so that nothing already in the outbox is replaced; the manifest (or
the error report) is renamed last and so marks the job as published.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.fsutil import (
    atomic_copy,
    atomic_write,
    atomic_write_json,
    fit_name,
    read_json,
    text_bytes,
)


def _numbered(name_tail: str, number: int) -> str:
    """'.stylised.jpg' -> '.stylised-2.jpg'; '.log' -> '-2.log'. The number sits before the last
    extension so every file of the job keeps its type and the set sorts together."""
    if number == 1:
        return name_tail
    head, dot, ext = name_tail.rpartition(".")
    return f"{head}-{number}{dot}{ext}"


@dataclass(frozen=True)
class OutputNames:
    """The files one job may create in its outbox folder: `<stem>.stylised.<ext>` and company,
    numbered from 2 on when an earlier job already holds the plain names."""

    folder: Path
    stem: str
    image_ext: str
    number: int = 1

    def _path(self, tail: str) -> Path:
        return self.folder / fit_name(self.stem, _numbered(tail, self.number))

    @property
    def image(self) -> Path:
        return self._path(f".stylised.{self.image_ext}")

    @property
    def manifest(self) -> Path:
        return self._path(".manifest.json")

    @property
    def log(self) -> Path:
        return self._path(".log")

    @property
    def error(self) -> Path:
        return self._path(".error.json")

    @property
    def progress(self) -> Path:
        return self._path(".progress.json")

    @property
    def preview(self) -> Path:
        """The running job's latest preview (preview_every), removed when the answer lands."""
        return self._path(".preview.jpg")

    def all(self) -> tuple[Path, ...]:
        return (self.image, self.manifest, self.log, self.error, self.progress, self.preview)

    def to_json(self) -> dict[str, Any]:
        """Everything but the folder, which follows the outbox setting and the job's subfolder."""
        return {"stem": self.stem, "image_ext": self.image_ext, "number": self.number}

    @classmethod
    def from_json(cls, folder: Path, value: dict[str, Any]) -> OutputNames:
        return cls(folder, str(value["stem"]), str(value["image_ext"]), int(value["number"]))


def choose_names(
    folder: Path, stem: str, image_ext: str, reserved: Iterable[Path] = ()
) -> OutputNames:
    """The first numbering whose files neither exist nor are `reserved` by a running job, so a
    second photo.jpg never replaces the first one's result (or its error report)."""
    taken = set(reserved)
    number = 1
    while True:
        names = OutputNames(folder, stem, image_ext, number)
        if not any(path in taken or os.path.lexists(path) for path in names.all()):
            return names
        number += 1


def publish_result(names: OutputNames, image: Path, manifest: dict[str, Any], log: str) -> None:
    """Image first, manifest last: a manifest in the outbox means its image is complete."""
    atomic_copy(image, names.image)
    atomic_write(names.log, text_bytes(log))
    atomic_write_json(names.manifest, manifest)


def publish_error(names: OutputNames, report: dict[str, Any], log: str) -> None:
    """The job's log, then `<stem>.error.json`, whose `error` says what was wrong and the fix."""
    if not isinstance(report.get("error"), str):
        raise ValueError("an error report needs an 'error' text")
    atomic_write(names.log, text_bytes(log))
    atomic_write_json(names.error, report)


def published_by(names: OutputNames, job_id: str) -> str | None:
    """'result' or 'error' when this job's commit file is in place (a restart must not redo it)."""
    for kind, path in (("result", names.manifest), ("error", names.error)):
        value = read_json(path)
        if isinstance(value, dict) and value.get("job_id") == job_id:
            return kind
    return None
