"""What lies beside a file in its inbox folder, for a report's advice ("its photo pic.nef is a
type the inbox does not take", "photo.json is a folder"): each folder is listed once a poll and
looked up by name and by stem, so the advice costs the same however full the folder is. A
re-test: 7,500 lone sidecars in five folders each listed and scanned their whole folder twice,
and one poll's decisions took 8 s of the daemon's loop.
"""

import contextlib
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path, PurePath

from daemon import safefs
from daemon.intake import reasons
from daemon.intake.ignore import PHOTO_TYPES, IgnoreRules, without_trailing
from daemon.intake.partners import key
from service.imageio import named_readable


class Folder:
    """One folder's names by their `key` and by the key of their stem (`pic` of `Pic.NEF`)."""

    def __init__(self, names: Iterable[str]) -> None:
        self._names = sorted(names)
        self._unpaired: tuple[list[str], list[str]] | None = None
        self._by_key: dict[str, list[str]] = {}
        self._by_stem: dict[str, list[str]] = {}
        for name in self._names:
            # A name with a space or dot after its extension is found as the name it stands
            # for (`pic.jpg.`, `pic.json `: what a share or a phone may write)
            for folded in dict.fromkeys((key(name), key(without_trailing(name)))):
                self._by_key.setdefault(folded, []).append(name)
                stem = folded.rpartition(".")[0]
                if stem and name not in self._by_stem.get(stem, ()):
                    self._by_stem.setdefault(stem, []).append(name)

    def named(self, keys: Iterable[str]) -> list[str]:
        """The names whose key is one of `keys`."""
        return sorted(name for wanted in set(keys) for name in self._by_key.get(wanted, ()))

    def stemmed(self, stem: str) -> list[str]:
        """The names whose stem's key is `stem` (with an extension)."""
        return list(self._by_stem.get(stem, ()))

    def of_base(self, base: str) -> list[str]:
        """A sidecar's photos by its `base` (a key): `pic.bmp` of pic.json, and `pic.avif`
        itself of pic.avif.json."""
        return self.stemmed(base) + self.named([base])

    def unpaired(self, rules: IgnoreRules) -> tuple[list[str], list[str]]:
        """The photos no sidecar here is named for, and the sidecars no photo here is named
        for: a pair whose names no longer match (a photo renamed after it came)."""
        if self._unpaired is None:
            kinds = {name: rules.kind(PurePath(name)) for name in self._names}
            photos = [
                name
                for name, kind in kinds.items()
                if kind == "image"
                and not self.named([f"{key(name).rpartition('.')[0]}.json", f"{key(name)}.json"])
            ]
            sidecars = [
                name
                for name, kind in kinds.items()
                if kind == "sidecar"
                and not any(
                    kinds.get(other) == "image"
                    for other in self.of_base(key(name)[: -len(".json")])
                )
            ]
            self._unpaired = photos, sidecars
        return self._unpaired


class Beside:
    """The folders of one poll (`Intake.poll` calls `forget` first): a file added during it
    is missed by this poll's advice only, which the next poll's sees."""

    def __init__(self, inbox: Path) -> None:
        self.inbox = inbox
        self._folders: dict[PurePath, Folder] = {}

    def forget(self) -> None:
        self._folders.clear()

    def folder(self, relative: PurePath) -> Folder:
        if (known := self._folders.get(relative)) is None:
            names: list[str] = []
            with contextlib.suppress(OSError), safefs.folder(self.inbox, relative) as fd:
                names = os.listdir(fd)
            known = self._folders[relative] = Folder(names)
        return known

    def kinds(self, relative: PurePath, names: Iterable[str]) -> dict[str, int]:
        """Each of `names` in `relative` that is still there, with its file type (S_IFMT)."""
        found: dict[str, int] = {}
        with contextlib.suppress(OSError), safefs.folder(self.inbox, relative) as fd:
            for name in names:
                with contextlib.suppress(OSError):
                    found[name] = stat.S_IFMT(safefs.lstat_at(fd, name).st_mode)
        return found

    def advice(
        self,
        relative: PurePath,
        wanted: Iterable[str],
        reason: str,
        rules: IgnoreRules,
        photo_of: str = "",
        is_folder: Callable[[str], str] = reasons.partner_is_folder,
    ) -> str:
        """`reason`, or, when the partner it asks for (`wanted`: the keys of its names) is there
        but is a folder, what to do about that (`is_folder`): a folder named like a photo, a
        sidecar or a style image is only a folder. With `photo_of` (a sidecar's base), also a
        file of that name in a type the inbox does not take; and a sidecar it asks for saved
        with another extension after .json."""
        listing = self.folder(relative)
        wanted = list(wanted)
        asked = listing.named(wanted)
        photo_of = key(photo_of)
        others = [
            name
            for name in (listing.of_base(photo_of) if photo_of else ())
            if key(name).rpartition(".")[2] != "json"
        ]
        # A sidecar saved with an extension after .json (pic.json.txt, by a notes app).
        longer = [
            name for want in wanted if want.endswith(".json") for name in listing.stemmed(want)
        ]
        kinds = self.kinds(relative, sorted({*asked, *others, *longer}))
        if folders := [name for name in asked if kinds.get(name) == stat.S_IFDIR]:
            return is_folder(folders[0])
        regular = [name for name in {*asked, *longer} if kinds.get(name) == stat.S_IFREG]
        # A re-test on shares: t5.jpg beside `t5.json ` was told to add t5.json.
        if trailing := sorted(name for name in regular if without_trailing(name) != name):
            return reasons.sidecar_trailing(trailing[0])
        if misnamed := sorted(name for name in longer if kinds.get(name) == stat.S_IFREG):
            return reasons.sidecar_misnamed(misnamed[0])
        if as_text := self._as_text(relative, listing, wanted):
            return reasons.sidecar_as_text(*as_text)
        # Not a photo the inbox takes (both.jpg, paired with both.jpg.json, was called "not
        # one of gif, heic, ..., jpg" in an attacker's trial).
        files = [name for name in others if kinds.get(name) == stat.S_IFREG]
        if other_types := [name for name in files if not rules.is_image_name(name)]:
            # a photo's type first: pic.nef, not the pic.aae beside it
            name = min(other_types, key=lambda name: (not _not_taken(name, rules), name))
            readable = named_readable(name)
            return reasons.photo_type_not_taken(name, rules.image_extensions, readable)
        return reason

    def _as_text(
        self, relative: PurePath, listing: Folder, wanted: list[str]
    ) -> tuple[str, str] | None:
        """A file that may be the sidecar asked for (`wanted`): saved as .txt or .rtf and
        naming a style (a caption beside a photo is no sidecar: the default style still
        answers that photo), or with a space before .json; and the name asked for."""
        for want in sorted(wanted):
            stem = want.removesuffix(".json")
            if stem == want:
                continue
            texts = [n for n in listing.stemmed(stem) if key(n).rpartition(".")[2] in _TEXT]
            spaced = listing.named([f"{stem} .json"])
            files = self.kinds(relative, [*texts, *spaced])
            found = [n for n in spaced if files.get(n) == stat.S_IFREG]
            found += [
                n
                for n in texts
                if files.get(n) == stat.S_IFREG and b"style" in self._head(relative, n)
            ]
            if found:
                return sorted(found)[0], f"{stem}.json"
        return None

    def _head(self, relative: PurePath, name: str) -> bytes:
        """The first few KB of a regular file in the inbox (nothing when it cannot be read)."""
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
        with contextlib.suppress(OSError), safefs.folder(self.inbox, relative) as fd:
            handle = os.open(name, flags, dir_fd=fd)
            try:
                return os.read(handle, 4096)
            finally:
                os.close(handle)
        return b""

    def photo_not_taken(self, relative: PurePath, base: str, rules: IgnoreRules) -> bool:
        """Whether a photo of a type the inbox does not take (pic.nef, pic.bmp) of the sidecar
        base `base` (a key) is a file in `relative`."""
        for name in self.folder(relative).of_base(base):
            if _not_taken(name, rules):
                return self.kinds(relative, [name]).get(name) == stat.S_IFREG
        return False


_TEXT = ("txt", "rtf", "text")  # what a text editor saves a sidecar as


def _not_taken(name: str, rules: IgnoreRules) -> bool:
    """A photo's type that the inbox does not take."""
    return name.rpartition(".")[2].lower() in PHOTO_TYPES and not rules.is_image_name(name)
