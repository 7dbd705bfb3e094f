"""Types 27-31: colour diffusion, colour shift, colour quantization, saturation (HSV and Lab);
42: RGB channel shift."""

import numpy as np
from PIL import Image

from distortions.colorspace import (
    image_lab,
    kept_per_image,
    lab_to_rgb,
    rgb_to_gray,
    to_float,
    to_uint8,
)
from distortions.kernels import gaussian_blur_replicate
from distortions.palette import minimum_variance_palette

EDGE_SIGMA = 4.0
EDGE_FLOOR = 0.1
EDGE_PERCENTILES = (1.0, 99.0)


def apply_color_diffusion(img: np.ndarray, params: dict) -> np.ndarray:
    """Blur a* and b* with a Gaussian of std 1.5 a + 2, then scale them by a."""
    amount = params["amount"]
    lab = image_lab(img)
    chroma = np.ascontiguousarray(lab[..., 1:])
    lab[..., 1:] = gaussian_blur_replicate(chroma, 1.5 * amount + 2) * np.float32(amount)
    return to_uint8(lab_to_rgb(lab))


def edge_weight(x: np.ndarray) -> np.ndarray:
    """Where colour shifts show: gray gradient magnitude, Gaussian std 4, min-max normalised,
    floored at 0.1, then stretched between its 1st and 99th percentiles."""
    gy, gx = np.gradient(rgb_to_gray(x))
    edges = gaussian_blur_replicate(np.hypot(gx, gy).astype(np.float32), EDGE_SIGMA)
    low, high = edges.min(), edges.max()
    if high > low:
        edges = (edges - low) / (high - low)
    edges = np.clip(edges, EDGE_FLOOR, 1.0)
    low, high = np.percentile(edges, EDGE_PERCENTILES)
    if high > low:
        edges = np.clip((edges - low) / (high - low), 0.0, 1.0)
    return edges.astype(np.float32)


# a reference's 5 colour shift versions weigh by the same edges (about 7 ms each at 512x384)
image_edge_weight = kept_per_image(lambda img: edge_weight(to_float(img)))


def shifted_replicate(plane: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """plane moved by (dx, dy) pixels, the border replicated into the uncovered strip."""
    height, width = plane.shape
    rows = np.clip(np.arange(height) - dy, 0, height - 1)
    cols = np.clip(np.arange(width) - dx, 0, width - 1)
    return plane[rows[:, None], cols[None, :]]


def apply_color_shift(img: np.ndarray, params: dict) -> np.ndarray:
    """Shift G and blend it with the original G through the edge weight."""
    x = to_float(img)
    weight = image_edge_weight(img)
    green = x[..., 1]
    moved = shifted_replicate(green, params["shift_x"], params["shift_y"])
    x[..., 1] = weight * moved + (1 - weight) * green
    return to_uint8(x)


def apply_rgb_shift(img: np.ndarray, params: dict) -> np.ndarray:
    """Each channel moved by its own recorded (dy, dx) pixels, the border replicated."""
    planes = [shifted_replicate(img[..., c], dx, dy)
              for c, (dy, dx) in enumerate(params["offsets"])]
    return np.stack(planes, axis=-1)


def apply_color_quantization(img: np.ndarray, params: dict) -> np.ndarray:
    """Minimum-variance palette of n colours (Wu's, as MATLAB's rgb2ind), then Floyd-Steinberg
    dithering against it (Pillow's error diffusion to the nearest palette colour)."""
    palette = Image.new("P", (1, 1))
    palette.putpalette(minimum_variance_palette(img, params["colors"]).tobytes())  # n entries
    dithered = Image.fromarray(img).quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
    return np.array(dithered.convert("RGB"))


def apply_saturation_hsv(img: np.ndarray, params: dict) -> np.ndarray:
    """HSV saturation times f. With V = max(R, G, B), hsv2rgb is linear in S, so scaling S by
    f moves every channel to V + f (c - V); negative f overshoots past gray, as in KADID.
    V is taken on the uint8 channels (to_float is monotonic: the same floats, a third of the
    time of a max over the float image's last axis)."""
    x = to_float(img)
    value = to_float(np.maximum(np.maximum(img[..., 0], img[..., 1]), img[..., 2]))[..., None]
    return to_uint8(value + np.float32(params["factor"]) * (x - value))


def apply_saturation_lab(img: np.ndarray, params: dict) -> np.ndarray:
    """a* and b* times f (f = 1 is the identity, returned as is)."""
    if params["factor"] == 1:
        return img.copy()
    lab = image_lab(img)
    lab[..., 1:] *= np.float32(params["factor"])
    return to_uint8(lab_to_rgb(lab))
