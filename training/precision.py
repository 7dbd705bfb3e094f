"""How a model computes on its device: bf16 autocast and channels_last memory on CUDA (the
matrix units' fast path), plain float32 on a CPU. One object decides, the training loop, the
evaluation and the benchmarks use it."""

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from training.model import PRECISIONS


@dataclass(frozen=True)
class Precision:
    autocast: torch.dtype | None   # None: float32 throughout
    channels_last: bool

    @classmethod
    def resolve(cls, name: str, device: torch.device) -> "Precision":
        """`auto`: bf16 + channels_last on CUDA, float32 elsewhere; `bf16` or `fp32` insist."""
        if name not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {name!r}")
        cuda = device.type == "cuda"
        if name == "bf16" or (name == "auto" and cuda):
            return cls(torch.bfloat16, channels_last=cuda)
        return cls(None, channels_last=False)

    @property
    def name(self) -> str:
        return "bf16" if self.autocast is not None else "fp32"

    def prepare(self, model: nn.Module) -> nn.Module:
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def inputs(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        """A batch on the device (asynchronously from pinned memory), in the model's layout."""
        images = images.to(device, non_blocking=True)
        if self.channels_last and images.ndim == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def context(self, device: torch.device):
        """The autocast region of forward passes (losses stay float32 outside it)."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast)


FP32 = Precision(None, channels_last=False)


@dataclass(frozen=True)
class Inputs:
    """uint8 (..., 3, h, w) batches -> the backbone's normalised float input on the device:
    views travel from the loader's workers as uint8 (a quarter of float32's bytes, no
    normalisation on the CPU) and are normalised here, after the copy."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: torch.device
    precision: Precision

    @classmethod
    def of(cls, augment, device: torch.device, precision: Precision) -> "Inputs":
        """The input of a model trained under `augment`'s normalisation (an Augment)."""
        return cls(augment.mean, augment.std, device, precision)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalise(self.unit(images))

    def normalise(self, unit: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] on the device -> the backbone's input."""
        mean = torch.tensor(self.mean, device=self.device).view(3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(3, 1, 1)
        return (unit - mean) / std

    def autocast(self):
        """The forward passes' autocast region (bf16 on CUDA by default)."""
        return self.precision.context(self.device)

    def unit(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images on the device (in the model's layout) in [0, 1]: the input before
        normalisation, and the reconstruction targets."""
        if images.dtype != torch.uint8:  # a view normalised twice would still train, wrongly
            raise TypeError(f"images must be uint8 (0..255), got {images.dtype}")
        return self.precision.inputs(images, self.device).float() / 255.0
