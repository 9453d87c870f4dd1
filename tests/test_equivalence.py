"""The central invariant: the sparse path (spconv) equals the dense reference on the same weights."""
from __future__ import annotations

import pytest
import torch

from conftest import IRNV2_SMALL, make_cascade, random_images
from sparse_lc import CascadeResult

ATOL = 1e-4
BACKBONES = {"tiny": {}, "irnv2": IRNV2_SMALL}


def build(kind: str, **kwargs):
    """A randomized cascade on backbone ``kind`` (a key of BACKBONES)."""
    return make_cascade(**{**BACKBONES[kind], **kwargs})


@pytest.fixture(params=sorted(BACKBONES))
def cascade(request):
    return build(request.param).eval()


def assert_same_result(sparse: CascadeResult, dense: CascadeResult, atol: float = ATOL) -> None:
    for a, b in zip(sparse.hard_masks + sparse.active_masks, dense.hard_masks + dense.active_masks):
        assert torch.equal(a, b)
    assert torch.equal(sparse.stage_map, dense.stage_map)
    for k, (a, b) in enumerate(zip(sparse.stage_logits, dense.stage_logits), start=1):
        torch.testing.assert_close(a, b, atol=atol, rtol=0, msg=f"stage {k} logits differ")
    torch.testing.assert_close(sparse.logits, dense.logits, atol=atol, rtol=0)
    assert torch.equal(sparse.labels, dense.labels)


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, name: str, rel: float = 1e-5,
                          floor: float = 0.0) -> None:
    """max |actual - expected| <= rel * max(max |expected|, floor): float tolerance for gradients
    that are sums over thousands of pixels (summation order differs between the paths). ``floor``
    holds a gradient that vanishes in exact arithmetic (float noise only) to a larger scale."""
    scale = max(float(expected.abs().max()), floor)
    error = float((actual - expected).abs().max())
    assert error <= rel * scale + 1e-8, f"{name}: max error {error:.3g} vs scale {scale:.3g}"


def run_both(model, images, **kwargs):
    with torch.no_grad():
        return model(images, execution="sparse", **kwargs), model(images, execution="dense", **kwargs)


@pytest.mark.parametrize("dilations", [(1, 1), (2, 2), (4, 4), (2, 4)])
@pytest.mark.parametrize("rho", [0.5, 0.9, 0.99, 1.0])
def test_sparse_equals_dense(dilations, rho):
    model = make_cascade(dilations=dilations, seed=hash(dilations) % 1000).eval()
    images = random_images(batch=3, height=64, width=96, seed=int(rho * 100))
    sparse, dense = run_both(model, images, rho=rho)
    assert_same_result(sparse, dense)
    shares = sparse.stage_shares
    if rho < 1.0:  # the test must exercise a real split: some pixels leave early, some go on
        assert 0.0 < shares[0] < 1.0, shares
        assert sparse.hard_masks[0].any()
        assert sparse.hard_masks[1].any() or rho < 0.9, "stage 3 must run at rho >= 0.9"
    else:
        assert shares == (0.0, 0.0, 1.0)


@pytest.mark.parametrize("aspp_rates", [None, (1, 3)])
@pytest.mark.parametrize("rho", [0.5, 0.9, 0.99, 1.0])
def test_irnv2_sparse_equals_dense(rho, aspp_rates):
    """Inception-ResNet-v2: 1x7/7x1 and 1x3/3x1 submanifold convs, concatenated branches, scaled
    residuals, Reduction-B's submanifold max pool, optionally an ASPP head on stage 3."""
    seed = 0 if aspp_rates is None else 1  # seeds whose confidences split at every rho < 1
    model = build("irnv2", seed=seed, aspp_rates=aspp_rates).eval()
    images = random_images(batch=3, height=64, width=96, seed=0)
    sparse, dense = run_both(model, images, rho=rho)
    assert_same_result(sparse, dense)
    if rho < 1.0:
        assert 0.0 < sparse.stage_shares[0] < 1.0, sparse.stage_shares
    if 0.9 <= rho < 1.0:
        assert sparse.stage_shares[1] > 0 and sparse.stage_shares[2] > 0, sparse.stage_shares


@pytest.mark.parametrize("kind", sorted(BACKBONES))
@pytest.mark.parametrize("halo", [1, 2])
def test_sparse_equals_dense_with_halo(halo, kind):
    """With a halo a stage computes more pixels than it decides; both paths still agree."""
    model = build(kind, dilations=(2, 4), seed=3, halo=halo).eval()
    sparse, dense = run_both(model, random_images(seed=5), rho=0.9)
    assert_same_result(sparse, dense)
    hard1, hard2 = sparse.hard_masks
    _, active2, active3 = sparse.active_masks
    assert (active2 & ~hard1).any(), "the halo should add context pixels"
    assert not (hard1 & ~active2).any() and not (hard2 & ~active3).any()
    assert not (active3 & ~active2).any()
    # stage 3 decides exactly the pixels still hard after stage 2, not its halo
    assert torch.equal(sparse.stage_map == 3, hard2)


def test_resnet_sparse_equals_dense():
    model = make_cascade("resnet18", dilations=(2, 4), seed=1, num_classes=7).eval()
    sparse, dense = run_both(model, random_images(batch=2, height=64, width=80, seed=2), rho=0.9)
    assert_same_result(sparse, dense)
    assert 0 < sparse.stage_shares[1] + sparse.stage_shares[2] < 1


def test_no_hard_pixel_skips_later_stages(cascade):
    sparse, dense = run_both(cascade, random_images(), rho=0.0)
    assert_same_result(sparse, dense)
    assert not sparse.hard_masks[0].any()
    assert (sparse.stage_map == 1).all()
    assert not sparse.stage_logits[1].any() and not sparse.stage_logits[2].any()
    torch.testing.assert_close(sparse.logits, cascade(random_images(), rho=0.0).logits)


def test_every_pixel_hard(cascade):
    sparse, dense = run_both(cascade, random_images(), rho=1.0)
    assert_same_result(sparse, dense)
    assert all(m.all() for m in sparse.active_masks + sparse.hard_masks)
    assert (sparse.stage_map == 3).all()


def test_stage3_skipped_when_stage2_decides_all(cascade):
    images = random_images(batch=2)
    with torch.no_grad():
        grid = cascade(images, rho=1.0).stage_map.shape
    hard1 = torch.zeros(grid, dtype=torch.bool)
    hard1[:, ::2, ::3] = True
    masks = (hard1, torch.zeros_like(hard1))
    sparse, dense = run_both(cascade, images, hard_masks=masks)
    assert_same_result(sparse, dense)
    assert not sparse.stage_logits[2].any()
    assert set(sparse.stage_map.unique().tolist()) == {1, 2}


def test_one_image_without_and_one_with_many_hard_pixels(cascade):
    images = random_images(batch=2)
    with torch.no_grad():
        grid = cascade(images, rho=1.0).stage_map.shape
    gen = torch.Generator().manual_seed(0)
    hard1 = torch.rand(grid, generator=gen) < 0.7
    hard1[0] = False  # image 0: nothing hard
    hard2 = hard1 & (torch.rand(grid, generator=gen) < 0.5)
    sparse, dense = run_both(cascade, images, hard_masks=(hard1, hard2))
    assert_same_result(sparse, dense)
    counts = sparse.stage_counts
    assert counts[0].tolist() == [grid[1] * grid[2], 0, 0]
    assert counts[1, 1] > 0 and counts[1, 2] > 0
    # image 0 alone gives the same answer as in the batch
    alone = cascade(images[:1], hard_masks=(hard1[:1], hard2[:1]))
    torch.testing.assert_close(alone.logits, sparse.logits[:1], atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", sorted(BACKBONES))
@pytest.mark.parametrize("halo", [0, 1])
def test_gradients_match_in_train_mode(halo, kind):
    """Train mode, hard masks held fixed: parameter and input gradients and BN statistics agree."""
    base = build(kind, dilations=(2, 4), seed=7, halo=halo)
    images = random_images(batch=2, seed=9)
    with torch.no_grad():
        masks = base.eval()(images, rho=0.9).hard_masks
    assert masks[0].any() and masks[1].any()
    grads = {}
    for execution in ("sparse", "dense"):
        model = build(kind, dilations=(2, 4), seed=7, halo=halo).train()
        x = images.clone().requires_grad_(True)
        result = model(x, execution=execution, hard_masks=masks)
        target = torch.arange(result.logits.shape[1]).view(1, -1, 1, 1)
        loss = sum((logits * torch.cos(target + k)).sum() for k, logits in enumerate(result.stage_logits))
        loss = loss + (result.logits ** 2).mean()
        loss.backward()
        grads[execution] = ({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
                            x.grad.clone(), {n: b.clone() for n, b in model.named_buffers()})
    (ps, xs, bs), (pd, xd, bd) = grads["sparse"], grads["dense"]
    stage3 = {id(p) for m in model.stage_modules(3) for p in m.parameters()}
    stage3_names = {n for n, p in model.named_parameters() if id(p) in stage3}
    assert set(ps) == set(pd) and stage3_names <= set(ps), "every stage-3 parameter must get a gradient"
    # e.g. Inception's block8.conv2d.bias: a per-channel constant before conv2d_7b's train-mode
    # batch norm, which removes it; its gradient is float noise, held to 1e-3 of the largest one
    floor = 1e-3 * max(float(g.abs().max()) for g in pd.values())
    for name in ps:
        assert_close_to_scale(ps[name], pd[name], name, floor=floor)
    assert_close_to_scale(xs, xd, "input")
    for name in bs:
        torch.testing.assert_close(bs[name], bd[name], atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("kind", sorted(BACKBONES))
def test_single_active_pixel_in_train_mode(kind):
    """One hard pixel gives no batch variance: both paths fall back to the running statistics."""
    model = build(kind, seed=2).train()
    images = random_images(batch=1)
    with torch.no_grad():
        grid = model.eval()(images, rho=1.0).stage_map.shape
    hard1 = torch.zeros(grid, dtype=torch.bool)
    hard1[0, 2, 3] = True
    model.train()
    sparse = model(images, execution="sparse", hard_masks=(hard1, hard1))
    dense = model(images, execution="dense", hard_masks=(hard1, hard1))
    torch.testing.assert_close(sparse.stage_logits[2], dense.stage_logits[2], atol=ATOL, rtol=0)


def test_weight_updates_are_seen_by_the_sparse_path(tiny_model):
    """No stale weight copies: updates through the optimizer, .data, load_state_dict or under
    inference_mode all reach spconv."""
    images = random_images(batch=1)
    conv = tiny_model.backbone.layer3[0].conv1
    for update in (lambda: conv.weight.data.mul_(-1.5),
                   lambda: tiny_model.load_state_dict(make_cascade(seed=11).state_dict())):
        with torch.no_grad():
            tiny_model(images, rho=1.0)  # a run before the update
        update()
        with torch.no_grad():
            sparse, dense = run_both(tiny_model, images, rho=1.0)
        assert_same_result(sparse, dense)
    with torch.inference_mode():
        sparse, dense = run_both(tiny_model, images, rho=1.0)
    assert_same_result(sparse, dense)


@pytest.mark.parametrize("kind", sorted(BACKBONES))
def test_batch_norm_without_running_stats_matches(kind):
    model = build(kind, seed=5).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.track_running_stats, m.running_mean, m.running_var = False, None, None
    sparse, dense = run_both(model, random_images(batch=2, height=64, width=96), rho=0.999)
    assert sparse.active_masks[2].sum() >= 10  # statistics of a handful of rows are ill-conditioned
    assert_same_result(sparse, dense)


@pytest.mark.parametrize("kind", sorted(BACKBONES))
def test_float64_paths_agree(kind):
    model = build(kind, seed=6).double().eval()
    sparse, dense = run_both(model, random_images(batch=2).double(), rho=0.9)
    assert_same_result(sparse, dense, atol=1e-10)


def test_unsupported_dtype_is_a_clear_error():
    model = make_cascade(seed=6).to(torch.bfloat16).eval()
    with pytest.raises(ValueError, match="spconv on cpu runs in"):
        model(random_images(batch=1).to(torch.bfloat16), rho=1.0)
