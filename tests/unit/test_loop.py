"""The training loop: repeatable on CPU, and the kept weights are the best val epoch's."""

from __future__ import annotations

import torch

from training.data import Split
from training.loop import evaluate, fit, seed_everything
from training.model import build_model


def tiny_data(n: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 3, (n,), generator=g))


def train_once(epochs: int = 2) -> tuple[list[dict[str, float]], object]:
    seed_everything(5)
    model, pretrained = build_model(3, None)
    assert pretrained is False
    result = fit(
        model,
        tiny_data(24, 1),
        tiny_data(9, 2),
        epochs=epochs,
        learning_rate=1e-3,
        batch_size=8,
        seed=5,
        device=torch.device("cpu"),
    )
    history = [
        {k: v for k, v in m.as_dict().items() if k != "images_per_second"} for m in result.history
    ]
    return history, result


def test_same_seed_same_metrics_on_cpu() -> None:
    first, _ = train_once()
    second, _ = train_once()
    assert first == second


def test_kept_weights_are_the_best_val_epoch_and_reproduce_its_accuracy() -> None:
    history, result = train_once(epochs=3)
    best = max(range(len(history)), key=lambda i: history[i]["val_accuracy"])
    assert result.best_epoch == best + 1  # type: ignore[attr-defined]
    assert result.best_val_accuracy == history[best]["val_accuracy"]  # type: ignore[attr-defined]
    model, _ = build_model(3, None)
    model.load_state_dict(result.best_state)  # type: ignore[attr-defined]
    _, accuracy = evaluate(model, tiny_data(9, 2), torch.device("cpu"))
    assert accuracy == history[best]["val_accuracy"]
