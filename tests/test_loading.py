"""Getting a model: bundled, from a checkpoint with its config, from a config; reading photos."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from sparse_lc import load_config, load_model
from sparse_lc.apis import BUNDLED_CHECKPOINT, class_names_and_palette
from sparse_lc.checkpoint import CheckpointError, save_checkpoint
from sparse_lc.data import DataError, read_photo


def test_bundled_model_is_trained_and_complete():
    model, cfg = load_model()
    assert cfg["data"]["type"] == "synthetic" and model.num_classes == 6
    names, palette = class_names_and_palette(cfg)
    assert names[2] == "square" and palette.shape == (6, 3)
    # a trained model: confident on an easy background patch
    grey = np.full((64, 64, 3), 128, np.uint8)
    assert model.predict(grey, rho=0.9).stage_shares[0] > 0.9


def test_checkpoint_alone_brings_its_config(tmp_path):
    overrides = ["model.backbone=tiny", "model.num_classes=4", "model.head_channels=8"]
    cfg = load_config(overrides=overrides)
    bundled, _ = load_model(checkpoint=BUNDLED_CHECKPOINT)  # same as load_model(): config from the file
    assert bundled.num_classes == 6
    from sparse_lc import build_model
    small = build_model(cfg["model"])
    path = tmp_path / "small.pth"
    save_checkpoint(str(path), {"model": small.state_dict(), "config": cfg})
    loaded, loaded_cfg = load_model(checkpoint=str(path))
    assert loaded_cfg["model"]["num_classes"] == 4
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), small.state_dict().values()))
    bare = tmp_path / "bare.pth"
    torch.save(small.state_dict(), bare)
    with pytest.raises(CheckpointError, match="bare.pth: holds no config; pass --config too"):
        load_model(checkpoint=str(bare))


def test_config_alone_builds_an_untrained_model(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {backbone: tiny, num_classes: 3, head_channels: 8}\n")
    model, cfg = load_model(config=str(path))
    assert model.num_classes == 3 and not model.training


@pytest.mark.parametrize("array, expected", [
    (np.full((4, 5), 65535, np.uint16), 255),
    (np.full((4, 5, 3), 0.5, np.float32), 128),
    (np.full((4, 5, 4), 77, np.uint8), 77),
])
def test_read_photo_normalises_depth_and_channels(tmp_path, array, expected):
    path = str(tmp_path / ("x.tif" if array.dtype == np.float32 else "x.png"))
    assert cv2.imwrite(path, array)
    image = read_photo(path)
    assert image.shape == (4, 5, 3) and image.dtype == np.uint8 and int(image[0, 0, 0]) == expected


def test_read_photo_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.png: no such file"):
        read_photo(str(tmp_path / "missing.png"))
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(DataError, match="text.png: cannot decode image"):
        read_photo(str(tmp_path / "text.png"))
