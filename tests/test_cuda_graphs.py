"""CUDA graphs' plumbing, run on the CPU without graphs: padded rows that change nothing, static
buffers refilled per pass (rulebooks copied in, neighbour tables recomputed), MACs counted from
the recorded sources, eager fallback with one warning. The captures themselves: tests/test_cuda.py."""
from __future__ import annotations

import math
import warnings

import pytest
import torch

from sparse_lc import cuda_graphs
from sparse_lc.analysis import count_macs
from sparse_lc.cuda_graphs import CudaGraphWarning, bucket, graph_report
from sparse_lc.ops import SparseFeatures, pair_counts

from conftest import CONVNEXT_SMALL, IRNV2_SMALL, MOBILENETV2_SMALL, make_cascade, random_images


def test_buckets_pad_by_at_most_a_quarter():
    sizes = [bucket(n) for n in range(0, 20000)]
    assert all(b > n for n, b in enumerate(sizes)) and sizes == sorted(sizes)
    assert all(b <= max(256, 1.25 * n + 1) for n, b in enumerate(sizes) if n >= 256)
    assert len(set(sizes)) <= 4 * math.log2(20000 / 256) + 2  # four graphs per doubling of the rows


def test_padding_rows_are_nobodys_neighbours():
    mask = torch.rand(2, 7, 9, generator=torch.Generator().manual_seed(0)) < 0.6
    x = SparseFeatures.from_dense(torch.randn(2, 4, 7, 9), mask, "s")
    padded = x.padded(x.num_active + 70)  # more padding than one extra image holds
    n = x.num_active
    table = padded.active.neighbours((3, 3), (2, 2))[:, :n]
    assert int(table.max()) < n  # a real row sees real rows only
    assert torch.equal(padded.to_dense(), x.to_dense())  # padding is dropped when scattered


def test_neighbour_pairs_equal_the_rulebooks_pairs():
    """MACs counted from the neighbour table (as graph replays count them) = the rulebook's."""
    mask = torch.rand(2, 16, 20, generator=torch.Generator().manual_seed(1)) < 0.3
    x = SparseFeatures.from_dense(torch.randn(2, 4, 16, 20), mask, "s")
    for kernel, dilation in (((3, 3), (1, 1)), ((3, 3), (2, 2)), ((1, 7), (2, 2)), ((7, 1), (4, 4))):
        conv = torch.nn.Conv2d(4, 4, kernel, dilation=dilation, bias=False,
                               padding=tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation)))
        x.conv(conv)
        (key, pairs), = [kp for kp in pair_counts(x) if kp[0].endswith(f"k{kernel[0]}x{kernel[1]}d{dilation[0]}x"
                                                                         f"{dilation[1]}")]
        assert int(x.active.pair_count(kernel, dilation)) == pairs, key


@pytest.mark.parametrize("backbone", [dict(backbone="tiny"), dict(backbone="resnet18"), IRNV2_SMALL, CONVNEXT_SMALL,
                                      MOBILENETV2_SMALL],
                         ids=["tiny", "resnet18", "irnv2-small", "convnext-small", "mobilenetv2-small"])
def test_graph_path_equals_the_eager_path(backbone):
    """float64: the padded static-buffer path gives the eager path's logits, labels and MACs,
    pass after pass with other images and shares (buckets), one graph per bucket."""
    model = make_cascade(**backbone).fused().double()
    with torch.no_grad():
        for seed, rho in ((0, 0.5), (1, 0.9), (2, 0.97), (3, 1.0), (4, 0.0)):
            images = random_images(batch=2, height=96, width=128, seed=seed).double()
            model.cuda_graphs = False
            eager, eager_macs = count_macs(model, images, rho=rho)
            model.cuda_graphs = True
            graphed, graphed_macs = count_macs(model, images, rho=rho)
            for a, b in zip(graphed.stage_logits, eager.stage_logits):
                torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
            assert torch.equal(graphed.labels, eager.labels) and torch.equal(graphed.stage_map, eager.stage_map)
            assert graphed_macs.total() == eager_macs.total()
            assert [(r.name, r.macs) for r in graphed_macs.by_layer().values()] == \
                [(r.name, r.macs) for r in eager_macs.by_layer().values()]
    assert graph_report(model)[0].startswith("CUDA graphs: ")


def test_the_dense_run_is_replayed_too():
    """The dense run (rho 1, every pixel) is replayed from graphs as well, so that the cascade is
    compared with a dense run that skips the same dispatch; the masked reference path never is."""
    model = make_cascade(backbone="resnet18").fused().double()
    images = random_images(batch=2, height=64, width=96).double()
    with torch.no_grad():
        eager, eager_macs = count_macs(model, images, rho=1.0, execution="dense")
        model.cuda_graphs = True
        graphed, graphed_macs = count_macs(model, images, rho=1.0, execution="dense")
        model(images, rho=0.9, execution="dense")  # masked: eager
    torch.testing.assert_close(graphed.logits, eager.logits, atol=1e-12, rtol=0)
    assert graphed_macs.total() == eager_macs.total()
    assert graph_report(model) == ["CUDA graphs: 1 of dense stage2, 1 of dense stage3, 1 of stage1"]


def test_graphs_stay_out_of_training_and_gradients():
    model = make_cascade()
    model.cuda_graphs = True
    images = random_images(batch=2)
    model.train()(images, rho=0.9)  # train mode
    model.eval()(images, rho=0.9)  # gradients on
    assert graph_report(model) == []
    with torch.no_grad():
        model(images, rho=0.9)
    assert graph_report(model) != []
    model.double()  # the weights moved: the graphs are dropped
    assert graph_report(model) == []


def test_a_refused_capture_runs_eagerly_with_one_warning(monkeypatch):
    model = make_cascade().eval()
    model.cuda_graphs = True
    images = random_images(batch=2)

    def refuse(*args, **kwargs):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(cuda_graphs, "SparseStageGraph", refuse)
    with torch.no_grad():
        expected = model.eval()(images, rho=0.9, execution="dense")
        with pytest.warns(CudaGraphWarning, match="the sparse stages run eagerly.*not permitted when stream"):
            first = model(images, rho=0.9)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            second = model(images, rho=0.9)  # no second warning
    for result in (first, second):
        torch.testing.assert_close(result.logits, expected.logits, atol=1e-4, rtol=0)
    assert any("refused for the sparse stages" in line for line in graph_report(model))
