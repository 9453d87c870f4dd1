"""The central invariant: the sparse path (spconv) equals the dense reference on the same weights.

Every check goes through the public contract, :func:`sparse_lc.testing.assert_sparse_matches_dense`:
for every registered backbone (so a new one is covered by registering it), in float64 (where only
rounding separates the paths) and in float32 (the dtype models run in), plus the settings the
contract's defaults do not vary: dilations, ASPP heads, a single active pixel, batch norm
without running statistics, weights changed between runs.
"""
from __future__ import annotations

import pytest
import torch

from sparse_lc import LayerCascade, build_backbone, list_backbones
from sparse_lc.backbones import backbone_info
from sparse_lc.testing import assert_sparse_matches_dense, randomize_weights

from conftest import IRNV2_SMALL, make_cascade, random_images


def small_model(name: str, seed: int = 0) -> LayerCascade:
    """A randomized cascade on the registered backbone ``name``, at its registered small size."""
    model = LayerCascade(build_backbone(name, **backbone_info(name).small_args), num_classes=5, head_channels=16)
    return randomize_weights(model, seed)


@pytest.mark.parametrize("name", list_backbones())
def test_every_registered_backbone_keeps_the_contract(name):
    """Outputs at rho 0, 1 and three thresholds that split the pixels, forced masks (one image of
    the batch without any hard pixel), gradients and BN statistics, halo 0 and 1: float64."""
    checks = assert_sparse_matches_dense(small_model(name))
    shares = [c.hard_share for c in checks]
    assert 0.0 in shares and 1.0 in shares, "the contract must check no hard pixel and every pixel hard"
    assert any(0.0 < s < 1.0 for s in shares), "and a real split"
    assert any("gradients" in c.setting for c in checks) and {"halo 0", "halo 1"} <= {c.setting[:6] for c in checks}
    assert max(c.max_difference for c in checks) < 1e-9


@pytest.mark.parametrize("name", list_backbones())
def test_every_registered_backbone_agrees_in_float32(name):
    """The dtype models run in: outputs to 1e-4 of their scale (gradients: see the next test)."""
    assert_sparse_matches_dense(small_model(name), dtype=torch.float32, gradients=False)


@pytest.mark.parametrize("name", ["tiny", "resnet18", "inception_resnet_v2", "convnext_tiny"])
def test_float32_gradients_agree(name):
    """Float32 gradients where the random network is well conditioned. (Deeper random networks,
    with train-mode batch norm over a few dozen active pixels, amplify rounding beyond any fixed
    tolerance in float32, MobileNetV2's 17 blocks among them: 2e-4 seen; float64 shows their
    paths agree to 1e-12.)"""
    checks = assert_sparse_matches_dense(small_model(name), dtype=torch.float32, rhos=[])
    assert all(c.max_difference < 1e-4 for c in checks)


@pytest.mark.parametrize("name", ["tiny", "resnet18", "inception_resnet_v2", "convnext_tiny", "mobilenet_v2"])
def test_inference_copies_keep_the_contract(name):
    """Batch norm folded into the convs: the sparse path's one-step conv + ReLU (on CUDA, spconv's
    fused epilogue) against the dense path's three steps, float64."""
    checks = assert_sparse_matches_dense(small_model(name).fused(), gradients=False)
    assert max(c.max_difference for c in checks) < 1e-9


@pytest.mark.parametrize("name", ["tiny", "resnet18", "inception_resnet_v2", "mobilenet_v2"])
def test_half_precision_mode(name):
    """float16 on the CPU (spconv's Native path multiplies with torch.mm in float16): forced masks
    only, logits within half precision's tolerance (1.8e-3 of their scale seen), clear labels equal."""
    checks = assert_sparse_matches_dense(small_model(name).fused(), dtype=torch.float16)
    assert checks and not any("rho" in c.setting or "gradients" in c.setting for c in checks)
    assert max(c.max_difference for c in checks) < 1e-2


@pytest.mark.parametrize("dilations", [(1, 1), (2, 2), (4, 4), (2, 4)])
@pytest.mark.parametrize("rho", [0.5, 0.9, 0.99, 1.0])
def test_sparse_equals_dense_at_any_dilation(dilations, rho):
    model = make_cascade(dilations=dilations, seed=hash(dilations) % 1000)
    images = random_images(batch=3, height=64, width=96, seed=int(rho * 100))
    [check] = assert_sparse_matches_dense(model, images, rhos=[rho], halos=(0,), hard_shares=(), gradients=False,
                                          dtype=torch.float32)
    if rho < 1.0:  # the check must exercise a real split: some pixels leave early, some go on
        assert 0.0 < check.hard_share < 1.0, check
    else:
        assert check.hard_share == 1.0


@pytest.mark.parametrize("aspp_rates", [(1, 3), (6, 12, 18, 24)])
def test_irnv2_with_an_aspp_head(aspp_rates):
    """Stage 3's classifier as an ASPP: one rulebook per rate, logits summed."""
    model = make_cascade(**IRNV2_SMALL, seed=1, aspp_rates=aspp_rates)
    assert_sparse_matches_dense(model)


@pytest.mark.parametrize("kind", [{}, IRNV2_SMALL])
def test_single_active_pixel_in_train_mode(kind):
    """One hard pixel in the batch gives no batch variance: both paths fall back to the running
    statistics (forced masks of 1 of the 96 cells per image; the first image gets none)."""
    checks = assert_sparse_matches_dense(make_cascade(**kind, seed=2), rhos=[], hard_shares=((1 / 96, 1 / 96),))
    assert [c.hard_share for c in checks] == [0.5 / 96] * len(checks)


@pytest.mark.parametrize("kind", [{}, IRNV2_SMALL])
def test_batch_norm_without_running_stats(kind):
    model = make_cascade(**kind, seed=5)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.track_running_stats, m.running_mean, m.running_var = False, None, None
    checks = assert_sparse_matches_dense(model, rhos=[0.999], gradients=False)
    assert all(c.hard_share > 0 for c in checks)


def test_weight_updates_are_seen_by_the_sparse_path(tiny_model):
    """No stale weight copies: updates through .data, load_state_dict or under inference_mode all
    reach spconv. (Run on the model itself: the contract's copy would hide a cache keyed by module.)"""
    images = random_images(batch=2, height=64, width=96)
    conv = tiny_model.backbone.layer3[0].conv1

    def assert_paths_agree():
        sparse = tiny_model(images, rho=1.0, execution="sparse")
        dense = tiny_model(images, rho=1.0, execution="dense")
        torch.testing.assert_close(sparse.stage_logits[1], dense.stage_logits[1], atol=1e-4, rtol=0)
        torch.testing.assert_close(sparse.logits, dense.logits, atol=1e-4, rtol=0)

    for update in (lambda: conv.weight.data.mul_(-1.5),
                   lambda: tiny_model.load_state_dict(make_cascade(seed=11).state_dict())):
        with torch.no_grad():
            before = tiny_model(images, rho=1.0).logits  # a run before the update
            update()
            assert not torch.allclose(before, tiny_model(images, rho=1.0, execution="dense").logits)
            assert_paths_agree()
    with torch.inference_mode():
        assert_paths_agree()


def test_a_wrong_sparse_path_is_caught(monkeypatch, tiny_model):
    """The contract can fail: a sparse conv reading its kernel mirrored is detected."""
    from sparse_lc.ops import sparse as sparse_ops

    krsc = sparse_ops._krsc_weight
    monkeypatch.setattr(sparse_ops, "_krsc_weight", lambda weight, dtype: krsc(weight, dtype).flip(1))
    with pytest.raises(AssertionError, match="logits differ"):
        assert_sparse_matches_dense(tiny_model, gradients=False)


def test_the_contract_leaves_the_model_alone(tiny_model):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    assert_sparse_matches_dense(tiny_model)
    assert not tiny_model.training and tiny_model.halo == 0
    assert next(tiny_model.parameters()).dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())


def test_unsupported_dtype_is_a_clear_error():
    model = make_cascade(seed=6).to(torch.bfloat16).eval()
    with pytest.raises(ValueError, match="no bfloat16 kernels"):
        model(random_images(batch=1).to(torch.bfloat16), rho=1.0)
