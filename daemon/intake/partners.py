"""Which tracked inbox files belong together: a photo, its sidecar (`photo.json` or the more
specific `photo.jpg.json`) and the style image a sidecar brings along.

The index only answers questions about names; when a file is ready and what to do about it is
`daemon.intake.pairing`'s work. Names are compared in NFC and without case, so a photo
written by macOS (NFD) pairs with a sidecar written elsewhere, and `IMG_0001.JPG` with
`img_0001.json` (a stick or a Windows share keeps either case, and a camera and a person write
different ones). Where several sidecars differ in those ways alone, each photo takes the one
written the same way; one sidecar for several photos that differ so is shared, and they are told
to have one each.
"""

import os
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from daemon.intake.arrival import Arriving, Kind, Signature
from daemon.intake.ignore import SIDECAR_EXTENSION, without_trailing


@dataclass(frozen=True)
class Reported:
    """A file answered with a problem report, as it was then: the same report is not repeated
    while the file stays so, and a photo waiting on it knows why."""

    signature: Signature
    reason: str
    # A sidecar told it was not used, its photo taking another: told for good, the photo's
    # leaving (claimed) changes nothing.
    shadowed: bool = False


@dataclass(frozen=True)
class Emitted:
    """A pair emitted as an arrival, each file as it was then (the photo's signature, the
    sidecar's and the style's path and signature), so the same arrival is not emitted twice."""

    signature: Signature
    sidecar: tuple[Path, Signature] | None
    style: tuple[Path, Signature] | None


@dataclass(frozen=True)
class Sharing:
    """A sidecar that several photos would take (`p.json` beside `p.jpg` and `p.png`)."""

    sidecar: Path
    photos: list[Path]


@dataclass
class Tracked:
    path: Path
    kind: Kind
    base: str  # sidecars: name without ".json"; images: name without the extension (NFC)
    signature: Signature
    changed_at: float  # settling counts from here: the last change this tracker saw
    waiting_since: float  # pair_timeout counts from here: the file's arrival (its ctime)
    unchanged_since: float  # arriving_timeout counts from here: its last change (its ctime)
    settled: bool = False
    done: Reported | Emitted | None = None  # what was last emitted about this file
    style_file: str | None = None  # sidecars: the brought-along style file named inside
    refused_styles: tuple[str, ...] = ()  # sidecars refused: the style files named all the same
    parsed: Signature | None = None  # sidecars: the signature `style_file` was read at
    arriving: Arriving | None = None  # images: settled, but truncated (daemon.intake.arrival)
    unusable: str | None = None  # why it cannot be taken (a link, a FIFO, hard links)
    looked_beside: Signature | None = None  # sidecars: the version a photo not taken was sought at
    waits_for: str | None = None  # images: what it waits for, when not its sidecar (status)
    lent: bool = False  # images: waits for pairs bringing it as their style, then goes anyway
    takeout: bool = False  # sidecars: Google Takeout's metadata, as read at `parsed`
    # Lone files: which of stylefold's own answers it is (None: not one), and at which version
    # it was looked at (`Intake.own_answer`), for status before pair_timeout leaves it alone.
    own: tuple[Signature, str | None] | None = None

    @property
    def own_answer(self) -> str | None:
        """What kind of stylefold answer the file is as it is now, if it was looked at."""
        return self.own[1] if self.own is not None and self.own[0] == self.signature else None


def key(name: str) -> str:
    """Names pair up whatever the Unicode normalisation (macOS writes accents decomposed, most
    other systems composed, and a sync tool carries the bytes as they were) and whatever the
    case (FAT, exFAT and SMB fold it, so a user cannot even rename `photo.json` beside
    `Photo.jpg` to match). Case is folded letter by letter, as those file systems do: `ß` is
    not `SS` (a re-test's finding: `STRASSE.jpg` paired with `straße.json`)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).lower())


def signature_of(result: os.stat_result) -> Signature:
    return Signature(
        result.st_size, result.st_mtime_ns, result.st_ino, result.st_dev, result.st_ctime_ns
    )


def base_of(path: Path, kind: Kind) -> str:
    """What pairs (compared by `key`): a sidecar's name without `.json`, an image's name without
    its extension; in NFC, with its case, as reports name it."""
    if kind == "sidecar":
        name = path.name[: -len(SIDECAR_EXTENSION) - 1]
    else:  # pic.jpg. pairs as pic.jpg does, to be told with its sidecar what to rename
        name = Path(without_trailing(path.name)).stem
    return unicodedata.normalize("NFC", name)


class Partners:
    """The tracked files, indexed by folder and base name."""

    def __init__(self) -> None:
        self.files: dict[Path, Tracked] = {}
        # (folder, key of the base) -> {the base as written: sidecar}: more than one only for
        # names that differ in case or Unicode form alone (photo.json and Photo.json)
        self._sidecars: dict[tuple[Path, str], dict[str, Path]] = {}
        self._stems: dict[tuple[Path, str], set[Path]] = {}  # (folder, key of the stem) -> images
        # (folder, key of the name) -> sidecars naming that file as their style image
        self._style_refs: dict[tuple[Path, str], set[Path]] = {}

    @property
    def empty(self) -> bool:
        """Nothing tracked and nothing left in any index (forgotten files leave no trace)."""
        return not (self.files or self._sidecars or self._stems or self._style_refs)

    def add(self, entry: Tracked) -> None:
        self.files[entry.path] = entry
        index = (entry.path.parent, key(entry.base))
        if entry.kind == "sidecar":
            self._sidecars.setdefault(index, {})[_raw(entry.path)] = entry.path
        else:
            self._stems.setdefault(index, set()).add(entry.path)

    def remove(self, path: Path) -> Tracked | None:
        entry = self.files.pop(path, None)
        if entry is None:
            return None
        index = (path.parent, key(entry.base))
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
            return bool(self._stems.get((folder, key(base))) or self.exact_image(folder, base))
        return any((folder, key(name)) in self._sidecars for name in (path.name, base))

    def is_style_image(self, path: Path) -> bool:
        """Whether a sidecar names this file as the style image it brings along."""
        return _named(path) in self._style_refs

    def borrowers(self, path: Path) -> list[Tracked]:
        """The sidecars, each with its photo here, that name this file as their style image."""
        return [
            self.files[sidecar]
            for sidecar in sorted(self._style_refs.get(_named(path), ()))
            if sidecar in self.files and self.images_for(sidecar)
        ]

    def waiting_borrowers(self, photo: Path, own: Tracked | None) -> list[Tracked]:
        """Sidecars not yet decided that name `photo` as their style (other than its own),
        with a photo not decided either: one whose photo was reported (truncated, empty) will
        not take it (an attacker's trial: a truncated photo whose sidecar named another
        person's held that one back for the whole pair_timeout)."""
        return [
            b
            for b in self.borrowers(photo)
            if b.done is None and b is not own and any(self._undecided(b.path))
        ]

    def _undecided(self, sidecar: Path) -> Iterator[bool]:
        for path in self.images_for(sidecar):
            entry = self.files.get(path)
            yield entry is not None and entry.done is None

    def waits_on_itself(self, photo: Path, own: Tracked) -> bool:
        """Whether the photos `photo` waits for (those whose sidecars borrow it) wait, in turn
        and however far, for `photo`: a cycle, which would otherwise stall until pair_timeout
        and then fail whichever was claimed second."""
        seen = {photo}
        borrowers = self.waiting_borrowers(photo, own)
        while borrowers:
            waited_for = {path for b in borrowers for path in self.images_for(b.path)}
            if photo in waited_for:
                return True
            fresh = waited_for - seen
            seen |= fresh
            borrowers = [b for path in fresh for b in self.waiting_borrowers(path, None)]
        return False

    def emitted_as_is(self, image: Tracked, sidecar: Tracked | None) -> bool:
        """Whether `image` was emitted as it is now, with its sidecar and style image as they
        are now or gone since: left in the inbox (archive = "keep", a style swap's copy), it was
        answered, and a partner going is no new request (a sync user's trial: status showed it
        "waiting for its sidecar", then it got a false report). A partner changed is one."""
        done = image.done
        if not isinstance(done, Emitted) or done.signature != image.signature:
            return False
        if sidecar is not None and done.sidecar != (sidecar.path, sidecar.signature):
            return False
        style = None if done.style is None else self.files.get(done.style[0])
        return style is None or done.style == (style.path, style.signature)

    def related(self, entry: Tracked) -> set[Path]:
        """Files whose pairing, or advice, may change when `entry` changes or goes."""
        folder = entry.path.parent
        related: set[Path] = set()
        if entry.kind == "image":
            related.update(self._misnamed_alike(entry))  # pic.jpg. is told anew
            for base in (entry.path.name, entry.base):
                for sidecar in self._sidecars.get((folder, key(base)), {}).values():
                    related.add(sidecar)
                    related.update(self.images_for(sidecar))
            for sidecar in self._style_refs.get(_named(entry.path), ()):
                related.add(sidecar)
                related.update(self.images_for(sidecar))
        else:
            related.update(self.images_for(entry.path))
            for named in _style_names(entry):
                related.add(self.exact_image(folder, named) or folder / named)
        related.discard(entry.path)
        return {path for path in related if path in self.files}

    def _misnamed_alike(self, image: Tracked) -> list[Path]:
        """The other images here that stand for the same name as `image` with a space or dot
        after their extension (pic.jpg. for pic.jpg), whose advice its coming or going changes."""
        folder, name = image.path.parent, key(without_trailing(image.path.name))
        return [
            other
            for other in self._stems.get((folder, key(image.base)), ())
            if other != image.path
            and other.name != without_trailing(other.name)
            and key(without_trailing(other.name)) == name
        ]

    def images_for(self, sidecar: Path) -> list[Path]:
        """Images a sidecar belongs to: the exact name (`photo.jpg.json`) if that image is
        here, else every image with that stem that has no specific sidecar of its own."""
        folder = sidecar.parent
        raw = _raw(sidecar)
        if (entry := self.files.get(sidecar)) is not None and entry.takeout:
            return []
        exact = self.exact_image(folder, raw)
        if exact is not None:
            # Not when the photo takes a sidecar written as it is (pic.JPG.json, for pic.JPG,
            # beside this pic.jpg.json): this one is told it is not used, not silently kept.
            return [exact] if self._sidecar(folder, exact.name) == sidecar else []
        base = key(raw)
        alike = len(self._sidecars.get((folder, base), {})) > 1  # p.json, P.json: each its own
        found = sorted(
            image
            for image in self._stems.get((folder, base), ())
            if self._sidecar(folder, image.name) is None and (not alike or image.stem == raw)
        )
        # pic.jpg. goes with the sidecar, to be told with it what to rename, only where no
        # photo named as it should be is there (a re-test: pic.jpg beside pic.jpg. and pic.json
        # was refused as sharing its sidecar)
        named = [image for image in found if without_trailing(image.name) == image.name]
        return named or found

    def _sidecar(self, folder: Path, name: str, base: str | None = None) -> Path | None:
        """The sidecar named after `name` (pic.jpg.json for pic.jpg; with `base`, the one after
        the key `base`, written as `name`), as `_pick` finds it, unless it is Google Takeout's
        metadata, which is no photo's sidecar (a re-test: IMG_1.jpg.json from a Takeout hid
        the user's own IMG_1.json, which was told to be removed)."""
        found = self._pick(self._sidecars.get((folder, base or key(name)), {}), name)
        return None if found is None or self.files[found].takeout else found

    def named_for(self, folder: Path, name: str) -> Path | None:
        """The sidecar named after the file `name` (pic.jpg.json for pic.jpg), if tracked."""
        return self._sidecar(folder, name)

    def images_of_stem(self, folder: Path, stem: str) -> list[Path]:
        """The tracked images whose name is `stem` and an extension (pic.jpeg, pic.png)."""
        return sorted(self._stems.get((folder, key(stem)), ()))

    def shadowed_by(self, sidecar: Path) -> tuple[Path, Path] | None:
        """(photo, its own sidecar) when the lone `sidecar` (pic.json) is not used because the
        photo of its stem takes the sidecar named after its whole file name (pic.jpg.json)."""
        folder = sidecar.parent
        for image in sorted(self._stems.get((folder, key(_raw(sidecar))), ())):
            own = self._sidecar(folder, image.name)
            if own is not None and own != sidecar:
                return image, own
        return None

    def alike_images(self, folder: Path, name: str) -> list[Path]:
        """The tracked images in `folder` whose names are `name` but for case or Unicode form."""
        return sorted(
            image
            for image in self._stems.get((folder, key(Path(name).stem)), ())
            if key(image.name) == key(name)
        )

    def exact_image(self, folder: Path, name: str) -> Path | None:
        """The image called `name` in `folder`, if it is tracked: written so, else the only one
        whose name differs in case or Unicode form alone (several such: none, it is unclear)."""
        alike = self.alike_images(folder, name)
        written = [image for image in alike if image.name == name]
        if written:
            return written[0]
        return alike[0] if len(alike) == 1 else None

    def sidecar_for(self, image: Tracked) -> tuple[Tracked | None, Sharing | None]:
        """The image's sidecar, or (None, the sidecar it would share) when it is ambiguous."""
        folder = image.path.parent
        specific = self._sidecar(folder, image.path.name)
        if specific is not None:
            # photo.jpg.json beside photo.jpg and Photo.jpg is photo.jpg's alone
            mine = image.path in self.images_for(specific)
            return (self.files[specific], None) if mine else (None, None)
        shared = self._sidecar(folder, image.path.stem, key(image.base))
        if shared is None:
            return None, None
        owners = self.images_for(shared)
        if owners == [image.path]:
            return self.files[shared], None
        return None, Sharing(shared, owners) if image.path in owners else None

    def sidecar_taken(self, folder: Path, base: str) -> bool:
        """Whether `base.json` in `folder` is another photo's: a sidecar of that name is there
        (in any case or Unicode form), or a photo named `base`, whose own it would be."""
        if self._sidecars.get((folder, key(base))):
            return True
        images = self._stems.get((folder, key(Path(base).stem)), set())
        return any(key(path.name) == key(base) for path in images)

    @staticmethod
    def _pick(group: dict[str, Path], name: str) -> Path | None:
        """The sidecar of `group` for an image whose base is `name` as written: the only one,
        or, of several alike in case or Unicode form alone, the one written the same way."""
        if len(group) == 1:
            return next(iter(group.values()))
        return group.get(name)

    def set_style_ref(
        self, sidecar: Tracked, name: str | None, refused: tuple[str, ...] = ()
    ) -> None:
        """The style file a sidecar brings along (`name`), or those a refused one names: each
        is a style image, not a photo, while the sidecar names it."""
        for each in _style_names(sidecar):
            old = _named(sidecar.path.parent / each)
            refs = self._style_refs.get(old)
            if refs is not None:
                refs.discard(sidecar.path)
                if not refs:
                    del self._style_refs[old]
        sidecar.style_file, sidecar.refused_styles = name, refused
        for each in _style_names(sidecar):
            self._style_refs.setdefault(_named(sidecar.path.parent / each), set()).add(sidecar.path)


def _style_names(sidecar: Tracked) -> tuple[str, ...]:
    return sidecar.refused_styles if sidecar.style_file is None else (sidecar.style_file,)


def reported_unusable(entry: Tracked) -> str | None:
    """Why `entry` was reported as unusable as it is now (None if it was not): a photo waiting
    for it would wait for ever, since it settles only once replaced."""
    done = entry.done
    if isinstance(done, Reported) and done.signature == entry.signature:
        return done.reason
    return None


def _raw(sidecar: Path) -> str:
    """A sidecar's base as written (not folded): what tells photo.json from Photo.json."""
    return sidecar.name[: -len(SIDECAR_EXTENSION) - 1]


def _named(path: Path) -> tuple[Path, str]:
    """How a style image named by a sidecar is indexed: `Style.PNG` is the `style.png` named."""
    return path.parent, key(path.name)
