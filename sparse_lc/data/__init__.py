"""Datasets (VOC, Cityscapes, folder, synthetic), OpenCV transforms and file reading."""
from .base import SegDataset
from .builder import DATA_TYPES, build_dataset
from .check import DataProblem, check_dataset
from .cityscapes import CityscapesDataset
from .folder import FolderDataset
from .io import DataError, read_image, read_label, read_photo, write_label
from .synthetic import SyntheticShapes, render_scene
from .transforms import IGNORE_INDEX, EvalTransform, TrainTransform
from .voc import VOCDataset

__all__ = ["DATA_TYPES", "IGNORE_INDEX", "DataProblem", "build_dataset", "check_dataset", "CityscapesDataset", "DataError", "EvalTransform", "FolderDataset",
           "SegDataset", "SyntheticShapes", "TrainTransform", "VOCDataset", "read_image",
           "read_label", "read_photo", "render_scene", "write_label"]
