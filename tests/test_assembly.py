"""The exact cheap assembly: the same labels, bit for bit, as argmax of the upsampled logits."""
from __future__ import annotations

import cv2
import pytest
import torch
import torch.nn.functional as F

import sparse_lc
from sparse_lc import assembly
from sparse_lc.apis import SAMPLES_DIR
from sparse_lc.assembly import assemble_labels, upsample_logits
from sparse_lc.utils import prepare_images


def reference(decided: torch.Tensor, size) -> torch.Tensor:
    """Today's (before this module) assembly, written out."""
    height, width = size
    up = F.interpolate(decided, size=(decided.shape[2] * 8, decided.shape[3] * 8), mode="bilinear",
                       align_corners=False)[:, :, :height, :width]
    return up.max(dim=1).indices


def random_map(kind: str, batch: int, classes: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    if kind == "noise":
        d = torch.randn(batch, classes, h, w, generator=gen)
    elif kind == "smooth":  # regions of one label, as a trained model's: most quads are read off the grid
        coarse = torch.randn(batch, classes, 3, 3, generator=gen) * 5
        d = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    elif kind == "near_ties":  # two classes 1e-7 apart: the exact path
        d = torch.randn(batch, classes, h, w, generator=gen)
        d[:, 1] = d[:, 0] + 1e-7 * torch.randn(batch, h, w, generator=gen)
    elif kind == "exact_ties":  # integers: ties broken as the reduction of the whole map breaks them
        d = torch.randint(-2, 3, (batch, classes, h, w), generator=gen).float() * 1e3
    else:  # cancellation: large cells whose interpolation is small
        d = torch.randn(batch, classes, h, w, generator=gen) * 1e4
        d[:, 1] = d[:, 0] + torch.randn(batch, h, w, generator=gen) * 1e-2
    return d.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("kind", ["noise", "smooth", "near_ties", "exact_ties", "cancellation"])
def test_random_maps_give_the_same_labels(kind):
    gen = torch.Generator().manual_seed(hash(kind) % 1000)
    for _ in range(60):
        batch, classes = int(torch.randint(1, 3, (), generator=gen)), int(torch.randint(2, 24, (), generator=gen))
        h, w = int(torch.randint(1, 14, (), generator=gen)), int(torch.randint(1, 14, (), generator=gen))
        size = (max(1, 8 * h - int(torch.randint(0, 8, (), generator=gen))),
                max(1, 8 * w - int(torch.randint(0, 8, (), generator=gen))))
        decided = random_map(kind, batch, classes, h, w, gen)
        assert torch.equal(assemble_labels(decided, size), reference(decided, size)), (batch, classes, h, w, size)


def test_one_class_and_float64():
    one = torch.randn(2, 1, 5, 6)
    assert torch.equal(assemble_labels(one, (37, 48)), torch.zeros(2, 37, 48, dtype=torch.long))
    gen = torch.Generator().manual_seed(3)
    for kind in ("smooth", "near_ties"):
        decided = random_map(kind, 2, 7, 9, 11, gen).double()
        assert torch.equal(assemble_labels(decided, (70, 85)), reference(decided, (70, 85)))


def test_every_path_is_taken(monkeypatch):
    """Read off the grid, settled by the candidates' interpolation, exact windows, and the whole
    map when labels change almost everywhere."""
    calls = {"exact": 0, "whole": 0}
    exact, whole = assembly._exact_labels, assembly.upsample_logits
    monkeypatch.setattr(assembly, "_exact_labels", lambda *a: calls.__setitem__("exact", 1) or exact(*a))
    monkeypatch.setattr(assembly, "upsample_logits", lambda *a: calls.__setitem__("whole", 1) or whole(*a))
    gen = torch.Generator().manual_seed(0)
    smooth = random_map("smooth", 1, 8, 30, 30, gen)
    smooth[0, :, 10, 10] += 1e-9 - smooth[0, :, 10, 10] + smooth[0, 0, 10, 10]  # one cell with a tie
    agree, _, _ = assembly._quads(smooth)
    assert 0 < float((~agree).float().mean()) <= assembly.FULL_ABOVE
    assert torch.equal(assemble_labels(smooth, (240, 240)), reference(smooth, (240, 240)))
    assert calls == {"exact": 1, "whole": 0}
    noise = random_map("noise", 1, 8, 30, 30, gen)
    assert torch.equal(assemble_labels(noise, (240, 240)), reference(noise, (240, 240)))
    assert calls["whole"] == 1


@pytest.mark.slow
def test_a_trained_models_outputs_give_the_same_labels():
    model, _ = sparse_lc.load_model()
    for n in range(6):
        image = cv2.imread(f"{SAMPLES_DIR}/shapes_{n}.png")
        image = cv2.resize(image, (image.shape[1] * 4 + 5, image.shape[0] * 4 + 3))  # 1029 x 771: a crop too
        with torch.no_grad():
            result = model(prepare_images(image, model.pixel_mean, model.pixel_std), rho=0.985)
        assert torch.equal(result.labels, reference(result.decided, result.size))


def test_the_result_holds_no_full_resolution_logits(tiny_model):
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        result = tiny_model(images, rho=0.9)
    held = [v for v in vars(result).values() if isinstance(v, torch.Tensor)]
    held += [t for v in vars(result).values() if isinstance(v, tuple) for t in v if isinstance(t, torch.Tensor)]
    assert max(t.numel() for t in held) == 2 * 64 * 96  # the labels; the logits would be K (5) times that
    assert result.logits.shape == (2, tiny_model.num_classes, 64, 96)  # on request
    assert torch.equal(result.logits, upsample_logits(result.decided, (64, 96)))
    assert torch.equal(result.labels, result.logits.max(dim=1).indices)
