"""Timing for the device check's sections and the labeler benchmark's rates: a measurement's
figures or its error, seconds of an action, the device's peak memory, and a Labeler's images/s
at the shapes it was warmed up on."""

import time
import traceback

import torch

import labelers


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> float | None:
    """The device's peak allocated memory since the last reset, in MiB (2**20 bytes: the
    reports' `peak_mb` fields and "peak MiB" columns); None off CUDA."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def guarded(label: str, measure) -> dict:
    """measure()'s figures, or its error (one failing row of a section keeps the others')."""
    try:
        row = measure()
    except Exception as error:
        row = {"error": f"{type(error).__name__}: {error}"[:600],
               "traceback": traceback.format_exc()[-1500:]}
    print(f"{label} {({k: v for k, v in row.items() if k != 'traceback'})}", flush=True)
    return row


def timed(action) -> float:
    """Seconds `action()` took (it waits for the device itself: a labeler's call returns
    numpy scores)."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def labeler_rate(labeler: labelers.Labeler, ref, versions, device) -> dict:
    """One call's images/s after two at the same shapes, the device's peak memory in it, and
    each metric's pass size and bytes per image."""
    # warm-up at the timed shapes: CUDA loads each kernel (and cuDNN picks its algorithms)
    # on the first pass of a shape, and a fresh labeler's first call also measures each
    # metric's memory on 2 versions (after a warm-up of 4 versions, run 2 timed DISTS alone at
    # 106 images/s, while its device time inside all ten came to 60 ms for the 64)
    for _ in range(2):
        labeler.score(ref, versions)
    peak_reset(device)
    seconds = timed(lambda: labeler.score(ref, versions))
    pixels = ref.shape[0] * ref.shape[1]  # every version has the reference's H x W
    passes = {key: labeler._pass_size(key, len(versions), pixels) for key in labeler.keys}
    return {"images_per_s": round(len(versions) / seconds, 2), "peak_mb": peak_mb(device),
            "pass_size": passes,
            "bytes_per_image": {k: round(v * pixels) for k, v in labeler.bytes_per_pixel.items()}}
