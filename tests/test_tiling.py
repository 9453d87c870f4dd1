"""Full resolution at any size: tiled inference, batched folders, bounded memory."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

import sparse_lc
from sparse_lc.apis import SAMPLES_DIR, Tiling, class_names_and_palette, segment_files, segment_tiled
from sparse_lc.apis.sliding_window import assemble_in_bands, tile_origins
from sparse_lc.assembly import assemble_labels
from sparse_lc.evaluation import boundary_mask
from sparse_lc.utils import prepare_images


@pytest.fixture(scope="module")
def bundled():
    model, cfg = sparse_lc.load_model()
    return model, cfg


def upscaled(n: int) -> np.ndarray:
    image = cv2.imread(f"{SAMPLES_DIR}/shapes_{n}.png")
    return cv2.resize(image, (image.shape[1] * 4, image.shape[0] * 4), interpolation=cv2.INTER_LINEAR)


def untiled_labels(model, image) -> np.ndarray:
    with torch.no_grad():
        return model(prepare_images(image, model.pixel_mean, model.pixel_std), rho=0.985).labels[0].numpy()


def test_tiles_cover_the_image_on_the_grid():
    assert tile_origins(1000, 512, 384) == [0, 384, 488]  # the last one moved back to end at the edge
    assert tile_origins(1001, 512, 384) == [0, 384, 496]  # ... the padded edge (1001 -> 1008)
    assert tile_origins(500, 512, 384) == [0] and tile_origins(1024, 512, 512) == [0, 512]
    assert all(o % 8 == 0 for o in tile_origins(6000, 512, 384))
    with pytest.raises(ValueError, match="multiples of 8"):
        Tiling((500, 512), (384, 384))
    with pytest.raises(ValueError, match="at most the tile"):
        Tiling((512, 512), (520, 384))
    assert Tiling.for_crop((128, 128)) == Tiling((512, 512), (384, 384), 4)
    assert Tiling.for_crop((769, 1000)).tile == (776, 1000)


@pytest.mark.slow
def test_one_tile_covering_the_image_equals_the_untiled_run(bundled):
    model, _ = bundled
    image = upscaled(0)[:500, :701]  # not a multiple of 8
    one = segment_tiled(model, image, rho=0.985, tile=(512, 704), stride=(512, 704))
    assert one.tiles == 1
    assert np.array_equal(one.labels, untiled_labels(model, image))
    with torch.no_grad():
        reference = model(prepare_images(image, model.pixel_mean, model.pixel_std), rho=0.985)
    assert torch.equal(one.grid_logits, reference.decided[0])
    assert one.stage_shares == pytest.approx(reference.stage_shares)


@pytest.mark.slow
@pytest.mark.parametrize("n", range(6))
def test_overlapping_tiles_agree_with_the_untiled_run(bundled, n):
    """The bundled model on a bundled sample upscaled 4x (1024 x 768), tiles of 384 every 256:
    at least 98% of the labels agree (99.4-99.97% measured). The differing pixels lie on label
    boundaries, where logits are close: the context a tile cuts shifts them a little. (They do
    not gather at tile edges: there the deeper tile outweighs the cut one.)"""
    model, _ = bundled
    image = upscaled(n)
    tiled = segment_tiled(model, image, rho=0.985, tile=(384, 384), stride=(256, 256), batch=3)
    assert tiled.tiles == 12
    reference = untiled_labels(model, image)
    differ = tiled.labels != reference
    assert differ.mean() <= 0.02, differ.mean()
    near_boundary = boundary_mask(reference.astype(np.uint8), radius=8)  # 8-14% of the pixels
    assert not differ.any() or near_boundary[differ].mean() >= 0.8


def test_banded_assembly_equals_the_whole_map():
    gen = torch.Generator().manual_seed(0)
    coarse = torch.randn(1, 7, 6, 9, generator=gen) * 5
    grid = torch.nn.functional.interpolate(coarse, size=(90, 70), mode="bilinear")[0]
    grid[1, 40:44] = grid[0, 40:44]  # ties across a band edge (rows 32 and 64 start bands)
    whole = assemble_labels(grid[None].contiguous(memory_format=torch.channels_last), (717, 555))[0]
    assert np.array_equal(assemble_in_bands(grid, (717, 555)), whole.numpy().astype(np.uint8))


@pytest.mark.slow
def test_tiled_sparse_equals_dense(bundled):
    """The invariant holds tile by tile: the sparse path and the dense reference (the same
    thresholds, masked) give the same averaged logits and labels."""
    model, _ = bundled
    image = upscaled(2)[:600, :900]
    kwargs = dict(rho=0.985, tile=(256, 256), stride=(192, 192), batch=4)
    sparse = segment_tiled(model, image, execution="sparse", **kwargs)
    dense = segment_tiled(model, image, execution="dense", **kwargs)
    torch.testing.assert_close(sparse.grid_logits, dense.grid_logits, atol=1e-4, rtol=0)
    assert (sparse.labels != dense.labels).mean() < 1e-4
    assert sparse.stage_shares == dense.stage_shares and 0 < sparse.stage_shares[0] < 1


@pytest.mark.slow
def test_batched_folders_give_the_images_their_own_results(bundled, tmp_path):
    """Batches of equal-sized images: every picture is the one a run of batch 1 writes."""
    model, cfg = bundled
    _, palette = class_names_and_palette(cfg)
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(5):
        cv2.imwrite(str(folder / f"{n}.png"), upscaled(n)[:256, :320])
    cv2.imwrite(str(folder / "5.png"), upscaled(5)[:200, :200])  # another size: a batch of its own
    one = segment_files(model, [str(folder)], str(tmp_path / "b1"), palette, progress=False, batch_size=1)
    four = segment_files(model, [str(folder)], str(tmp_path / "b4"), palette, progress=False, batch_size=4)
    assert [r.path for r in one] == [r.path for r in four] and all(r.ok for r in four)
    for a, b in zip(one, four):
        assert a.stage_shares == b.stage_shares
        for x, y in zip(a.outputs, b.outputs):
            if x.endswith("_label.png"):
                assert open(x, "rb").read() == open(y, "rb").read()
    assert sum(r.macs_cascade for r in four[:4]) == pytest.approx(sum(r.macs_cascade for r in one[:4]), rel=1e-6)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priorities are Linux's")
def test_reading_and_writing_threads_run_behind_the_model():
    """The I/O threads take the lowest priority (on 2 cores: 8.7 -> 10.8 images/s at batch 1)."""
    import os
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from sparse_lc.apis.inference import _behind_the_model

    with ThreadPoolExecutor(1, initializer=_behind_the_model) as pool:
        priority = pool.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result()
    assert priority == 19
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == 0  # the model's thread keeps its own


@pytest.mark.slow
def test_full_resolution_memory_is_bounded(tmp_path):
    """A 4000 x 3000 image with a 6-class model at full resolution: tiled, the run's peak
    memory (resident, above the loaded model's) stays below what the full-resolution logits
    alone would take (6 x 12 MP x 4 bytes = 288 MB)."""
    code = f"""
import cv2, numpy as np, sparse_lc
from sparse_lc.analysis import peak_memory
from sparse_lc.apis import segment_tiled
model, _ = sparse_lc.load_model()
tiles = [cv2.imread(f"{SAMPLES_DIR}/shapes_{{i}}.png") for i in range(6)]
row = np.concatenate([tiles[i % 6] for i in range(16)], axis=1)[:, :4000]
image = np.ascontiguousarray(np.concatenate([np.roll(row, 29 * j, axis=1) for j in range(16)], axis=0)[:3000])
segment_tiled(model, image[:512, :512])  # load spconv, allocate once
used = peak_memory(lambda: segment_tiled(model, image), __import__("torch").device("cpu"))
print(used)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    used = int(proc.stdout.split()[-1])
    assert used < 288e6, f"{used / 1e6:.0f} MB"


@pytest.mark.slow
def test_the_first_tiled_image_is_warmed_up(tmp_path):
    """``segment --max-side 0`` on equal images, in a fresh process (where the one-time set-up
    happens): the first image's time is within 3x of the others' median (a ratio within one run).
    It was 15-23x when the warm-up pass ran the untiled path only; now it is 0.9-1.1x, and a
    busy shared machine has been seen to slow one image of four 2x, hence the margin."""
    picture = cv2.resize(cv2.imread(f"{SAMPLES_DIR}/shapes_0.png"), (1024, 768))  # 6 tiles of 512: batches of 4, 2
    for name in "abcd":
        cv2.imwrite(str(tmp_path / f"{name}.png"), picture)
    proc = subprocess.run([sys.executable, "-m", "sparse_lc", "segment", str(tmp_path), "--max-side", "0", "--out",
                           str(tmp_path / "out"), "--json", "--no-progress"], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seconds = [r["seconds"] for r in json.loads(proc.stdout)]
    assert seconds[0] < 3 * statistics.median(seconds[1:]), seconds
