"""Turning uint8 pictures into the normalised float batch a :class:`LayerCascade` takes."""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch

CHANNEL_ORDERS = ("bgr", "rgb")


def prepare_images(images: Union[np.ndarray, torch.Tensor, Sequence[np.ndarray]],
                   mean: Sequence[float], std: Sequence[float],
                   channel_order: str = "bgr") -> torch.Tensor:
    """uint8 images -> normalised float32 RGB batch ``[B, 3, H, W]``.

    Accepts a numpy ``[H, W, 3]`` image (OpenCV layout), a ``[B, H, W, 3]`` array, a list of
    same-sized ``[H, W, 3]`` images, or a uint8 tensor ``[3, H, W]`` / ``[B, 3, H, W]``.
    ``channel_order`` says whether the 3 channels are "bgr" (OpenCV) or "rgb"; ``mean`` and
    ``std`` are RGB, on the 0-255 scale. Raises ValueError on any other rank, channel count or dtype.
    """
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
    _check_read(images)
    batch = _to_nchw_uint8(images)
    if channel_order == "bgr":
        batch = batch.flip(1)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (batch.float() - mean_t) / std_t


def _check_read(images) -> None:
    """ValueError for None where an image should be (alone or in a list): what ``cv2.imread``
    returns for a file it could not read."""
    hint = "cv2.imread returns None for a file it cannot read (missing, unreadable or not an image): check the path"
    if images is None:
        raise ValueError(f"expected an image, got None: {hint}")
    if isinstance(images, (list, tuple)):
        missing = [i for i, image in enumerate(images) if image is None]
        if missing:
            raise ValueError(f"images {missing} of the list are None: {hint}")


def _to_nchw_uint8(images) -> torch.Tensor:
    if isinstance(images, (list, tuple)):
        shapes = {getattr(im, "shape", None) for im in images}
        if len(images) == 0 or len(shapes) != 1:
            raise ValueError(f"expected a non-empty list of same-sized images, got shapes {sorted(map(str, shapes))}")
        images = np.stack([np.asarray(im) for im in images])
    if isinstance(images, np.ndarray):
        _check_uint8(images.dtype, images.shape)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"expected a uint8 image of shape [H, W, 3] or [B, H, W, 3], got {list(images.shape)}")
        return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if isinstance(images, torch.Tensor):
        _check_uint8(images.dtype, images.shape)
        if images.dim() == 3:
            images = images[None]
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected a uint8 tensor of shape [3, H, W] or [B, 3, H, W], got {list(images.shape)}")
        return images.cpu()
    raise ValueError(f"expected images as a numpy array, a list of arrays or a tensor, got {type(images).__name__}")


def _check_uint8(dtype, shape) -> None:
    if dtype not in (np.uint8, torch.uint8):
        raise ValueError(f"expected uint8 images (0-255), got dtype {dtype} with shape {list(shape)}")
