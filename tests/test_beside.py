"""What lies beside a file, looked up in a folder listed once a poll (real folders)."""

import stat
from pathlib import Path, PurePath

from daemon.intake.beside import Beside, Folder


def test_names_are_found_by_key_and_by_stem_whatever_the_case_and_normalisation() -> None:
    folder = Folder(["Pic.NEF", "pic.json", "Stra\u00dfe.JPG", "Cafe\u0301.png", "README"])
    assert folder.named(["pic.json", "readme"]) == ["README", "pic.json"]
    assert folder.stemmed("pic") == ["Pic.NEF", "pic.json"]
    assert folder.stemmed("stra\u00dfe") == ["Stra\u00dfe.JPG"]
    assert folder.stemmed("strasse") == []  # folded letter by letter, as FAT does
    assert folder.stemmed("caf\u00e9") == ["Cafe\u0301.png"]  # macOS's decomposed accent
    assert folder.stemmed("readme") == []  # no extension, no stem
    assert folder.of_base("pic") == ["Pic.NEF", "pic.json"]
    assert folder.of_base("pic.json") == ["pic.json"]  # a name itself: pic.json.json's


def test_a_folder_is_listed_once_a_poll(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.nef").write_bytes(b"raw")
    beside = Beside(tmp_path)
    assert beside.folder(PurePath("a")).stemmed("x") == ["x.nef"]
    (tmp_path / "a" / "x.bmp").write_bytes(b"bmp")
    assert beside.folder(PurePath("a")).stemmed("x") == ["x.nef"]  # this poll's listing
    (tmp_path / "a" / "x.tif").mkdir()
    assert beside.kinds(PurePath("a"), ["x.nef", "x.tif", "gone"]) == {
        "x.nef": stat.S_IFREG,
        "x.tif": stat.S_IFDIR,
    }
    beside.forget()  # the next poll
    assert beside.folder(PurePath("a")).stemmed("x") == ["x.bmp", "x.nef", "x.tif"]
