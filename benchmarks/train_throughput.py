"""Images/second of our training loop vs a bare torchvision loop, on the same tensors.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--images 512] [--epochs 3]
    python benchmarks/train_throughput.py --pipeline        # + wall time of `lineage pipeline`

Both loops train MobileNetV3-Small with Adam on identical batches; the ratio
ours / bare is what lineage costs in the hot loop (goal >= 0.95). Prints JSON last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.data import Split
from training.loop import fit
from training.model import build_model


def bare_loop(
    model: nn.Module, data: Split, epochs: int, batch_size: int, seed: int, device: torch.device
) -> float:
    """The loop a torchvision tutorial writes: no metrics, no callbacks. Returns images/s."""
    torch.manual_seed(seed)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(seed)
    seen = 0
    _sync(device)
    started = time.perf_counter()
    for _ in range(epochs):
        permutation = torch.randperm(len(data), generator=order)
        for start in range(0, len(data), batch_size):
            idx = permutation[start : start + batch_size]
            images = data.images[idx].to(device, non_blocking=True)
            labels = data.labels[idx].to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(images), labels)
            loss.backward()
            optimizer.step()
            seen += len(idx)
    _sync(device)
    return seen / (time.perf_counter() - started)


def ours(
    model: nn.Module, data: Split, epochs: int, batch_size: int, seed: int, device: torch.device
) -> tuple[float, float]:
    """(hot-loop images/s, end-to-end images/s). The hot loop is what `fit` times per epoch;
    end to end adds the once-per-fit BatchNorm recalibration (precise BN) and metrics."""
    empty = Split(torch.empty(0, *data.images.shape[1:]), torch.empty(0, dtype=torch.long))
    _sync(device)
    started = time.perf_counter()
    result = fit(
        model,
        data,
        empty,
        epochs=epochs,
        learning_rate=1e-3,
        batch_size=batch_size,
        seed=seed,
        device=device,
    )
    _sync(device)
    total = time.perf_counter() - started
    hot_seconds = sum(len(data) / m.images_per_second for m in result.history)
    return len(data) * epochs / hot_seconds, len(data) * epochs / total


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def pipeline_wall_time() -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "lineage",
            "pipeline",
            "--version",
            "bench",
            "--fraction",
            "0.5",
            "--epochs",
            "3",
            "--repo",
            f"bench-{os.getpid()}",
            "--json",
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--pipeline",
        action="store_true",
        help="also time `lineage pipeline` (needs `lineage stack up`)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    data = Split(
        torch.randn(args.images, 3, args.image_size, args.image_size, generator=generator),
        torch.randint(0, 10, (args.images,), generator=generator),
    )
    # warm-up (allocator, cuDNN autotune, thread pools) once for both
    bare_loop(build_model(10, None)[0], data, 1, args.batch_size, 0, device)
    rows = []
    for repeat in range(args.repeats):
        bare = bare_loop(
            build_model(10, None)[0], data, args.epochs, args.batch_size, repeat, device
        )
        mine, end_to_end = ours(
            build_model(10, None)[0], data, args.epochs, args.batch_size, repeat, device
        )
        rows.append(
            {
                "bare_images_per_s": round(bare, 1),
                "ours_images_per_s": round(mine, 1),
                "ratio": round(mine / bare, 3),
                "ours_end_to_end_images_per_s": round(end_to_end, 1),
                "end_to_end_ratio": round(end_to_end / bare, 3),
            }
        )
        print(
            f"repeat {repeat}: bare {bare:.1f} img/s, ours {mine:.1f} img/s (hot loop), "
            f"ratio {mine / bare:.3f}; end to end {end_to_end:.1f} img/s, "
            f"ratio {end_to_end / bare:.3f}",
            flush=True,
        )
    summary = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "images": args.images,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "runs": rows,
        "median_ratio": sorted(r["ratio"] for r in rows)[len(rows) // 2],
    }
    if args.pipeline:
        summary["pipeline_v1_digits_wall_s"] = round(pipeline_wall_time(), 1)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
