"""What computes the probabilities: ONNX Runtime (the default, torch-free) or torch.

A model directory written by the training job holds `model.onnx` (exported from the kept
weights and checked against them on the held-out test images before it was registered); it
is served by ONNX Runtime, which on a CPU runs MobileNetV3-Small several times faster than
eager torch and needs neither torch nor CUDA in the image. A model registered before ONNX
export has only `weights.pt`: it is served by torch when the environment has torch (the
training image, a development venv), and refused with a clear message in the inference
image, which has none.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from lineage.onnxmodel import OnnxModel, softmax


class Backend(Protocol):
    name: str  # "onnxruntime" | "torch"

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """N x 3 x S x S float32 images -> N x C softmax probabilities (float64)."""
        ...


def cpu_threads() -> int:
    """The CPUs this process may run on (a container's cpuset, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


OnnxBackend = OnnxModel


class TorchBackend:
    name = "torch"

    def __init__(self, weights: Path, num_classes: int, threads: int) -> None:
        import torch

        from lineage.architecture import build_network

        torch.set_num_threads(threads)
        network = build_network(num_classes)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
        network.eval()
        self.network = network

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            logits = self.network(torch.from_numpy(batch))
        return softmax(logits.numpy())


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True
