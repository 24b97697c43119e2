"""The engine and the daemon on a real CUDA GPU: a render, a batch, and real out-of-memory, both
the allocator's own limit in one process and a GPU that another process holds. Skipped where
torch sees no GPU (CI never has one); run on a GPU machine with `pytest tests/test_cuda.py`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import Folders, make_image, sample, start_daemon, wait_for
from PIL import Image

from service.engine import Engine, StyleImage
from service.errors import DeviceOutOfMemoryError
from service.params import RenderParams

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

GIB = 1 << 30


@pytest.fixture(scope="module")
def cuda() -> Engine:
    return Engine(device="cuda")


def _params(**values: object) -> RenderParams:
    base: dict[str, object] = {"size": 64, "iterations": 30, "tolerance": 0.0}
    return RenderParams.model_validate(base | values)


def test_the_engine_renders_on_cuda_as_on_the_cpu(cuda: Engine) -> None:
    content, style = sample("chelsea", 96), [StyleImage(sample("immunohistochemistry", 96))]
    on_gpu = cuda.render(content, style, _params())
    on_cpu = Engine(device="cpu", precision="fp32").render(content, style, _params())
    assert on_gpu.device.startswith("cuda") and on_gpu.image.size == on_cpu.image.size
    assert on_gpu.peak_memory_bytes > 0
    # bf16 convolutions on the GPU, fp32 on the CPU: the same optimisation, not the same bits.
    assert on_gpu.losses["total"] == pytest.approx(on_cpu.losses["total"], rel=0.2)


def test_a_batch_on_cuda_gives_each_photo_its_own_result(cuda: Engine) -> None:
    photos = [sample(name, 96) for name in ("chelsea", "coffee", "astronaut")]
    style = [StyleImage(sample("immunohistochemistry", 96))]
    params = _params()
    batch = cuda.render_batch(photos, style, params)
    alone = [cuda.render(photo, style, params) for photo in photos]
    assert [r.batch_size for r in batch] == [2, 2, 1]  # chelsea and coffee share a size
    for together, single in zip(batch, alone, strict=True):
        assert together.image.size == single.image.size
        assert together.losses["total"] == pytest.approx(single.losses["total"], rel=0.05)
    assert cuda.batch_limit((512, 384), RenderParams(size=512)) > 8  # a GPU's room for several


def _out_of_memory(engine: Engine, content: Image.Image, style: list[StyleImage]) -> str:
    """A render too large for the limit; only its message is kept (as a worker does), so
    whatever the failed attempt held is free once this returns."""
    try:
        engine.render(content, style, _params(size=4096, multiscale="off", iterations=2))
    except DeviceOutOfMemoryError as exc:
        return str(exc)
    raise AssertionError("a 4096 px render fitted in 2 GiB")


@pytest.mark.xfail(
    strict=True,
    reason="on an H200 (torch 2.11, Python 3.12) 1.58 GiB stayed allocated after the failed "
    "attempt, before and after the fix of the backward pass's graph (tests/"
    "test_out_of_memory.py); what holds it on CUDA is not found yet (no GPU left to look)",
)
def test_a_real_out_of_memory_is_a_device_error_and_the_engine_goes_on(cuda: Engine) -> None:
    """The allocator's own limit: a 4096 px single-scale render does not fit in 2 GiB."""
    content, style = sample("chelsea", 96), [StyleImage(sample("coffee", 96))]
    cuda.render(content, style, _params(iterations=2))  # network and caches in place
    before = torch.cuda.memory_allocated()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction((before + 2 * GIB) / total)
    try:
        assert "ran out of memory" in _out_of_memory(cuda, content, style)
        kept = torch.cuda.memory_allocated() - before
        assert kept < 64 << 20, f"{kept / GIB:.2f} GiB still allocated after the failed render"
        after = cuda.render(content, style, _params(iterations=5))  # within the limit still
        assert after.image.size == (64, 43)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)


HOG = """
import sys, torch
free, _ = torch.cuda.mem_get_info()
held = torch.empty(free - int(sys.argv[1]), dtype=torch.uint8, device="cuda")
print("held", held.numel(), flush=True)
sys.stdin.read()
"""


def test_the_daemon_renders_smaller_when_another_process_holds_the_gpu(
    folders: Folders,
) -> None:
    """Another program takes all but 3 GiB of the GPU: a 2048 px job runs out of memory for
    real, and oom_fallback "smaller" retries it until it fits; the result says what was asked."""
    hog = subprocess.Popen(
        [sys.executable, "-c", HOG, str(3 * GIB)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert hog.stdout is not None and hog.stdout.readline().startswith("held")
        config = folders.config(
            devices=["cuda"], oom_fallback="smaller", retries=8, max_output_size=4096,
            defaults={"size": 2048, "iterations": 2, "multiscale": "off"},
        )  # fmt: skip
        daemon = start_daemon(folders, config=config)
        make_image(folders.inbox / "big.jpg", size=(2048, 1536), seed=301)
        (folders.inbox / "big.json").write_text(json.dumps({"style": "mosaic"}))
        manifest = folders.outbox / "big.manifest.json"
        error = folders.outbox / "big.error.json"
        wait_for(lambda: manifest.exists() or error.exists(), 300, "an answer for big.jpg")
        assert manifest.exists(), error.read_text()
        answer = json.loads(manifest.read_text())
        log = (folders.outbox / "big.log").read_text()
        assert "out of memory" in log and "retrying" in log, log
        with Image.open(folders.outbox / answer["output"]["file"]) as image:
            side = max(image.size)
        assert side < 2048, side
        assert answer["requested_params"]["size"] == 2048 and answer["device"].startswith("cuda")
        assert daemon.stop() == 0
        print(f"2048 px asked, {side} px rendered beside a process holding the GPU")
    finally:
        hog.kill()
        hog.wait(30)
