"""MobileNetV3-Small with its classifier resized to the dataset's classes."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torchvision.models import MobileNet_V3_Small_Weights, mobilenet_v3_small

from lineage.architecture import ARCHITECTURE, BATCHNORM_MOMENTUM, build_network

log = logging.getLogger("lineage.training")

__all__ = ["ARCHITECTURE", "BATCHNORM_MOMENTUM", "PretrainedWeightsError", "build_model"]


class PretrainedWeightsError(Exception):
    """Weights were asked for by path and cannot be used."""


def build_model(num_classes: int, pretrained: str | None) -> tuple[nn.Module, bool]:
    """The model and whether it starts from ImageNet weights.

    `pretrained`: a path to a torchvision state dict (``.pth``), ``"torchvision"`` to try
    torchvision's download (fails without network, and we say so), or None/``"none"``.
    Never pretends: the returned flag is what is recorded as ``pretrained``.
    """
    model = mobilenet_v3_small(weights=None)
    loaded = False
    if pretrained and pretrained.lower() != "none":
        if pretrained.lower() == "torchvision":
            try:
                weights = MobileNet_V3_Small_Weights.IMAGENET1K_V1
                state = weights.get_state_dict(progress=False)
                model.load_state_dict(state)
                loaded = True
            except Exception as exc:  # noqa: BLE001 - no network is the normal case here
                log.warning(
                    "torchvision ImageNet weights unavailable (%s): starting from random init, "
                    "recorded as pretrained=false",
                    exc.__class__.__name__,
                )
        else:
            path = Path(pretrained)
            if path.is_dir():
                candidates = sorted([*path.glob("*.pth"), *path.glob("*.pt")])
                if len(candidates) != 1:
                    raise PretrainedWeightsError(
                        f"expected one .pth/.pt file in {path}, found {len(candidates)}"
                    )
                path = candidates[0]
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                model.load_state_dict(state)
            except FileNotFoundError:
                raise PretrainedWeightsError(f"pretrained weights {path} not found") from None
            except (RuntimeError, ValueError, OSError) as exc:
                raise PretrainedWeightsError(
                    f"cannot load pretrained weights {path}: {str(exc)[:300]}"
                ) from None
            loaded = True
    return build_network(num_classes, backbone=model), loaded
