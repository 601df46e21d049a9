"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 images, 10 classes, offline."""

from __future__ import annotations

import numpy as np
from PIL import Image

from processing.sources.base import SourceRecord


def load() -> list[SourceRecord]:
    from sklearn.datasets import load_digits  # 4 s of imports (scipy): only when used

    digits = load_digits()
    # 0..16 intensities -> 0..255 grayscale, exactly (16 * 255 / 16); no resampling here:
    # sizing belongs to the shared transform, so train and serve see the same pixels.
    pixels = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    records = []
    for index, (image, target) in enumerate(zip(pixels, digits.target, strict=True)):

        def loader(img: np.ndarray = image) -> Image.Image:
            return Image.fromarray(img, mode="L")

        records.append(SourceRecord(f"digits-{index:04d}", str(int(target)), loader))
    return records
