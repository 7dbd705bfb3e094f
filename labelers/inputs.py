"""Input conventions of the reference implementations (shared/spec/labels.md).

Images travel as uint8 tensors N x 3 x H x W on the metric's device; each metric converts them:
- gray: MATLAB rgb2gray of uint8 RGB, weights (0.298936, 0.587043, 0.114021), ROUNDED to
  integers (MATLAB rounds half away from zero), as float values 0..255, N x 1 x H x W;
- unit RGB: float in [0, 1]; signed RGB: float in [-1, 1];
- pooled RGB (MDSI.m, VSI.m): float RGB 0..255 averaged over f x f blocks as MATLAB's
  conv2 'same' then every f-th pixel, f from the short side (`pooling_factor`, `box_downsample`).
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from distortions.colorspace import GRAY_WEIGHTS  # MATLAB rgb2gray's, defined once
from labelers.errors import InvalidPairError


def gray_rounded(rgb: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """MATLAB rgb2gray(uint8) as values 0..255 in `dtype`: N x 3 x H x W -> N x 1 x H x W; the
    weighted channels added in order in float64, then rounded (on a CPU by numpy, six times
    faster than torch's reduction and the same for every one of the 2^24 colours)."""
    if rgb.device.type == "cpu":
        channels = rgb.numpy()
        gray = np.multiply(channels[:, 0], GRAY_WEIGHTS[0], dtype=np.float64)
        gray += np.multiply(channels[:, 1], GRAY_WEIGHTS[1], dtype=np.float64)
        gray += np.multiply(channels[:, 2], GRAY_WEIGHTS[2], dtype=np.float64)
        gray += 0.5
        return torch.from_numpy(np.floor(gray, out=gray)[:, None]).to(dtype)
    weights = torch.tensor(GRAY_WEIGHTS, dtype=torch.float64, device=rgb.device)
    gray = (rgb.to(torch.float64) * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    return torch.floor(gray + 0.5).to(dtype)


def unit_rgb(rgb: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 -> float RGB in [0, 1]."""
    return rgb.to(dtype) / 255.0


def to_batch(images: np.ndarray | list[np.ndarray], device: torch.device | str,
             pinned: bool = False) -> torch.Tensor:
    """uint8 H x W x 3 (or N x H x W x 3, or a list of H x W x 3) -> uint8 N x 3 x H x W tensor;
    `pinned` (a CUDA machine's): copied once, into page-locked host memory for an asynchronous
    upload (a read-only array, such as Ray's object store gives, is copied anyway)."""
    if isinstance(images, list | tuple):
        if not images:
            raise InvalidPairError("no distorted images given")
        shapes = {np.shape(image) for image in images}
        if len(shapes) > 1:
            raise InvalidPairError(f"the distorted images differ in shape: {sorted(shapes)}")
        images = np.stack([np.asarray(image) for image in images])
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[None]
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise InvalidPairError(
            f"expected uint8 RGB images H x W x 3 (or N x H x W x 3), got {array.dtype} "
            f"{array.shape}"
        )
    if pinned:
        batch = torch.empty(array.shape, dtype=torch.uint8, pin_memory=True)
        batch.numpy()[...] = array
    else:
        batch = torch.from_numpy(np.require(array, requirements=["C_CONTIGUOUS", "WRITEABLE"]))
    return batch.permute(0, 3, 1, 2).to(device)


def pooling_factor(height: int, width: int) -> int:
    """f = max(1, round(min(H, W) / 256)) of FeatureSIM.m, MDSI.m and VSI.m, rounded half away
    from zero as MATLAB does (Python's round would give 2, not 3, for a short side of 640)."""
    return max(1, math.floor(min(height, width) / 256 + 0.5))


def box_downsample(x: torch.Tensor, f: int) -> torch.Tensor:
    """conv2(x, ones(f) / f^2, 'same') then x(1:f:end, 1:f:end) over the last two axes: means of
    f x f blocks starting (f - 1) // 2 pixels before the first one, zero beyond the image."""
    if f == 1:
        return x
    return F.avg_pool2d(F.pad(x, ((f - 1) // 2, f // 2) * 2), f)


def symmetric_pad(x: torch.Tensor, before: int, after: int | None = None) -> torch.Tensor:
    """MATLAB's 'symmetric' padding (numpy's too: the edge sample repeated, -1 -> 0 and
    length -> length - 1) of the last two dimensions, `before` samples ahead of each and
    `after` (default: `before`) behind."""
    after = before if after is None else after
    for dim in (-2, -1):
        length = x.shape[dim]
        if max(before, after) <= length:  # one reflection: the edge strips flipped (no gather)
            x = torch.cat([x.narrow(dim, 0, before).flip(dim), x,
                           x.narrow(dim, length - after, after).flip(dim)], dim)
            continue
        index = torch.arange(-before, length + after, device=x.device).remainder(2 * length)
        x = x.index_select(dim, torch.where(index >= length, 2 * length - 1 - index, index))
    return x
