"""The shards' PNG settings: lossless, read back by another decoder; and the benchmark that
compares them with the other candidates."""

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import distortions
from shards.png import decode_png, encode_png

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import png_settings


def test_the_shards_pngs_are_lossless_and_read_by_pillow(small_image):
    outputs = [small_image, distortions.apply(small_image, 3, 5, 1)[0],  # noise: every filter
               np.zeros_like(small_image), np.full_like(small_image, 255)]
    for pixels in outputs:
        data = encode_png(pixels)
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "PNG" and image.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(image), pixels)
        np.testing.assert_array_equal(decode_png(data), pixels)


def test_the_benchmark_compares_every_candidate_on_the_same_outputs(small_image):
    outputs = [small_image[..., ::-1].copy(), distortions.apply(small_image, 13, 3, 1)[0]]
    rows = {row["settings"]: row for row in png_settings.png_settings(outputs)}
    assert list(rows) == list(png_settings.PNG_CANDIDATES)
    assert rows["level 1, RLE, fast filters (the shards')"]["size_vs_shards"] == 1.0
    assert rows["level 6"]["bytes"] < rows["level 1 (the shards' before)"]["bytes"]  # zlib
    assert all(row["encode_ms"] > 0 and row["decode_ms"] > 0 for row in rows.values())
