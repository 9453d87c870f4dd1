"""Datasets (VOC, Cityscapes, folder, synthetic), OpenCV transforms and file reading."""
from .base import SegDataset
from .cityscapes import CityscapesDataset
from .folder import FolderDataset
from .io import DataError, read_image, read_label, write_label
from .synthetic import SyntheticShapes, render_scene
from .transforms import IGNORE_INDEX, EvalTransform, TrainTransform
from .voc import VOCDataset

__all__ = ["IGNORE_INDEX", "CityscapesDataset", "DataError", "EvalTransform", "FolderDataset",
           "SegDataset", "SyntheticShapes", "TrainTransform", "VOCDataset", "read_image",
           "read_label", "render_scene", "write_label"]
