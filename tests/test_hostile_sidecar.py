"""A job's cost is bounded by validation: sidecars that would make one job cost many times a
normal one, publish a "success" that is not, or pass strings and booleans as numbers are
refused, each with a sentence that names the key and what to write, the same in the daemon's
report and in `stylefold validate`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, REPO, Folders, image_bytes

from daemon.config.render_limits import ceilings
from daemon.intake.jsonload import MAX_TOLD, SidecarError
from daemon.intake.sidecar import merge_params, parse_sidecar
from service.params import VGG16_LAYERS, VGG19_LAYERS, RenderParams
from service.weights import WeightsConfig

# A daemon that may download VGG-16: only the sidecar contract and the limits are judged here.
ANY_NETWORK = WeightsConfig(download=True)

# (sidecar params, words the one problem must contain: the key, and what to write)
REFUSED: list[tuple[dict[str, Any], tuple[str, ...]]] = [
    ({"iterations": True}, ("params.iterations", "true and false are not numbers")),
    ({"size": "256"}, ("params.size", "without quotes: 256")),
    ({"iterations": "many"}, ("params.iterations", "a whole number such as 300, without quotes")),
    ({"content_weight": "lots"}, ("params.content_weight", "a number such as 1, without")),
    ({"size": 256.5}, ("params.size", "whole number")),  # 256.0 is 256, as JSON Schema says
    ({"seed": False}, ("params.seed", "not numbers")),
    ({"content_weight": "1"}, ("params.content_weight", "without quotes: 1")),
    ({"style_weight": True}, ("params.style_weight", "not numbers")),
    ({"tolerance": "0.1"}, ("params.tolerance", "without quotes: 0.1")),
    # told only to write a number (a photographer's trial)
    ({"strength": "50%"}, ("params.strength", "a percentage is written as a fraction", ": 0.5")),
    ({"strength": "0,5"}, ("params.strength", "a decimal point, not a comma, without", ": 0.5")),
    ({"size": "1,024"}, ("params.size", "write it without the commas, without quotes: 1024")),
    ({"size": "0,5"}, ("params.size", "write a whole number such as 512, without quotes")),
    # a re-test: a thousands comma told as a decimal one, "1.024" told to drop the quotes
    ({"style_weight": "1,000"}, ("not a comma, without quotes: 1.000, or 1000 for thousands",)),
    ({"size": "1.024"}, ("params.size", "write it without the dots, without quotes: 1024")),
    ({"size": "1.5"}, ("params.size", "write a whole number such as 512, without quotes")),
    ({"strength": "-50%"}, ("params.strength", "write a number such as 0.9, without quotes")),
    ({"style_weight": "1.000"}, ("write 1.000 without quotes, or 1000 for thousands",)),
    ({"size": "²"}, ("params.size", "write a whole number such as 512, without quotes")),
    ({"style_layers": ["conv1_1"] * 2000}, ("style_layers", "listed twice", "list it once")),
    ({"content_layers": ["conv4_2", "conv4_2"]}, ("content_layers", "listed twice")),
    ({"style_layers": ["conv5_4"], "network": "vgg16"}, ("does not exist in vgg16", "conv5_3")),
    ({"style_layers": ["fc7"]}, ("'fc7' does not exist in vgg19", "use one of")),
    # told "Input should be a valid tuple" (a photographer's trial)
    (
        {"style_layers": "conv1_1, conv2_1"},
        ("params.style_layers: must be a list in square brackets", 'write ["conv1_1", "conv2_1"]'),
    ),
    ({"style_layer_weights": 2}, ("params.style_layer_weights: must be a list", "write [2]")),
    (
        {"style_layers": ["conv1_1", "conv2_1"], "style_layer_weights": [-1.0, 2.0]},
        ("params.style_layer_weights[0]", "must be at least 0"),
    ),
    (
        {"style_layers": ["conv1_1", "conv2_1"], "style_layer_weights": [0, 0]},
        ("style_layer_weights are all 0", "at least one layer a weight above 0"),
    ),
    (
        {"style_layers": ["conv1_1"], "style_layer_weights": ["1"]},
        ("params.style_layer_weights[0]", "without quotes: 1"),
    ),
    ({"content_weight": 0, "style_weight": 0}, ("both 0", "give at least one a weight")),
    # a weight past float32's range diverged, told to lower weights the sender had not set
    ({"content_weight": 1e308}, ("params.content_weight", "must be at most 1000000000000")),
    ({"tv_weight": 1e13}, ("params.tv_weight", "must be at most 1000000000000")),
    ({"style_weight": 1e300}, ("params.style_weight", "must be at most 1000000000000")),
    (
        {"style_layers": ["conv1_1", "conv2_1"], "style_layer_weights": [1e308, 1]},
        ("style_layer_weights up to 1e+308 times the style weight 398.107", "give smaller"),
    ),
    (
        {"style_weight": 1e9, "style_layers": ["conv1_1"], "style_layer_weights": [1e4]},
        ("style_layer_weights up to 10000 times the style weight 1e+09 is more than 1e+12",),
    ),
    ({"learning_rate": 1e6}, ("params.learning_rate", "must be at most 100")),
    ({"learning_rate": 1e-9}, ("params.learning_rate", "must be at least 0.000001")),
    ({"learning_rate": "0.1"}, ("params.learning_rate", "without quotes")),
    # the style image is sized from the output: 64 times its pixels at style_scale 8
    ({"size": 1024, "style_scale": 8}, ("params.style_scale", "8192 px", "style_scale 4 or less")),
    ({"size": 3000, "style_scale": 1.5}, ("4500 px", "max_output_size (4096)", "1.36 or less")),
    # above the engine's own bound: told the daemon's lower limit at once, not the engine's
    # 16384 first and 4096 on the next try (a photographer's trial)
    ({"size": 100000}, ("params.size: 100000", "max_output_size (4096)", "size 4096 or less")),
    ({"iterations": 10**6}, ("max_iterations (3000)", "ask for iterations 3000 or less")),
]


def _problems(params: dict[str, Any]) -> list[str]:
    """Every problem the daemon finds, from parsing to merging over the defaults."""
    try:
        text = json.dumps({"style": "mosaic", "params": params})
        sidecar = parse_sidecar(text, ceilings(max_size=4096, max_iterations=3000))
        merge_params(
            RenderParams(),
            sidecar.overrides(),
            max_size=4096,
            max_iterations=3000,
            weights=ANY_NETWORK,
        )
    except SidecarError as exc:
        return exc.problems
    return []


@pytest.mark.parametrize(("params", "words"), REFUSED, ids=[str(p)[:40] for p, _ in REFUSED])
def test_costly_or_mistyped_params_are_refused_naming_the_key_and_the_fix(
    params: dict[str, Any], words: tuple[str, ...]
) -> None:
    [problem] = _problems(params)
    for word in words:
        assert word in problem, problem


def test_every_limit_broken_is_told_at_once() -> None:
    """A new user's trial: size 100000 (above the engine's bound) was told, and iterations
    99999 (within it, above the daemon's max_iterations) only at the next try."""
    problems = _problems({"size": 100000, "iterations": 99999, "tv_weight": "x"})
    assert [problem.split(":")[0] for problem in problems] == [
        "params.size",
        "params.tv_weight",
        "params.iterations",
    ]
    assert "99999 is above this daemon's max_iterations (3000)" in problems[2]


def test_other_fields_refuse_coercion_too() -> None:
    for sidecar, words in (
        ({"style": "mosaic", "output": {"quality": "90"}}, ("output.quality", "quotes: 90")),
        ({"style": [{"name": "mosaic", "weight": True}]}, ("style[0].weight", "not numbers")),
        ({"style": "mosaic", "params": {"preserve_colors": 1}}, ("params.preserve_colors",)),
        # A photographer's trial: pydantic's "instance of StyleRef", no example, no value.
        (
            {"style": ["starry", "cells"]},
            ("style[0]", 'an object such as {"name": "starry", "weight": 0.5}', "got 'starry'"),
        ),
        ({"style": "mosaic", "params": [1]}, ('params: must be an object such as {"',)),
        ({"style": "mosaic", "output": 3}, ('output: must be an object such as {"format"',)),
        ({"style": "mosaic", "params": {"strength": None}}, ("a number such as 0.9",)),
        ({"style": [{"name": "mosaic", "weight": 0}]}, ("must be above 0 (got 0)",)),
        ({"style": "mosaic", "params": {"style_scale": 0}}, ("must be above 0 (got 0)",)),
    ):
        with pytest.raises(SidecarError) as caught:
            parse_sidecar(json.dumps(sidecar))
        problem = caught.value.problems[0]
        assert all(word in problem for word in words), problem
        assert "instance of" not in problem


def test_what_stays_accepted() -> None:
    """Numbers as numbers, integers for floats, true for preserve_colors, every layer once."""
    params = {
        "size": 256,
        "content_weight": 1,
        "learning_rate": 0.5,
        "preserve_colors": True,
        "style_layers": list(VGG19_LAYERS),
        "style_layer_weights": [0] * 15 + [1],
    }
    assert _problems(params) == []
    assert _problems({"network": "vgg16", "style_layers": list(VGG16_LAYERS)}) == []
    assert _problems({"size": 512, "style_scale": 8}) == []  # a style image of 4096 px
    assert _problems({"size": 4096, "style_scale": 0.5}) == []
    assert _problems({"content_weight": 0}) == []
    assert _problems({"style_weight": 0}) == []


def test_validate_shows_the_same_sentences(tmp_path: Path) -> None:
    path = tmp_path / "photo.json"
    path.write_text(json.dumps({"style": "mosaic", "params": {"iterations": True, "size": "9"}}))
    done = subprocess.run(
        [*CLI, "validate", str(path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "params.iterations: must be a whole number (got true)" in done.stderr
    assert "params.size" in done.stderr and "without quotes: 9" in done.stderr


def test_a_sidecar_of_thousands_of_mistakes_gets_a_report_of_ten(folders: Folders) -> None:
    """An attacker's trial: 6,500 unknown keys in a 64 KiB sidecar made a 1.8 MB error report,
    as large a log, database row and status entry (status.json reached 42 MB with 26 of them,
    rewritten every 2 s). The report tells the first MAX_TOLD; validate lists every one."""
    keys = {f"{index:x}": 0 for index in range(6500)}
    sidecar = json.dumps({"style": "mosaic", "params": keys}, separators=(",", ":"))
    assert len(sidecar) < 65536
    (folders.inbox / "photo.jpg").write_bytes(image_bytes(seed=3))
    (folders.inbox / "photo.json").write_text(sidecar)
    done = subprocess.run(
        [*CLI, "once", "--config", str(folders.config())],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]

    report = json.loads((folders.outbox / "photo.error.json").read_text())
    assert report["error"].count("unknown key") == MAX_TOLD
    assert "and 6490 more (`stylefold validate` on the sidecar lists them all)" in report["error"]
    for answer in ("photo.error.json", "photo.log"):
        assert (folders.outbox / answer).stat().st_size < 10_000, answer
    state = sum(path.stat().st_size for path in folders.state.rglob("*") if path.is_file())
    assert state < 300_000  # the database and its journal (57 KB here; 2.7 MB more before)
    listed = subprocess.run(
        [*CLI, "validate", str(folders.inbox / "photo.json")],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert listed.returncode == 1 and listed.stderr.count("unknown key") == 6500
