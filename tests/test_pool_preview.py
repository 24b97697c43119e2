"""The engine's preview hook that the pool's previews (Task.preview_every) are made from: when
it fires, what it shows, and that progress without previews is reported as before."""

from __future__ import annotations

import pytest
from conftest import make_image
from PIL import Image

from service.engine import Engine, StyleImage
from service.params import RenderParams
from service.progress import Progress


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(device="cpu")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Image.Image, StyleImage]:
    folder = tmp_path_factory.mktemp("preview")
    content = Image.open(make_image(folder / "photo.png", size=(64, 48), seed=1)).convert("RGB")
    style = Image.open(make_image(folder / "style.png", size=(48, 48), seed=2)).convert("RGB")
    return content, StyleImage(style)


def _render(
    engine: Engine,
    images: tuple[Image.Image, StyleImage],
    params: RenderParams,
    progress_every: int,
    preview_every: int,
) -> tuple[list[tuple[Progress, Image.Image | None]], Image.Image]:
    """Each progress with its preview image, rendered inside the callback as required."""
    seen: list[tuple[Progress, Image.Image | None]] = []

    def record(progress: Progress) -> None:
        seen.append((progress, progress.preview() if progress.preview else None))

    content, style = images
    result = engine.render(
        content,
        [style],
        params,
        progress=record,
        progress_every=progress_every,
        preview_every=preview_every,
    )
    return seen, result.image


def test_previews_come_at_their_own_cadence_and_the_last_is_the_result(
    engine: Engine, images: tuple[Image.Image, StyleImage]
) -> None:
    params = RenderParams(size=48, iterations=12, tolerance=0.0, preserve_colors="luminance")
    seen, result = _render(engine, images, params, progress_every=4, preview_every=6)
    assert [p.iteration for p, _ in seen] == [4, 6, 8, 12]
    previews = {p.iteration: image for p, image in seen if image is not None}
    assert sorted(previews) == [6, 12]
    assert all(image.size == result.size for image in previews.values())
    # As the result shows it, kept colours included: the final preview is the result itself.
    assert previews[12].tobytes() == result.tobytes()
    assert previews[6].tobytes() != result.tobytes()


def test_without_previews_progress_is_reported_as_before(
    engine: Engine, images: tuple[Image.Image, StyleImage]
) -> None:
    params = RenderParams(size=48, iterations=10, tolerance=0.0)
    seen, _ = _render(engine, images, params, progress_every=4, preview_every=0)
    assert [p.iteration for p, _ in seen] == [4, 8, 10]
    assert all(preview is None for _, preview in seen)


def test_previews_are_counted_per_scale_at_that_scales_size(
    engine: Engine, images: tuple[Image.Image, StyleImage]
) -> None:
    params = RenderParams(size=96, iterations=20, tolerance=0.0, multiscale="on")  # 10 + 10
    seen, result = _render(engine, images, params, progress_every=10, preview_every=2)
    sizes = {(p.scale, image.size) for p, image in seen if image is not None}
    assert sizes == {(0, (48, 36)), (1, (96, 72))}
    assert [p.iteration for p, _ in seen if p.scale == 1] == [12, 14, 16, 18, 20]  # 10 + 2, ...
    assert result.size == (96, 72)
