"""Shared fixtures: small images the tests make or the project commits."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DATA = Path(__file__).parent / "data"
MINIMUM_IMAGE = DATA / "astronaut_192x176.png"


@pytest.fixture(scope="session")
def small_image() -> np.ndarray:
    """The committed 192 x 176 crop of skimage's astronaut (the bank's minimum size)."""
    with Image.open(MINIMUM_IMAGE) as image:
        return np.asarray(image.convert("RGB")).copy()


@pytest.fixture(scope="session")
def embedded_small() -> dict[str, np.ndarray]:
    """The five embedded photos at 256 x 192 (cover and centre-crop)."""
    from pipeline.embedded import EMBEDDED_PHOTOS, embedded_photo
    from pipeline.sizing import TargetSize, cover_and_crop

    size = TargetSize(256, 192)
    return {name: cover_and_crop(embedded_photo(name), size) for name in EMBEDDED_PHOTOS}
