"""Checkpoints: written by rank 0 after every epoch (atomically: a temporary file renamed),
read back with torch.load(weights_only=True)."""

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
