"""A model registered before examples were synthetic carries a record: the erasure finds the
patient's image in an example document, as MLflow writes it, and nothing in a synthetic one.
(The download from a real registry runs in tests/integration/test_erasure.py.)"""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

from lineage.erasure.examples import _holds, _image_arrays
from lineage.transforms import to_array


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (20, 20), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_patients_image_is_found_in_an_example_and_no_other() -> None:
    patient, other = _png(1), _png(2)
    seen = to_array(Image.open(io.BytesIO(patient)), 16)
    zeros = np.zeros_like(seen)
    # what MLflow wrote for `input_example = test.images[:2]`, through a JSON round trip
    legacy = json.loads(json.dumps({"inputs": np.stack([zeros, seen]).tolist()}))
    synthetic = json.loads(json.dumps({"inputs": zeros[None].tolist()}))
    found = list(_image_arrays(legacy))
    assert [a.shape for a in found] == [(2, 3, 16, 16)]
    assert _holds(found, patient)
    assert not _holds(found, other)
    assert not _holds(list(_image_arrays(synthetic)), patient)


def test_documents_without_images_and_undecodable_bytes_hold_nothing() -> None:
    assert list(_image_arrays({"columns": ["a"], "data": [[1, 2], [3, 4]]})) == []
    assert list(_image_arrays(["text", {"x": [1.0, 2.0, 3.0]}])) == []
    image = [np.zeros((1, 3, 4, 4), dtype=np.float32)]
    assert not _holds(image, b"not an image")
