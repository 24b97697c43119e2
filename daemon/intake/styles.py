"""The style library: a folder of style images, addressed by name and never by path.

`styles/starry_night.jpg` is the style `starry_night`; an optional `styles/starry_night.json`
holds default params for it (a partial `RenderParams` object, validated on load). Sidecars may
only name styles, so nothing a sidecar says can reach a file outside this folder: entries are
resolved with symlinks followed and must stay inside it.

Each image is decoded when the library is loaded (`daemon.intake.style_check`), so a broken
file is refused here, by name, rather than failing the jobs that use it.

A style image brought along in the inbox (`{"file": "mine.jpg"}`) is resolved by `resolve` too:
a regular file with one link in the folder the sidecar lies in, never reached through a link (the
inbox is not the administrator's folder; the claim reads it through `daemon.safefs`).
"""

import difflib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.config import DEFAULT_IMAGE_EXTENSIONS, Settings
from daemon.intake.ignore import IgnoreRules
from daemon.intake.jsonload import SidecarError, read_limited, shown
from daemon.intake.partners import key
from daemon.intake.sidecar import parse_param_overrides
from daemon.intake.sidecar_model import STYLE_NAME_RULE, StyleFile, StyleSpec, check_style_name
from daemon.intake.style_check import StyleChecker
from daemon.safefs import lstat_under, unusable

DEFAULTS_MAX_BYTES = 65536
DEFAULT_MAX_PIXELS: int = Settings.model_fields["max_pixels"].default


class StyleError(ValueError):
    """A style cannot be used; the message says which and what to do."""


@dataclass(frozen=True)
class Style:
    name: str
    path: Path
    defaults: dict[str, Any] = field(default_factory=dict)
    defaults_path: Path | None = None


@dataclass(frozen=True)
class StyleProblem:
    """A library entry that was skipped, and why (shown by `stylefold styles` and logged)."""

    path: Path
    reason: str
    style: str | None = None  # the style it makes unavailable, told to a sidecar naming it


@dataclass(frozen=True)
class ResolvedStyle:
    """One style of a job: its image, its blend weight and its default params."""

    name: str
    path: Path
    weight: float
    defaults: dict[str, Any]


@dataclass
class _DefaultsFiles:
    chosen: dict[str, str]  # style name -> its defaults file's name
    unread: list[StyleProblem]  # JSON files not read, and why
    unclear: set[str]  # styles whose defaults file cannot be told


def check_style_file_name(name: str, rules: IgnoreRules) -> None:
    """A brought-along style must be a file the inbox takes as an image (`validate` checks
    it without a library too: it said "ok" to a sidecar naming another's sidecar)."""
    if not rules.is_image_name(name) or rules.ignored_name(name):
        extensions = ", ".join(sorted(rules.image_extensions))
        raise StyleError(
            f"style.file: {name!r} is not an image name; use a file ending in one of {extensions}"
        )


def _defaults_files(root: Path, jsons: list[str], images: dict[str, list[Path]]) -> _DefaultsFiles:
    """Each style's defaults file: `<name>.json`, or else the one whose name differs from it
    only in letter case or Unicode form (`Mix.JSON` beside `mix.png`, as a new user's trial
    named it, was passed over without a word), as the inbox pairs a photo with its sidecar
    (`daemon.intake.partners.key`). Where several could be a style's, the one named exactly
    is, and the others are told; where none is named exactly, the style is unavailable until
    one is left."""
    by_key: dict[str, list[str]] = {}
    for stem in images:
        by_key.setdefault(key(stem), []).append(stem)
    listed = set(jsons)
    chosen = {stem: f"{stem}.json" for stem in images if f"{stem}.json" in listed}
    exact = set(chosen.values())
    candidates: dict[str, list[str]] = {}
    found = _DefaultsFiles(chosen, [], set())
    for name in jsons:
        styles = by_key.get(key(name.rpartition(".")[0]), [])
        if name in exact or not styles:
            continue
        if len(styles) > 1:
            either = " or ".join(repr(stem) for stem in styles)
            # "name it as one of them" when it was (Cells.JSON): the case of .json counts too
            files = " or ".join(f"{stem}.json" for stem in styles)
            told = f"could hold the defaults of style {either}; rename it exactly {files}"
            found.unread.append(StyleProblem(root / name, told))
        elif styles[0] in chosen:
            told = f"{chosen[styles[0]]} holds the defaults of style {styles[0]!r}; remove one"
            found.unread.append(StyleProblem(root / name, told))
        else:
            candidates.setdefault(styles[0], []).append(name)
    for stem, names in candidates.items():
        if len(names) == 1:
            chosen[stem] = names[0]
            continue
        both = " and ".join(names)
        told = f"{both} both hold defaults for style {stem!r}; remove one"
        unavailable = f"{told}; style {stem!r} is unavailable"
        found.unread.append(StyleProblem(root / names[0], unavailable, stem))
        found.unclear.add(stem)
    return found


def _inside(path: Path, root: Path) -> Path | None:
    """The real path of `path` if it is a regular file inside `root` (symlinks followed)."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if root not in real.parents or not real.is_file():
        return None
    return real


class StyleLibrary:
    """Names to style images, rebuilt by `reload` (start-up, SIGHUP, or an unknown name)."""

    def __init__(
        self,
        root: Path,
        image_extensions: Iterable[str] = DEFAULT_IMAGE_EXTENSIONS,
        max_json_bytes: int = DEFAULTS_MAX_BYTES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.root = root
        self.max_json_bytes = max_json_bytes
        self.checker = StyleChecker(max_pixels)
        self._rules = IgnoreRules(image_extensions=image_extensions)
        self._styles: dict[str, Style] = {}
        self.problems: list[StyleProblem] = []
        self.reload()

    @classmethod
    def from_settings(cls, settings: Settings) -> "StyleLibrary":
        return cls(
            settings.styles,
            settings.image_extensions,
            settings.max_sidecar_bytes,
            settings.max_pixels,
        )

    def reload(self) -> list[StyleProblem]:
        """Rescan the folder; returns (and keeps in `problems`) the entries that were skipped."""
        styles: dict[str, Style] = {}
        problems: list[StyleProblem] = []
        try:
            root = self.root.resolve(strict=True)
            entries = sorted(os.scandir(root), key=lambda entry: entry.name)
        except OSError as exc:
            self._styles = {}
            self.problems = [
                StyleProblem(self.root, f"cannot read the style library ({exc.strerror})")
            ]
            return self.problems
        images: dict[str, list[Path]] = {}
        jsons: list[str] = []
        for entry in entries:
            name = entry.name
            if self._rules.ignored_name(name):
                continue
            stem, _, ext = name.rpartition(".")
            if self._rules.is_image_name(name):
                images.setdefault(stem, []).append(root / name)
            elif stem and ext.casefold() == "json":
                jsons.append(name)
        defaults = _defaults_files(root, jsons, images)
        problems += defaults.unread
        for name, paths in images.items():
            try:
                check_style_name(name)
            except ValueError:  # its sidecar-facing advice ("use a name from the library") is not
                # what the library's keeper does about a file
                problems.append(
                    StyleProblem(
                        paths[0],
                        f"{shown(name)} cannot be a style's name; rename the file "
                        f"({STYLE_NAME_RULE})",
                    )
                )
                continue
            if len(paths) > 1:
                listed = " and ".join(path.name for path in paths)
                problems.append(
                    StyleProblem(paths[0], f"{listed} both define style {name!r}; remove one", name)
                )
                continue
            real = _inside(paths[0], root)
            if real is None:
                problems.append(
                    StyleProblem(
                        paths[0],
                        "not a regular file inside the style library (a symlink pointing "
                        "outside is not followed); copy the image into the folder",
                        name,
                    )
                )
                continue
            broken = self.checker.problem(real)
            if broken is not None:
                unavailable = f"{broken}; style {name!r} is unavailable"
                problems.append(StyleProblem(paths[0], unavailable, name))
                continue
            if name in defaults.unclear:
                continue  # told above
            style = self._with_defaults(name, real, root, problems, defaults.chosen.get(name))
            if style is not None:
                styles[name] = style
        self._styles = styles
        self.problems = problems
        return problems

    def _with_defaults(
        self,
        name: str,
        image: Path,
        root: Path,
        problems: list[StyleProblem],
        defaults_file: str | None,
    ) -> Style | None:
        if defaults_file is None:
            return Style(name, image)
        json_path = root / defaults_file
        real = _inside(json_path, root)
        if real is None:
            problems.append(
                StyleProblem(
                    json_path, "not a regular file inside the style library; skipped", name
                )
            )
            return None
        what = json_path.name  # a new user's library lib2/ was told "styles/..."
        try:
            defaults = parse_param_overrides(read_limited(real, self.max_json_bytes, what), what)
        except SidecarError as exc:
            problems.append(StyleProblem(json_path, f"{exc}; style {name!r} is unavailable", name))
            return None
        return Style(name, image, defaults, real)

    def signature(self) -> tuple[tuple[str, int, int, int], ...]:
        """What the folder holds now (each entry's name, size, mtime and inode, symlinks
        followed): when it differs from the last look, the library has changed."""
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return ()
        found = []
        for entry in entries:
            try:
                info = entry.stat()
            except OSError:
                continue
            found.append((entry.name, info.st_size, info.st_mtime_ns, info.st_ino))
        return tuple(sorted(found))

    def styles(self) -> list[Style]:
        """Every usable style, sorted by name (for `stylefold styles`)."""
        return [self._styles[name] for name in sorted(self._styles)]

    def names(self) -> list[str]:
        return sorted(self._styles)

    def case_twins(self) -> list[list[str]]:
        """Groups of styles whose names differ in case or Unicode form alone: a sidecar must
        write such a name exactly, and a share that ignores case keeps one file of them."""
        groups: dict[str, list[str]] = {}
        for name in self.names():
            groups.setdefault(key(name), []).append(name)
        return [names for names in groups.values() if len(names) > 1]

    def get(self, name: str, key: str = "style") -> Style:
        """The style called `name`; an unknown, vanished or changed entry triggers one reload
        first, so styles added to (or replaced in) the folder work without a SIGHUP. `key`
        holds the name in the sidecar: "style", or "name" in a blend's item."""
        style = self._styles.get(name)
        if style is None or self.checker.problem(style.path) is not None:
            self.reload()
            style = self.find(name)
        if style is None:
            raise StyleError(self._unknown(name, key))
        return style

    def find(self, name: str) -> Style | None:
        """The style called `name`, or else the only one whose name differs in case or Unicode
        form alone, as photos and sidecars pair (a phone user's trial: a notes app wrote
        "Mosaic", and the advice to add Mosaic.jpg would clash with mosaic.png on a share that
        ignores case). As loaded: `get` reloads first for a name it does not know."""
        if (style := self._styles.get(name)) is not None:
            return style
        alike = self._alike(name)
        return self._styles[alike[0]] if len(alike) == 1 else None

    def _alike(self, name: str) -> list[str]:
        """The styles' names that differ from `name` in case or Unicode form alone, if any."""
        return [known for known in self.names() if key(known) == key(name)]

    def broken(self, name: str) -> str | None:
        """Why the style `name`, whose file is in the library, cannot be used, if so: once,
        and with no folder as configured (a new user's "in the style library styles"), naming
        the file that takes the style out."""
        for problem in self.problems:
            if problem.style == name:  # its defaults file may be named otherwise (Cells.JSON)
                reason = problem.reason.removesuffix(f"; style {name!r} is unavailable")
                return (
                    f"style {name!r} cannot be used until the style library's "
                    f"{problem.path.name} is fixed or replaced: {reason}"
                )
        return None

    def _unknown(self, name: str, key: str) -> str:
        if (broken := self.broken(name)) is not None:
            return f"{broken}; photos waiting for it are taken again by themselves then"
        names = self.names()
        stem = name.rpartition(".")[0]
        if self._rules.is_image_name(name):  # "cells.png"
            # a blend cannot bring an image along (a re-test: advised to, in a blend's item)
            file = f' (or, for an image beside the sidecar, "style": {{"file": "{name}"}})'
            file = file if key == "style" else ""
            # in any case, as names are matched (a photographer's trial: "Hubble.JPG" was
            # told to add Hubble.JPG beside hubble.jpg, two styles alike but for case)
            if (known := self.find(stem)) is not None:
                return (
                    f"style {name!r} is a file name; a library style is named without its "
                    f'extension: "{key}": "{known.name}"{file}'
                )
            if len(alike := self._alike(stem)) > 1:  # a re-test: told to add HUBBLE.JPG
                return (
                    f"style {name!r} is a file name; a library style is named without its "
                    f"extension, and {len(alike)} of its styles differ from {stem!r} in letter "
                    f"case alone ({', '.join(alike)}): write one of them exactly"
                )
            # an attacker's trial: told to add café.jpg.jpg for "café.jpg"
            available = ", ".join(names) or "none yet"
            return (
                f"style {name!r} is a file name, and the style library has no style {stem!r} "
                f"(available: {available}); add {name} to the library and write "
                f'"{key}": "{stem}"{file}'
            )
        if len(alike := self._alike(name)) > 1:
            return (
                f"style {name!r} is not in the style library as written, and {len(alike)} of "
                f"its styles differ from it in letter case alone ({', '.join(alike)}); write "
                "the name exactly as one of them"
            )
        close = closest(name, names)
        hint = f"did you mean {close!r}? " if close else ""
        available = ", ".join(names) or "none yet"
        return (
            f"style {name!r} is not in the style library ({hint}available: "
            f"{available}); add the image to the library as {name}.jpg (or .png, ...) and "
            "photos waiting for it are taken again by themselves, or name another style in the "
            'sidecar, or bring the image along with "style": {"file": "<image beside the '
            'sidecar>"}'
        )

    def resolve(
        self, spec: StyleSpec | None, *, beside: Path, default: str | None, root: Path | None = None
    ) -> list[ResolvedStyle]:
        """The styles of one job. `beside` is the folder the sidecar lies in (where a
        brought-along style file must be), under `root` when that is the inbox (whose folders
        are looked at without following a link); `default` is the daemon's default_style."""
        if spec is None:
            if default is None:
                raise StyleError(
                    "style: the sidecar names no style and no default_style is configured; add "
                    '"style": "<name>" (see `stylefold styles`)'
                )
            try:
                style = self.get(default)
            except StyleError as exc:  # a new user's trial: told as the sidecar's own mistake
                raise StyleError(
                    f"the daemon's default style (its default_style setting) cannot be used: {exc}"
                ) from None
            return [ResolvedStyle(style.name, style.path, 1.0, style.defaults)]
        if isinstance(spec, str):
            style = self.get(spec)
            return [ResolvedStyle(style.name, style.path, 1.0, style.defaults)]
        if isinstance(spec, StyleFile):
            return [self._brought_along(spec.file, beside, root)]
        resolved = []
        for ref in spec:
            style = self.get(ref.name, key="name")
            resolved.append(ResolvedStyle(style.name, style.path, ref.weight, style.defaults))
        return resolved

    def _brought_along(self, name: str, beside: Path, root: Path | None) -> ResolvedStyle:
        check_style_file_name(name, self._rules)
        path = beside / name
        try:
            # A folder of the inbox swapped for a link to another place between the sidecar's
            # read and this look told whether files existed there, and their kind and links
            # (an attacker's trial); through safefs the swap is seen as no file.
            found = os.lstat(path) if root is None else lstat_under(root, path.relative_to(root))
            reason = unusable(found)
        except OSError:
            reason = "is not a file in the same folder as the sidecar"
        if reason is not None:
            raise StyleError(
                f"style.file: {name!r} {reason}; put the style image itself beside the sidecar "
                "under that name"
            )
        return ResolvedStyle(name, path, 1.0, {})


def blend_defaults(styles: Iterable[ResolvedStyle]) -> dict[str, Any]:
    """The default params of the blend's heaviest style (`defaults_from`)."""
    source = defaults_from(styles)
    return dict(source.defaults) if source is not None else {}


def defaults_from(styles: Iterable[ResolvedStyle]) -> ResolvedStyle | None:
    """The style whose default params a job takes: the blend's heaviest (the first listed
    among equals). A style's JSON is tuned for that style alone: merged, a style weighted 10 %
    set the whole job's balance with its `style_weight` (a photographer's trial)."""
    return max(styles, key=lambda style: style.weight, default=None)


def closest(name: str, names: list[str]) -> str | None:
    """The style `name` was probably meant to be, case aside ("SHIPWRECK", "Cels")."""
    by_folded = {known.casefold(): known for known in names}
    close = difflib.get_close_matches(name.casefold(), list(by_folded), n=1)
    return by_folded[close[0]] if close else None
