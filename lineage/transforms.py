"""The one image transform, used by training and by the inference server.

Train-time and serve-time preprocessing cannot drift because there is only this function
(the reference sample trains at 128 px and serves at 96 px by mistake). The image size the
model was trained with is recorded in `lineage.json` and read back by the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PIL import Image

if TYPE_CHECKING:
    import torch

DEFAULT_IMAGE_SIZE = 128
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_transform(image_size: int = DEFAULT_IMAGE_SIZE):  # type: ignore[no-untyped-def]
    """PIL image (any mode) -> normalized 3x`image_size`x`image_size` float tensor."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Lambda(_to_rgb),
            transforms.Resize(
                (image_size, image_size), interpolation=transforms.InterpolationMode.BILINEAR
            ),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def _to_rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def preprocess(image: Image.Image, image_size: int = DEFAULT_IMAGE_SIZE) -> torch.Tensor:
    tensor: torch.Tensor = build_transform(image_size)(image)
    return tensor
