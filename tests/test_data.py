"""Datasets in their on-disk layouts (built here, tiny), transforms, and check-data."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import torch

from sparse_lc import ConfigError, load_config
from sparse_lc.data import (
    CityscapesDataset,
    DataError,
    FolderDataset,
    SyntheticShapes,
    TrainTransform,
    VOCDataset,
    build_dataset,
    check_dataset,
    read_label,
    write_label,
)
from sparse_lc.data.palettes import voc_palette
from sparse_lc.data.transforms import random_crop, random_scale


def _image(path, h=24, w=32, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _label(path, values, h=24, w=32, palette=True):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    label = np.zeros((h, w), np.uint8)
    for i, v in enumerate(values):
        label[i::len(values)] = v
    if palette:
        write_label(str(path), label, voc_palette())
    else:
        cv2.imwrite(str(path), label)
    return label


def make_voc(root, ids=("a", "b"), val=("c",)):
    voc = root / "VOCdevkit" / "VOC2012"
    for split, names in (("train", ids), ("val", val)):
        (voc / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for n in names:
            _image(voc / "JPEGImages" / f"{n}.jpg")
            _label(voc / "SegmentationClass" / f"{n}.png", [0, 15, 255])
    return voc


def test_palette_png_labels_keep_class_ids(tmp_path):
    written = _label(tmp_path / "l.png", [0, 7, 20, 255])
    assert np.array_equal(read_label(str(tmp_path / "l.png")), written)


def test_voc_layout_and_aug_list(tmp_path):
    voc = make_voc(tmp_path)
    ds = VOCDataset(str(tmp_path), "train")  # a folder holding VOCdevkit works too
    image, label = ds.load(0)
    assert image.shape == (24, 32, 3) and set(np.unique(label)) == {0, 15, 255}
    (voc / "SegmentationClassAug").mkdir()
    _label(voc / "SegmentationClassAug" / "z.png", [3])
    _image(voc / "JPEGImages" / "z.jpg")
    (voc / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("/JPEGImages/z.jpg /SegmentationClassAug/z.png\n")
    aug = VOCDataset(str(voc), "train", aug=True)
    assert len(aug) == 1 and set(np.unique(aug.load(0)[1])) == {3}


def test_cityscapes_label_ids_are_mapped_to_train_ids(tmp_path):
    base = tmp_path / "leftImg8bit" / "val" / "ulm"
    _image(base / "ulm_000001_000019_leftImg8bit.png")
    _label(tmp_path / "gtFine" / "val" / "ulm" / "ulm_000001_000019_gtFine_labelIds.png", [7, 26, 0, 33], palette=False)
    ds = CityscapesDataset(str(tmp_path), "val")
    assert set(np.unique(ds.load(0)[1])) == {0, 13, 18, 255}  # road, car, bicycle, ignored
    _label(tmp_path / "gtFine" / "val" / "ulm" / "ulm_000001_000019_gtFine_labelTrainIds.png", [1, 2], palette=False)
    assert set(np.unique(CityscapesDataset(str(tmp_path), "val").load(0)[1])) == {1, 2}


def test_folder_layout(tmp_path):
    for n in ("x", "y"):
        _image(tmp_path / "img_dir" / "train" / f"{n}.jpg")
        _label(tmp_path / "ann_dir" / "train" / f"{n}.png", [0, 1, 2], palette=False)
    ds = FolderDataset(str(tmp_path), "train", classes=["bg", "a", "b"])
    assert len(ds) == 2 and ds.classes == ("bg", "a", "b") and ds.palette.shape == (3, 3)


def test_synthetic_is_deterministic_and_needs_depth():
    a, b = SyntheticShapes("train", 4, seed=3), SyntheticShapes("train", 4, seed=3)
    for i in range(4):
        assert all(np.array_equal(x, y) for x, y in zip(a.load(i), b.load(i)))
    assert not np.array_equal(a.load(0)[0], SyntheticShapes("val", 4, seed=3).load(0)[0])
    labels = np.stack([SyntheticShapes("train", 64).load(i)[1] for i in range(64)])
    assert set(np.unique(labels)) == set(range(6))
    # shape-coded classes (disk, square, triangle) share one colour distribution: per-class mean
    # hue/saturation statistics overlap, so colour alone cannot tell them apart
    ds = SyntheticShapes("train", 64)
    hsv_means = {k: [] for k in (1, 2, 3)}
    for i in range(64):
        image, label = ds.load(i)
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).reshape(-1, 3).astype(float)
        for k in hsv_means:
            if (label == k).sum() > 50:
                hsv_means[k].append(hsv[label.reshape(-1) == k].mean(0))
    centres = [np.mean(v, 0) for v in hsv_means.values()]
    spread = np.mean([np.std(v, 0) for v in hsv_means.values()], 0)
    assert all(np.all(np.abs(c - centres[0]) < spread) for c in centres)


def test_transforms_keep_labels_nearest_and_pad_with_ignore():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    label = rng.integers(0, 5, (20, 30)).astype(np.uint8)
    scaled_image, scaled_label = random_scale(image, label, rng, (1.6, 1.6))
    assert scaled_label.shape == (32, 48) and set(np.unique(scaled_label)) <= set(range(5))
    _, cropped = random_crop(image, label, rng, (40, 40))
    assert cropped.shape == (40, 40) and (cropped == 255).any()
    t = TrainTransform((32, 32), (0.5, 2.0), (0, 0, 0), (1, 1, 1))
    x, y = t(image, label, np.random.default_rng(1))
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    x2, y2 = t(image, label, np.random.default_rng(1))
    assert torch.equal(x, x2) and torch.equal(y, y2)  # a function of the seed


def test_dataset_keys_beyond_length_reaugment():
    cfg = load_config(overrides=["data.synthetic.num_train=4", "train.crop_size=[64,64]"])
    ds = build_dataset(cfg, train=True)
    assert torch.equal(ds[1][1], ds[1][1])
    assert not torch.equal(ds[1][0], ds[5][0])  # same image, another epoch: another augmentation


def test_missing_files_fail_before_work(tmp_path):
    voc = make_voc(tmp_path)
    os.remove(voc / "SegmentationClass" / "b.png")
    cfg = load_config(overrides=["data.type=voc", f"data.root={tmp_path}"])
    with pytest.raises(DataError, match=r"b.png: file missing \(1 missing files"):
        build_dataset(cfg, train=True)


def test_check_data_reports_each_problem_with_its_path(tmp_path):
    voc = make_voc(tmp_path, ids=("a", "b", "c", "d", "e"))
    os.remove(voc / "SegmentationClass" / "a.png")                        # missing pair
    (voc / "JPEGImages" / "b.jpg").write_bytes(b"not a jpeg")              # unreadable image
    _label(voc / "SegmentationClass" / "c.png", [0, 1], h=10, w=10)        # size mismatch
    _label(voc / "SegmentationClass" / "d.png", [0, 21, 40, 255])          # values out of range
    cfg = load_config(overrides=["data.type=voc", f"data.root={tmp_path}"])
    ds = build_dataset(cfg, train=True, require_files=False)
    problems = [str(p) for p in check_dataset(ds, num_classes=21, progress=False)]
    assert len(problems) == 4, problems
    assert any("a.png: missing" in p for p in problems)
    assert any("b.jpg: cannot decode image" in p for p in problems)
    assert any("c.png: size 10x10 differs from its image's 32x24" in p for p in problems)
    assert any("d.png: label values [21, 40] outside [0, 21) and 255" in p for p in problems)


def test_check_data_cli_exit_codes(tmp_path, capsys):
    from sparse_lc.cli import main
    make_voc(tmp_path)
    # os.devnull is an empty YAML file: the defaults, plus the overrides
    assert main(["check-data", os.devnull, "--set", "data.type=voc", "--set", f"data.root={tmp_path}"]) == 0
    assert "0 problem(s)" in capsys.readouterr().out
    _label(tmp_path / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "a.png", [99])
    assert main(["check-data", os.devnull, "--set", "data.type=voc", "--set", f"data.root={tmp_path}"]) == 1
    out = capsys.readouterr().out
    assert "a.png: label values [99]" in out and "1 problem(s)" in out


def test_check_data_keeps_going_past_a_broken_split(tmp_path, capsys):
    from sparse_lc.cli import main
    root = tmp_path / "d"
    _image(root / "img_dir" / "train" / "a.png")
    _label(root / "ann_dir" / "train" / "a.png", [0, 9], palette=False)      # out of range
    _label(root / "ann_dir" / "train" / "orphan.png", [0], palette=False)    # label without image
    sets = ["--set", "data.type=folder", "--set", f"data.root={root}", "--set", "data.classes=[a,b,c]",
            "--set", "model.num_classes=3"]
    assert main(["check-data", os.devnull, *sets]) == 1  # there is no val split at all
    out = capsys.readouterr().out
    assert "a.png: label values [9] outside [0, 3)" in out
    assert "orphan.png: label without an image" in out
    assert "img_dir/val: not found" in out


def test_folder_class_names_must_match_num_classes(tmp_path):
    _image(tmp_path / "img_dir" / "train" / "a.png")
    _label(tmp_path / "ann_dir" / "train" / "a.png", [0], palette=False)
    with pytest.raises(ConfigError, match="--set data.classes: names 2 classes but model.num_classes is 3"):
        load_config(overrides=["data.type=folder", f"data.root={tmp_path}", "data.classes=[a,b]",
                               "model.num_classes=3"])
    cfg = load_config(overrides=["data.type=folder", f"data.root={tmp_path}"])
    with pytest.raises(DataError, match="data.classes: a folder dataset needs its class names"):
        build_dataset(cfg, train=True)


def test_both_halves_missing_are_both_reported(tmp_path):
    voc = make_voc(tmp_path, ids=("a", "b"))
    os.remove(voc / "JPEGImages" / "a.jpg")
    os.remove(voc / "SegmentationClass" / "a.png")
    cfg = load_config(overrides=["data.type=voc", f"data.root={tmp_path}"])
    problems = [str(p) for p in check_dataset(build_dataset(cfg, True, require_files=False), 21, progress=False)]
    assert len(problems) == 2 and all("missing (both halves" in p for p in problems)
