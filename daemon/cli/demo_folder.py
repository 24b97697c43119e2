"""The demo's working folder: the sample images it is made of (shipped in scikit-image's wheel,
the `demo` extra), its jobs, and which files in it are its own, since a fresh start deletes them
and nothing of anyone else's may go with them."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from daemon.config import DEFAULT_IMAGE_EXTENSIONS
from daemon.fsutil import file_sha256, read_json
from daemon.jobs.outbox import OutputNames, owner
from daemon.jobs.spool import CLAIM_FILE, LOG_FILE
from daemon.jobs.store import DB_FILE
from daemon.lock import LOCK_NAME
from daemon.pool.task import RESULT_INFO
from daemon.status import STATUS_FILE
from service.imageio import written_by_stylefold

MARKER = ".stylefold-demo"
DAEMON_LOG = "daemon.log"

# Names used by the demo and the gallery -> files inside skimage/data in the scikit-image wheel.
SAMPLES: dict[str, str] = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "motorcycle": "motorcycle_left.png",
    "cells": "ihc.png",  # immunohistochemistry slide: strong brown strokes on blue
    "retina": "retina.jpg",
    "hubble": "hubble_deep_field.jpg",
}
STYLES = ("cells", "retina", "hubble")


def sample_path(name: str) -> Path:
    """The file of a sample image; a clear error when scikit-image (the demo extra) is absent."""
    try:
        root = resources.files("skimage.data")
    except ModuleNotFoundError:
        raise DemoError(
            "the demo's images come with scikit-image, which is not installed; "
            "run: pip install 'stylefold[demo]'"
        ) from None
    path = Path(str(root.joinpath(SAMPLES[name])))
    if not path.is_file():
        raise DemoError(
            f"{path} is missing from the scikit-image installation; reinstall it with "
            "pip install --force-reinstall scikit-image"
        )
    return path


class DemoError(Exception):
    """The demo cannot run; the message says what to do."""


@dataclass(frozen=True)
class DemoJob:
    """A photo dropped into the inbox with its sidecar; `extra` are other files beside it."""

    photo: str
    sidecar: dict[str, Any]
    what: str
    extra: tuple[str, ...] = ()


def demo_jobs(size: int, iterations: int) -> list[DemoJob]:
    """One job per sidecar feature a newcomer should see working."""
    params = {"size": size, "iterations": iterations}
    return [
        DemoJob("chelsea", {"style": "cells", "params": params}, "one library style"),
        DemoJob(
            "astronaut",
            {
                "style": [{"name": "cells", "weight": 0.7}, {"name": "retina", "weight": 0.3}],
                "params": params,
            },
            "a blend of two styles",
        ),
        DemoJob(
            "coffee",
            {"style": "cells", "params": {**params, "preserve_colors": "luminance"}},
            "original colours kept",
        ),
        DemoJob(
            "rocket",
            {"style": {"file": "hubble.jpg"}, "params": params, "output": {"format": "png"}},
            "a style image brought along in the inbox, PNG output",
            extra=("hubble",),
        ),
    ]


def file_name(name: str) -> str:
    return name + sample_path(name).suffix


SUBFOLDERS = ("inbox", "outbox", "styles", "state")
SHOWN = 3  # of the files a fresh start would delete, named in its refusal
NUMBERED = 99  # answers to the demo's photos numbered up to this are its own (--keep runs)
# The daemon's own files at the top of its state folder.
STATE_FILES = frozenset(
    {DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm", f"{DB_FILE}-journal", LOCK_NAME, STATUS_FILE}
)
SIDECAR_BYTES = 4096  # far above a demo sidecar's size


@dataclass(frozen=True)
class _Ours:
    """What the demo makes, to tell its files from anyone else's."""

    jobs: list[DemoJob]
    samples: frozenset[str]  # SHA-256 of every sample image
    answers: frozenset[str]  # the names of the daemon's answers to the demo's photos

    @classmethod
    def of(cls, jobs: list[DemoJob]) -> _Ours:
        samples = frozenset(file_sha256(sample_path(name)) for name in SAMPLES)
        answers = frozenset(
            answer.name
            for job in jobs
            for number in range(1, NUMBERED + 1)
            for ext in ("jpg", "png")
            for answer in OutputNames(Path(), job.photo, ext, number).all()
        )
        return cls(jobs, samples, answers)

    def sample(self, path: Path) -> bool:
        return file_sha256(path) in self.samples

    def sidecar(self, path: Path) -> bool:
        """A sidecar the demo wrote (its params may differ: another --size or --iterations)."""
        value = read_json(path) if path.stat().st_size <= SIDECAR_BYTES else None
        if not isinstance(value, dict) or not isinstance(value.get("params", {}), dict):
            return False
        rest = {key: item for key, item in value.items() if key != "params"}
        return any(
            rest == {key: item for key, item in job.sidecar.items() if key != "params"}
            and set(value.get("params", {})) <= set(job.sidecar["params"])
            for job in self.jobs
        )

    def answer(self, path: Path) -> bool:
        """One of the daemon's answers to a demo photo, by name and by its signature or job id
        (an image it encoded, a JSON file it wrote); a log by name."""
        if path.name not in self.answers:
            return False
        if path.suffix == ".log":
            return True
        if path.suffix == ".json":
            return owner(path) is not None
        with path.open("rb") as file:
            return written_by_stylefold(file)

    def owns(self, sub: str, parts: tuple[str, ...], path: Path) -> bool:
        """Whether `path`, at `parts` below the demo folder's `sub`, is the demo's."""
        name = parts[-1]
        if name.startswith(".stylefold-") and name.endswith(".tmp"):
            return True  # a temporary of the daemon's
        if sub == "outbox":
            return len(parts) == 1 and self.answer(path)
        if sub == "state" and len(parts) == 1 and name in STATE_FILES:
            return True
        if sub in ("inbox", "styles") and len(parts) > 1:
            return False
        if sub == "state" and parts[0] not in ("archive", "spool", "returned"):
            return False
        image = path.suffix.lower().lstrip(".") in DEFAULT_IMAGE_EXTENSIONS
        spooled = sub == "state" and parts[0] == "spool"
        if spooled and name in (RESULT_INFO, LOG_FILE, CLAIM_FILE):
            return True  # the spool's own records of a job
        if image and self.sample(path):
            return True
        if spooled and name.startswith("result."):
            with path.open("rb") as file:
                return written_by_stylefold(file)
        return sub != "styles" and path.suffix == ".json" and self.sidecar(path)


def not_the_demos(folder: Path, jobs: list[DemoJob]) -> list[str]:
    """Files in the demo's folders that are not provably the demo's, relative to `folder`:
    a fresh start deletes those folders, and the demo's last lines invite people to try their
    own photos there (a new user's trial: a second `stylefold demo` deleted them, archived
    originals too). Links are never the demo's."""
    return _foreign(folder, _Ours.of(jobs))


def _foreign(folder: Path, ours: _Ours) -> list[str]:
    found = []
    for sub in SUBFOLDERS:
        top = folder / sub
        if top.is_symlink():
            found.append(sub)
            continue
        for root, dirs, files in os.walk(top):
            for name in [*dirs, *files]:
                path = Path(root) / name
                parts = path.relative_to(top).parts
                if path.is_symlink() or (
                    not path.is_dir() and not (path.is_file() and ours.owns(sub, parts, path))
                ):
                    found.append(path.relative_to(folder).as_posix())
            dirs[:] = [d for d in dirs if not (Path(root) / d).is_symlink()]
    return sorted(found)


def _place(source: Path, target: Path) -> None:
    """Copy a sample into the demo folder, where the same sample (or nothing) is: never over a
    file of someone else's, nor through a link (a trial's: `--keep` wrote the samples over a
    photo of the same name, and through a link, over a file outside the folder)."""
    if os.path.lexists(target):
        if target.is_symlink() or not target.is_file():
            raise DemoError(_not_ours(target))
        if file_sha256(target) != file_sha256(source):
            raise DemoError(_not_ours(target))
        return
    shutil.copyfile(source, target)


def _not_ours(path: Path) -> str:
    return (
        f"{path} is not the demo's, and the demo would write its own file there; move it away "
        "(the demo never writes over a file of yours), or choose another --dir"
    )


def prepare(folder: Path, jobs: list[DemoJob], keep: bool) -> None:
    """Create the folder layout, fill the style library and drop photos and sidecars into the
    inbox (sidecar last, as a careful sync client would; the daemon accepts either order)."""
    if folder.exists() and not (folder / MARKER).exists() and any(folder.iterdir()):
        raise DemoError(
            f"{folder} exists and was not made by `stylefold demo`; choose another --dir "
            "(the demo never writes into a folder of yours)"
        )
    for name in (MARKER, DAEMON_LOG):
        if (folder / name).is_symlink():
            raise DemoError(_not_ours(folder / name))
    ours = _Ours.of(jobs)
    if folder.exists() and not keep and (yours := _foreign(folder, ours)):
        more = f" and {len(yours) - SHOWN} more" if len(yours) > SHOWN else ""
        raise DemoError(
            f"{folder} holds files the demo did not make ({', '.join(yours[:SHOWN])}{more}), "
            "and starting afresh deletes its folders: move your files out of it first, run "
            "with --keep to add the demo's photos beside them, or choose another --dir"
        )
    if folder.exists() and not keep:
        for sub in SUBFOLDERS:
            shutil.rmtree(folder / sub, ignore_errors=True)
    for sub in SUBFOLDERS:
        if (folder / sub).is_symlink():
            raise DemoError(_not_ours(folder / sub))
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("made by `stylefold demo`; safe to delete\n", encoding="utf-8")
    for name in STYLES:
        _place(sample_path(name), folder / "styles" / file_name(name))
    for job in jobs:
        for name in (job.photo, *job.extra):
            _place(sample_path(name), folder / "inbox" / file_name(name))
        sidecar = folder / "inbox" / f"{job.photo}.json"
        if os.path.lexists(sidecar) and (sidecar.is_symlink() or not ours.sidecar(sidecar)):
            raise DemoError(_not_ours(sidecar))
        sidecar.write_text(json.dumps(job.sidecar, indent=2) + "\n", encoding="utf-8")
