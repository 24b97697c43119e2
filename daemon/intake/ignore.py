"""Which inbox names are photos or sidecars, and which belong to sync tools and operating systems.

Sync tools write under temporary names and finish with a rename; operating systems scatter
metadata files. None of those may ever become a job, so a name is ignored when it, or any folder
above it inside the inbox, matches a built-in pattern or a user pattern (`ignore_patterns`, which
adds to the built-in list and never replaces it). Matching is case-insensitive, as on the
Windows and macOS machines these files come from.
"""

import fnmatch
import re
from collections.abc import Iterable
from pathlib import PurePath
from typing import Literal, NamedTuple

from daemon.config import DEFAULT_IMAGE_EXTENSIONS, Settings

SIDECAR_EXTENSION = "json"
# Photo types that are not taken by default (camera raw files, formats Pillow reads but
# stylefold does not take, formats it cannot read): a sidecar beside one is told so at once.
PHOTO_TYPES = frozenset(
    {"3fr", "arw", "avif", "bmp", "cr2", "cr3", "crw", "dng", "erf", "exr", "hdr", "ico", "iiq",
     "j2k", "jp2", "jpf", "jpx", "jxl", "kdc", "mos", "mrw", "nef", "nrw", "orf", "pbm", "pcx",
     "pef", "pgm", "pnm", "ppm", "psd", "raf", "raw", "rw2", "rwl", "sr2", "srf", "srw", "svg",
     "tga", "x3f"}
)  # fmt: skip


# What shares and phones may leave after a name's extension: spaces, dots, and the private
# characters macOS writes for them on an SMB share.
TRAILING = " .\uf028\uf029"


def without_trailing(name: str) -> str:
    return name.rstrip(TRAILING)


class IgnoreRule(NamedTuple):
    pattern: str
    source: str


# The documented built-in list (README: "Files the daemon ignores"). `.*` alone covers most of
# them; they are listed one by one so that the list documents the tools.
BUILTIN_IGNORES: tuple[IgnoreRule, ...] = (
    IgnoreRule(".*", "hidden files and folders (Unix convention)"),
    IgnoreRule(".syncthing.*.tmp", "Syncthing temporary file"),
    IgnoreRule("~syncthing~*.tmp", "Syncthing temporary file on Windows"),
    IgnoreRule(".stfolder", "Syncthing folder marker"),
    IgnoreRule(".stversions", "Syncthing versioning folder"),
    IgnoreRule(".stignore", "Syncthing ignore file"),
    IgnoreRule("*.sync-conflict-*", "Syncthing conflict copy, for a person to resolve there"),
    IgnoreRule("*conflicted copy*", "Nextcloud, ownCloud or Dropbox conflict copy"),
    # The desktop clients' own tests of a name (`Utility::isConflictFile`): the copy of
    # ownCloud before 2.5 (<name>_conflict-YYYYMMDD-HHMMSS.ext) and Nextcloud's case clash
    # (a sync user's trial: the old copy was rendered as a photo of its own)
    IgnoreRule(
        "*_conflict-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]-[0-9][0-9][0-9][0-9][0-9][0-9]*",
        "ownCloud conflict copy (clients before 2.5)",
    ),
    IgnoreRule("*(case clash from*", "Nextcloud copy of a name that differs in case alone"),
    IgnoreRule(".*.~*", "Nextcloud/ownCloud desktop client temporary file (.<name>.~<hex>)"),
    IgnoreRule("*.part", "partial download (Firefox, KDE, wget)"),
    IgnoreRule("*.filepart", "WinSCP partial transfer"),
    IgnoreRule("*.partial", "rclone partial transfer (<name>.<hex>.partial)"),
    IgnoreRule(".*.??????", "rsync temporary file (.<name>.XXXXXX)"),
    IgnoreRule("*.crdownload", "Chrome partial download"),
    IgnoreRule("*.download", "Safari partial download"),
    IgnoreRule("*.tmp", "generic temporary file"),
    IgnoreRule("*.!sync", "Resilio Sync partial file"),
    IgnoreRule(".dropbox*", "Dropbox metadata"),
    IgnoreRule(".~lock.*", "LibreOffice lock file"),
    IgnoreRule("~$*", "Microsoft Office owner file"),
    IgnoreRule("._*", "macOS AppleDouble resource fork (e.g. over SMB)"),
    IgnoreRule(".DS_Store", "macOS Finder metadata"),
    IgnoreRule(".Spotlight-V100", "macOS Spotlight index"),
    IgnoreRule(".Trashes", "macOS trash"),
    IgnoreRule(".fseventsd", "macOS file-system events log"),
    IgnoreRule("__MACOSX", "macOS metadata folder inside zip archives"),
    IgnoreRule("Thumbs.db", "Windows thumbnail cache"),
    IgnoreRule("desktop.ini", "Windows folder settings"),
    IgnoreRule("$RECYCLE.BIN", "Windows recycle bin"),
    IgnoreRule("System Volume Information", "Windows volume metadata"),
    IgnoreRule("@eaDir", "Synology thumbnail folder"),
    IgnoreRule("#recycle", "Synology recycle bin"),
    IgnoreRule("lost+found", "fsck recovery folder"),
    IgnoreRule(".stylefold-*", "stylefold's own temporary files"),
)


def _compile(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(fnmatch.translate(pattern.lower()) for pattern in patterns))


class IgnoreRules:
    """Built-in plus user patterns, and the image extension allow-list."""

    def __init__(
        self,
        patterns: Iterable[str] = (),
        image_extensions: Iterable[str] = DEFAULT_IMAGE_EXTENSIONS,
    ) -> None:
        self.patterns: tuple[str, ...] = (*(rule.pattern for rule in BUILTIN_IGNORES), *patterns)
        self.image_extensions = frozenset(ext.lower().lstrip(".") for ext in image_extensions)
        self._ignored = _compile(self.patterns)

    @classmethod
    def from_settings(cls, settings: Settings) -> "IgnoreRules":
        return cls(settings.ignore_patterns, settings.image_extensions)

    def ignored_name(self, name: str) -> bool:
        return self._ignored.match(name.lower()) is not None

    def why_ignored(self, name: str) -> str | None:
        """What the first rule that ignores `name` is for, if one does."""
        user = self.patterns[len(BUILTIN_IGNORES) :]
        rules = [*BUILTIN_IGNORES, *(IgnoreRule(p, "the ignore_patterns setting") for p in user)]
        for rule in rules:
            if _compile([rule.pattern]).match(name.lower()):
                return f"{rule.pattern}: {rule.source}"
        return None

    def is_image_name(self, name: str) -> bool:
        stem, dot, ext = name.rpartition(".")
        return bool(dot and stem) and ext.lower() in self.image_extensions

    def kind(self, relative: PurePath) -> Literal["image", "sidecar"] | None:
        """What a path relative to the inbox is: a photo, a sidecar, or nothing to look at."""
        if not relative.parts or any(self.ignored_name(part) for part in relative.parts):
            return None
        name = relative.name
        # A photo's name with a space or dot after its extension is one too, taken to be told
        # what to rename it (a re-test on shares: `pic.jpg.` alone got no answer at all).
        if self.is_image_name(without_trailing(name)):
            return "image"
        stem, dot, ext = name.rpartition(".")
        if dot and stem and ext.lower() == SIDECAR_EXTENSION:
            return "sidecar"
        return None

    def is_candidate(self, relative: PurePath) -> bool:
        """True for photos and sidecars that are not hidden, temporary or metadata."""
        return self.kind(relative) is not None

    def ignored_dir(self, relative: PurePath) -> bool:
        """Whether a folder (relative to the inbox) is skipped with everything inside it."""
        return any(self.ignored_name(part) for part in relative.parts)
