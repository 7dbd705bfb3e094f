"""From decoded pixels to network input, keeping quality: random crop and horizontal flip
(no resampling) by default; translation and small rotation on request, as in the reference
setup; the 10 random crops of evaluation."""

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from shards.boxes import misfit, one_box
from training.settings import check_count

EVAL_CROPS = 10


@dataclass(frozen=True)
class Augment:
    crop: int = 224
    flip: bool = True
    translate: float = 0.0   # largest shift, as a fraction of width and height
    rotate: float = 0.0      # largest rotation in degrees
    mean: tuple[float, float, float] = IMAGENET_DEFAULT_MEAN  # the backbone's normalisation
                                                              # (on the device: Inputs)
    std: tuple[float, float, float] = IMAGENET_DEFAULT_STD

    def __post_init__(self):
        if (len(self.mean) != 3 or len(self.std) != 3
                or not all(math.isfinite(value) for value in (*self.mean, *self.std))
                or min(self.std) <= 0):
            raise ValueError(f"mean and std need three finite values (std > 0), got "
                             f"{self.mean} and {self.std}")
        check_count("crop", self.crop, 16)
        if not 0 <= self.translate < 0.5 or not 0 <= self.rotate <= 45:
            raise ValueError("translate must be in [0, 0.5) and rotate in [0, 45] degrees")


def to_chw(pixels: np.ndarray) -> torch.Tensor:
    """An H x W x 3 uint8 view as a CHW uint8 tensor: normalised with the backbone's mean and
    deviation (augment.mean, .std) on the device, by training.precision.Inputs."""
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def _check_size(pixels: np.ndarray, crop: int) -> None:
    """The rule pretrain checks references by before training (shards.boxes.misfit)."""
    height, width = pixels.shape[:2]
    if misfit(pixels.shape, (crop, crop)):
        raise ValueError(f"image of {width}x{height} is smaller than the {crop}-pixel crop: "
                         "pass a smaller --crop")


def random_crop(pixels: np.ndarray, crop: int, rng: np.random.Generator) -> np.ndarray:
    """A uniform random crop x crop window (a view), drawn as shards.boxes.one_box draws."""
    _check_size(pixels, crop)
    top, left, height, width = one_box(pixels.shape, (crop, crop), rng)
    return pixels[top:top + height, left:left + width]


def centre_crop(pixels: np.ndarray, crop: int) -> np.ndarray:
    _check_size(pixels, crop)
    height, width = pixels.shape[:2]
    top, left = (height - crop) // 2, (width - crop) // 2
    return pixels[top:top + crop, left:left + crop]


def _warp(pixels: np.ndarray, augment: Augment, rng: np.random.Generator) -> np.ndarray:
    height, width = pixels.shape[:2]
    angle = float(rng.uniform(-augment.rotate, augment.rotate))
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
    matrix[:, 2] += rng.uniform(-augment.translate, augment.translate, 2) * (width, height)
    return cv2.warpAffine(pixels, matrix, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)


def train_view(pixels: np.ndarray, augment: Augment, rng: np.random.Generator) -> torch.Tensor:
    if augment.translate or augment.rotate:
        pixels = _warp(pixels, augment, rng)
    view = random_crop(pixels, augment.crop, rng)
    if augment.flip and rng.random() < 0.5:
        view = view[:, ::-1]
    return to_chw(view)


def centre_view(pixels: np.ndarray, augment: Augment) -> torch.Tensor:
    return to_chw(centre_crop(pixels, augment.crop))


def eval_views(pixels: np.ndarray, augment: Augment, rng: np.random.Generator,
               count: int = EVAL_CROPS) -> torch.Tensor:
    """`count` random crops, stacked: the model's score is their mean; one crop is the
    centre (as evaluate and probe take it: a single random crop would score by chance)."""
    if count == 1:
        return centre_view(pixels, augment)[None]
    return torch.stack([to_chw(random_crop(pixels, augment.crop, rng))
                        for _ in range(count)])
