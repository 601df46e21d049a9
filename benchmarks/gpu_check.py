"""The training core on CUDA vs CPU on a real published dataset: per-epoch metrics and
images/s through the same `fit`/`evaluate` path the Training job uses.

    python benchmarks/gpu_check.py DATASET_DIR [--epochs 3]

DATASET_DIR is a pulled dataset (``dataset/`` with ``manifest.csv``), e.g. from
``git clone --branch TAG <repo> && dvc pull``. Prints JSON last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lineage import manifest
from training.data import class_names, load_split
from training.loop import evaluate, fit, seed_everything
from training.model import build_model


def run_on(device_name: str, dataset: Path, epochs: int, batch_size: int) -> dict[str, object]:
    rows = manifest.read(dataset / manifest.MANIFEST_NAME)
    assert manifest.verify_files(dataset, rows) == [], "dataset does not match its manifest"
    classes = class_names(rows)
    splits = {s: load_split(dataset, rows, s, classes, 128) for s in ("train", "val", "test")}
    device = torch.device(device_name)
    seed_everything(42)
    model, _ = build_model(len(classes), None)
    started = time.perf_counter()
    result = fit(
        model,
        splits["train"],
        splits["val"],
        epochs=epochs,
        learning_rate=1e-3,
        batch_size=batch_size,
        seed=42,
        device=device,
    )
    wall = time.perf_counter() - started
    model.load_state_dict(result.best_state)
    test_loss, test_acc = evaluate(model, splits["test"], device)
    return {
        "device": device_name,
        "epochs": [m.as_dict() for m in result.history],
        "best_epoch": result.best_epoch,
        "best_val_accuracy": result.best_val_accuracy,
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "train_images": len(splits["train"]),
        "fit_wall_s": round(wall, 2),
        "images_per_second_overall": round(len(splits["train"]) * epochs / wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    results = [run_on("cpu", args.dataset, args.epochs, args.batch_size)]
    if torch.cuda.is_available():
        run_on("cuda", args.dataset, 1, args.batch_size)  # warm-up: cuDNN, allocator
        results.append(run_on("cuda", args.dataset, args.epochs, args.batch_size))
    summary = {
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "runs": results,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
