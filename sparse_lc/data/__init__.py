"""Data: generated images (datasets and transforms come with training)."""
from .synthetic import make_shapes_image

__all__ = ["make_shapes_image"]
