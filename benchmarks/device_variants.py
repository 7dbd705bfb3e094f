"""The device check's variants section: ways a metric might run faster on the device, each
measured in one run against the way the labels are made now (images/s of each, and the
largest score difference between them), for a session lent a GPU to read before it changes a
metric. None of them makes labels: they live here until a measurement earns one its place.

- ms_ssim, separable convolutions: its Gaussian window as two float64 conv2d (a row pass, a
  column pass) where the labels sum 11 shifted slices per pass (44 kernels per filtered
  image, each reading and writing the whole batch: a CPU's fastest way, perhaps not a GPU's).
- dists and lpips, channels_last: their networks' weights in NHWC, the layout Hopper's
  convolution kernels take (the profile's TF32 kernel is an NHWC one, fed by transposes).

And all ten in passes of a quarter, half, one and two times the labelers section's versions:
whether larger passes than a call's share of the memory budget gives (64 of 512 x 384 on an
H200 serving two calls at once) would label faster.
"""

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from bench_labelers import workload
from device_plan import Sizes
from device_timing import guarded, labeler_rate

import labelers
from labelers import ms_ssim


def separable_filter_valid(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """ms_ssim.filter_valid (filter2 of the separable window, 'valid') as two convolutions
    of one channel: along the rows, then along the columns."""
    leading, (height, width) = x.shape[:-2], x.shape[-2:]
    size = taps.numel()
    flat = x.reshape(-1, 1, height, width)
    rows = F.conv2d(flat, taps.view(1, 1, 1, size))
    return F.conv2d(rows, taps.view(1, 1, size, 1)).reshape(
        *leading, height - size + 1, width - size + 1)


@contextlib.contextmanager
def separable_ms_ssim(_metric) -> Iterator[None]:
    """MS-SSIM's filter_valid replaced by separable_filter_valid inside the block."""
    current = ms_ssim.filter_valid
    ms_ssim.filter_valid = separable_filter_valid
    try:
        yield
    finally:
        ms_ssim.filter_valid = current


@contextlib.contextmanager
def channels_last(metric) -> Iterator[None]:
    """The metric's network in channels_last (its convolutions then run, and give their
    features, in NHWC) inside the block."""
    network = metric.stages if metric.key == "dists" else metric.network
    network.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        network.to(memory_format=torch.contiguous_format)


VARIANTS: dict[str, tuple[str, Callable]] = {
    "ms_ssim": ("separable convolutions", separable_ms_ssim),
    "dists": ("channels_last", channels_last),
    "lpips": ("channels_last", channels_last),
}


def _against_current(key: str, name: str, change: Callable, device: torch.device,
                     ref: np.ndarray, versions: list[np.ndarray]) -> dict:
    current = labelers.Labeler([key], device, allow_missing=True)
    if key in current.absent:
        raise RuntimeError(f"{key}'s weights are absent")
    now = labeler_rate(current, ref, versions, device)["images_per_s"]
    expected = current.score(ref, versions)[key]
    other = labelers.Labeler([key], device)
    with change(other.metrics[key]):
        changed = labeler_rate(other, ref, versions, device)["images_per_s"]
        scores = other.score(ref, versions)[key]
    return {"variant": name, "current_images_per_s": now, "variant_images_per_s": changed,
            "speedup": round(changed / now, 3),
            "max_abs_difference": float(np.max(np.abs(scores - expected)))}


def _pass_sweep(device: torch.device, sizes: Sizes) -> dict[int, dict]:
    """All ten's images/s over twice the labelers section's versions in passes of each size."""
    ref, versions = workload(2 * sizes.versions, sizes.image)
    passes = sorted({max(1, sizes.versions * share // 4) for share in (1, 2, 4, 8)})
    return {size: guarded(f"all ten in passes of {size}", lambda n=size: labeler_rate(
        labelers.Labeler(device=device, allow_missing=True, batch_size=n), ref, versions,
        device)) for size in passes}


def variants(device: torch.device, sizes: Sizes) -> dict:
    """Each variant of VARIANTS against the current code, on the labelers section's work;
    then all ten in passes of several sizes."""
    ref, versions = workload(sizes.versions, sizes.image)
    return {"size": str(sizes.image), "versions": len(versions),
            "metrics": {key: guarded(f"variant {key:8s} {name}", lambda k=key, n=name, c=change:
                                     _against_current(k, n, c, device, ref, versions))
                        for key, (name, change) in VARIANTS.items()},
            "pass_sweep": _pass_sweep(device, sizes)}
