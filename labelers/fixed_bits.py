"""Arithmetic whose bits on a CPU are set by the values and shapes alone: not by the batch an
image is scored in, torch's thread count or MKL's instruction path (a shard made again on
another cluster labels its samples with the same bytes). On a CPU each computes through numpy,
on one thread; on CUDA through torch."""

import numpy as np
import torch


def ieee_sqrt(x: torch.Tensor) -> torch.Tensor:
    """The correctly rounded square root, on every machine: torch's CPU sqrt goes through MKL's
    vector library, whose result for the same float64 differs by an ulp from one instruction
    path (AVX-512, AVX2) to another and from IEEE's; numpy's is IEEE's, as CUDA's is."""
    if x.device.type != "cpu":
        return torch.sqrt(x)
    return torch.from_numpy(np.sqrt(x.detach().contiguous().numpy()))


def _rows(values: torch.Tensor, dims: tuple[int, ...]) -> np.ndarray:
    """`values` as a numpy array whose last axis holds, row by row, the values `dims` span."""
    reduced = sorted({dim % values.dim() for dim in dims})
    kept = [dim for dim in range(values.dim()) if dim not in reduced]
    array = values.detach().permute(*kept, *reduced).contiguous().numpy()
    return array.reshape(*array.shape[:len(kept)], -1)


def _reduced_shape(values: torch.Tensor, dims: tuple[int, ...], keepdim: bool) -> list[int]:
    reduced = {dim % values.dim() for dim in dims}
    return [1 if dim in reduced else size for dim, size in enumerate(values.shape)
            if keepdim or dim not in reduced]


def fixed_sum(values: torch.Tensor, dims: tuple[int, ...], keepdim: bool = False
              ) -> torch.Tensor:
    """values.sum(dims) in an order that the shape alone sets: on a CPU as numpy's (pairwise)
    sums of rows, the same bits in any batch and with any thread count (torch's CPU reduction
    splits a long sum among its threads, and reduces a batch of one in another order than of
    several); torch's on CUDA."""
    if values.device.type != "cpu":
        return values.sum(dim=dims, keepdim=keepdim)
    sums = np.asarray(_rows(values, dims).sum(axis=-1))  # (a 0-d array, not a numpy scalar)
    return torch.from_numpy(sums).reshape(_reduced_shape(values, dims, keepdim))


def fixed_mean(values: torch.Tensor, dims: tuple[int, ...], keepdim: bool = False
               ) -> torch.Tensor:
    """values.mean(dims), on a CPU as `fixed_sum` (numpy's sums of rows, then divided)."""
    if values.device.type != "cpu":
        return values.mean(dim=dims, keepdim=keepdim)
    means = np.asarray(_rows(values, dims).mean(axis=-1))
    return torch.from_numpy(means).reshape(_reduced_shape(values, dims, keepdim))


def image_means(values: torch.Tensor) -> torch.Tensor:
    """Each image's mean over all its values (N x ... -> N), `fixed_mean`'s bits."""
    return fixed_mean(values, tuple(range(1, values.dim())))


def image_stds(values: torch.Tensor) -> torch.Tensor:
    """Each image's standard deviation with N - 1 normalisation (MATLAB's std2), the same bits
    for an image in any batch and with any thread count, as `fixed_mean`."""
    if values.device.type != "cpu":
        return values.flatten(1).std(dim=1, correction=1)
    rows = _rows(values, tuple(range(1, values.dim())))
    return torch.from_numpy(np.asarray(rows.std(axis=-1, ddof=1)))
