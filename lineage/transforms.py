"""The one image transform, used by training and by the inference server.

Train-time and serve-time preprocessing cannot drift because there is only this function
(the reference sample trains at 128 px and serves at 96 px by mistake). It is PIL and NumPy
only, so the inference image needs no torch: it computes exactly what torchvision's
``Resize((s, s), BILINEAR)`` + ``ToTensor()`` + ``Normalize(ImageNet)`` compute on a PIL image
(the same PIL resize, the same float32 arithmetic; a unit test compares them bit for bit).
The image size the model was trained with is recorded in `lineage.json` and read back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

DEFAULT_IMAGE_SIZE = 128
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MEAN = np.asarray(IMAGENET_MEAN, dtype=np.float32).reshape(3, 1, 1)
_STD = np.asarray(IMAGENET_STD, dtype=np.float32).reshape(3, 1, 1)


def to_array(image: Image.Image, image_size: int = DEFAULT_IMAGE_SIZE) -> np.ndarray:
    """PIL image (any mode) -> normalized float32 array, 3 x `image_size` x `image_size`."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    resized = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
    chw = np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) / 255.0
    normalized: np.ndarray = (chw - _MEAN) / _STD
    return np.ascontiguousarray(normalized, dtype=np.float32)


def build_transform(image_size: int = DEFAULT_IMAGE_SIZE) -> Callable[[Image.Image], torch.Tensor]:
    """`to_array` as a torch tensor (the training job's input)."""
    import torch

    def transform(image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(to_array(image, image_size))

    return transform


def preprocess(image: Image.Image, image_size: int = DEFAULT_IMAGE_SIZE) -> torch.Tensor:
    return build_transform(image_size)(image)
