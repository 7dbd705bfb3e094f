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
