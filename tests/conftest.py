"""Shared helpers: small cascades with random weights and non-trivial batch-norm statistics."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import pytest

from sparse_lc import LayerCascade, build_backbone
from sparse_lc.testing import random_images, randomize_weights

__all__ = ["CONVNEXT_SMALL", "IRNV2_SMALL", "MOBILENETV2_SMALL", "REPO", "TinyRun", "make_cascade", "random_images",
           "randomize_weights", "write_tiny_config"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the data check's cache of valid files goes to a folder of this test session, not the user's ~/.cache
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="sparse_lc_test_cache_")

# Inception-ResNet-v2 with every width / 16 and 1 / 2 / 2 blocks: the real topology (all block
# types, both reductions, the no-ReLU block8), fast enough for the equivalence tests.
IRNV2_SMALL = dict(backbone="inception_resnet_v2", width=1 / 16, depths=(1, 2, 2))
# ConvNeXt and MobileNetV2 at their registered small sizes (every block type, every dilation)
CONVNEXT_SMALL = dict(backbone="convnext_tiny", dims=(16, 24, 32, 40), depths=(1, 1, 2, 1))
MOBILENETV2_SMALL = dict(backbone="mobilenet_v2", width=0.25, depths=(1, 1, 1, 2, 1, 2, 1))


def make_cascade(backbone: str = "tiny", dilations=(2, 4), seed: int = 0, halo: int = 0,
                 num_classes: int = 5, head_channels: int = 16, **backbone_args) -> LayerCascade:
    net = build_backbone(backbone, dilations=tuple(dilations), **backbone_args)
    model = LayerCascade(net, num_classes=num_classes, head_channels=head_channels, halo=halo)
    return randomize_weights(model, seed)


@pytest.fixture
def tiny_model() -> LayerCascade:
    return make_cascade().eval()


def write_tiny_config(path: str) -> str:
    """A YAML config at ``path``: the synthetic configs' model and data (configs/base/
    synthetic_small.yaml) at widths 8, 32x32 scenes, 4 iterations; returns ``path``."""
    base = os.path.join(REPO, "configs", "base", "synthetic_small.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"_base_: {base}\n"
                "model: {backbone_args: {widths: [8, 8, 8], depths: [1, 1, 1]}, head_channels: 8}\n"
                "data: {synthetic: {num_train: 8, num_val: 2, num_calib: 2, size: [32, 32]}}\n"
                "train: {iters: 4, warmup_iters: 2, batch_size: 2, crop_size: [32, 32], log_interval: 2, "
                "checkpoint_interval: 2}\n"
                "eval: {rhos: [0.5, 1.0]}\n")
    return path


@dataclass(frozen=True)
class TinyRun:
    config: str      # the YAML file of write_tiny_config
    checkpoint: str  # final.pth of a 4-iteration training of it


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """A tiny cascade really trained (4 iterations, in this process) from a config file."""
    from sparse_lc import load_config
    from sparse_lc.training import train

    folder = tmp_path_factory.mktemp("tiny_run")
    config = write_tiny_config(str(folder / "tiny.yaml"))
    summary = train(load_config(config, [f"work_dir={folder / 'work'}"]), device="cpu", progress=False)
    return TinyRun(config, summary.final_checkpoint)


def assert_columns_align(table: str, headers) -> None:
    """Every right-aligned cell of ``table``'s rows (after the header line, the one holding ``headers[0]``)
    ends where its header ends: each header's right edge is the end of a word in every row that
    has anything in that column."""
    lines = table.splitlines()
    top = next(i for i, line in enumerate(lines) if headers[0] in line)
    edges = [lines[top].index(h) + len(h) for h in headers]
    for row in lines[top + 1:]:
        for header, edge in zip(headers, edges):
            if edge <= len(row) and row[edge - 1] != " ":
                assert edge == len(row) or row[edge] == " ", f"{row!r}: {header!r} ends at {edge}, a cell runs on"
            else:
                assert not row[edge - len(header):edge].strip(), f"{row!r}: nothing ends under {header!r}"
