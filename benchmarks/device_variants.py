"""The device check's variants section: ways the serving process's work might run faster on the
device, each measured in one run against the way it runs now (images/s of each, and the
largest difference between their outputs), for a session lent a GPU to read before it changes
the code. None of them makes labels or images: they live here until a measurement earns one
its place (device run 13 earned DISTS's and LPIPS's networks channels_last on CUDA, 1.06 and
1.23 times as fast with the same scores, and turned MS-SSIM's window as two float64
convolutions down, 0.84 times as fast as its shifted slices).

- vif, tap sums: corrDn's correlations on the device as the CPU computes them, the sum of the
  window's shifted views times each tap, where the GPU runs float64 conv2d (cuDNN's float64
  convolutions lost to shifted slices for MS-SSIM's window).
- ms_ssim, fused multiply-adds: each tap of its window's shifted sums added in one kernel
  (add_ with alpha) where the labels multiply into a buffer, then add it (the CPU's fastest
  way, with its bits).
- the learned denoiser's network in channels_last: its passes share the serving process with
  the labels.
- two calls at once, each on a CUDA stream of its own: the serving process's two threads
  queue their kernels on the device's one stream now, so one call's small kernels (its
  reference's prepare, a pyramid's coarse levels) wait behind the other's large ones.

And all ten in passes of a quarter, half, one and two times the labelers section's versions:
whether larger passes than a call's share of the memory budget gives (64 of 512 x 384 on an
H200 serving two calls at once) would label faster (in run 13, 64 did best: 331 images/s,
against 235 in passes of 16 and 322 in passes of 128).
"""

import contextlib
import threading
from collections.abc import Callable, Iterator

import numpy as np
import torch
from bench_labelers import workload
from device_plan import Sizes
from device_timing import guarded, labeler_rate, synchronize, timed

import labelers
from distortions import denoiser
from labelers import ms_ssim, vif
from pipeline.scheduling import GPU_ACTOR_CONCURRENCY


def corr_dn_by_taps(images: torch.Tensor, filters: torch.Tensor, step: int = 1,
                    start: tuple[int, int] = (0, 0),
                    stop: tuple[int, int] | None = None) -> torch.Tensor:
    """vif.corr_dn by the CPU's route (vif._tap_sum) on any device."""
    window = vif._reflected_window(images, filters.shape[-1], step, start, stop)
    return vif._tap_sum(window, filters, step)


@contextlib.contextmanager
def vif_by_taps(_metric) -> Iterator[None]:
    """VIF's corr_dn replaced by corr_dn_by_taps inside the block."""
    current = vif.corr_dn
    vif.corr_dn = corr_dn_by_taps
    try:
        yield
    finally:
        vif.corr_dn = current


def shifted_sum_fused(x: torch.Tensor, taps: torch.Tensor, dim: int) -> torch.Tensor:
    """ms_ssim._shifted_sum with each tap's product added in one kernel (add_ with alpha: a
    fused multiply-add, three passes over the memory where a product, then its sum, take
    five)."""
    length = x.shape[dim] - taps.numel() + 1
    weights = taps.tolist()
    total = x.narrow(dim, 0, length) * weights[0]
    for k in range(1, len(weights)):
        total.add_(x.narrow(dim, k, length), alpha=weights[k])
    return total


@contextlib.contextmanager
def ms_ssim_fused(_metric) -> Iterator[None]:
    """MS-SSIM's _shifted_sum replaced by shifted_sum_fused inside the block."""
    current = ms_ssim._shifted_sum
    ms_ssim._shifted_sum = shifted_sum_fused
    try:
        yield
    finally:
        ms_ssim._shifted_sum = current


STREAM_CALLS = 3  # calls each thread makes in the timed run of the streams variant

VARIANTS: dict[str, tuple[str, Callable]] = {
    "vif": ("tap sums", vif_by_taps),
    "ms_ssim": ("fused multiply-adds", ms_ssim_fused),
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
    return _compared(name, now, changed, np.max(np.abs(scores - expected)))


def _compared(name: str, now: float, changed: float, difference: float) -> dict:
    return {"variant": name, "current_images_per_s": now, "variant_images_per_s": changed,
            "speedup": round(changed / now, 3), "max_abs_difference": float(difference)}


def denoiser_batch(ref: np.ndarray, count: int, device: torch.device
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` copies of `ref` with Gaussian noise of sigma 0.1 in [0, 1] as the network takes
    them (float32, N x 3 x H x W on `device`), and their sigmas."""
    noisy = np.clip(ref / 255 + np.random.default_rng(0).normal(0, 0.1, ref.shape), 0, 1)
    batch = torch.from_numpy(noisy.astype(np.float32).transpose(2, 0, 1))[None]
    batch = batch.expand(count, -1, -1, -1).contiguous().to(device)
    return batch, torch.full((count,), 0.1, device=device)


def network_rate(network: torch.nn.Module, batch: torch.Tensor, sigmas: torch.Tensor
                 ) -> tuple[float, torch.Tensor]:
    """(images/s of one pass after a warm-up, the output) of the denoiser's network."""
    with torch.inference_mode():
        output = network(batch, sigmas)
        synchronize(batch.device)
        seconds = timed(lambda: (network(batch, sigmas), synchronize(batch.device)))
    return round(len(batch) / seconds, 2), output


def _denoiser_channels_last(device: torch.device, sizes: Sizes) -> dict:
    """The denoiser's network as it runs now against channels_last, on the denoiser section's
    batch: images/s of each and their outputs' largest difference (in [0, 1])."""
    denoiser.use_denoiser(device=str(device))
    network = denoiser.active_denoiser().network
    batch, sigmas = denoiser_batch(workload(1, sizes.image)[0], sizes.denoise_images, device)
    now, expected = network_rate(network, batch, sigmas)
    network.to(memory_format=torch.channels_last)
    try:
        changed, output = network_rate(network, batch, sigmas)
    finally:
        network.to(memory_format=torch.contiguous_format)
    return _compared("channels_last", now, changed, (output - expected).abs().max().item())


def _own_stream(device: torch.device) -> contextlib.AbstractContextManager:
    """A CUDA stream of this thread's own, current inside the block (nothing on a CPU)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.cuda.stream(torch.cuda.Stream(device))


def _calls_at_once(labeler: labelers.Labeler, ref: np.ndarray, versions: list[np.ndarray],
                   own_streams: bool, calls: int) -> tuple[float, dict]:
    """(images/s, the last call's scores) of GPU_ACTOR_CONCURRENCY threads making `calls`
    calls each on one labeler, as the GPU actor serves its shard tasks: on the device's one
    stream (as now), or each thread on a stream of its own (one call's small kernels, its
    reference's prepare say, then run beside the other's)."""
    scores = {}

    def serve(thread: int) -> None:
        with _own_stream(labeler.device) if own_streams else contextlib.nullcontext():
            for _ in range(calls):
                scores[thread] = labeler.score(ref, versions)

    def run() -> None:
        workers = [threading.Thread(target=serve, args=(i,))
                   for i in range(GPU_ACTOR_CONCURRENCY)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    run()  # warm-up: each thread's first calls at these shapes
    seconds = timed(run)
    return round(GPU_ACTOR_CONCURRENCY * calls * len(versions) / seconds, 2), scores[0]


def _streams(device: torch.device, sizes: Sizes) -> dict:
    """Two calls at once on one stream against each on its own, all ten on the labelers
    section's work: images/s of each and the largest score difference."""
    ref, versions = workload(sizes.versions, sizes.image)
    labeler = labelers.Labeler(device=device, allow_missing=True)
    labeler.share_among(GPU_ACTOR_CONCURRENCY)  # as the GPU actor does
    labeler.score(ref, versions)  # measures each metric's memory, alone
    now, expected = _calls_at_once(labeler, ref, versions, False, STREAM_CALLS)
    changed, scores = _calls_at_once(labeler, ref, versions, True, STREAM_CALLS)
    difference = max(float(np.max(np.abs(scores[key] - expected[key]))) for key in expected)
    return _compared("each call on its own CUDA stream", now, changed, difference)


def _pass_sweep(device: torch.device, sizes: Sizes) -> dict[int, dict]:
    """All ten's images/s over twice the labelers section's versions in passes of each size."""
    ref, versions = workload(2 * sizes.versions, sizes.image)
    passes = sorted({max(1, sizes.versions * share // 4) for share in (1, 2, 4, 8)})
    return {size: guarded(f"all ten in passes of {size}", lambda n=size: labeler_rate(
        labelers.Labeler(device=device, allow_missing=True, batch_size=n), ref, versions,
        device)) for size in passes}


def variants(device: torch.device, sizes: Sizes) -> dict:
    """Each metric variant of VARIANTS against the current code, on the labelers section's
    work, and the denoiser's; then all ten in passes of several sizes."""
    ref, versions = workload(sizes.versions, sizes.image)
    tried = {key: guarded(f"variant {key:8s} {name}", lambda k=key, n=name, c=change:
                          _against_current(k, n, c, device, ref, versions))
             for key, (name, change) in VARIANTS.items()}
    tried["denoiser network"] = guarded("variant denoiser channels_last",
                                        lambda: _denoiser_channels_last(device, sizes))
    tried["two calls at once"] = guarded("variant streams", lambda: _streams(device, sizes))
    return {"size": str(sizes.image), "versions": len(versions), "metrics": tried,
            "pass_sweep": _pass_sweep(device, sizes)}
