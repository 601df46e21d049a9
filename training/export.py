"""The kept weights as ONNX, checked against torch before anything is registered.

The inference image serves `model.onnx` with ONNX Runtime (no torch, no CUDA: a tenth of the
size, several times faster on a CPU). Serving another program than the one that was
evaluated is only acceptable if it computes the same answers, so the export is run on the
held-out test images through both: the largest absolute difference of the probabilities and
the share of equal predicted labels are recorded (run metrics and `lineage.json`), and a
difference over `PARITY_TOLERANCE` or any changed label fails the job with the numbers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lineage.errors import LineageError
from lineage.onnxmodel import ONNX_INPUT, ONNX_OUTPUT, OnnxModel

log = logging.getLogger("lineage.training")

ONNX_OPSET = 17  # supported by every ONNX Runtime since 1.11; MobileNetV3 needs nothing newer
PARITY_TOLERANCE = 1e-4  # max |p_torch - p_onnx| over the test images (float32 kernels differ)
PARITY_BATCH = 64


class ExportError(LineageError):
    """The ONNX export failed or does not compute what the trained model computes."""


@dataclass(frozen=True)
class Parity:
    images: int
    max_abs_diff: float
    label_agreement: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= PARITY_TOLERANCE and self.label_agreement == 1.0

    def metrics(self) -> dict[str, float]:
        return {
            "onnx_max_abs_diff": self.max_abs_diff,
            "onnx_label_agreement": self.label_agreement,
        }


def export_onnx(model: torch.nn.Module, path: Path, image_size: int) -> None:
    """Export with a dynamic batch dimension (the server batches requests)."""
    model.eval()
    example = torch.zeros(1, 3, image_size, image_size)
    try:
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    except Exception as exc:  # noqa: BLE001 - torch.onnx raises many types: all are an ExportError
        raise ExportError(f"exporting the model to ONNX failed: {str(exc)[:300]}") from None


def check_parity(model: torch.nn.Module, path: Path, images: torch.Tensor) -> Parity:
    """Both programs on the same images: the numbers that say whether ONNX may serve."""
    model.eval()
    backend = OnnxModel(path, threads=max(1, torch.get_num_threads()))
    worst, equal = 0.0, 0
    for start in range(0, len(images), PARITY_BATCH):
        batch = images[start : start + PARITY_BATCH]
        with torch.inference_mode():
            expected = torch.softmax(model(batch), dim=1).double().numpy()
        actual = backend.probabilities(batch.numpy().astype(np.float32))
        worst = max(worst, float(np.abs(expected - actual).max()))
        equal += int((expected.argmax(axis=1) == actual.argmax(axis=1)).sum())
    parity = Parity(len(images), worst, equal / len(images) if len(images) else 1.0)
    log.info(
        "ONNX parity on %d images: max |dp| %.2e, labels equal %.4f",
        parity.images,
        parity.max_abs_diff,
        parity.label_agreement,
    )
    if not parity.ok:
        raise ExportError(
            f"the ONNX export does not compute what the trained model computes on "
            f"{parity.images} test images: max probability difference {parity.max_abs_diff:.3e} "
            f"(allowed {PARITY_TOLERANCE:.0e}), labels equal {parity.label_agreement:.4f}",
            "nothing was registered; report it with the job log (torch and onnxruntime versions)",
        )
    return parity
