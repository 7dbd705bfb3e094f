"""Synthetic references for benchmarks: crops and flips of the embedded photos, written as PNG
files (Ray-free, so the device check can use it too)."""

from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.embedded import EMBEDDED_PHOTOS, embedded_photo


def synthetic_sources(count: int, folder: Path, width: int = 512, height: int = 384) -> str:
    """`count` width x height references cut and flipped from the embedded photos."""
    folder.mkdir(parents=True, exist_ok=True)
    photos = [embedded_photo(name) for name in EMBEDDED_PHOTOS]
    for i in range(count):
        photo = photos[i % len(photos)]
        top = (i * 37) % max(1, photo.shape[0] - height)
        left = (i * 53) % max(1, photo.shape[1] - width)
        crop = photo[top:top + height, left:left + width]
        crop = crop[:, ::-1] if (i // len(photos)) % 2 else crop
        Image.fromarray(np.ascontiguousarray(crop)).save(folder / f"synthetic_{i:03d}.png")
    return str(folder)
