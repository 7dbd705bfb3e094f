"""Reading a source image into uint8 RGB, orientation applied."""

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from pipeline.embedded import embedded_photo

EMBEDDED_PREFIX = "embedded:"


def read_rgb(source: str) -> np.ndarray:
    """A file path, or 'embedded:NAME' for a photo scikit-image ships, as uint8 RGB."""
    if source.startswith(EMBEDDED_PREFIX):
        return embedded_photo(source.removeprefix(EMBEDDED_PREFIX))
    with Image.open(Path(source)) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
