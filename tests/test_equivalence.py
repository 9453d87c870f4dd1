"""The central invariant: the sparse path (spconv) equals the dense reference on the same weights.

Every check goes through the public contract, :func:`sparse_lc.testing.assert_sparse_matches_dense`:
for every registered backbone (so a new one is covered by registering it), in float64 (where only
rounding separates the paths) and in float32 (the dtype models run in), plus the settings the
contract's defaults do not vary: dilations, ASPP heads, a single active pixel, batch norm
without running statistics, weights changed between runs.
"""
from __future__ import annotations

import copy

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


# the deep ResNets' float64 gradient checks take 15-16 s each here: in the whole suite only
SLOW_CONTRACTS = {"resnet34", "resnet50"}


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_CONTRACTS else name
                                  for name in list_backbones()])
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

    krsc = sparse_ops.krsc_weight
    monkeypatch.setattr(sparse_ops, "krsc_weight", lambda weight, dtype: krsc(weight, dtype).flip(1))
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


# ------------------------------------------------ every operation of stages 2-3 in one backbone
class _ModernBlock(torch.nn.Module):
    """A depthwise / grouped conv (kernel, dilation, groups), a norm, an activation, a linear, a
    squeeze-excitation, a product with a second feature set, a layer scale and a residual."""

    def __init__(self, channels, kernel, dilation, groups, norm, activation):
        from sparse_lc.layers import SqueezeExcite

        super().__init__()
        nn = torch.nn
        self.dw = nn.Conv2d(channels, channels, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation,
                            groups=groups)
        self.norm, self.act = norm, activation
        self.pw = nn.Linear(channels, channels)
        self.se = SqueezeExcite(channels, 4)
        self.gate = nn.Conv2d(channels, channels, 1)
        self.sigmoid = nn.Sigmoid()
        self.gamma = nn.Parameter(torch.ones(channels))

    def forward(self, x):
        out = self.se(x.conv(self.dw).norm(self.norm).act(self.act).linear(self.pw))
        return out.mul(x.conv(self.gate).act(self.sigmoid)).scale(self.gamma).add(x)


def modern_cascade(seed: int = 0) -> LayerCascade:
    """Stages 2-3 made of every operation the sparse path runs besides spconv's convs: depthwise
    convs at kernels 3, 5, 7 and dilations 1, 2, 4, groups C and C/4, a 2x2 conv, group / layer /
    instance / batch norm, GELU, SiLU, Hardswish, ReLU6, Sigmoid, squeeze-excitation, products."""
    from torch import nn

    from sparse_lc.backbones import CascadeBackbone
    from sparse_lc.ops import DenseFeatures, run_sequential

    c = 16

    class Net(CascadeBackbone):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, c, 8, stride=8), nn.BatchNorm2d(c), nn.ReLU())
            self.stage2_blocks = nn.Sequential(
                _ModernBlock(c, 3, 1, c, nn.GroupNorm(4, c), nn.GELU()),
                _ModernBlock(c, 5, 2, c // 4, nn.LayerNorm(c), nn.SiLU()),
                _ModernBlock(c, 7, 4, c, nn.InstanceNorm2d(c, affine=True), nn.Hardswish()))
            self.down = nn.Sequential(nn.LayerNorm(c), nn.Conv2d(c, c, 2, padding="same"))
            self.stage3_blocks = nn.Sequential(
                _ModernBlock(c, 3, 4, c // 4, nn.BatchNorm2d(c), nn.ReLU6()),
                _ModernBlock(c, 7, 2, c, nn.GroupNorm(1, c), nn.Sigmoid()))
            self.stage_channels, self.stage_dilations = (c, c, c), (1, 2, 4)

        def stage_modules(self):
            return [self.stem], [self.stage2_blocks], [self.down, self.stage3_blocks]

        def stage1(self, images):
            return run_sequential(DenseFeatures(images), self.stem).to_dense()

        def stage2(self, x):
            return self.stage2_blocks(x)

        def stage3(self, x):
            return self.stage3_blocks(run_sequential(x, self.down))

    return randomize_weights(LayerCascade(Net(), num_classes=5, head_channels=16), seed)


def test_every_operation_keeps_the_contract():
    """float64, outputs, gradients and batch-norm statistics, halo 0 and 1, rho 0 to 1."""
    checks = assert_sparse_matches_dense(modern_cascade())
    assert max(c.max_difference for c in checks) < 1e-9
    assert {0.0, 1.0} <= {c.hard_share for c in checks} and any("gradients" in c.setting for c in checks)
    assert_sparse_matches_dense(modern_cascade().fused(), gradients=False)


def test_group_norm_in_train_mode_is_the_same_at_rho_1_on_both_paths():
    """The plain dense path (rho 1, as in warm-up) runs torch's GroupNorm / InstanceNorm / global
    pool over the whole image; the sparse path computes each image's statistics over its active
    pixels: every pixel at rho 1, so the two agree, in train mode, gradients included."""
    model = modern_cascade(seed=3).double().train()
    images = random_images(batch=2, height=64, width=96, seed=3).double()
    runs = {}
    for execution in ("sparse", "dense"):
        net = copy.deepcopy(model)
        result = net(images, rho=1.0, execution=execution)
        result.logits.square().mean().backward()
        runs[execution] = (result, net)
    (sparse, sparse_net), (dense, dense_net) = runs["sparse"], runs["dense"]
    for k in (1, 2):
        torch.testing.assert_close(sparse.stage_logits[k], dense.stage_logits[k], atol=1e-10, rtol=0)
    for (name, p), q in zip(sparse_net.named_parameters(), dense_net.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-10, rtol=1e-9, msg=name)
    for (name, b), c in zip(sparse_net.named_buffers(), dense_net.buffers()):
        torch.testing.assert_close(b, c, msg=name)
