"""Benchmark the training stage: images per second of the shard loader alone (read, decode,
augment), of the model alone (forward + backward + Adam step on tensors already in memory),
and of the two together, on the CPU and on a GPU when there is one. The slower of the first
two bounds the third: the table says which.

Reads a generated dataset (default out/demo: run `make generate` first).
Writes bench-train.md and bench-train.json to --out.
"""

import argparse
import os
import platform
import time
from pathlib import Path

import torch
from report_files import write_report
from torch.utils.data import DataLoader

from shards.dataset import open_dataset
from training.losses import QualityLoss
from training.model import ModelConfig, build_model
from training.precision import FP32, Inputs
from training.shard_data import (
    ShardStream,
    StreamConfig,
    Target,
    distorted_index,
    reference_splits,
    split_shards,
)
from training.transforms import Augment


def loader(dataset: str, crop: int, batch: int, workers: int) -> DataLoader:
    data = open_dataset(dataset)
    shards = split_shards(data.location, distorted_index(data.location, data.shards),
                          reference_splits(data), "train")
    stream = ShardStream(StreamConfig(dataset, shards, Target(), Augment(crop=crop)))
    return DataLoader(stream, batch_size=batch, num_workers=workers,
                      pin_memory=torch.cuda.is_available())


def _rate(images_per_step: int, steps: int, step) -> float:
    step()  # warm-up (worker start, allocator, kernels)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return images_per_step * steps / (time.perf_counter() - start)


def past_prefetch(batches: DataLoader):
    """An iterator of `batches` past what its workers prepared while they started (each
    worker's prefetch queue): timed from here, a rate is of batches made while timed."""
    iterator = iter(batches)
    for _ in range(batches.num_workers * (batches.prefetch_factor or 0)):
        next(iterator)
    return iterator


def loader_rate(batches: DataLoader, steps: int) -> float:
    iterator = past_prefetch(batches)
    return _rate(batches.batch_size, steps, lambda: next(iterator))


def model_step(backbone: str, device: torch.device, batch: int, crop: int):
    """One training step on fixed in-memory tensors, and the model."""
    model = build_model(ModelConfig(backbone, init="random")).model
    model.to(device).train()
    adam, loss_fn = torch.optim.Adam(model.parameters(), lr=1e-4), QualityLoss()
    augment = Augment(crop=crop)
    inputs = Inputs.of(augment, device, FP32)  # as the loop normalises
    images = torch.randint(0, 256, (batch, 3, crop, crop), dtype=torch.uint8, device=device)
    targets = torch.rand(batch, device=device)

    def step(images=images, targets=targets):
        loss = loss_fn(model(inputs(images))[:, 0], targets.to(device))
        adam.zero_grad(set_to_none=True)
        loss.backward()
        adam.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def end_to_end_rate(batches: DataLoader, backbone: str, device: torch.device, crop: int,
                    steps: int) -> float:
    iterator = past_prefetch(batches)
    step = model_step(backbone, device, batches.batch_size, crop)
    return _rate(batches.batch_size, steps, lambda: step(*next(iterator)))


def measure(args, device: torch.device) -> dict:
    batches = loader(args.dataset, args.crop, args.batch_size, args.workers)
    data = loader_rate(batches, args.steps)
    model = _rate(args.batch_size, args.steps,
                  model_step(args.backbone, device, args.batch_size, args.crop))
    both = end_to_end_rate(loader(args.dataset, args.crop, args.batch_size, args.workers),
                           args.backbone, device, args.crop, args.steps)
    return {"device": str(device), "loader_images_per_s": round(data, 1),
            "model_images_per_s": round(model, 1), "end_to_end_images_per_s": round(both, 1),
            "bound_by": "data loading" if data < model else "the model"}


def markdown(results: dict) -> str:
    lines = [
        "# Training throughput (`make bench-train`)", "",
        f"{results['backbone']}, crop {results['crop']}, batch {results['batch_size']}, "
        f"{results['workers']} loader workers, dataset `{results['dataset']}`; "
        f"{results['machine']}.", "",
        "| device | loader (read + decode + augment) | model (fwd + bwd + Adam) | together | "
        "bound by |", "|---|---:|---:|---:|---|"]
    for row in results["runs"]:
        lines.append(f"| {row['device']} | {row['loader_images_per_s']} img/s | "
                     f"{row['model_images_per_s']} img/s | {row['end_to_end_images_per_s']} "
                     f"img/s | {row['bound_by']} |")
    return "\n".join(lines) + "\n"


def write(results: dict, out: Path) -> None:
    write_report(out, "bench-train", results, markdown(results))
    print(markdown(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="out/demo")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default="docs")
    args = parser.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available()
                                       else [])
    results = {"backbone": args.backbone, "crop": args.crop, "batch_size": args.batch_size,
               "workers": args.workers, "dataset": args.dataset,
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} "
                          f"CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"
                          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available()
                             else ", no GPU"),
               "runs": [measure(args, device) for device in devices]}
    write(results, Path(args.out))


if __name__ == "__main__":
    main()
