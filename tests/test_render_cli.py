"""`stylefold render` as a user runs it: a real process, real files, exit codes, one-line errors."""

import io
import json
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

CLI = [sys.executable, "-m", "daemon.cli", "render"]
FAST = ["--size", "32", "--iterations", "3", "--device", "cpu"]


def _run(*args: str | Path, cwd: Path, umask: int = -1) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120, umask=umask
    )


@pytest.fixture
def photos(tmp_path: Path) -> tuple[Path, Path]:
    content = Image.fromarray(data.chelsea()).resize((48, 32))
    style = Image.fromarray(data.immunohistochemistry()).resize((40, 40))
    content.save(tmp_path / "cat.jpg")
    style.save(tmp_path / "stain.png")
    return tmp_path / "cat.jpg", tmp_path / "stain.png"


def test_render_writes_the_output(tmp_path: Path, photos: tuple[Path, Path]) -> None:
    content, style = photos
    out = tmp_path / "cat.stylised.webp"
    done = _run(content, style, "-o", out, *FAST, "--style-weight", "500", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    image = Image.open(out)
    assert image.format == "WEBP" and image.size == (32, 21)
    assert "32x21, 3 iterations (at the iteration cap)" in done.stderr
    assert "note:" not in done.stderr
    assert not list(tmp_path.glob(".stylefold-*"))  # no temporary left behind
    # at this size a style_scale below 1 is overridden by the style image's floor: said so
    finer = ("--style-scale", "0.5")
    done = _run(content, style, "-o", out, *FAST, *finer, "--style-weight", "500", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "\nnote: style_scale 0.5 asks for a " in done.stderr, done.stderr
    # --quiet hides the progress and the summary, not what the picture did not do as asked.
    both = ("--strength", "0.5", "--seed", "5", "--quiet")
    done = _run(
        content, style, "-o", out, *FAST, *finer, "--style-weight", "500", *both, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("note: style_weight 500 is given, so strength 0.5 is not used")
    assert "\nnote: style_scale 0.5 asks for a " in done.stderr, done.stderr
    assert "iterations (" not in done.stderr, "no summary line"
    assert "\nnote: seed 5 changes nothing with init recolored" in done.stderr, done.stderr
    # a photo upscaled more than twice is said, as the daemon's job log says it
    larger = ("--size", "112", "--iterations", "1", "--device", "cpu", "--quiet")
    done = _run(content, style, "-o", out, *larger, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "note: the photo is only 48x32 px, upscaled to 112x75, so the result is soft" in (
        done.stderr
    )
    # and so is a style image enlarged more than twice (a photographer's trial: 14 times)
    Image.open(style).resize((24, 16)).save(tmp_path / "tiny_style.png")
    finest = ("--size", "64", "--style-scale", "3", "--iterations", "1", "--device", "cpu")
    done = _run(content, "tiny_style.png", "-o", out, *finest, "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "note: the style image is only 24x16 px, enlarged to " in done.stderr, done.stderr
    # in a blend each such note names its style (a steering trial: two alike, neither named)
    Image.open(style).resize((16, 24)).save(tmp_path / "tall_style.png")
    blend = ("tiny_style.png", "tall_style.png", "--style-blend", "1", "1")
    done = _run(content, *blend, "-o", out, *finest, "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for name, size in (("tiny_style.png", "24x16"), ("tall_style.png", "16x24")):
        told = f"note: style {name}: the style image is only {size} px, enlarged to "
        assert told in done.stderr, done.stderr


def test_a_transparent_photo_s_result_is_transparent_where_the_format_can_be(
    tmp_path: Path, photos: tuple[Path, Path]
) -> None:
    _, style = photos
    cutout = Image.new("RGBA", (48, 32), (0, 0, 0, 0))
    cutout.paste(Image.fromarray(data.chelsea()).resize((24, 32)), (0, 0))
    cutout.save(tmp_path / "cutout.png")
    out = tmp_path / "cutout.stylised.png"
    done = _run("cutout.png", style, "-o", out, *FAST, "--quiet", cwd=tmp_path)
    assert done.returncode == 0 and "note:" not in done.stderr, done.stderr
    alpha = Image.open(out).getchannel("A")
    assert alpha.size == (32, 21) and alpha.getpixel((4, 10)) == 255, alpha.getextrema()
    assert alpha.getpixel((28, 10)) == 0
    done = _run("cutout.png", style, "-o", "cutout.jpg", *FAST, "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "note: the photo is partly transparent and a jpg result cannot be" in done.stderr


def test_output_mode_follows_the_umask(tmp_path: Path, photos: tuple[Path, Path]) -> None:
    """OUT is an ordinary file (0666 & ~umask), not a private 0600 temporary renamed into place;
    0o027 tells that apart from both 0600 and a hard-coded 0644."""
    content, style = photos
    out = tmp_path / "cat.stylised.png"
    done = _run(
        content, style, "-o", out, *FAST, "--quality", "50", "--quiet", cwd=tmp_path, umask=0o027
    )
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    # A photographer's trial: the job log said so, render did not.
    assert "note: --quality 50 is not used: a png is lossless" in done.stderr


def test_flags_reach_the_engine_and_seeds_repeat(tmp_path: Path, photos: tuple[Path, Path]) -> None:
    content, style = photos
    flags = [
        *FAST,
        "--init", "noise", "--seed", "5", "--optimizer", "adam", "--pooling", "avg",
        "--style-blend", "2", "1", "--preserve-colors", "luminance", "--style-scale", "1.5",
        "--tv-weight", "0.1", "--content-weight", "2", "--network", "vgg19", "--quiet",
    ]  # fmt: skip
    outs = [tmp_path / "a.png", tmp_path / "b.png"]
    for out in outs:
        done = _run(content, style, style, "-o", out, *flags, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""  # --quiet
    first, second = (np.asarray(Image.open(p)) for p in outs)
    assert np.array_equal(first, second)
    # Luminance-only transfer: the output keeps the content's colours, so it is not grey.
    assert np.ptp(first.astype(int), axis=2).mean() > 3


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("--pooling", "mean", "must be one of 'max', 'avg' (got 'mean'); did you mean 'avg'?"),
        ("--multiscale", "yes", "must be one of 'auto', 'on', 'off' (got 'yes'); write \"on\""),
        ("--optimizer", "LBFGS", "(got 'LBFGS'); write it \"lbfgs\" (values are lower case)"),
        ("--size", "big", "must be a whole number (got 'big')"),
        ("--seed", "1.5", "must be a whole number (got '1.5')"),
        ("--strength", "much", "must be a number (got 'much')"),
        ("--strength", "50%", "(got '50%'); a percentage is written as a fraction: 0.5"),
        ("--style-layer-weights", "x", "must be a number (got 'x')"),
    ],
)
def test_a_flag_s_value_it_does_not_take_is_told_as_a_sidecar_s_is(
    tmp_path: Path, photos: tuple[Path, Path], flag: str, value: str, said: str
) -> None:
    """Re-tests: argparse's "invalid choice: 'mean' (choose from 'max', 'avg')" and "invalid int
    value: 'big'", where a sidecar's "mean" is asked "did you mean 'avg'?" and its "big" told
    "must be a whole number". A usage error still (exit 2)."""
    content, style = photos
    done = _run(content, style, flag, value, "-o", tmp_path / "out.jpg", cwd=tmp_path)
    assert done.returncode == 2
    assert f"stylefold render: error: argument {flag}: " in done.stderr
    assert said in done.stderr


def test_the_summary_s_style_weight_gives_the_same_picture(
    tmp_path: Path, photos: tuple[Path, Path]
) -> None:
    """A photographer's trial: strength 0.9 printed "style weight 398.107", and --style-weight
    398.107 gave another picture. The weight is printed whole; a coarse-to-fine render tells
    each scale's iterations (its "45 iterations (at the iteration cap)" for a cap of 50 read as
    wrong)."""
    content, style = photos
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    done = _run(content, style, "-o", first, *FAST, "--strength", "0.9", cwd=tmp_path)
    weight = re.search(r"style weight ([0-9.e+]+),", done.stderr)
    assert weight is not None and weight[1] != "398.107", done.stderr
    again = _run(content, style, "-o", second, *FAST, "--style-weight", weight[1], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(second)))
    big = ["--size", "160", "--iterations", "4", "--multiscale", "on", "--device", "cpu"]
    done = _run(content, style, "-o", first, *big, cwd=tmp_path)
    assert ", 4 iterations, 2 + 2 over 2 scales (at the iteration cap)" in done.stderr


def test_every_command_s_number_flags_speak_alike(tmp_path: Path) -> None:
    """The same words for a number flag of any command, not only render's."""
    for command in (["status", "--failures", "ten"], ["web", "--port", "http"]):
        done = subprocess.run(
            [*CLI[:-1], *command], capture_output=True, text=True, cwd=tmp_path, timeout=60
        )
        assert done.returncode == 2
        assert f"argument {command[1]}: must be a whole number (got {command[2]!r})" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/missing.jpg", "{style}"], "missing.jpg does not exist"),
        (["{text}", "{style}"], "not an image format"),
        (["{content}", "{style}", "--max-pixels", "100"], "over the limit of 100"),
        (["{content}", "{style}", "--size", "5"], "--size: must be at least 16 (got 5)"),
        (
            ["{content}", "{style}", "--style-blend", "1", "2"],
            "--style-blend has 2 weights for 1 style;",
        ),
        (["{content}", "{style}", "--network", "vgg16"], "VGG-16 weights do not ship offline"),
        (["{content}", "{style}", "--weights", "{tmp}/nope.pth"], "nope.pth does not exist"),
        (["{content}", "{style}", "--device", "cuda:7"], "CUDA is not available"),
        (
            ["{content}", "{style}", "--init", "{tmp}/nope.png"],
            "nope.png does not exist; give an existing image, or one of recolored, content, noise",
        ),
        (
            ["{content}", "{style}", "--init", "sketch"],
            "--init sketch: neither recolored, content, noise nor an image file",
        ),
        (["{content}", "{style}", "--init", "{tmp}"], ": neither recolored, content, noise nor"),
        # A photographer's trial: a zero weight was accepted, a negative one said "ValueError:".
        (
            ["{content}", "{style}", "{style}", "--style-blend", "1", "0"],
            "--style-blend 1 0: every weight must be a number above 0",
        ),
        (["{content}", "{style}", "{style}", "--style-blend", "1", "-1"], "a number above 0"),
        # Not a number, or too large to add up: an engine error (linalg.eigh) or a wrong one.
        (["{content}", "{style}", "{style}", "--style-blend", "nan", "1"], "a number above 0"),
        (["{content}", "{style}", "{style}", "--style-blend", "inf", "1"], "a number above 0"),
        (["{content}", "{style}", "{style}", "--style-blend", "1e308", "1e308"], "smaller"),
        # "less than or equal to 1 (got nan)" (a photographer's trial): the bound is not why
        (["{content}", "{style}", "--strength", "nan"], "--strength: must be a finite number"),
        (["{content}", "{style}", "--strength", "-1"], "for less style than strength 0 gives ("),
        (
            ["{content}", "{style}", "--style-layer-weights", "1", "1", "nan", "1", "1"],
            "--style-layer-weights item 3: must be a finite number (got nan)",
        ),
        (
            ["{content}", "{style}", "--content-weight", "0", "--style-weight", "0"],
            "error: content_weight and style_weight are both 0",
        ),
        (["{content}", "{style}", "--style-scale", "0"], "must be above 0 (got 0"),
    ],
)
def test_errors_are_one_line_and_non_zero(
    tmp_path: Path, photos: tuple[Path, Path], args: list[str], message: str
) -> None:
    content, style = photos
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo\n" * 10)
    values = {"tmp": tmp_path, "content": content, "style": style, "text": text}
    argv = [a.format(**values) for a in args]
    done = _run(*argv, "-o", tmp_path / "out.jpg", "--iterations", "3", "--quiet", cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stylefold render: error: ")
    assert message in lines[0]
    assert "Error" not in lines[0] and "Value error" not in lines[0]
    assert not (tmp_path / "out.jpg").exists()


def test_output_name_needs_a_known_format(tmp_path: Path, photos: tuple[Path, Path]) -> None:
    content, style = photos
    for name, why in (
        ("out.gif", ".gif is not a format stylefold writes"),
        (".gif", ".gif is not a format stylefold writes"),
        ("out", "it has no suffix"),
    ):
        done = _run(content, style, "-o", tmp_path / name, cwd=tmp_path)
        assert done.returncode == 1, done.stderr
        assert f"-o {tmp_path / name}: {why}; end it in .jpg, .png, .webp or .tiff" in done.stderr
    for name in (".png", "..png"):  # the second was written as a hidden file
        done = _run(content, style, "-o", name, cwd=tmp_path)
        assert done.returncode == 1, done.stderr
        assert f"-o {name}: the file has no name before its suffix; as -o result.png" in (
            done.stderr
        )
    (tmp_path / "out").mkdir()  # a re-test: told it had no suffix
    done = _run(content, style, "-o", "out", cwd=tmp_path)
    assert "-o out is a folder; name the result's file, as -o out/result.jpg" in done.stderr
    assert not (tmp_path / ".png").exists() and not (tmp_path / "..png").exists()


def test_an_output_that_is_one_of_the_inputs_is_refused(
    tmp_path: Path, photos: tuple[Path, Path]
) -> None:
    """A new user's trial: `-o cat.png` for the photo cat.png exited 0 and the photo was gone.
    The photo, a style or the --init image under -o (by any name: a hard link too) is refused,
    and nothing is written."""
    content, style = photos
    (tmp_path / "linked.jpg").hardlink_to(content)
    before = {path: path.read_bytes() for path in (content, style)}
    for output, extra, role in (
        (content, [], "the photo (CONTENT)"),
        (tmp_path / "linked.jpg", [], "the photo (CONTENT)"),
        (style, [], "a style"),
        (tmp_path / "start.png", ["--init", tmp_path / "start.png"], "the --init"),
    ):
        if not output.exists():
            shutil.copyfile(style, output)
        done = _run(content, style, "-o", output, *extra, *FAST, cwd=tmp_path)
        assert done.returncode == 1, done.stderr
        assert f"is {role} image itself, which the result would replace" in done.stderr
    assert {path: path.read_bytes() for path in before} == before
    assert (tmp_path / "start.png").read_bytes() == style.read_bytes()


@pytest.fixture
def library(tmp_path: Path, photos: tuple[Path, Path]) -> Path:
    """A style library with one style, `stain`, whose defaults set the size."""
    folder = tmp_path / "library"
    folder.mkdir()
    shutil.copyfile(photos[1], folder / "stain.png")
    (folder / "stain.json").write_text(json.dumps({"size": 40, "iterations": 3}))
    return folder


def test_a_style_by_its_library_name(
    tmp_path: Path, photos: tuple[Path, Path], library: Path
) -> None:
    """The library style's defaults apply under the flags; the display says what it does
    while the network loads instead of showing an empty bar."""
    content, _ = photos
    out = tmp_path / "cat.png"
    done = _run(content, "stain", "-o", out, "--styles", library, "--iterations", "4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert Image.open(out).size == (40, 27)  # the style's size
    assert "40x27, 4 iterations" in done.stderr  # the flag's iterations
    assert "loading the network (vgg19) on cpu…" in done.stderr
    assert "0/1" not in done.stderr and "0/4" in done.stderr


def test_a_name_not_in_the_library(
    tmp_path: Path, photos: tuple[Path, Path], library: Path
) -> None:
    content, _ = photos
    (library / "broken.jpg").write_bytes(b"")
    (library / "broken.json").write_text("{")
    out = tmp_path / "out.png"
    for name, flags, message, code in (
        (
            "starry",
            ["--styles", library],
            f"'starry' is neither a file nor a style of the library {library}; its styles: stain",
            1,
        ),
        (
            "broken",
            ["--styles", library],
            # as the daemon tells it, not "neither a file nor a style" (a re-test)
            "style 'broken' cannot be used until the style library's broken.jpg is fixed or "
            "replaced: broken.jpg is empty (0 bytes)",
            1,
        ),
        ("STAINS", ["--styles", library], "did you mean 'stain'? its styles: stain", 1),
        ("stain", [], "stain does not exist (to name a style of the library instead, give ", 1),
        (".", [], ". is a folder, not an image file (to name a style of the library instead", 1),
        # what cannot be used as a config or library exits as the daemon's commands do
        ("stain", ["--config", tmp_path / "none.toml"], "none.toml does not exist", 78),
        ("stain", ["--styles", tmp_path / "nowhere"], "the style library is unusable", 78),
    ):
        done = _run(content, name, "-o", out, *flags, *FAST, "--quiet", cwd=tmp_path)
        assert done.returncode == code, (name, flags, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("stylefold render: error: "), lines
        assert message in lines[0]
    assert not out.exists()


def test_a_blend_takes_the_heaviest_style_s_defaults_and_says_what_it_used(
    tmp_path: Path, photos: tuple[Path, Path], library: Path
) -> None:
    """As the daemon does: the blend's heaviest style gives its defaults, wherever it is listed
    (a photographer's trial: render took the first listed style's, so `render --config` did
    not preview the daemon's picture); the defaults taken, a strength that a style weight
    overrides and the style weight used are said, as the daemon's job log says them."""
    content, _ = photos
    shutil.copyfile(photos[1], library / "ink.png")
    (library / "ink.json").write_text(json.dumps({"size": 36, "iterations": 2, "strength": 0.3}))
    out = tmp_path / "out.png"
    for blend, expected in ((["1", "2"], "36x24, 2 iterations"), (["2", "1"], "40x27, 3 iter")):
        done = _run(
            content, "stain", "ink", "--style-blend", *blend, "-o", out, "--styles", library,
            "--device", "cpu", cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0 and expected in done.stderr, (blend, done.stderr)
    assert "style stain's defaults from the style library: size 40, iterations 3; ink's " in (
        done.stderr
    )
    done = _run(
        content, "ink", "stain", "--style-blend", "3", "1", "-o", out, "--styles", library,
        "--device", "cpu", "--strength", "0.5", "--style-weight", "1000", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (
        "library: size 36, iterations 2, strength 0.3 (overridden by a flag: 0.5); stain"
        in done.stderr
    )
    assert "style_weight 1000 is given, so strength 0.5 is not used" in done.stderr
    assert "36x24, 2 iterations (at the iteration cap), style weight 1000, " in done.stderr


def test_preserve_colors_true_and_false_as_in_a_sidecar(
    tmp_path: Path, photos: tuple[Path, Path]
) -> None:
    """The flag's help (the sidecar key's text) says true and false may be given; the flag
    refused them (a photographer's trial)."""
    content, style = photos
    pictures = []
    for mode in ("true", "luminance", "false", "none"):
        out = tmp_path / f"{mode}.png"
        done = _run(content, style, "-o", out, *FAST, "--preserve-colors", mode, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        pictures.append(np.asarray(Image.open(out)))
    assert np.array_equal(pictures[0], pictures[1]) and np.array_equal(pictures[2], pictures[3])
    assert not np.array_equal(pictures[0], pictures[2])


def _config(tmp_path: Path, library: Path, *lines: str) -> Path:
    """A daemon's config over `library`, with its folders."""
    for name in ("inbox", "outbox", "state"):
        (tmp_path / name).mkdir(exist_ok=True)
    config = tmp_path / "stylefold.toml"
    folders = [f'{name} = "{tmp_path / name}"' for name in ("inbox", "outbox", "state")]
    config.write_text("\n".join([*folders, f'styles = "{library}"', *lines]) + "\n")
    return config


def test_a_config_s_defaults_and_weights_apply_under_the_flags(
    tmp_path: Path, photos: tuple[Path, Path], library: Path
) -> None:
    """A render with the daemon's config previews the daemon's picture: its [defaults] apply
    (a photographer's trial: they were ignored, and only the library was read), under the
    style's defaults and the flags, as in the daemon; and so do its weights."""
    content, style = photos
    out = tmp_path / "out.jpg"
    both = ("strength = 0.5", "style_weight = 10.0")  # told, as validate and doctor tell it
    lines = ("output_quality = 40", "[defaults]", "size = 36", "iterations = 2", *both)
    config = _config(tmp_path, library, *lines)
    for spec, flags, expected in (
        (style, [], "36x24, 2 iterations"),  # a file: the config's defaults
        (style, ["--size", "30"], "30x20, 2 iterations"),  # a flag over them
        ("stain", [], "40x27, 3 iterations"),  # the style's own defaults over the config's
    ):
        done = _run(content, spec, "-o", out, "--config", config, *flags, cwd=tmp_path)
        assert done.returncode == 0 and expected in done.stderr, (spec, flags, done.stderr)
        assert "note: defaults: style_weight 10 is given, so strength 0.5" in done.stderr
    # The config's output_quality too, as the daemon would write the result.
    at_40 = io.BytesIO()
    Image.new("RGB", (8, 8)).save(at_40, "JPEG", quality=40)
    with Image.open(out) as written, Image.open(at_40) as expected_tables:
        assert written.quantization == expected_tables.quantization  # type: ignore[attr-defined]
    broken = tmp_path / "vgg19.pth"
    broken.write_bytes(b"not a weights file")
    config = _config(tmp_path, library, f'weights = {{vgg19 = "{broken}"}}')
    done = _run(content, style, "-o", out, "--config", config, *FAST, cwd=tmp_path)
    assert done.returncode == 1 and f"weights file {broken}" in done.stderr, done.stderr


def test_layer_flags(tmp_path: Path, photos: tuple[Path, Path]) -> None:
    """The layer lists a sidecar may give are flags too (a photographer's trial)."""
    content, style = photos
    out = tmp_path / "out.png"
    layers = ["--style-layers", "conv1_1", "conv2_1", "--content-layers", "conv3_2"]
    done = _run(
        content, style, "-o", out, *FAST, *layers, "--style-layer-weights", "2", "1", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    for flags, message in (
        (["--style-layer-weights", "1"], "1 entries but style_layers has 2; give one weight per"),
        (["--content-layers", "conv6_1"], "'conv6_1' does not exist"),
    ):
        done = _run(content, style, "-o", out, *FAST, *layers, *flags, cwd=tmp_path)
        assert done.returncode == 1 and message in done.stderr, done.stderr


def test_quality_out_of_range_is_refused_as_in_a_sidecar(
    tmp_path: Path, photos: tuple[Path, Path]
) -> None:
    """--quality 0, -5, 101 and 1000 were taken and clamped without a word."""
    content, style = photos
    for quality in ("0", "101", "-5", "high"):
        done = _run(content, style, "-o", tmp_path / "o.jpg", "--quality", quality, cwd=tmp_path)
        assert done.returncode == 2 and "--quality" in done.stderr, done.stderr
        assert "from 1 to 100" in done.stderr
        assert not (tmp_path / "o.jpg").exists()


def test_with_config_the_daemons_limits_apply(tmp_path: Path, photos: tuple[Path, Path]) -> None:
    """--config previews the daemon's render; --size 5000 and --iterations 5000 were taken
    although the daemon would refuse them (a photographer's trial)."""
    content, style = photos
    for name in ("inbox", "outbox", "styles", "state"):
        (tmp_path / name).mkdir()
    config = tmp_path / "stylefold.toml"
    config.write_text(
        'inbox = "inbox"\noutbox = "outbox"\nstyles = "styles"\nstate = "state"\n'
        "max_output_size = 64\nmax_iterations = 5\n[defaults]\nsize = 48\niterations = 4\n"
    )
    done = _run(
        content, style, "-o", tmp_path / "o.jpg", "--config", config, "--size", "80",
        "--iterations", "6", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1
    assert "--size 80 is above this daemon's max_output_size (64); ask for size 64" in done.stderr
    assert "--iterations 6 is above this daemon's max_iterations (5)" in done.stderr
    assert not (tmp_path / "o.jpg").exists()


def test_a_style_the_library_would_refuse_is_refused(
    tmp_path: Path, photos: tuple[Path, Path]
) -> None:
    """An 8x8 style image was rendered, though `stylefold styles` refuses it in the library
    (a photographer's trial); a strip likewise."""
    content, _ = photos
    for name, size, words in (
        ("tiny.png", (8, 8), "is only 8x8 pixels; a style image needs at least 16"),
        ("strip.png", (400, 30), "a strip over 10 times longer than it is wide"),
    ):
        Image.new("RGB", size, (200, 30, 90)).save(tmp_path / name)
        done = _run(content, tmp_path / name, "-o", tmp_path / "o.jpg", *FAST, cwd=tmp_path)
        assert done.returncode == 1 and words in done.stderr, done.stderr
        assert done.stderr.startswith("stylefold render: error: style ")


def test_strip_location_leaves_the_gps_out(tmp_path: Path, photos: tuple[Path, Path]) -> None:
    _, style = photos
    exif = Image.Exif()
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 31.0, 0.0)})
    content = tmp_path / "gps.jpg"
    Image.fromarray(data.chelsea()).resize((48, 32)).save(content, exif=exif.tobytes())
    found = []
    for flags in ([], ["--strip-location"]):
        out = tmp_path / f"out{len(flags)}.jpg"
        done = _run(content, style, "-o", out, *FAST, "--quiet", *flags, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        with Image.open(out) as result:
            found.append(result.getexif().get_ifd(0x8825).get(1))
    assert found == ["N", None]


def test_an_existing_output_is_replaced_only_when_it_is_an_earlier_result(
    tmp_path: Path, photos: tuple[Path, Path]
) -> None:
    """A photographer's trial: `-o` naming another photo, read-only at that, replaced it and
    exited 0. An earlier result is replaced (the same render with other flags); another file
    or a read-only one only with --overwrite."""
    content, style = photos
    print_ = tmp_path / "print.jpg"
    for round_ in range(2):  # the second replaces the first's result
        done = _run(content, style, "-o", print_, *FAST, "--quiet", cwd=tmp_path)
        assert done.returncode == 0, (round_, done.stderr)
    other = tmp_path / "holiday.png"
    shutil.copyfile(style, other)
    kept = other.read_bytes()
    done = _run(content, style, "-o", other, *FAST, cwd=tmp_path)
    assert done.returncode == 1 and other.read_bytes() == kept
    assert f"-o {other} exists and is not a result of stylefold's; write the result to " in (
        done.stderr
    )
    assert "add --overwrite to replace it" in done.stderr
    print_.chmod(0o444)
    done = _run(content, style, "-o", print_, *FAST, cwd=tmp_path)
    assert done.returncode == 1 and f"-o {print_} is read-only; " in done.stderr
    for output in (other, print_):
        done = _run(content, style, "-o", output, *FAST, "--overwrite", "--quiet", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    assert other.read_bytes() != kept and Image.open(other).size == (32, 21)
