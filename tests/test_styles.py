"""The style library: names to files, per-style defaults, reloads, no escape from the folder."""

from pathlib import Path

import pytest
from PIL import Image

from daemon.intake.sidecar_model import StyleFile, StyleRef
from daemon.intake.styles import StyleError, StyleLibrary, blend_defaults


def image(path: Path) -> Path:
    Image.new("RGB", (16, 16), (200, 40, 10)).save(path)
    return path


@pytest.fixture
def library_dir(tmp_path: Path) -> Path:
    root = tmp_path / "styles"
    root.mkdir()
    image(root / "starry_night.jpg")
    image(root / "the scream.png")
    (root / "the scream.json").write_text('{"style_weight": 5000, "size": 256}')
    (root / "notes.txt").write_text("not a style")
    (root / ".hidden.jpg").write_text("x")
    return root


def test_names_paths_and_defaults(library_dir: Path) -> None:
    library = StyleLibrary(library_dir)
    assert library.names() == ["starry_night", "the scream"]
    assert library.problems == []
    scream = library.get("the scream")
    assert scream.path == library_dir / "the scream.png"
    assert scream.defaults == {"style_weight": 5000.0, "size": 256}
    assert scream.defaults_path == library_dir / "the scream.json"
    assert library.get("starry_night").defaults == {}
    assert [style.name for style in library.styles()] == ["starry_night", "the scream"]


def test_unknown_name_lists_available(library_dir: Path) -> None:
    library = StyleLibrary(library_dir)
    with pytest.raises(StyleError, match=r"style 'monet' is not in the style library .*"
                       r"available: starry_night, the scream"):  # fmt: skip
        library.get("monet")


def test_new_style_found_without_explicit_reload(library_dir: Path) -> None:
    library = StyleLibrary(library_dir)
    image(library_dir / "monet.webp")
    assert library.get("monet").path == library_dir / "monet.webp"


def test_removed_style_disappears_on_reload(library_dir: Path) -> None:
    library = StyleLibrary(library_dir)
    (library_dir / "starry_night.jpg").unlink()
    with pytest.raises(StyleError, match="not in the style library"):
        library.get("starry_night")
    (library_dir / "the scream.json").write_text('{"size": 128}')
    library.reload()
    assert library.get("the scream").defaults == {"size": 128}


def test_bad_defaults_file_reported_and_style_unavailable(library_dir: Path) -> None:
    (library_dir / "the scream.json").write_text('{"sise": 256}')
    library = StyleLibrary(library_dir)
    assert library.names() == ["starry_night"]
    [problem] = library.problems
    assert problem.path == library_dir / "the scream.json"
    assert "sise: unknown key" in problem.reason and "params.sise" not in problem.reason
    assert "did you mean 'size'" in problem.reason
    with pytest.raises(StyleError, match=r"style 'the scream' cannot be used until .*sise: un"):
        library.get("the scream")
    # Said once, naming the file and not the folder as configured (a new user's trial: "is
    # unavailable (... in the style library styles)", after "is broken").
    with pytest.raises(StyleError) as told:
        library.get("the scream")
    assert str(told.value).startswith(
        "style 'the scream' cannot be used until the style library's the scream.json is fixed "
        "or replaced: sise: unknown key"
    )
    assert str(told.value).count("unavailable") == 0 and str(library_dir) not in str(told.value)


@pytest.mark.parametrize(
    "name", ["The Scream.json", "the scream.JSON", "THE SCREAM.Json", "the scream.json"]
)
def test_defaults_named_in_other_letter_case_or_unicode_form_are_read(
    library_dir: Path, name: str
) -> None:
    """A new user's trial: `Mix.JSON` beside `mix.png` was passed over without a word, and the
    style rendered without the defaults its keeper wrote. Its name pairs as a sidecar's does
    with its photo; beside the exactly named one it is told, and two such are told to keep one."""
    (library_dir / "the scream.json").rename(library_dir / name)
    library = StyleLibrary(library_dir)
    assert library.problems == []
    assert library.get("the scream").defaults == {"style_weight": 5000.0, "size": 256}
    assert library.get("the scream").defaults_path == library_dir / name
    if name == "the scream.json":
        return
    (library_dir / "the scream.json").write_text('{"size": 64}')
    [problem] = StyleLibrary(library_dir).problems
    assert problem.path == library_dir / name
    assert problem.reason == "the scream.json holds the defaults of style 'the scream'; remove one"
    assert StyleLibrary(library_dir).get("the scream").defaults == {"size": 64}
    (library_dir / "the scream.json").rename(library_dir / "THE scream.json")
    library = StyleLibrary(library_dir)
    [problem] = library.problems
    assert problem.reason.endswith(
        "both hold defaults for style 'the scream'; remove one; style 'the scream' is unavailable"
    )
    assert library.names() == ["starry_night"]


def test_defaults_in_decomposed_unicode_are_read_and_no_letter_becomes_two(
    library_dir: Path,
) -> None:
    """A re-tester's trial: `café.json` written by a Mac (decomposed) beside `café.png` was
    passed over; `STRASSE.json` made `straße.png` unavailable (casefold makes ß "ss", which no
    file system does)."""
    image(library_dir / "caf\u00e9.png")
    (library_dir / "cafe\u0301.json").write_text('{"size": 96}')
    image(library_dir / "stra\u00dfe.png")
    (library_dir / "STRASSE.json").write_text('{"size": 80}')
    library = StyleLibrary(library_dir)
    assert library.problems == []
    assert library.get("caf\u00e9").defaults == {"size": 96}
    assert library.get("stra\u00dfe").defaults == {}


def test_a_defaults_file_two_styles_could_own_is_told_its_exact_names(library_dir: Path) -> None:
    """A README trial: Cells.JSON beside Cells.png and cells.png was told to be named as one of
    the styles, which it was, but for the case of its extension."""
    image(library_dir / "Cells.png")
    image(library_dir / "cells.png")
    (library_dir / "Cells.JSON").write_text('{"size": 96}')
    [problem] = StyleLibrary(library_dir).problems
    assert problem.reason == (
        "could hold the defaults of style 'Cells' or 'cells'; rename it exactly Cells.json or "
        "cells.json"
    )


def test_style_names_in_decomposed_unicode_are_names(library_dir: Path) -> None:
    """An attacker's trial: a library image named on a Mac (Mu\u0308ller.jpg) was skipped as
    "cannot be a style's name", and a sidecar naming cafe\u0301 (as copied from Finder) was told
    it is not a style name: a combining accent is no word character."""
    image(library_dir / "Mu\u0308ller.jpg")
    image(library_dir / "caf\u00e9.png")
    image(library_dir / "\u0939\u093f\u0902\u0926\u0940.png")  # Hindi: marks in any form
    library = StyleLibrary(library_dir)
    assert library.problems == []
    assert library.get("M\u00fcller").path == library_dir / "Mu\u0308ller.jpg"
    assert library.get("cafe\u0301").path == library_dir / "caf\u00e9.png"
    assert StyleRef(name="cafe\u0301").name == "cafe\u0301"
    # a mark first, a line end, a space; a mark on a dot, which hid ".." from the rule
    for bad in ("\u0301cafe", "caf\u00e9\n", "caf\u00e9 ", "a.\u0301."):
        with pytest.raises(ValueError, match="is not a style name"):
            StyleRef(name=bad)


def test_a_defaults_file_exactly_anothers_style_is_that_styles(library_dir: Path) -> None:
    """`The Scream.json` of `The Scream.png` is that style's own, not the other's astray."""
    image(library_dir / "The Scream.png")
    (library_dir / "The Scream.json").write_text('{"size": 32}')
    library = StyleLibrary(library_dir)
    assert library.problems == []
    assert library.get("The Scream").defaults == {"size": 32}
    assert library.get("the scream").defaults == {"style_weight": 5000.0, "size": 256}


def test_a_defaults_key_given_twice_in_two_cases_is_told_to_keep_one(library_dir: Path) -> None:
    """A new user's trial: "strength" beside "Strength" was told to write it "strength"."""
    (library_dir / "the scream.json").write_text('{"strength": 0.5, "Strength": 0.6, "Size": 9}')
    [problem] = StyleLibrary(library_dir).problems
    assert problem.reason.startswith(
        'Strength: unknown key; "strength" is given too; remove this one; '
        'Size: unknown key; write it "size" (keys are lower case)'
    ), problem.reason


def test_ambiguous_names_reported(library_dir: Path) -> None:
    image(library_dir / "starry_night.png")
    library = StyleLibrary(library_dir)
    assert "starry_night" not in library.names()
    assert "starry_night.jpg and starry_night.png both define style" in library.problems[0].reason


def test_symlink_out_of_library_not_followed(library_dir: Path, tmp_path: Path) -> None:
    secret = image(tmp_path / "secret.jpg")
    (library_dir / "leak.jpg").symlink_to(secret)
    (library_dir / "inside.jpg").symlink_to(library_dir / "starry_night.jpg")
    (library_dir / "starry_night.json").symlink_to(tmp_path / "elsewhere.json")
    (tmp_path / "elsewhere.json").write_text("{}")
    library = StyleLibrary(library_dir)
    assert "leak" not in library.names()
    assert library.get("inside").path == library_dir / "starry_night.jpg"
    reasons = {problem.path.name: problem.reason for problem in library.problems}
    assert "symlink pointing outside is not followed" in reasons["leak.jpg"]
    assert "not a regular file inside the style library" in reasons["starry_night.json"]


def test_a_file_whose_name_cannot_be_a_style_is_told_to_be_renamed(library_dir: Path) -> None:
    """A re-test: the library's keeper was told to "use a name from the style library", the
    advice for a sidecar."""
    image(library_dir / "bad\x1bname.png")
    [problem] = StyleLibrary(library_dir).problems
    assert problem.reason.startswith("'bad\\x1bname' cannot be a style's name; rename the file")


def test_missing_library_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    library = StyleLibrary(tmp_path / "absent")
    assert library.names() == []
    assert "cannot read the style library" in library.problems[0].reason


def test_resolve_forms(library_dir: Path, tmp_path: Path) -> None:
    library = StyleLibrary(library_dir)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    [single] = library.resolve("starry_night", beside=inbox, default=None)
    assert (single.name, single.weight) == ("starry_night", 1.0)
    blend = library.resolve(
        [StyleRef(name="the scream", weight=3), StyleRef(name="starry_night")],
        beside=inbox,
        default=None,
    )
    assert [(style.name, style.weight) for style in blend] == [
        ("the scream", 3),
        ("starry_night", 1),
    ]
    [default] = library.resolve(None, beside=inbox, default="the scream")
    assert default.defaults["size"] == 256
    image(inbox / "mine.jpg")
    [brought] = library.resolve(StyleFile(file="mine.jpg"), beside=inbox, default=None)
    assert brought.path == inbox / "mine.jpg"
    assert brought.defaults == {}


def test_resolve_errors(library_dir: Path, tmp_path: Path) -> None:
    library = StyleLibrary(library_dir)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with pytest.raises(StyleError, match="names no style and no default_style is configured"):
        library.resolve(None, beside=inbox, default=None)
    with pytest.raises(StyleError, match="not a file in the same folder as the sidecar"):
        library.resolve(StyleFile(file="absent.jpg"), beside=inbox, default=None)
    with pytest.raises(StyleError, match=r"'notes\.txt' is not an image name"):
        library.resolve(StyleFile(file="notes.txt"), beside=inbox, default=None)
    (inbox / "escape.jpg").symlink_to(library_dir / "starry_night.jpg")
    with pytest.raises(StyleError, match=r"'escape\.jpg' is a symbolic link"):
        library.resolve(StyleFile(file="escape.jpg"), beside=inbox, default=None)


def test_a_blend_takes_the_defaults_of_its_heaviest_style(
    library_dir: Path, tmp_path: Path
) -> None:
    """Found by a photographer's trial: a style weighted 10 % in a blend set the whole job's
    style_weight from its own JSON (the first style listed that had the key won)."""
    (library_dir / "starry_night.json").write_text('{"size": 512, "tv_weight": 1}')
    library = StyleLibrary(library_dir)

    def defaults(*refs: StyleRef) -> dict[str, object]:
        return blend_defaults(library.resolve(list(refs), beside=tmp_path, default=None))

    scream, starry = "the scream", "starry_night"  # the scream.json: size 256, style_weight 5000
    assert defaults(StyleRef(name=starry, weight=0.9), StyleRef(name=scream, weight=0.1)) == {
        "size": 512,
        "tv_weight": 1,
    }
    assert defaults(StyleRef(name=starry, weight=0.1), StyleRef(name=scream, weight=0.9)) == {
        "size": 256,
        "style_weight": 5000.0,
    }
    assert defaults(StyleRef(name=scream), StyleRef(name=starry)) == {
        "size": 256,
        "style_weight": 5000.0,
    }  # equal weights: the first listed


def test_every_style_image_is_decoded_and_broken_ones_are_named(library_dir: Path) -> None:
    """As a worker would read them: empty, truncated, undecodable and absurdly shaped images
    are refused at load, each by its file name, and the rest stay usable."""
    whole = (library_dir / "starry_night.jpg").read_bytes()
    (library_dir / "empty.jpg").write_bytes(b"")
    (library_dir / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    (library_dir / "text.png").write_text("not an image at all")
    Image.new("RGB", (8, 40), (1, 2, 3)).save(library_dir / "tiny.png")
    Image.new("RGB", (400, 20), (1, 2, 3)).save(library_dir / "strip.png")
    library = StyleLibrary(library_dir)
    assert library.names() == ["starry_night", "the scream"]
    reasons = {problem.path.name: problem.reason for problem in library.problems}
    assert reasons.keys() == {"empty.jpg", "cut.jpg", "text.png", "tiny.png", "strip.png"}
    assert reasons["empty.jpg"].startswith("empty.jpg is empty (0 bytes)")
    assert reasons["cut.jpg"].startswith("cut.jpg is truncated or corrupt")
    assert reasons["text.png"].startswith("text.png is not an image format stylefold can read")
    assert reasons["tiny.png"].startswith("tiny.png is only 8x40 pixels")
    assert reasons["strip.png"].startswith("strip.png is 400x20, a strip over 10 times longer")
    with pytest.raises(StyleError, match=r"style 'cut' cannot be used until the style library's "
                       r"cut\.jpg is fixed or replaced: cut\.jpg is truncated"):  # fmt: skip
        library.get("cut")


def test_a_style_replaced_by_a_broken_file_is_refused_at_once(library_dir: Path) -> None:
    library = StyleLibrary(library_dir)
    (library_dir / "starry_night.jpg").write_bytes(b"")
    with pytest.raises(StyleError, match=r"starry_night\.jpg is empty \(0 bytes\)"):
        library.get("starry_night")
    assert library.names() == ["the scream"]


def test_the_pixel_limit_of_the_daemon_applies_to_styles(library_dir: Path) -> None:
    library = StyleLibrary(library_dir, max_pixels=100)
    assert library.names() == []
    assert "raise the daemon's max_pixels setting" in library.problems[0].reason


def test_an_unknown_name_suggests_a_close_one(library_dir: Path) -> None:
    library = StyleLibrary(library_dir)
    with pytest.raises(StyleError, match=r"did you mean 'starry_night'\? available"):
        library.get("stary_night")


def test_a_style_named_in_another_case_is_the_library_s_one_of_that_name(
    library_dir: Path,
) -> None:
    """A phone user's trial: a notes app wrote "Mosaic", which was told to add Mosaic.jpg (on
    a share that ignores case, a clash with mosaic.png); names pair as photos and sidecars do,
    unless two styles differ in case alone."""
    library = StyleLibrary(library_dir)
    assert library.get("STARRY_NIGHT").name == "starry_night"
    assert library.get("The Scream").path == library_dir / "the scream.png"
    image(library_dir / "Starry_Night.png")  # two alike: the exact one, or none
    assert library.get("Starry_Night").path == library_dir / "Starry_Night.png"
    with pytest.raises(StyleError) as caught:
        library.get("STARRY_NIGHT")
    assert str(caught.value) == (
        "style 'STARRY_NIGHT' is not in the style library as written, and 2 of its styles "
        "differ from it in letter case alone (Starry_Night, starry_night); write the name "
        "exactly as one of them"
    )
    with pytest.raises(StyleError) as caught:  # a re-test: told to add STARRY_NIGHT.JPG
        library.get("STARRY_NIGHT.JPG")
    assert str(caught.value) == (
        "style 'STARRY_NIGHT.JPG' is a file name; a library style is named without its "
        "extension, and 2 of its styles differ from 'STARRY_NIGHT' in letter case alone "
        "(Starry_Night, starry_night): write one of them exactly"
    )


def test_a_style_named_by_its_file_name_is_told_to_drop_the_extension(library_dir: Path) -> None:
    """A style given as "cells.png" was told to add the image as cells.png.jpg (a new user's
    trial): the style is there, only named with its extension."""
    library = StyleLibrary(library_dir)
    with pytest.raises(StyleError) as caught:
        library.get("starry_night.png")
    assert 'named without its extension: "style": "starry_night"' in str(caught.value)
    assert "starry_night.png.jpg" not in str(caught.value)
    # In another case, as names match (a photographer's trial: "Hubble.JPG" was told to add
    # Hubble.JPG to the library beside hubble.jpg, and the library then had two alike).
    with pytest.raises(StyleError) as caught:
        library.get("Starry_Night.JPG")
    assert str(caught.value).startswith(
        "style 'Starry_Night.JPG' is a file name; a library style is named without its "
        'extension: "style": "starry_night"'
    )
    # In a blend's item: its key, and no image to bring, which a blend cannot (a re-test).
    blend = [StyleRef(name="starry_night.png"), StyleRef(name="starry_night")]
    with pytest.raises(StyleError) as caught:
        library.resolve(blend, beside=library_dir, default=None)
    assert str(caught.value).endswith('without its extension: "name": "starry_night"')
    # A file name of a style the library lacks: told to add that file, not café.jpg.jpg.
    with pytest.raises(StyleError) as caught:
        library.get("café.jpg")
    told = str(caught.value)
    assert 'add café.jpg to the library and write "style": "café"' in told
    assert '"style": {"file": "café.jpg"}' in told
    assert "café.jpg.jpg" not in told


def test_a_sidecar_folder_swapped_for_a_link_tells_nothing_of_where_it_leads(
    library_dir: Path, tmp_path: Path
) -> None:
    """An attacker's trial: the folder of a sidecar naming `style.file` was swapped for a link
    to another place for the moment of this look (renameat2 exchange), and the report told
    whether a file of that name existed there, whether a folder, and its hard links. Looked at
    under the inbox, the swapped folder is seen as no file, whatever lies behind it."""
    library = StyleLibrary(library_dir)
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    inbox.mkdir()
    outside.mkdir()
    image(outside / "secret.jpg")
    (outside / "secret-too.jpg").hardlink_to(outside / "secret.jpg")
    (outside / "dir.jpg").mkdir()
    image(outside / "plain.jpg")
    (inbox / "g").symlink_to(outside)  # the swapped folder, as the daemon would find it
    told = set()
    for name in ("secret.jpg", "dir.jpg", "nothere.jpg", "plain.jpg"):
        with pytest.raises(StyleError) as caught:
            library.resolve(StyleFile(file=name), beside=inbox / "g", default=None, root=inbox)
        told.add(str(caught.value).replace(name, "NAME"))
    assert told == {
        "style.file: 'NAME' is not a file in the same folder as the sidecar; put the style "
        "image itself beside the sidecar under that name"
    }


def test_a_sidecar_naming_a_style_its_defaults_file_broke_is_told_why(library_dir: Path) -> None:
    """A review: the reason was looked up by the defaults file's own name, so a style whose
    `The Scream.JSON` was refused was told to a sender as not in the library at all ("add the
    image"), and a note filed under another style's name was told as that style's."""
    (library_dir / "the scream.json").rename(library_dir / "The Scream.JSON")
    (library_dir / "The Scream.JSON").write_text('{"sise": 3}')
    library = StyleLibrary(library_dir)
    told = r"style 'the scream' cannot be used until the style library's The Scream.JSON is fixed"
    with pytest.raises(StyleError, match=told + r" or replaced: sise: unknown key"):
        library.get("the scream")
    with pytest.raises(StyleError, match=r"style 'The Scream' is not in the style library"):
        library.get("The Scream")
