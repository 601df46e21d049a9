"""One preprocessing for training and serving (PIL + NumPy, no torch needed to serve), equal
bit for bit to torchvision's; and the ONNX export computes what the torch model computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from lineage.architecture import build_network
from lineage.onnxmodel import OnnxModel
from lineage.transforms import IMAGENET_MEAN, IMAGENET_STD, to_array
from training.export import PARITY_TOLERANCE, ExportError, check_parity, export_onnx


def _torchvision(size: int) -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


@pytest.mark.parametrize(("mode", "size", "target"), [("RGB", (31, 47), 128), ("L", (200, 90), 64)])
def test_the_numpy_transform_equals_torchvisions_bit_for_bit(
    mode: str, size: tuple[int, int], target: int
) -> None:
    rng = np.random.default_rng(3)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)
    expected = _torchvision(target)(image.convert("RGB")).numpy()
    actual = to_array(image, target)
    assert actual.dtype == np.float32 and actual.shape == (3, target, target)
    assert np.array_equal(actual, expected)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = build_network(3)
    model.eval()
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(model, path, 64)
    return model, path


def test_the_onnx_export_matches_torch_with_any_batch_size(
    exported: tuple[torch.nn.Module, Path],
) -> None:
    model, path = exported
    images = torch.from_numpy(
        np.stack(
            [to_array(Image.new("RGB", (64, 64), (i * 20, 90, 200 - i * 10)), 64) for i in range(7)]
        )
    )
    parity = check_parity(model, path, images)
    assert parity.images == 7 and parity.label_agreement == 1.0
    assert parity.max_abs_diff <= PARITY_TOLERANCE
    session = OnnxModel(path, threads=1)
    for batch in (1, 5):  # the batch dimension is dynamic
        assert session.probabilities(images[:batch].numpy()).shape == (batch, 3)


def test_an_export_that_computes_something_else_fails_the_job(
    exported: tuple[torch.nn.Module, Path],
) -> None:
    _, path = exported
    other = build_network(3)
    other.eval()
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(0.05)
    images = torch.from_numpy(np.stack([to_array(Image.new("RGB", (64, 64), "white"), 64)]))
    with pytest.raises(ExportError, match="does not compute what the trained model computes"):
        check_parity(other, path, images)
