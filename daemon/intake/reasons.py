"""The catalogue of what the intake tells people about an inbox file that cannot become a job
(the text after the file's name in its `<stem>.error.json` report). Each says what to do."""

from __future__ import annotations

import os
from collections.abc import Iterable

from daemon import safefs
from daemon.fsutil import NAME_MAX
from daemon.intake.ignore import without_trailing


def given_up(reason: str, timeout: float) -> str:
    """The truncation report's text, after the file's name: the transfer stopped, and only a
    new copy helps."""
    return (
        f"is truncated or corrupt ({reason}) and has not changed for {timeout:g} s "
        "(arriving_timeout); copy it again: if its transfer was interrupted, the new copy "
        "replaces it and is taken as soon as it is whole"
    )


def too_large(size: int, limit: int) -> str:
    """The report on a photo or style image file over `max_input_bytes`."""
    return (
        f"is {size:,} bytes, more than max_input_bytes ({limit:,}); send a smaller file "
        "(a JPEG, PNG or WebP of the same picture is usually far smaller), or raise "
        "max_input_bytes"
    )


def own_answer_waits(kind: str, partner: str, left: float) -> str:
    """Status's note for one of stylefold's own answers come back into the inbox (`kind`: "a
    manifest"), before pair_timeout; the full fix is `daemon.intake.own_answers.FIX`."""
    return (
        f"one of stylefold's own answers ({kind}), come back into the inbox: left alone in "
        f"{left:.0f} s unless {partner} comes; exclude stylefold's answers from the sync that "
        "brings them here"
    )


def no_sidecar(sidecar: str, style_names: list[str], default_style: str | None) -> str:
    """The advice for a lone photo to add `sidecar`, with a style that exists in this
    library; `default_style` is the one configured, which no_sidecar = "wait" leaves unused."""
    if style_names:
        example = style_names[0]
        listed = ", ".join(style_names[:5]) + (", ..." if len(style_names) > 5 else "")
        known = f"styles: {listed}; see `stylefold styles`"
    else:
        example = "<style name>"
        known = (
            "the style library has no style yet: add an image to it first; its file name "
            "without the extension is the style name"
        )
    if len(os.fsencode(sidecar)) > NAME_MAX:
        return (
            f"has no sidecar, and its name is too long to have one: {sidecar} would be more "
            f"than {NAME_MAX} bytes; rename the photo to a shorter name, then add its sidecar, "
            f'e.g. {{"style": "{example}"}} ({known})'
        )
    asked = (
        f'has no sidecar; add {sidecar} beside it, e.g. {{"style": "{example}"}} ({known}), '
        "or ask the administrator to set"
    )
    if default_style is None:
        ask = 'no_sidecar = "default" and a default_style, in which photos without a sidecar are'
        return f"{asked} {ask} then rendered"
    # a re-test's finding: it asked for a default_style where one was set
    return (
        f'{asked} no_sidecar = "default", and photos without a sidecar are then rendered in '
        f"the default style {default_style}"
    )


TAKE_AGAIN = (
    "then it is taken again by itself within rescan_interval (at once if you touch it or run "
    "`stylefold reload`)"
)


def unreadable(strerror: str | None) -> str:
    """A file the daemon's user may not read (a sync tool that copies the sender's modes)."""
    return (
        f"cannot be read by the daemon ({strerror}): make it readable by the daemon's user (for "
        f"example by the folder's group: chmod g+r), {TAKE_AGAIN}"
    )


def unreadable_at(folder: int, name: str) -> str | None:
    """`unreadable`'s text when the daemon's user may not open the file `name` of the open
    `folder` (`safefs.open_file`), None when it may; anything else about the file is raised
    as `open_file` raises it."""
    try:
        os.close(safefs.open_file(folder, name))
    except PermissionError as exc:
        return unreadable(exc.strerror)
    return None


def not_movable(folder: str, strerror: str | None) -> str:
    """A photo whose folder refuses its move (no write permission, or a sticky bit)."""
    return (
        f"cannot be taken out of {folder} ({strerror}): the daemon's user needs write permission "
        "on that folder and, where the folder has the sticky bit (chmod +t), must own the file "
        f"(deploy/README.md, Permissions); fix the folder, {TAKE_AGAIN}"
    )


def empty(timeout: float) -> str:
    return f"is empty (0 bytes) after {timeout:g} s; copy it again"


def shares_sidecar(sidecar: str, photo: str, others: list[str]) -> str:
    return (
        f"shares {sidecar} with another photo ({' and '.join(others)}); name each sidecar "
        f"after its photo, e.g. {photo}.json"
    )


def own_sidecar(sidecar: str, photo: str, others: list[str]) -> str:
    return (
        f"a sidecar of its own ({photo}.json): {sidecar} is shared with another photo "
        f"({' and '.join(others)})"
    )


def style_name_ambiguous(style_file: str, sidecar: str, alike: list[str]) -> str:
    return (
        f"cannot take the style image {style_file} named by {sidecar}: "
        f"{' and '.join(alike)} are both beside it, and differ from that name in letter case "
        f"alone; write in {sidecar} the name of the one meant exactly as it is written, or "
        "remove the other"
    )


def lent_as_style(sidecars: list[str]) -> str:
    """What a photo waits for while other pairs bring it along as their style image."""
    which = " and ".join(sidecars)
    if len(sidecars) == 1:
        return f"the pair of {which}, which names it as its style image, to be taken first"
    return f"the pairs of {which}, which name it as their style image, to be taken first"


def style_not_beside(style_file: str, sidecar: str) -> str:
    return (
        f"is missing the style image {style_file} named by {sidecar}: it is not in the same "
        "folder; add it there"
    )


def style_is_folder(style_file: str, sidecar: str) -> str:
    return (
        f"is missing the style image {style_file} named by {sidecar}: {style_file} is a "
        "folder, not a file; name an image file beside the sidecar, or rename the folder"
    )


def style_unusable(style_file: str, why: str) -> str:
    return f"cannot use the style image {style_file} it brings: {why}"


TAKEOUT_ALONE = (
    "is Google Photos' metadata (a Google Takeout file), not a stylefold sidecar; delete it: "
    "stylefold does not need it"
)


def _trailing(name: str, clash: str | None = None) -> str:
    """What `name` ends in after its extension, said so a reader sees it, and the fix; where
    the name it stands for would `clash` with another there, renaming would replace that."""
    shown = {" ": "a space", ".": "a dot"}
    clean = without_trailing(name)
    ends = name[len(clean) :]
    kinds = [shown.get(char, f"U+{ord(char):04X}") for char in dict.fromkeys(ends)]
    what = " and ".join(kinds)
    if len(ends) > len(kinds):  # t4.jpg.. was said to end in "a dot"
        what = f"{len(ends)} characters ({what})"
    fix = f"rename it {clean}"
    if clash is not None:
        fix = f"{clean} would clash with {clash!r} there: rename it another name"
    return (
        f"ends in {what} after .{clean.rpartition('.')[2]} (a Mac or Windows share or a phone "
        f"may add it), so it is not taken; {fix}"
    )


def sidecar_trailing(name: str) -> str:
    return f"has no sidecar: {name!r} beside it {_trailing(name)}"


def misnamed_photo(name: str, clash: str | None) -> str | None:
    """Why a photo named with a space or dot after its extension is not taken, if it is;
    `clash`: another file or folder there answers to the name it stands for."""
    if without_trailing(name) == name:
        return None
    return f"(written {name!r}) {_trailing(name, clash)}"


def sidecar_of_other_type(sidecar: str, photo: str, base: str) -> str:
    """photo.jpeg beside photo.jpg.json, and no photo.jpg (a re-test: two reports, each
    without a word of the other file); the one report of the two."""
    return (
        f"has no sidecar: {sidecar} beside it is named for {sidecar[: -len('.json')]}, not "
        f"{photo} (a system that hides extensions?); rename it {photo}.json or {base}.json"
    )


PLAIN_TEXT = "save it as plain text (TextEdit: Format > Make Plain Text)"


def sidecar_misnamed(name: str) -> str:
    stem, _, extension = name.rpartition(".")
    told = (
        f"has no sidecar: {name} beside it ends in .{extension} after .{stem.rpartition('.')[2]} "
        f"(a notes app or an editor added it?), so it is not read as one; rename it {stem}"
    )
    # a re-test: renamed, q.json.rtf was then told it is rich text; both at once
    return f"{told}, and {PLAIN_TEXT}" if extension.lower() == "rtf" else told


def sidecar_as_text(name: str, wanted: str) -> str:
    """A photo's sidecar saved as text, or with a space before .json (a re-test: `n9.rtf`,
    `n13.txt` and `n10 .json` beside their photos got "no sidecar" alone)."""
    told = f"has no sidecar: {name} beside it may be meant as one, but a sidecar is named {wanted}"
    rich = name.lower().endswith(".rtf")
    return f"{told}; rename it so" + (f", and {PLAIN_TEXT}" if rich else "")


def no_photo(base: str, is_photo_name: bool) -> str:
    """`base` is the sidecar's name without `.json`: a photo's own name when the sidecar is
    `IMG_0002.jpg.json` (it was told to add IMG_0002.jpg.jpg)."""
    photo = base if is_photo_name else f"{base}.jpg or another image type"
    return (
        f"has no photo beside it; add the photo ({photo}) to the same folder, or remove the sidecar"
    )


def lone_partner(kind: str, other: str, sidecar: str) -> str:
    """The one file of the other kind in the folder that is alone too (a new user's trial: a
    photo renamed the moment it came, with its sidecar, got two reports that did not mention
    each other): `sidecar` is the name the sidecar takes to pair them."""
    if kind == "image":
        return (
            f"; {other} beside it has no photo either: if it is this photo's sidecar, rename it "
            f"{sidecar}"
        )
    return (
        f"; {other} beside it has no sidecar either: if it is this sidecar's photo, rename the "
        f"sidecar {sidecar}"
    )


def sidecar_shadowed(sidecar: str, photo: str, used: str) -> str:
    """Whatever became of the photo's pair (rendered, rejected): a job that took it says
    more (daemon.jobs.answers.SIDECAR_SHADOWED)."""
    return (
        f"is not used: {photo} goes with {used}, the sidecar named after the photo's whole file "
        f"name, which comes first; remove {sidecar} (or, to render the photo with it, remove "
        f"{used})"
    )


def partner_is_folder(name: str) -> str:
    return (
        f"has no partner: {name} beside it is a folder, not a file; rename the folder, and put "
        "the photo and its sidecar side by side as files"
    )


def photo_type_not_taken(name: str, accepted: Iterable[str], readable: bool) -> str:
    """`readable`: stylefold decodes files of the photo's extension, so the inbox may be told
    to take them."""
    also = ", or have the administrator add its extension to image_extensions" if readable else ""
    return (
        f"has no photo beside it of a type stylefold takes: {name} is not one of "
        f"{', '.join(sorted(accepted))}; save the photo as one of those (JPEG or PNG will do)"
        f"{also}"
    )


PATH_TOO_LONG = (
    "photos and sidecars whose path in the inbox is longer than {limit} bytes are not taken: "
    "their answers would not fit under the outbox"
)
PATH_TOO_LONG_FIX = (
    "move them into a folder nearer the top of the inbox, or shorten its folder names"
)

# The fix for a full tracker (`max_tracked`), from the intake and from a scan alike: answered
# photos kept in the inbox (archive = "keep") stay there and stay tracked, and only the user
# can make room then; each tracked file costs about 3.5 KB of the daemon's memory.
MAX_TRACKED_FIX = (
    "let the queue drain, or raise max_tracked (about 3.5 KB of memory per file); with "
    'archive = "keep" answered photos stay in the inbox and count too: raise it, or move '
    "answered ones out if nothing syncs the inbox both ways (that would delete them on the "
    "phone too)"
)
