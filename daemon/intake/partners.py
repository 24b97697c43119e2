"""Which tracked inbox files belong together: a photo, its sidecar (`photo.json` or the more
specific `photo.jpg.json`) and the style image a sidecar brings along.

The index only answers questions about names; when a file is ready and what to do about it is
`daemon.intake.pairing`'s work. Names are compared in NFC, so a photo written by macOS (NFD)
pairs with a sidecar written elsewhere.
"""

import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from daemon.intake.arrival import Arriving, Kind, Signature
from daemon.intake.ignore import SIDECAR_EXTENSION


@dataclass(frozen=True)
class Reported:
    """A file answered with a problem report, as it was then: the same report is not repeated
    while the file stays so, and a photo waiting on it knows why."""

    signature: Signature
    reason: str


@dataclass(frozen=True)
class Emitted:
    """A pair emitted as an arrival, each file as it was then (the photo's signature, the
    sidecar's and the style's path and signature), so the same arrival is not emitted twice."""

    signature: Signature
    sidecar: tuple[Path, Signature] | None
    style: tuple[Path, Signature] | None


@dataclass
class Tracked:
    path: Path
    kind: Kind
    base: str  # sidecars: name without ".json"; images: name without the extension
    signature: Signature
    changed_at: float
    waiting_since: float
    settled: bool = False
    done: Reported | Emitted | None = None  # what was last emitted about this file
    style_file: str | None = None  # sidecars: the brought-along style file named inside
    parsed: Signature | None = None  # sidecars: the signature `style_file` was read at
    arriving: Arriving | None = None  # images: settled, but truncated (daemon.intake.arrival)
    unusable: str | None = None  # why it cannot be taken (a link, a FIFO, hard links)
    looked_beside: Signature | None = None  # sidecars: the version a photo not taken was sought at
    waits_for: str | None = None  # images: what it waits for, when not its sidecar (status)


def key(name: str) -> str:
    """Names pair up whatever the Unicode normalisation: macOS writes accents decomposed (NFD),
    most other systems composed (NFC), and a sync tool carries the bytes as they were."""
    return unicodedata.normalize("NFC", name)


def signature_of(result: os.stat_result) -> Signature:
    return Signature(result.st_size, result.st_mtime_ns, result.st_ino, result.st_dev)


def base_of(path: Path, kind: Kind) -> str:
    """What pairs: a sidecar's name without `.json`, an image's name without its extension."""
    return key(path.name[: -len(SIDECAR_EXTENSION) - 1] if kind == "sidecar" else path.stem)


class Partners:
    """The tracked files, indexed by folder and base name."""

    def __init__(self) -> None:
        self.files: dict[Path, Tracked] = {}
        # (folder, base) -> {the base as written: sidecar}: more than one only for names that
        # differ in Unicode form alone (café.json written composed and decomposed)
        self._sidecars: dict[tuple[Path, str], dict[str, Path]] = {}
        self._stems: dict[tuple[Path, str], set[Path]] = {}  # (folder, stem) -> images
        self._style_refs: dict[Path, set[Path]] = {}  # style file -> sidecars naming it

    @property
    def empty(self) -> bool:
        """Nothing tracked and nothing left in any index (forgotten files leave no trace)."""
        return not (self.files or self._sidecars or self._stems or self._style_refs)

    def add(self, entry: Tracked) -> None:
        self.files[entry.path] = entry
        if entry.kind == "sidecar":
            self._sidecars.setdefault((entry.path.parent, entry.base), {})[_raw(entry.path)] = (
                entry.path
            )
        else:
            self._stems.setdefault((entry.path.parent, entry.base), set()).add(entry.path)

    def remove(self, path: Path) -> Tracked | None:
        entry = self.files.pop(path, None)
        if entry is None:
            return None
        index = (path.parent, entry.base)
        if entry.kind == "sidecar":
            group = self._sidecars.get(index, {})
            if group.get(_raw(entry.path)) == path:
                del group[_raw(entry.path)]
                if not group:
                    del self._sidecars[index]
            self.set_style_ref(entry, None)
        else:
            images = self._stems.get(index)
            if images is not None:
                images.discard(path)
                if not images:
                    del self._stems[index]
        return entry

    def has_partner(self, path: Path, kind: Kind, base: str) -> bool:
        """Whether a file would complete a pair already tracked."""
        folder = path.parent
        if kind == "sidecar":
            return bool(self._stems.get((folder, base)) or self.exact_image(folder, base))
        return (folder, key(path.name)) in self._sidecars or (folder, base) in self._sidecars

    def is_style_image(self, path: Path) -> bool:
        """Whether a sidecar names this file as the style image it brings along."""
        return path in self._style_refs

    def borrowers(self, path: Path) -> list[Tracked]:
        """The sidecars, each with its photo here, that name this file as their style image."""
        return [
            self.files[sidecar]
            for sidecar in sorted(self._style_refs.get(path, ()))
            if sidecar in self.files and self.images_for(sidecar)
        ]

    def related(self, entry: Tracked) -> set[Path]:
        """Files whose pairing may change when `entry` changes or goes."""
        folder = entry.path.parent
        related: set[Path] = set()
        if entry.kind == "image":
            for base in (key(entry.path.name), entry.base):
                for sidecar in self._sidecars.get((folder, base), {}).values():
                    related.add(sidecar)
                    related.update(self.images_for(sidecar))
            for sidecar in self._style_refs.get(entry.path, ()):
                related.add(sidecar)
                related.update(self.images_for(sidecar))
        else:
            related.update(self.images_for(entry.path))
            if entry.style_file is not None:
                related.add(folder / entry.style_file)
        related.discard(entry.path)
        return {path for path in related if path in self.files}

    def images_for(self, sidecar: Path) -> list[Path]:
        """Images a sidecar belongs to: the exact name (`photo.jpg.json`) if that image is
        here, else every image with that stem that has no specific sidecar of its own."""
        folder = sidecar.parent
        base = base_of(sidecar, "sidecar")
        exact = self.exact_image(folder, base)
        if exact is not None:
            return [exact]
        alike = len(self._sidecars.get((folder, base), {})) > 1  # café.json twice: each its own
        raw = sidecar.name[: -len(SIDECAR_EXTENSION) - 1]
        return sorted(
            image
            for image in self._stems.get((folder, base), ())
            if (folder, key(image.name)) not in self._sidecars and (not alike or image.stem == raw)
        )

    def exact_image(self, folder: Path, name: str) -> Path | None:
        """The image called `name` (compared in NFC) in `folder`, if it is tracked."""
        for image in self._stems.get((folder, key(Path(name).stem)), ()):
            if key(image.name) == name:
                return image
        return None

    def sidecar_for(self, image: Tracked) -> tuple[Tracked | None, list[Path]]:
        """The image's sidecar, or (None, [the images sharing it]) when it is ambiguous."""
        folder = image.path.parent
        specific = self._pick(
            self._sidecars.get((folder, key(image.path.name)), {}), image.path.name
        )
        if specific is not None:
            return self.files[specific], []
        shared = self._pick(self._sidecars.get((folder, image.base), {}), image.path.stem)
        if shared is None:
            return None, []
        owners = self.images_for(shared)
        if owners == [image.path]:
            return self.files[shared], []
        return None, owners if image.path in owners else []

    @staticmethod
    def _pick(group: dict[str, Path], name: str) -> Path | None:
        """The sidecar of `group` for an image whose base is `name` as written: the only one,
        or, of several alike in Unicode form alone, the one written the same way."""
        if len(group) == 1:
            return next(iter(group.values()))
        return group.get(name)

    def set_style_ref(self, sidecar: Tracked, name: str | None) -> None:
        if sidecar.style_file is not None:
            old = sidecar.path.parent / sidecar.style_file
            refs = self._style_refs.get(old)
            if refs is not None:
                refs.discard(sidecar.path)
                if not refs:
                    del self._style_refs[old]
        sidecar.style_file = name
        if name is not None:
            self._style_refs.setdefault(sidecar.path.parent / name, set()).add(sidecar.path)


def _raw(sidecar: Path) -> str:
    """A sidecar's base as written (not folded): what tells café.json composed from decomposed."""
    return sidecar.name[: -len(SIDECAR_EXTENSION) - 1]
