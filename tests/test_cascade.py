"""Cascade semantics: rho, stage assembly, input handling, rulebook reuse."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from sparse_lc.ops import SparseFeatures, pair_counts, spconv_algo, spconv_backend
from sparse_lc.rho import top_confidence

from conftest import make_cascade, random_images


def test_rho_one_sends_every_pixel_through_every_stage(tiny_model):
    result = tiny_model(random_images(), rho=1.0)
    assert all(m.all() for m in result.active_masks + result.hard_masks)
    assert result.stage_shares == (0.0, 0.0, 1.0)
    assert all(logits.abs().sum(1).gt(0).all() for logits in result.stage_logits)


def test_rho_zero_decides_every_pixel_in_stage_one(tiny_model):
    result = tiny_model(random_images(), rho=0.0)
    assert result.stage_shares == (1.0, 0.0, 0.0)
    assert torch.equal(result.labels, result.logits.argmax(1))


def test_labels_come_from_the_deciding_stage(tiny_model):
    result = tiny_model(random_images(batch=2), rho=0.9)
    hard1, hard2 = result.hard_masks
    assert not (hard2 & ~hard1).any(), "stage 3's pixels are a subset of stage 2's"
    conf1 = top_confidence(result.stage_logits[0])
    conf2 = top_confidence(result.stage_logits[1])
    assert torch.equal(hard1, conf1 <= 0.9)
    assert torch.equal(hard2, hard1 & (conf2 <= 0.9))
    sm = result.stage_map
    assert torch.equal(sm == 1, ~hard1) and torch.equal(sm == 2, hard1 & ~hard2) and torch.equal(sm == 3, hard2)
    # at feature resolution, the assembled logits are the deciding stage's logits
    for stage in (1, 2, 3):
        where = (sm == stage)[:, None].expand_as(result.stage_logits[0])
        assert where.any()
    counts = result.stage_counts
    assert counts.sum(1).tolist() == [sm[0].numel()] * 2
    assert abs(sum(result.stage_shares) - 1) < 1e-9


def test_final_logits_are_upsampled_deciding_stage():
    model = make_cascade(seed=4).eval()
    images = random_images(batch=1, height=64, width=64)
    result = model(images, rho=0.9)
    sm = result.stage_map[:, None]
    decided = torch.where(sm == 1, result.stage_logits[0],
                          torch.where(sm == 2, result.stage_logits[1], result.stage_logits[2]))
    up = torch.nn.functional.interpolate(decided, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(result.logits, up)


@pytest.mark.parametrize("size", [(61, 77), (8, 8), (9, 130), (64, 64)])
def test_any_size_is_padded_and_cropped_back(tiny_model, size):
    images = random_images(batch=1, height=size[0], width=size[1])
    result = tiny_model(images, rho=0.9)
    assert result.logits.shape[2:] == size and result.labels.shape[1:] == size
    grid = ((size[0] + 7) // 8, (size[1] + 7) // 8)
    assert result.stage_map.shape[1:] == grid
    assert result.stage_map_at(size).shape[1:] == size
    # cropping back: the same as running on the zero-padded image and cropping by hand
    padded_size = (grid[0] * 8, grid[1] * 8)
    padded = torch.zeros(1, 3, *padded_size)
    padded[:, :, :size[0], :size[1]] = images
    on_padded = tiny_model(padded, rho=0.9)
    torch.testing.assert_close(on_padded.logits[:, :, :size[0], :size[1]], result.logits)
    assert torch.equal(on_padded.stage_map, result.stage_map)


def test_stage_map_at_input_size_keeps_cells_in_place(tiny_model):
    result = tiny_model(random_images(batch=1, height=20, width=27), rho=0.9)
    full = result.stage_map_at((20, 27))
    assert torch.equal(full[0, ::8, ::8], result.stage_map[0])
    assert torch.equal(full[0, 19, 26], result.stage_map[0, 2, 3])


def test_single_image_without_batch_dim(tiny_model):
    image = random_images(batch=1)[0]
    assert tiny_model(image, rho=0.9).logits.shape[0] == 1


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(1, 4, 16, 16), r"\[B, 3, H, W\]"),
    (torch.zeros(16, 16), r"\[B, 3, H, W\]"),
    (torch.zeros(1, 1, 3, 16, 16), r"\[B, 3, H, W\]"),
    (torch.zeros(1, 3, 16, 16, dtype=torch.uint8), "float"),
    (np.zeros((16, 16, 3), np.float32), "Tensor"),
    (torch.zeros(0, 3, 16, 16), "non-empty"),
])
def test_forward_rejects_bad_input(tiny_model, bad, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(bad)


def test_forward_rejects_bad_arguments(tiny_model):
    images = random_images(batch=1)
    with pytest.raises(ValueError, match="rho"):
        tiny_model(images, rho=1.5)
    with pytest.raises(ValueError, match="execution"):
        tiny_model(images, execution="fast")
    with pytest.raises(ValueError, match="subset"):
        grid = tiny_model(images, rho=1.0).stage_map.shape
        tiny_model(images, hard_masks=(torch.zeros(grid, dtype=torch.bool), torch.ones(grid, dtype=torch.bool)))
    with pytest.raises(ValueError, match="feature grid"):
        tiny_model(images, hard_masks=(torch.ones(1, 3, 3, dtype=torch.bool),) * 2)


def test_predict_takes_opencv_images(tiny_model):
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
    rgb = bgr[:, :, ::-1]
    mean, std = torch.tensor(tiny_model.pixel_mean), torch.tensor(tiny_model.pixel_std)
    manual = (torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() - mean[:, None, None]) / std[:, None, None]
    expected = tiny_model(manual, rho=0.9).logits
    torch.testing.assert_close(tiny_model.predict(bgr, rho=0.9).logits, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(tiny_model.predict(rgb, rho=0.9, channel_order="rgb").logits, expected,
                               atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(tiny_model.predict([bgr, bgr], rho=0.9).logits[1:], expected, atol=1e-4, rtol=1e-4)
    chw = torch.from_numpy(rgb.copy()).permute(2, 0, 1)
    torch.testing.assert_close(tiny_model.predict(chw, rho=0.9, channel_order="rgb").logits, expected,
                               atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((16, 16), np.uint8), r"\[H, W, 3\]"),
    (np.zeros((16, 16, 4), np.uint8), r"\[H, W, 3\]"),
    (np.zeros((16, 16, 3), np.uint16), "uint8"),
    ([np.zeros((16, 16, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)], "same-sized"),
    ("image.png", "numpy array"),
])
def test_predict_rejects_bad_input(tiny_model, bad, message):
    with pytest.raises(ValueError, match=message):
        tiny_model.predict(bad)


def test_predict_says_when_a_read_failed(tiny_model, tmp_path):
    """cv2.imread gives None for a missing or unreadable file: predict says so, not "NoneType"."""
    with pytest.raises(ValueError, match=r"^expected an image, got None: cv2.imread returns None for a file it cannot "
                                         r"read \(missing, unreadable or not an image\): check the path$"):
        tiny_model.predict(cv2.imread(str(tmp_path / "missing.jpg")))
    with pytest.raises(ValueError, match=r"^images \[1\] of the list are None: cv2.imread returns None"):
        tiny_model.predict([np.zeros((16, 16, 3), np.uint8), None])


def test_one_rulebook_per_sparse_stage(tiny_model, monkeypatch):
    """All 3x3 convs of a stage (blocks and head) share one rulebook, built once."""
    builds = []
    real = spconv_backend.import_spconv("spconv.pytorch").ops.get_indice_pairs
    monkeypatch.setattr(spconv_backend.import_spconv("spconv.pytorch").ops, "get_indice_pairs",
                        lambda *a, **k: builds.append(a[5:8]) or real(*a, **k))
    result = tiny_model(random_images(), rho=0.99)
    assert result.hard_masks[1].any()
    assert len(builds) == 2, builds  # stage 2 and stage 3, once each

    f1 = tiny_model.backbone.stage1(random_images())
    x = SparseFeatures.from_dense(f1, torch.ones(f1.shape[0], *f1.shape[2:], dtype=torch.bool), "stage2")
    out = tiny_model.heads[1](tiny_model.backbone.stage2(x))
    assert list(out.rulebooks()) == ["stage2/k3x3d2x2"]


def test_pair_counts_match_brute_force():
    """Rulebook pairs (centre included) = active (pixel, active neighbour) pairs of a 3x3 window."""
    gen = torch.Generator().manual_seed(0)
    mask = torch.rand(2, 16, 20, generator=gen) < 0.3
    for dilation in (1, 2):
        conv = torch.nn.Conv2d(4, 4, 3, padding=dilation, dilation=dilation, bias=False)
        x = SparseFeatures.from_dense(torch.randn(2, 4, 16, 20), mask, "s").conv(conv)
        padded = torch.nn.functional.pad(mask.float(), (2, 2, 2, 2))
        expected = 0
        for dy in (-dilation, 0, dilation):
            for dx in (-dilation, 0, dilation):
                shifted = padded[:, 2 + dy:18 + dy, 2 + dx:22 + dx]
                expected += int((shifted.bool() & mask).sum())
        assert pair_counts(x) == [(f"s/k3x3d{dilation}x{dilation}", expected)]


def test_algorithm_follows_the_device():
    assert spconv_algo(torch.device("cpu")).name == "Native"
    assert spconv_algo(torch.device("cuda")).name == "MaskImplicitGemm"


def test_strided_conv_is_refused_on_an_active_set():
    x = SparseFeatures.from_dense(torch.randn(1, 4, 8, 8), torch.ones(1, 8, 8, dtype=torch.bool), "s")
    with pytest.raises(ValueError, match="stride 1"):
        x.conv(torch.nn.Conv2d(4, 4, 3, stride=2, padding=1))
    with pytest.raises(ValueError, match="'same' zero padding"):
        x.conv(torch.nn.Conv2d(4, 4, 3, padding=0))
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        x.conv(torch.nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"))
    assert x.conv(torch.nn.Conv2d(4, 5, 3, padding="same", bias=False)).num_channels == 5


def test_predict_uses_eval_mode_and_restores_train_mode():
    model = make_cascade(seed=8).train()
    before = {n: b.clone() for n, b in model.named_buffers()}
    image = np.random.default_rng(0).integers(0, 256, size=(32, 40, 3), dtype=np.uint8)
    result = model.predict(image, rho=0.9)
    assert model.training
    assert all(torch.equal(before[n], b) for n, b in model.named_buffers())
    torch.testing.assert_close(result.logits, model.eval().predict(image, rho=0.9).logits)
    assert model.double().predict(image, rho=0.9).logits.dtype == torch.float64


@pytest.mark.slow
def test_compiled_stage1_gives_the_same_results_and_still_counts_macs():
    """torch.compile on stage 1: identical outputs; MAC counting and gradients run it eagerly."""
    from sparse_lc.analysis import count_macs

    model = make_cascade(seed=3).eval()
    images = random_images(batch=1, height=64, width=64)
    with torch.no_grad():
        eager = model(images, rho=0.9)
        _, eager_macs = count_macs(model, images, rho=0.9)
        model.compile_stage1()
        compiled = model(images, rho=0.9)
        _, compiled_macs = count_macs(model, images, rho=0.9)
    torch.testing.assert_close(compiled.decided, eager.decided, atol=1e-5, rtol=1e-5)
    assert torch.equal(compiled.stage_map, eager.stage_map)
    assert compiled_macs.total() == eager_macs.total()
