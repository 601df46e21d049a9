"""Images/second of our training loop on 1 host vs N hosts (processes joined by
torch.distributed on this machine, as `lineage train --instance-count N` runs them), on the
same synthetic images. The 1-host run is the baseline measured in the same run.

    python benchmarks/multihost_throughput.py [--hosts 1,2] [--device cpu|cuda]
        [--images 512] [--epochs 2] [--batch-size 64]

On CPU each host gets cores // N threads, as each local "instance" gets its share of this
machine: on a 2-core machine two hosts cannot beat one (they split the same two cores and add
gradient all-reduces), which is the honest expectation. On a GPU machine, N processes share
the device(s) (NCCL). Prints JSON last.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.data import Split
from training.loop import fit
from training.model import build_model


def _host(
    rank: int, world: int, port: int, args: argparse.Namespace, results: dict[int, float]
) -> None:
    import torch.distributed as dist

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    use_cuda = args.device == "cuda"
    device = torch.device(f"cuda:{rank % torch.cuda.device_count()}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group(
            "nccl" if use_cuda else "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world,
        )
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.images, 3, 128, 128, generator=generator)
    labels = torch.randint(0, 10, (args.images,), generator=generator)
    data = Split(images, labels)
    empty = Split(images[:0], labels[:0])
    torch.manual_seed(42)
    model, _ = build_model(10, None)
    started = time.perf_counter()
    fitted = fit(
        model,
        data,
        empty,
        epochs=args.epochs,
        learning_rate=1e-3,
        batch_size=args.batch_size,
        seed=42,
        device=device,
    )
    elapsed = time.perf_counter() - started
    if rank == 0:
        # the hot loop's rate (all hosts' images per second) of the steady epochs
        steady = fitted.history[1:] or fitted.history
        results[world] = sum(m.images_per_second for m in steady) / len(steady)
        results[-world] = args.images * args.epochs / elapsed
    if world > 1:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1,2")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here")
    worlds = [int(n) for n in args.hosts.split(",")]
    manager = mp.Manager()
    results = manager.dict()
    for world in worlds:
        mp.spawn(_host, args=(world, _free_port(), args, results), nprocs=world, join=True)
    baseline = results[worlds[0]]
    report = {
        "device": args.device,
        "cpu_count": os.cpu_count(),
        "images": args.images,
        "batch_size_per_host": args.batch_size,
        "rows": [
            {
                "hosts": world,
                "images_per_second": round(results[world], 1),
                "end_to_end_images_per_second": round(results[-world], 1),
                "vs_baseline": round(results[world] / baseline, 2),
            }
            for world in worlds
        ],
    }
    print(f"{'hosts':>5} {'img/s (hot loop)':>17} {'img/s (end to end)':>19} {'vs 1':>5}")
    for row in report["rows"]:
        print(
            f"{row['hosts']:>5} {row['images_per_second']:>17} "
            f"{row['end_to_end_images_per_second']:>19} {row['vs_baseline']:>5}"
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
