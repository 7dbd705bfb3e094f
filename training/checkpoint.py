"""Checkpoints: written by rank 0 after every epoch, and every N batches when asked
(atomically: a temporary file renamed), read back with torch.load(weights_only=True); the
random state a mid-epoch checkpoint keeps to continue exactly."""

import os
from pathlib import Path

import torch

LAST = "last.pt"
BEST = "best.pt"


def save(state: dict, path: Path) -> None:
    staged = path.with_suffix(path.suffix + ".partial")
    torch.save(state, staged)
    os.replace(staged, path)


def load(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: nothing to resume (drop --resume to "
                                "start afresh)")
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The torch generators this process draws from (dropout, drop-path): the CPU one, and
    the device's when it is a GPU. The data streams seed their own (seed, epoch, rank)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
