"""Datasets (VOC, Cityscapes, folder, synthetic) built by name, OpenCV transforms, file reading."""
from . import cityscapes, folder, synthetic, voc  # noqa: F401  (registers the datasets)
from .check import DataProblem, check_dataset
from .cityscapes import CityscapesDataset
from .dataset import DATASETS, SegDataset, build_dataset, register_dataset
from .folder import FolderDataset
from .io import IMAGE_SUFFIXES, DataError, read_image, read_label, read_photo, to_uint8, write_label
from .synthetic import SyntheticShapes, render_scene
from .transforms import IGNORE_INDEX, EvalTransform, TrainTransform, labels_on_grid
from .voc import VOCDataset

__all__ = ["DATASETS", "IGNORE_INDEX", "IMAGE_SUFFIXES", "CityscapesDataset", "DataError", "DataProblem",
           "EvalTransform", "FolderDataset", "SegDataset", "SyntheticShapes", "TrainTransform", "VOCDataset",
           "build_dataset", "check_dataset", "labels_on_grid", "read_image", "read_label", "read_photo",
           "register_dataset", "to_uint8", "render_scene", "write_label"]
