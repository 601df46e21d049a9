"""The network, built the same way by the training job and the inference server.

Shared so that serving rebuilds exactly what was trained from `lineage.json` (architecture,
classes) and a plain state dict, without unpickling code.
"""

from __future__ import annotations

from torch import nn

ARCHITECTURE = "mobilenet_v3_small"
# torchvision builds MobileNetV3 with BatchNorm momentum 0.01, tuned for ImageNet's ~100k
# steps. On a few hundred steps the running statistics stay near their initial values, so
# eval-mode accuracy sits at chance while train accuracy climbs (seen here: 97% train, 10%
# val on digits). PyTorch's default 0.1 tracks the data within ~50 steps.
BATCHNORM_MOMENTUM = 0.1


def build_network(num_classes: int, backbone: nn.Module | None = None) -> nn.Module:
    """MobileNetV3-Small with a `num_classes` classifier (optionally on a given backbone)."""
    from torchvision.models import mobilenet_v3_small

    model = backbone if backbone is not None else mobilenet_v3_small(weights=None)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = BATCHNORM_MOMENTUM
    classifier = model.classifier
    assert isinstance(classifier, nn.Sequential)
    last = classifier[-1]
    assert isinstance(last, nn.Linear)
    if last.out_features != num_classes:
        classifier[-1] = nn.Linear(last.in_features, num_classes)
    return model
