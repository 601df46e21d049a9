"""The ONNX form of the model, shared by the training job (which exports it and checks it
against torch) and the inference server (which serves it): the tensor names, the session
options, and softmax, so both compute probabilities the same way."""

from __future__ import annotations

from pathlib import Path

import numpy as np

ONNX_INPUT = "images"
ONNX_OUTPUT = "logits"


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    result: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return result


class OnnxModel:
    """An ONNX Runtime session on the CPU: N x 3 x S x S float32 -> N x C probabilities."""

    name = "onnxruntime"

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run([ONNX_OUTPUT], {ONNX_INPUT: batch})
        return softmax(np.asarray(logits))
