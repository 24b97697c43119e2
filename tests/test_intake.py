"""Intake: settle timers and pairing, driven by a test clock over real files."""

import math
import os
import time
from pathlib import Path

import pytest

from daemon.intake.backlog import Backlog
from daemon.intake.ignore import IgnoreRules
from daemon.intake.pairing import Arrival, Event, Intake, Problem
from daemon.jobs.reports import about_problem

SETTLE = 5.0
PAIR = 60.0


class Inbox:
    """A real inbox folder and an Intake driven by a hand-moved clock."""

    def __init__(self, root: Path, **options: object) -> None:
        self.root = root
        self.now = 1000.0
        self.intake = Intake(
            root,
            IgnoreRules(),
            settle_seconds=SETTLE,
            pair_timeout=PAIR,
            **options,  # type: ignore[arg-type]
        )

    def write(self, name: str, data: bytes | str = b"\xff\xd8 image bytes") -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        self.intake.observe(path, self.now)
        return path

    def append(self, path: Path, data: bytes = b"more") -> None:
        with path.open("ab") as handle:
            handle.write(data)
        self.intake.observe(path, self.now)

    def remove(self, path: Path) -> None:
        path.unlink()
        self.intake.observe(path, self.now)

    def poll(self, after: float = 0.0) -> list[Event]:
        self.now += after
        return self.intake.poll(self.now)


@pytest.fixture
def inbox(tmp_path: Path) -> Inbox:
    root = tmp_path / "inbox"
    root.mkdir()
    return Inbox(root)


def test_image_then_sidecar(inbox: Inbox) -> None:
    image = inbox.write("photo.jpg")
    assert inbox.poll() == []
    assert inbox.poll(SETTLE) == []  # settled, but no sidecar yet
    inbox.now += 10
    sidecar = inbox.write("photo.json", '{"style": "a"}')
    assert inbox.poll(SETTLE - 0.1) == []  # the sidecar has not settled
    assert inbox.poll(0.1) == [Arrival(image, sidecar, Path("."))]
    assert inbox.poll(SETTLE) == []
    assert inbox.poll(PAIR * 2) == []  # emitted once, never again while unchanged


def test_gif_photo_pairs_with_its_sidecar(inbox: Inbox) -> None:
    """GIFs are photos by default (the engine takes an animation's first frame)."""
    image = inbox.write("party.gif", b"GIF89a image bytes")
    sidecar = inbox.write("party.json", '{"style": "a"}')
    assert inbox.poll(SETTLE) == [Arrival(image, sidecar, Path("."))]


def test_sidecar_then_image(inbox: Inbox) -> None:
    sidecar = inbox.write("photo.jpg.json", "{}")
    assert inbox.poll(SETTLE) == []
    inbox.now += 30
    image = inbox.write("photo.jpg")
    assert inbox.poll(SETTLE) == [Arrival(image, sidecar, Path("."))]


def test_both_together_in_a_subfolder(inbox: Inbox) -> None:
    image = inbox.write("trip/day 1/photo.png")
    sidecar = inbox.write("trip/day 1/photo.json", "{}")
    assert inbox.poll(SETTLE) == [Arrival(image, sidecar, Path("trip/day 1"))]


def test_growing_file_waits_until_it_stops(inbox: Inbox) -> None:
    inbox.write("photo.json", "{}")
    image = inbox.write("photo.jpg", b"")
    for _ in range(10):  # grows for 40 s, with an event each time
        assert inbox.poll(4.0) == []
        inbox.append(image)
    assert inbox.poll(SETTLE - 1) == []
    [arrival] = inbox.poll(1)
    assert isinstance(arrival, Arrival)
    assert arrival.image == image


def test_change_without_event_restarts_timer(inbox: Inbox) -> None:
    """Events can be lost; the last look at the settle deadline catches the change."""
    inbox.write("photo.json", "{}")
    image = inbox.write("photo.jpg")
    with image.open("ab") as handle:  # no observe(): the event was dropped
        handle.write(b"late bytes")
    assert inbox.poll(SETTLE) == []
    assert [event.image for event in inbox.poll(SETTLE) if isinstance(event, Arrival)] == [image]


def test_rename_over_same_size_and_mtime_is_a_change(inbox: Inbox) -> None:
    image = inbox.write("photo.jpg", b"A" * 100)
    sidecar = inbox.write("photo.json", "{}")
    assert len(inbox.poll(SETTLE)) == 1
    stat = image.stat()
    replacement = inbox.root / ".syncthing.photo.jpg.tmp"
    replacement.write_bytes(b"B" * 100)
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    replacement.replace(image)  # same size and mtime, new inode
    inbox.intake.observe(replacement, inbox.now)
    inbox.intake.observe(image, inbox.now)
    assert inbox.poll(SETTLE) == [Arrival(image, sidecar, Path("."))]


def test_sidecar_edited_while_waiting_resettles(inbox: Inbox) -> None:
    image = inbox.write("photo.jpg")
    sidecar = inbox.write("photo.json", '{"style": "a"}')
    assert inbox.poll(SETTLE - 1) == []
    inbox.write("photo.json", '{"style": "bb"}')
    assert inbox.poll(1) == []  # the image is ready, the edited sidecar is not
    assert inbox.poll(SETTLE) == [Arrival(image, sidecar, Path("."))]


def test_changed_after_emission_emits_again(inbox: Inbox) -> None:
    image = inbox.write("photo.jpg")
    sidecar = inbox.write("photo.json", '{"style": "a"}')
    assert len(inbox.poll(SETTLE)) == 1
    backlog = Backlog(inbox.intake)
    backlog.scanned()
    backlog.observe(inbox.now, math.inf)  # a full rescan of unchanged files is not a change
    inbox.intake.observe(image, inbox.now)
    assert inbox.poll(SETTLE) == []
    inbox.write("photo.json", '{"style": "other"}')
    assert inbox.poll(SETTLE) == [Arrival(image, sidecar, Path("."))]


def test_specific_sidecar_wins_and_stem_sidecar_serves_the_other(inbox: Inbox) -> None:
    jpg = inbox.write("photo.jpg")
    png = inbox.write("photo.png")
    specific = inbox.write("photo.jpg.json", "{}")
    shared = inbox.write("photo.json", "{}")
    events = inbox.poll(SETTLE)
    assert set(events) == {
        Arrival(jpg, specific, Path(".")),
        Arrival(png, shared, Path(".")),
    }


def test_shared_stem_sidecar_is_ambiguous(inbox: Inbox) -> None:
    jpg = inbox.write("photo.jpg")
    png = inbox.write("photo.png")
    inbox.write("photo.json", "{}")
    assert inbox.poll(SETTLE) == []
    # While they wait for sidecars of their own, status says so (it said "for its sidecar").
    notes = {item.path: item.note for item in inbox.intake.items(inbox.now, 0.0)}
    assert notes["photo.jpg"] == (
        "waiting for a sidecar of its own (photo.jpg.json): photo.json is shared with another "
        "photo (photo.png)"
    )
    events = inbox.poll(PAIR)
    assert {event.path for event in events if isinstance(event, Problem)} == {jpg, png}
    assert "shares photo.json with another photo (photo.jpg and photo.png)" in str(events)
    # Renaming the sidecar to the specific name resolves it.
    (inbox.root / "photo.json").rename(inbox.root / "photo.png.json")
    inbox.intake.observe(inbox.root / "photo.json", inbox.now)
    inbox.intake.observe(inbox.root / "photo.png.json", inbox.now)
    inbox.write("photo.jpg.json", "{}")
    assert {event.image for event in inbox.poll(SETTLE) if isinstance(event, Arrival)} == {
        jpg,
        png,
    }


def test_lone_image_reported_once_then_paired_later(inbox: Inbox) -> None:
    image = inbox.write("photo.jpg")
    assert inbox.poll(PAIR - 1) == []
    [problem] = inbox.poll(1)
    assert isinstance(problem, Problem)
    assert problem.path == image
    assert problem.reason.startswith("photo.jpg has no sidecar; add photo.json beside it")
    assert inbox.poll(PAIR) == []
    sidecar = inbox.write("photo.json", "{}")
    assert inbox.poll(SETTLE) == [Arrival(image, sidecar, Path("."))]


def test_a_lone_photo_whose_name_leaves_no_room_for_a_sidecar_is_told_to_rename(
    inbox: Inbox,
) -> None:
    """At 255 bytes photo.jpg is a legal name, but photo.json would be 256: asking for it
    would ask for a file that cannot exist."""
    inbox.write("L" * 251 + ".jpg")
    inbox.write("short.jpg")
    long, short = sorted(inbox.poll(PAIR), key=lambda e: len(str(e.path)), reverse=True)
    assert isinstance(long, Problem) and isinstance(short, Problem)
    assert "its name is too long to have one" in long.reason
    assert "rename the photo to a shorter name" in long.reason
    assert "add short.json beside it" in short.reason


def test_a_sidecar_whose_photo_is_of_a_type_not_taken_says_so(inbox: Inbox) -> None:
    """scan.bmp beside scan.json: "add the photo" would send the user looking for a file that
    is right there (a new user's trial)."""
    (inbox.root / "scan.bmp").write_bytes(b"BM not taken")
    inbox.write("scan.json", '{"style": "a"}')
    inbox.write("other.json", '{"style": "a"}')
    problems = {event.path.name: event for event in inbox.poll(PAIR)}
    assert isinstance(problems["scan.json"], Problem)
    reason = problems["scan.json"].reason
    assert "scan.bmp is not one of gif, heic, heif, jpeg, jpg, png" in reason
    assert "add its extension to image_extensions" in reason
    assert "has no photo beside it; add the photo" in problems["other.json"].reason


def test_a_photo_stylefold_cannot_read_is_not_to_be_added_to_image_extensions(
    inbox: Inbox,
) -> None:
    """A new user's trial: doc.pdf beside doc.json was told that the administrator could add
    pdf to image_extensions, where the decode would only have failed next."""
    for name in ("doc.pdf", "IMG_2.NEF"):
        (inbox.root / name).write_bytes(b"%PDF-1.7 not taken")
        inbox.write(f"{name.rpartition('.')[0]}.json", '{"style": "a"}')
    problems = {event.path.name: event for event in inbox.poll(PAIR)}
    for sidecar, photo in (("doc.json", "doc.pdf"), ("IMG_2.json", "IMG_2.NEF")):
        told = problems[sidecar]
        assert isinstance(told, Problem) and f"{photo} is not one of gif" in told.reason
        assert "save the photo as one of those (JPEG or PNG will do)" in told.reason
        assert "image_extensions" not in told.reason


def test_a_sidecar_beside_a_photo_of_a_type_not_taken_is_told_at_once(inbox: Inbox) -> None:
    """A camera's raw file or a BMP beside its sidecar: the sender was told after pair_timeout
    (10 minutes by default) what was plain as the sidecar settled (a new user's trial). An
    iPhone's .aae or an .xmp beside a sidecar is no photo: that sidecar waits as before, as its
    photo may be on its way. A photo of a type taken, sent after the report, is rendered."""
    (inbox.root / "IMG_1.AAE").write_bytes(b"edits")
    (inbox.root / "IMG_1.CR2").write_bytes(b"raw")
    inbox.write("IMG_1.json", '{"style": "a"}')
    (inbox.root / "notes.xmp").write_bytes(b"<xmp/>")
    inbox.write("notes.json", '{"style": "a"}')
    [problem] = inbox.poll(SETTLE)
    assert isinstance(problem, Problem) and problem.path.name == "IMG_1.json"
    assert "IMG_1.CR2 is not one of gif, heic" in problem.reason
    assert inbox.poll(SETTLE) == []  # told once
    jpg = inbox.write("IMG_1.jpg")
    assert inbox.poll(SETTLE) == [Arrival(jpg, inbox.root / "IMG_1.json", Path("."))]
    [late] = inbox.poll(PAIR)
    assert isinstance(late, Problem) and late.path.name == "notes.json"


def test_a_photo_named_sidecar_beside_its_photo_of_a_type_not_taken_says_so(inbox: Inbox) -> None:
    """x.avif.json beside x.avif (a type the inbox does not take by default): told to "add the
    photo (x.avif.jpg or another image type)", which is right there (an attacker's trial)."""
    (inbox.root / "x.avif").write_bytes(b"\0\0\0\x1cftypavif")
    inbox.write("x.avif.json", '{"style": "a"}')
    [problem] = inbox.poll(SETTLE)
    assert isinstance(problem, Problem) and problem.path.name == "x.avif.json"
    assert "x.avif is not one of gif, heic" in problem.reason


def test_lone_image_gets_default_style_when_configured(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path, no_sidecar="default", default_style="starry")
    image = inbox.write("photo.jpg")
    assert inbox.poll(PAIR - 1) == []
    assert inbox.poll(1) == [Arrival(image, None, Path("."))]
    assert inbox.poll(PAIR) == []


def test_lone_sidecar_reported(inbox: Inbox) -> None:
    sidecar = inbox.write("photo.json", "{}")
    assert inbox.poll(PAIR - 1) == []
    [problem] = inbox.poll(1)
    assert problem == Problem(
        sidecar,
        "photo.json has no photo beside it; add the photo (photo.jpg or another image type) to "
        "the same folder, or remove the sidecar",
        "photo",
        orphan=True,
    )


def test_a_lone_photo_named_sidecar_is_told_the_photo_s_own_name(inbox: Inbox) -> None:
    """A camera's IMG_0002.jpg.json was told to add IMG_0002.jpg.jpg (a user's trial)."""
    inbox.write("IMG_0002.jpg.json", "{}")
    inbox.poll(PAIR - 1)
    [problem] = inbox.poll(1)
    assert "add the photo (IMG_0002.jpg) to the same folder" in problem.reason


@pytest.mark.parametrize(
    ("name", "stem"),
    [("photo.jpg.json", "photo"), ("p.manifest.json", "p.manifest"), ("a.error.json", "a.error")],
)
def test_a_lone_sidecars_report_is_named_after_the_photo_it_names(
    inbox: Inbox, name: str, stem: str
) -> None:
    """An outbox synced back into the inbox: p.manifest.json is the sidecar of p.manifest.jpg,
    and its report must not land on photo p's names (p.error.json beside p's result)."""
    sidecar = inbox.write(name, "{}")
    inbox.poll(PAIR - 1)
    [problem] = inbox.poll(1)
    assert isinstance(problem, Problem) and problem.path == sidecar
    assert problem.stem == stem
    assert about_problem(problem, inbox.root).stem == stem


def test_claimed_pair_is_forgotten_without_spurious_reports(inbox: Inbox) -> None:
    image = inbox.write("photo.jpg")
    sidecar = inbox.write("photo.json", "{}")
    assert len(inbox.poll(SETTLE)) == 1
    inbox.now += PAIR * 3
    inbox.remove(image)  # the daemon claims the image first ...
    assert inbox.poll(1) == []  # ... the sidecar, alone now, is not reported at once
    inbox.remove(sidecar)
    assert inbox.poll(PAIR) == []
    assert len(inbox.intake) == 0
    assert inbox.intake.pending == 0


def test_half_pair_alone_after_partner_vanished_is_reported_later(inbox: Inbox) -> None:
    image = inbox.write("photo.jpg")
    sidecar = inbox.write("photo.json", "{}")
    assert len(inbox.poll(SETTLE)) == 1
    inbox.remove(image)
    assert inbox.poll(PAIR - 1) == []
    assert [event.path for event in inbox.poll(1)] == [sidecar]


def test_brought_along_style_file(inbox: Inbox) -> None:
    image = inbox.write("photo.jpg")
    sidecar = inbox.write("photo.json", '{"style": {"file": "mine.jpg"}}')
    assert inbox.poll(SETTLE) == []  # waits for mine.jpg
    inbox.now += 20
    style = inbox.write("mine.jpg")
    assert inbox.poll(SETTLE) == [Arrival(image, sidecar, Path("."), style)]
    inbox.remove(image)
    inbox.remove(sidecar)
    assert inbox.poll(PAIR * 2) == []  # the style image left behind is not a lone photo


def test_style_images_a_refused_sidecar_names_are_not_lone_photos(inbox: Inbox) -> None:
    """A user's trial: a sidecar bringing mine.png along, with a misspelt param, was refused
    (rightly), and mine.png got a report of its own saying it had no sidecar, which stayed
    once the sidecar was mended. So did a file in a blend (which takes library styles only)."""
    image = inbox.write("photo.jpg")
    inbox.write("mine.png")
    refused = '{"style": {"file": "mine.png"}, "params": {"strenght": 1}}'
    sidecar = inbox.write("photo.json", refused)
    blended = inbox.write("b.jpg")
    inbox.write("x.png")
    blend = inbox.write("b.json", '{"style": [{"file": "x.png", "weight": 2}, {"name": "a"}]}')
    # Each pair goes at once, for its job to say what is wrong with the sidecar.
    assert sorted(inbox.poll(SETTLE), key=str) == [
        Arrival(blended, blend, Path(".")),
        Arrival(image, sidecar, Path(".")),
    ]
    assert inbox.poll(PAIR * 2) == []  # neither style image is reported as a lone photo
    # Mended, the sidecar brings mine.png along as before.
    inbox.write("photo.json", '{"style": {"file": "mine.png"}, "params": {"strength": 1}}')
    [again] = inbox.poll(SETTLE)
    assert isinstance(again, Arrival) and again.style_file == inbox.root / "mine.png"
    # A sidecar that no longer names it leaves x.png a photo like any other.
    inbox.write("b.json", '{"style": "a"}')
    assert [event.path for event in inbox.poll(PAIR * 2) if isinstance(event, Problem)] == [
        inbox.root / "x.png"
    ]


def test_a_photo_another_sidecar_brings_as_its_style_still_gets_its_own_job(
    inbox: Inbox,
) -> None:
    """Whoever can write to the inbox may name any photo there as the style to bring along;
    the photo must still become a job of its own, whichever half settles when."""
    sidecar = inbox.write("x.json", '{"style": "a"}')
    inbox.now += 0.1
    borrower = inbox.write("y.jpg"), inbox.write("y.json", '{"style": {"file": "x.jpg"}}')
    inbox.now += 0.1
    image = inbox.write("x.jpg")  # settles last: the borrower is decided first
    events = inbox.poll(SETTLE) + inbox.poll(PAIR * 2)
    assert sorted(events, key=lambda e: e.image.name) == [  # type: ignore[union-attr]
        Arrival(image, sidecar, Path(".")),
        Arrival(borrower[0], borrower[1], Path("."), image),
    ]


@pytest.mark.parametrize("photo_first", [True, False])
def test_pairs_that_bring_a_photo_as_their_style_are_emitted_before_it(
    inbox: Inbox, photo_first: bool
) -> None:
    """Emitted is claimed, in order, and claiming the photo moves it out of the inbox: a pair
    emitted after it would find its style gone. So the borrowers go first, also when the photo
    settled first or in the same instant (one batch of events)."""
    written = [("x.jpg", None), ("x.json", '{"style": "a"}')]
    written += [("y.jpg", None), ("y.json", '{"style": {"file": "x.jpg"}}')]
    if not photo_first:
        written.reverse()
    for name, text in written:
        inbox.write(name) if text is None else inbox.write(name, text)
        inbox.now += 0.01 if photo_first else 0.0
    events = inbox.poll(SETTLE) + inbox.poll(0.1)
    assert [(e.image.name, e.style_file) for e in events] == [  # type: ignore[union-attr]
        ("y.jpg", inbox.root / "x.jpg"),
        ("x.jpg", None),
    ]


@pytest.mark.parametrize("ring", [2, 3])
def test_photos_that_borrow_each_other_as_styles_are_emitted_at_once(
    inbox: Inbox, ring: int
) -> None:
    """An attacker's trial: a.jpg styled by b.jpg and b.jpg by a.jpg (two photos that swap
    styles) each waited for the other's pair to be emitted first: a stall until pair_timeout,
    then whichever was claimed second found its style moved away. The first emitted is now
    claimed as a copy (it stays in the inbox for the others); the rest follow at once."""
    names = [f"p{index}" for index in range(ring)]
    for index, name in enumerate(names):
        inbox.write(f"{name}.jpg")
        inbox.write(f"{name}.json", f'{{"style": {{"file": "{names[index - 1]}.jpg"}}}}')
    events = inbox.poll(SETTLE) + inbox.poll(0.1)
    emitted = [(e.image.name, e.style_file.name, e.borrowed) for e in events]  # type: ignore[union-attr]
    assert sorted(emitted) == [
        (f"{name}.jpg", f"{names[index - 1]}.jpg", emitted[0][0] == f"{name}.jpg")
        for index, name in enumerate(names)
    ]


def test_a_kept_photo_whose_partners_go_after_its_answer_waits_for_nothing(inbox: Inbox) -> None:
    """A sync user's trial (archive = "keep"): the photo stays in the inbox after its answer;
    when a phone app tidied its sidecar (or style image) away, status showed it "waiting for
    its sidecar" until pair_timeout, then it got a report. A partner that changes is a new
    request, though: a new style image under the same name is emitted again."""
    image = inbox.write("photo.jpg")
    sidecar = inbox.write("photo.json", '{"style": {"file": "mine.png"}}')
    style = inbox.write("mine.png", b"\x89PNG a style")
    [first] = inbox.poll(SETTLE)
    assert isinstance(first, Arrival) and first.style_file == style
    inbox.remove(style)
    assert inbox.poll(PAIR * 2) == [] and inbox.intake.items(inbox.now, 0.0) == []
    inbox.write("mine.png", b"\x89PNG another style")
    [again] = inbox.poll(SETTLE) + inbox.poll(0.1)
    assert isinstance(again, Arrival) and again.image == image and again.style_file == style
    inbox.remove(sidecar)
    inbox.remove(style)
    assert inbox.poll(PAIR * 2) == [] and inbox.intake.items(inbox.now, 0.0) == []


def test_missing_style_file_reported(inbox: Inbox) -> None:
    image = inbox.write("photo.jpg")
    inbox.write("photo.json", '{"style": {"file": "mine.jpg"}}')
    [problem] = inbox.poll(PAIR)
    assert isinstance(problem, Problem) and problem.path == image
    assert problem.reason == (
        "photo.jpg is missing the style image mine.jpg named by photo.json: it is not in the "
        "same folder; add it there"
    )
    assert about_problem(problem, inbox.root).sidecar == "photo.json"  # its report said null


def test_a_misnamed_sidecar_is_told_in_status_while_its_photo_waits(inbox: Inbox) -> None:
    """A photographer's trial: status said "waiting for its sidecar" for the whole
    pair_timeout beside `n1.json.txt`; the report at its end said what to rename."""
    inbox.write("n1.jpg")
    inbox.write("n1.json.txt", '{"style": "a"}')
    inbox.write("n2.jpeg")
    inbox.write("n2.jpg.json", '{"style": "a"}')
    inbox.write("n3.jpg")
    assert inbox.poll(SETTLE) == []
    notes = {item.path: item.note for item in inbox.intake.items(inbox.now, 0.0)}
    assert notes["n1.jpg"].startswith("waiting for its sidecar; n1.jpg has no sidecar: ")
    assert notes["n1.jpg"].endswith("; rename it n1.json")
    assert notes["n2.jpeg"].endswith("; rename it n2.jpeg.json or n2.json")
    assert notes["n3.jpg"] == "waiting for its sidecar"  # nothing beside it looks meant
    reports = {e.path.name: e.reason for e in inbox.poll(PAIR) if isinstance(e, Problem)}
    assert notes["n1.jpg"] == f"waiting for its sidecar; {reports['n1.jpg']}"


def test_a_sidecar_saved_as_text_or_with_a_space_is_named_but_a_caption_is_not(
    tmp_path: Path,
) -> None:
    """A re-test: `n9.rtf` (TextEdit), `n13.txt` and `n10 .json` beside their photos got a plain
    "no sidecar"; a caption file beside a photo is no sidecar, and the default style still
    answers that photo."""
    inbox = Inbox(tmp_path, no_sidecar="default", default_style="mosaic")
    inbox.write("n9.jpg")
    inbox.write("n9.rtf", '{\\rtf1 \\{"style": "a"\\}}')
    inbox.write("n13.jpg")
    inbox.write("n13.txt", '{"style": "a"}')
    inbox.write("n10.jpg")
    inbox.write("n10 .json", '{"style": "a"}')
    caption = inbox.write("beach.jpg")
    inbox.write("beach.txt", "Sunset at the beach, 2024")
    events = inbox.poll(SETTLE) + inbox.poll(PAIR)
    told = {e.path.name: e.reason for e in events if isinstance(e, Problem)}
    assert told["n9.jpg"] == (
        "n9.jpg has no sidecar: n9.rtf beside it may be meant as one, but a sidecar is named "
        "n9.json; rename it so, and save it as plain text (TextEdit: Format > Make Plain Text)"
    )
    assert told["n13.jpg"].endswith("n13.txt beside it may be meant as one, but a sidecar is "
                                    "named n13.json; rename it so")  # fmt: skip
    assert "n10 .json beside it may be meant as one" in told["n10.jpg"]
    assert "beach.jpg" not in told
    assert Arrival(caption, None, Path(".")) in events  # the default style's


def test_a_style_file_named_for_two_that_differ_in_case_alone_is_told_at_once(
    inbox: Inbox,
) -> None:
    """An attacker's trial: BRUSH.jpg beside brush.jpg and Brush.jpg was told, after the whole
    pair_timeout, that it was not in the folder."""
    image = inbox.write("p1.jpg")
    inbox.write("brush.jpg")
    inbox.write("Brush.jpg")
    inbox.write("p1.json", '{"style": {"file": "BRUSH.jpg"}}')
    problems = [e for e in inbox.poll(SETTLE) if isinstance(e, Problem)]
    assert [(p.path, p.reason) for p in problems] == [
        (
            image,
            "p1.jpg cannot take the style image BRUSH.jpg named by p1.json: Brush.jpg and "
            "brush.jpg are both beside it, and differ from that name in letter case alone; "
            "write in p1.json the name of the one meant exactly as it is written, or remove "
            "the other",
        )
    ]
    # Mended, the pair goes.
    inbox.write("p1.json", '{"style": {"file": "Brush.jpg"}}')
    events = inbox.poll(SETTLE)
    assert Arrival(image, inbox.root / "p1.json", Path("."), inbox.root / "Brush.jpg") in events


def test_a_style_file_that_is_no_image_is_not_waited_for(inbox: Inbox) -> None:
    """An attacker's trial: a sidecar naming another pair's sidecar (or itself) as its style
    file waited pair_timeout, then was told the file is not in the same folder, which it was;
    the job tells at once that it is no image name."""
    image = inbox.write("photo.jpg")
    sidecar = inbox.write("photo.json", '{"style": {"file": "photo.json"}}')
    assert inbox.poll(SETTLE) == [Arrival(image, sidecar, Path("."))]


def test_a_style_file_that_is_a_folder_is_told_so(inbox: Inbox) -> None:
    """An attacker's trial: `dir.png/` beside the sidecar got "not in the same folder; add it
    there", which it was, as a folder."""
    image = inbox.write("photo.jpg")
    inbox.write("photo.json", '{"style": {"file": "dir.png"}}')
    (inbox.root / "dir.png").mkdir()
    [problem] = inbox.poll(PAIR)
    assert problem.path == image
    assert "dir.png named by photo.json: dir.png is a folder, not a file" in problem.reason


def _link(inbox: Inbox, name: str, target: Path, hard: bool = False) -> Path:
    target.write_bytes(b"\xff\xd8 outside")
    path = inbox.root / name
    path.hardlink_to(target) if hard else path.symlink_to(target)
    inbox.intake.observe(path, inbox.now)
    return path


@pytest.mark.parametrize("hard", [False, True], ids=["symlink", "hard link"])
def test_a_photo_whose_brought_style_is_unusable_gets_its_own_report(
    inbox: Inbox, tmp_path: Path, hard: bool
) -> None:
    """Found by an attacker's trial: the style file was reported, the photo waited for ever."""
    image = inbox.write("photo.jpg")
    sidecar = inbox.write("photo.json", '{"style": {"file": "mine.jpg"}}')
    style = _link(inbox, "mine.jpg", tmp_path / "outside.jpg", hard)
    problems = inbox.poll(SETTLE) + inbox.poll(SETTLE)
    about = {problem.path: problem.reason for problem in problems if isinstance(problem, Problem)}
    assert set(about) == {style, image}
    assert about[image].startswith("photo.jpg cannot use the style image mine.jpg it brings: ")
    assert ("hard links" if hard else "symbolic link") in about[image]
    assert inbox.intake.items(inbox.now, 0.0) == []  # nothing left waiting
    style.unlink()
    real = inbox.write("mine.jpg")
    assert inbox.poll(SETTLE) == [Arrival(image, sidecar, Path("."), real)]


def test_a_photo_whose_sidecar_is_unusable_stops_waiting(inbox: Inbox, tmp_path: Path) -> None:
    """The sidecar's report answers for the pair (the two share a stem, so one report); the
    photo is no longer listed as waiting for a sidecar that is there, and pairs once it is
    replaced by a real file."""
    image = inbox.write("photo.jpg")
    link = _link(inbox, "photo.json", tmp_path / "outside.json")
    [problem] = inbox.poll(SETTLE) + inbox.poll(PAIR)
    assert isinstance(problem, Problem) and problem.path == link
    assert inbox.intake.items(inbox.now, 0.0) == []
    link.unlink()
    sidecar = inbox.write("photo.json", "{}")
    assert inbox.poll(SETTLE) == [Arrival(image, sidecar, Path("."))]


def test_invalid_sidecar_still_arrives_for_an_error_report(inbox: Inbox) -> None:
    image = inbox.write("photo.jpg")
    sidecar = inbox.write("photo.json", "{not json")
    assert inbox.poll(SETTLE) == [Arrival(image, sidecar, Path("."))]


def test_ignored_and_foreign_names_never_tracked(inbox: Inbox, tmp_path: Path) -> None:
    for name in (".syncthing.photo.jpg.tmp", "photo.jpg.partial", "._photo.jpg", "notes.txt",
                 ".stversions/photo.jpg", "@eaDir/photo.json"):  # fmt: skip
        inbox.write(name)
    inbox.intake.observe(tmp_path / "outside.jpg", inbox.now)
    (inbox.root / "folder.jpg").mkdir()
    inbox.intake.observe(inbox.root / "folder.jpg", inbox.now)
    assert len(inbox.intake) == 0
    assert inbox.poll(PAIR * 2) == []


def test_file_replaced_by_folder_is_forgotten(inbox: Inbox) -> None:
    image = inbox.write("photo.jpg")
    image.unlink()
    image.mkdir()
    inbox.intake.observe(image, inbox.now)
    assert len(inbox.intake) == 0


def test_temporary_name_renamed_into_place(inbox: Inbox) -> None:
    temp = inbox.write(".photo.jpg.Xa9bQ2")  # rsync
    inbox.write("photo.json", "{}")
    final = inbox.root / "photo.jpg"
    temp.rename(final)
    inbox.intake.observe(final, inbox.now)
    [arrival] = inbox.poll(SETTLE)
    assert isinstance(arrival, Arrival)
    assert arrival.image == final


def test_empty_file_never_settles_and_is_reported(inbox: Inbox) -> None:
    image = inbox.write("photo.jpg", b"")
    inbox.write("photo.json", "{}")
    assert inbox.poll(SETTLE * 2) == []
    [problem] = inbox.poll(PAIR)
    assert problem.path == image
    assert "is empty (0 bytes)" in problem.reason


def test_a_problem_is_as_decided_only_while_its_file_is_unchanged(inbox: Inbox) -> None:
    """Reports of a flood are written over several turns of the loop: one whose file was
    filled in or removed since it was decided must not be written."""
    first, second, third = (inbox.write(f"p{n}.jpg", b"") for n in range(3))
    problems = [event for event in inbox.poll(PAIR + SETTLE) if isinstance(event, Problem)]
    assert sorted(problem.path for problem in problems) == [first, second, third]
    assert all(inbox.intake.as_decided(problem) for problem in problems)
    inbox.append(second, b"\xff\xd8 the photo, copied at last")
    inbox.remove(third)
    still = {problem.path for problem in problems if inbox.intake.as_decided(problem)}
    assert still == {first}


def test_empty_files_wait_asleep_and_a_pair_beside_them_is_looked_at_first(
    inbox: Inbox,
) -> None:
    """A re-test: 50,000 empty photos were looked at again at every poll, oldest first, and a
    pair dropped beside them waited until they were reported. A poll cut short says so, for
    `once`, which is done only after a poll that looked at everything due."""
    for index in range(50):
        inbox.write(f"flood/e{index:02}.jpg", b"")
    assert inbox.poll(SETTLE * 2) == [] and inbox.intake.looked_at_all
    image = inbox.write("photo.jpg")
    sidecar = inbox.write("photo.json", "{}")
    inbox.now += SETTLE * 2
    # Polls whose budget is spent at once look at one file each: the photo, then its sidecar,
    # not the 50 empty photos first.
    cut_short = inbox.intake.poll(inbox.now, until=time.monotonic())
    assert cut_short == [] and not inbox.intake.looked_at_all
    assert inbox.intake.poll(inbox.now, until=time.monotonic()) == [
        Arrival(image, sidecar, Path("."))
    ]
    assert inbox.poll() == [] and inbox.intake.looked_at_all
    filled = inbox.write("flood/e07.jpg")  # an empty photo filled in wakes at once
    inbox.write("flood/e07.json", "{}")
    assert inbox.poll(SETTLE * 2) == [Arrival(filled, filled.with_suffix(".json"), Path("flood"))]
    problems = inbox.poll(PAIR)
    assert len(problems) == 49 and all(isinstance(p, Problem) for p in problems)


def test_an_empty_file_s_wait_counts_from_its_arrival_across_a_restart(tmp_path: Path) -> None:
    """A soak trial: an empty sidecar there 49 s before a restart was reported 60 s after it,
    as if new; a lone photo's wait counts from the file's arrival (its ctime), so does this."""
    (tmp_path / "photo.json").write_bytes(b"")
    time.sleep(1.1)  # older than the wait, in real time, when a new tracker (a restart) sees it
    intake = Intake(tmp_path, IgnoreRules(), settle_seconds=0.1, pair_timeout=1.0)
    intake.observe(tmp_path / "photo.json", 1000.0)
    [problem] = intake.poll(1000.2)
    assert isinstance(problem, Problem) and "is empty (0 bytes)" in problem.reason


def test_symlink_reported(inbox: Inbox, tmp_path: Path) -> None:
    target = tmp_path / "secret.jpg"
    target.write_bytes(b"x")
    link = inbox.root / "photo.jpg"
    link.symlink_to(target)
    inbox.intake.observe(link, inbox.now)
    [problem] = inbox.poll(SETTLE)
    assert problem.path == link
    assert "symbolic link" in problem.reason


def test_oldest_first(inbox: Inbox) -> None:
    names = [f"p{index}" for index in range(5)]
    for name in reversed(names):
        inbox.write(f"{name}.jpg")
        inbox.write(f"{name}.json", "{}")
        inbox.now += 0.1
    events = inbox.poll(SETTLE)
    assert [event.image.stem for event in events if isinstance(event, Arrival)] == names[::-1]


def test_thousands_of_files_fast_and_bounded(inbox: Inbox) -> None:
    count = 1000  # 2,000 files
    for index in range(count):
        inbox.write(f"batch/p{index}.jpg")
        inbox.write(f"batch/p{index}.json", "{}")
    started = time.perf_counter()
    for _ in range(20):
        assert inbox.poll(0.1) == []
    events = inbox.poll(SETTLE)
    idle = inbox.poll(1)
    elapsed = time.perf_counter() - started
    assert len(events) == count
    assert idle == []
    assert elapsed < 5.0
    for event in events:
        assert isinstance(event, Arrival)
        inbox.remove(event.image)
        assert event.sidecar is not None
        inbox.remove(event.sidecar)
    assert len(inbox.intake) == 0
    intake = inbox.intake
    assert intake._pairs.empty and not intake._used_styles


def test_tracking_is_capped(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path, max_tracked=3)
    for index in range(5):
        inbox.write(f"p{index}.jpg")
    assert len(inbox.intake) == 3
    assert inbox.intake.dropped == 2


def test_a_photo_whose_own_sidecar_names_it_as_its_style_does_not_wait_for_itself(
    inbox: Inbox,
) -> None:
    """Refused later ("the photo itself"), but at once, not after pair_timeout."""
    image = inbox.write("self.jpg")
    sidecar = inbox.write("self.json", '{"style": {"file": "self.jpg"}}')
    assert inbox.poll(SETTLE) == [Arrival(image, sidecar, Path("."), image)]


def test_two_photos_alike_but_for_unicode_form_each_take_their_own_sidecar(
    inbox: Inbox,
) -> None:
    """café.jpg composed and decomposed (a Mac and a Linux box syncing one folder), each with
    its sidecar written the same way: both were refused as sharing one sidecar (the index held
    one sidecar per folded name). A lone sidecar still pairs across forms (a Mac's photo, a
    Linux-written sidecar)."""
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    first = inbox.write(f"{composed}.jpg")
    second = inbox.write(f"{decomposed}.jpg")
    first_sidecar = inbox.write(f"{composed}.json", '{"style": "a"}')
    second_sidecar = inbox.write(f"{decomposed}.json", '{"style": "b"}')
    assert set(inbox.poll(SETTLE)) == {
        Arrival(first, first_sidecar, Path(".")),
        Arrival(second, second_sidecar, Path(".")),
    }
    inbox.remove(second)
    inbox.remove(second_sidecar)
    inbox.remove(first_sidecar)
    lone = inbox.write("na\u00efve.jpg")
    across = inbox.write("nai\u0308ve.json", '{"style": "a"}')
    assert inbox.poll(SETTLE) == [Arrival(lone, across, Path("."))]


def test_status_tells_a_pair_waiting_for_its_style_image_as_such(inbox: Inbox) -> None:
    """A user's trial: status said "waiting for its sidecar" for the whole pair_timeout while
    the sidecar was there and its named style image was not; the final report was right."""
    inbox.write("d.jpg")
    inbox.write("d.json", '{"style": {"file": "nothere.png"}}')
    assert inbox.poll(SETTLE + 1) == []
    [item] = inbox.intake.items(inbox.now, 0.0)
    assert item.path == "d.jpg"
    assert item.note == "waiting for the style image nothere.png named by d.json"
    inbox.write("nothere.png")
    inbox.poll(SETTLE + 1)
    assert all("style image" not in item.note for item in inbox.intake.items(inbox.now, 0.0))


def test_a_photo_and_its_sidecar_pair_whatever_the_case(inbox: Inbox) -> None:
    """A USB-stick user's trial: `Photo.jpg` and `photo.json` waited pair_timeout and were told
    to add a sidecar FAT cannot hold beside the other (it folds case). A camera writes
    `IMG_0001.JPG`, a person `img_0001.json`; a style image named in another case is found."""
    camera = inbox.write("IMG_0001.JPG")
    by_hand = inbox.write("img_0001.json", '{"style": "a"}')
    photo = inbox.write("Photo.jpg")
    specific = inbox.write("photo.JPG.json", '{"style": "a"}')
    portrait = inbox.write("portrait.jpg")
    brings = inbox.write("portrait.json", '{"style": {"file": "style.png"}}')
    style = inbox.write("Style.PNG")
    assert set(inbox.poll(SETTLE)) == {
        Arrival(camera, by_hand, Path(".")),
        Arrival(photo, specific, Path(".")),
        Arrival(portrait, brings, Path("."), style),
    }
    assert inbox.poll(PAIR * 2) == []  # the style image is not a photo waiting for a sidecar
    street = inbox.write("STRASSE.jpg")  # not straße: FAT and NTFS fold letter by letter
    inbox.write("straße.json", '{"style": "a"}')
    reported = {event.path for event in inbox.poll(PAIR + SETTLE) if isinstance(event, Problem)}
    assert reported == {street, inbox.root / "straße.json"}


def test_names_alike_but_for_case_each_take_the_sidecar_written_the_same_way(
    inbox: Inbox,
) -> None:
    """On a folder that keeps case (ext4), `photo.jpg` and `Photo.jpg` each pair with their own
    sidecar; a specific sidecar is its photo's alone; one sidecar for both is shared and told."""
    lower, upper = inbox.write("photo.jpg"), inbox.write("Photo.jpg")
    lower_sidecar = inbox.write("photo.json", '{"style": "a"}')
    upper_sidecar = inbox.write("Photo.json", '{"style": "b"}')
    assert set(inbox.poll(SETTLE)) == {
        Arrival(lower, lower_sidecar, Path(".")),
        Arrival(upper, upper_sidecar, Path(".")),
    }
    for path in (lower, upper, lower_sidecar, upper_sidecar):
        inbox.remove(path)
    lower, upper = inbox.write("p.jpg"), inbox.write("P.jpg")
    specific = inbox.write("p.jpg.json", '{"style": "a"}')
    assert inbox.poll(SETTLE) == [Arrival(lower, specific, Path("."))]
    [problem] = inbox.poll(PAIR)
    assert isinstance(problem, Problem)
    assert problem.path == upper
    assert "has no sidecar" in problem.reason
    inbox.remove(lower)
    inbox.remove(specific)
    lower = inbox.write("p.jpg")
    inbox.write("p.json", '{"style": "a"}')
    events = inbox.poll(PAIR + SETTLE)
    assert {event.path for event in events if isinstance(event, Problem)} == {lower, upper}
    assert all("shares p.json with another photo" in event.reason for event in events)


def test_a_shadowed_sidecar_told_so_stays_told_once_its_photo_is_claimed(inbox: Inbox) -> None:
    """A re-test: p2.json, told at once that p2.jpg took p2.jpg.json, was listed in status as
    "waiting for its photo (gives up in 30 s)" once the photo was claimed, and told again then."""
    photo = inbox.write("p2.jpg")
    unused = inbox.write("p2.json", '{"style": "b"}')
    specific = inbox.write("p2.jpg.json", '{"style": "a"}')
    assert inbox.poll(SETTLE) == [Arrival(photo, specific, Path("."))]
    [problem] = inbox.poll(0.1)  # a later poll than its photo's, which its report names
    assert isinstance(problem, Problem) and problem.path == unused and problem.orphan
    inbox.remove(photo)  # claimed: moved out of the inbox
    inbox.remove(specific)
    assert inbox.poll(SETTLE) == []
    assert [item.path for item in inbox.intake.items(inbox.now, 0.0)] == []
    assert inbox.poll(PAIR) == []  # not told again as one without a photo
    inbox.write("p2.json", '{"style": "c"}')  # changed: a new request, decided anew
    [again] = inbox.poll(PAIR + SETTLE)
    assert isinstance(again, Problem) and again.path == unused and "no photo" in again.reason


def test_status_tells_a_lone_photo_the_default_style_answers_when_it_will_be_rendered(
    tmp_path: Path,
) -> None:
    """A camera roll's trial: with no_sidecar = "default", status said "waiting for its sidecar
    ..., gives up in 9 min", and nothing gives up: the photo is rendered then."""
    inbox = Inbox(tmp_path, no_sidecar="default", default_style="mosaic")
    photo = inbox.write("IMG_0001.jpg")
    assert inbox.poll(SETTLE) == []
    [item] = inbox.intake.items(inbox.now, 0.0)
    assert item.note == (
        "waiting for its sidecar; without one it is rendered with the default style mosaic in "
        f"{PAIR - SETTLE:.0f} s"
    )
    assert item.gives_up_in is None
    assert inbox.poll(PAIR) == [Arrival(photo, None, Path("."))]
    lone = Inbox(tmp_path / "waits")  # no_sidecar = "wait": it is reported then
    lone.write("IMG_0002.jpg")
    lone.poll(SETTLE)
    [item] = lone.intake.items(lone.now, 0.0)
    assert item.note == "waiting for its sidecar"
    assert item.gives_up_in == pytest.approx(PAIR - SETTLE, abs=1.0)


def test_photos_waiting_for_their_pair_are_not_looked_at_until_something_changes(
    inbox: Inbox,
) -> None:
    """A bulk import's trial: 3,000 lone photos were each decided again at every poll, a fifth
    of a core for waiting. A waiting photo sleeps until pair_timeout; its sidecar wakes it."""
    photos = [inbox.write(f"roll/IMG_{index:04}.jpg") for index in range(1000)]
    assert inbox.poll(SETTLE) == []
    assert inbox.intake.pending == 1000 and not inbox.intake._pending  # all asleep
    assert len(inbox.intake.items(inbox.now, 0.0)) == 1000  # and still shown by status
    sidecar = inbox.write("roll/IMG_0500.json", '{"style": "a"}')
    assert inbox.poll(SETTLE) == [Arrival(photos[500], sidecar, Path("roll"))]
    lone = inbox.write("roll/late.json", '{"style": "a"}')  # a sidecar waits asleep too
    assert inbox.poll(SETTLE) == [] and not inbox.intake._pending
    events = inbox.poll(PAIR)
    assert {event.path for event in events} == {*photos[:500], *photos[501:], lone}
    assert all(isinstance(event, Problem) for event in events)


def test_status_tells_an_empty_file_as_waiting_for_its_content(inbox: Inbox) -> None:
    """A camera roll's trial: a sync tool's zero-byte placeholder showed as "settling: ...,
    ready in 0 s" for the whole pair_timeout, then was reported as empty."""
    inbox.write("IMG_0005.JPG", b"")
    assert inbox.poll(SETTLE + 10) == []
    [item] = inbox.intake.items(inbox.now, 0.0)
    assert item.state == "arriving"
    assert item.note == (
        f"empty (0 bytes): waiting for its content; reported as empty in {PAIR - SETTLE - 10:.0f} s"
    )
    [problem] = inbox.poll(PAIR)
    assert isinstance(problem, Problem) and "is empty (0 bytes)" in problem.reason


def test_status_tells_a_photo_beside_an_empty_sidecar_that_it_waits_for_that_one(
    tmp_path: Path,
) -> None:
    """A re-test's finding: with no_sidecar = "default", a photo beside a zero-byte sidecar
    was told it would be rendered with the default style; it waits for that sidecar, whose
    report, if it stays empty, answers for the pair."""
    inbox = Inbox(tmp_path, no_sidecar="default", default_style="mosaic")
    inbox.write("x.jpg")
    inbox.write("x.json", b"")
    assert inbox.poll(SETTLE) == []
    notes = {item.path: item.note for item in inbox.intake.items(inbox.now, 0.0)}
    assert notes["x.jpg"] == "waiting for its sidecar x.json to be complete"
    [problem] = inbox.poll(PAIR)
    assert problem.path == tmp_path / "x.json" and "is empty" in problem.reason


def test_a_second_sidecar_differing_in_case_alone_is_told_not_kept_silently(
    inbox: Inbox,
) -> None:
    """A re-test's finding: `pic.JPG` answered with `pic.JPG.json` and kept in the inbox; a
    `pic.jpg.json` added later was never reported. It is reported once its wait is over (the
    daemon tells it that pic.JPG was taken with the other)."""
    photo = inbox.write("pic.JPG")
    first = inbox.write("pic.JPG.json", '{"style": "a"}')
    assert inbox.poll(SETTLE) == [Arrival(photo, first, Path("."))]
    second = inbox.write("pic.jpg.json", '{"style": "b"}')
    assert inbox.poll(SETTLE) == []
    [problem] = inbox.poll(PAIR)
    assert isinstance(problem, Problem) and problem.path == second and problem.orphan


def test_a_poll_past_its_time_settles_one_file_and_leaves_the_rest_for_the_next(
    inbox: Inbox,
) -> None:
    """Settle checks read the files (a hostile inbox makes each cost up to a budget), so a poll
    stops at its deadline after the first; none is lost, the next polls go on where it stopped."""
    pairs = []
    for index in range(3):
        pairs.append((inbox.write(f"p{index}.jpg"), inbox.write(f"p{index}.json", "{}")))
        inbox.now += 0.01
    inbox.now += SETTLE
    arrived: list[Event] = []
    for turn in range(6):
        events = inbox.intake.poll(inbox.now, until=0.0)  # the deadline already passed
        assert len(events) <= 1
        arrived += events
        if turn == 0:
            assert events == []  # one file settled: not yet a pair
    assert arrived == [Arrival(image, sidecar, Path(".")) for image, sidecar in pairs]
    assert inbox.poll(SETTLE) == []


def test_a_lone_photo_is_told_a_sidecar_name_no_other_photo_holds(inbox: Inbox) -> None:
    """An attacker's trial: `s.jpg.jpg` beside `s.jpg` and its `s.jpg.json` was told to add
    `s.jpg.json`, which was there and was not its."""
    photo = inbox.write("s.jpg")
    sidecar = inbox.write("s.jpg.json", "{}")
    lone = inbox.write("s.jpg.jpg")
    assert inbox.poll(SETTLE) == [Arrival(photo, sidecar, Path("."))]
    [problem] = inbox.poll(PAIR)
    assert isinstance(problem, Problem) and problem.path == lone
    assert "has no sidecar; add s.jpg.jpg.json beside it" in problem.reason
    inbox.write("t.jpg")  # its own sidecar would be t.jpg.json, beside t.json (a re-test's)
    inbox.write("t.json", "{}")
    other = inbox.write("t.jpg.jpg")
    events = inbox.poll(SETTLE) + inbox.poll(PAIR)
    [problem] = [event for event in events if isinstance(event, Problem)]
    assert problem.path == other and "add t.jpg.jpg.json beside it" in problem.reason
    lone = inbox.write("u.jpg.jpg")
    [problem] = inbox.poll(SETTLE) + inbox.poll(PAIR)
    assert isinstance(problem, Problem) and problem.path == lone
    assert "has no sidecar; add u.jpg.json beside it" in problem.reason
