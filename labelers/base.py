"""The interface every metric implements: reference-side work once, then any number of
distorted versions scored against it in one batch."""

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from labelers.errors import InputTooSmallError, InvalidPairError

# how far one metric's score on a GPU (or replayed elsewhere) may stand from this CPU's, absolute
# and relative (|score - cpu| <= DEVICE_TOLERANCE (1 + |cpu|)): bench-gpu's agreement check,
# the GPU tests and `inspect --deep`'s re-scoring
DEVICE_TOLERANCE = 1e-4


def network_on(network: nn.Module, device: torch.device) -> nn.Module:
    """A metric's network on `device` in eval mode; on CUDA with its weights in channels_last,
    so that its convolutions run and give their features in NHWC, the layout Hopper's kernels
    take (device run 13: DISTS 1.06 and LPIPS 1.23 times as fast, their scores the same bit for
    bit); on a CPU as loaded."""
    network = network.to(device).eval()
    if device.type == "cuda":
        network = network.to(memory_format=torch.channels_last)
    return network


class Metric(ABC):
    """A full-reference metric. Subclasses set the class attributes and implement
    `prepare` (reference-side work) and `compare` (scores of a batch of distorted versions)."""

    key: ClassVar[str]                # the metric's key in shards, e.g. "gmsd"
    higher_is_better: ClassVar[bool]  # direction: + (True) or - (False)
    best: ClassVar[float]             # the score of two identical images
    min_size: ClassVar[int]           # minimum short side of the input, in pixels
    # versions per pass on a CPU: few, so that a pass's arrays stay in the processor's caches
    cpu_chunk: ClassVar[int] = 2

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)

    @abstractmethod
    def prepare(self, ref: torch.Tensor) -> Any:
        """Reference-side work for one reference: `ref` is uint8 1 x 3 x H x W on self.device."""

    @abstractmethod
    def compare(self, prepared: Any, dist: torch.Tensor) -> torch.Tensor:
        """Scores of N distorted versions (uint8 N x 3 x H x W on self.device) against the
        prepared reference: a float64 tensor of N values."""

    def passes(self, dist: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """`dist` in the metric's own chunks on a CPU (at 512 x 384 on two cores, passes of
        two or four versions score faster than one pass of 16, the networks' too:
        docs/bench-labelers.md); whole on a GPU, where the Labeler has already sized the
        batch to the memory budget."""
        if self.device.type == "cuda":
            return (dist,)
        return dist.split(self.cpu_chunk)

    def compare_in_passes(self, prepared: Any, dist: torch.Tensor) -> torch.Tensor:
        """`compare` over each of `passes(dist)`, the scores joined in order."""
        return torch.cat([self.compare(prepared, part) for part in self.passes(dist)])

    def check_pair(self, ref: torch.Tensor, dist: torch.Tensor) -> None:
        """Raise a typed error unless ref (1 x 3 x H x W) and dist (N x 3 x H x W) fit."""
        if not isinstance(ref, torch.Tensor) or not isinstance(dist, torch.Tensor):
            raise InvalidPairError(
                f"{self.key}: expected torch tensors (uint8, channels first), got "
                f"{type(ref).__name__} and {type(dist).__name__} (Labeler.score takes H x W x 3 "
                f"arrays)"
            )
        if ref.dtype != torch.uint8 or dist.dtype != torch.uint8:
            raise InvalidPairError(
                f"{self.key}: expected uint8 images, got {ref.dtype} and {dist.dtype}"
            )
        if ref.ndim != 4 or ref.shape[:2] != (1, 3) or dist.ndim != 4 or dist.shape[1] != 3:
            raise InvalidPairError(
                f"{self.key}: expected 1 x 3 x H x W and N x 3 x H x W, got "
                f"{tuple(ref.shape)} and {tuple(dist.shape)}"
            )
        if ref.shape[2:] != dist.shape[2:]:
            raise InvalidPairError(
                f"{self.key}: reference is {tuple(ref.shape[2:])} but distorted images are "
                f"{tuple(dist.shape[2:])}"
            )
        if min(ref.shape[2:]) < self.min_size:
            raise InputTooSmallError(
                f"{self.key} needs a short side of at least {self.min_size} pixels, got "
                f"{min(ref.shape[2:])}"
            )

    def score(self, ref: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
        """Check the inputs, then prepare the reference and compare every distorted version."""
        self.check_pair(ref, dist)
        with torch.inference_mode():
            return self.compare_in_passes(self.prepare(ref.to(self.device)),
                                          dist.to(self.device))
