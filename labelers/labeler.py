"""The Labeler: every metric loaded once, each reference prepared once and scored against all
its distorted versions in batches sized to the device's memory."""

import contextlib
import threading
from collections.abc import Callable, Sequence, Sized
from typing import TypeVar

import numpy as np
import torch

from distortions.denoiser import default_device
from distortions.registry import is_integer
from labelers import weights
from labelers.base import Metric
from labelers.errors import DeviceMemoryError, InvalidPairError, LabelerError
from labelers.inputs import to_batch
from labelers.registry import METRICS, metric_class

T = TypeVar("T")

CPU_BATCH = 16                 # versions per pass on a CPU: the networks' forward pass (the
                               # hand-written metrics split it by their cpu_chunk)
CUDA_BUDGET_FRACTION = 0.5     # default budget: this share of the GPU memory free at start
PROBE_IMAGES = 2               # versions in the first pass that measures a metric's memory
MEMORY_TRIES = 3               # tries of work that cannot get smaller before DeviceMemoryError
FIT_ROUNDING = 1e-9            # relative slack of budget / bytes per version (float rounding)


class Scores(dict):
    """metric key -> N raw scores (float64 numpy); `.absent` names the metrics not computed."""

    def __init__(self, values: dict[str, np.ndarray], absent: tuple[str, ...]):
        super().__init__(values)
        self.absent = absent


def pixels(versions: torch.Tensor) -> int:
    """Pixels of each image of an N x 3 x H x W batch."""
    return versions.shape[-2] * versions.shape[-1]


def batch_for_budget(per_image_bytes: float, budget_bytes: float, remaining: int) -> int:
    """Versions per pass: the largest power of two whose working memory stays within the
    budget (at least 1), or all that remain where fewer. A power of two, so that the passes,
    the kernels they pick and so the scores' last bits stay the same for any budget between
    two powers of two of versions, not move with each megabyte of free memory. The quotient
    is taken to within FIT_ROUNDING: a budget set to hold n versions exactly (a pass split in
    halves) holds n, not n - 1 (which would halve it twice)."""
    if per_image_bytes <= 0:
        return remaining
    fit = max(1, int(budget_bytes / per_image_bytes * (1 + FIT_ROUNDING)))
    return min(remaining, 1 << (fit.bit_length() - 1))


def _size(batch: torch.Tensor) -> str:
    """'W x H' of an N x 3 x H x W batch's images."""
    return f"{batch.shape[-1]}x{batch.shape[-2]}"


def _retried_for_memory(action: Callable[[], T], failure: str) -> T:
    """action(), tried again with the CUDA cache emptied where it runs out of device memory
    (another call may have held it), MEMORY_TRIES times in all; then a DeviceMemoryError
    saying `failure`."""
    for _ in range(MEMORY_TRIES):
        try:
            return action()
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
    raise DeviceMemoryError(f"{failure} ({MEMORY_TRIES} tries)")


def _labelling_device(device: torch.device | str | None) -> torch.device:
    """The torch device the metrics run on (None: CUDA where torch sees it); a LabelerError
    where it is not a CPU or a CUDA device torch sees (not torch's errors, at the first
    tensor)."""
    try:
        chosen = torch.device(device if device is not None else default_device())
    except (RuntimeError, TypeError) as error:
        raise LabelerError(f"device {device!r} is not a torch device ({error})") from None
    if chosen.type not in ("cpu", "cuda"):
        raise LabelerError(f"the metrics run on cpu or cuda, not {device!r}")
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if chosen.type == "cuda" and (chosen.index or 0) >= visible:
        raise LabelerError(f"device {device!r}: torch sees {visible} CUDA device(s) here")
    return chosen


class Labeler:
    """Scores distorted versions against their reference with the chosen metrics.

    metrics: keys from labelers.AVAILABLE_METRICS (default labelers.METRICS, the ten, in that
    order); an unknown key is an UnknownMetricError.
    device: "cuda", "cpu", ... (default CUDA when present).
    allow_missing: when LPIPS/DISTS weights are absent, run the other metrics and report the
    absent ones in `Scores.absent` instead of raising WeightsMissingError (which is raised
    all the same when no metric would be left).
    batch_size: distorted images scored per pass (on a CPU each metric scores a pass in
    passes of its `cpu_chunk`, cache-sized); None sizes passes to memory: 16 on a CPU; on
    CUDA the first call measures each metric's peak memory per pixel (on two versions whose
    scores it drops), and every pass holds the largest power of two of versions of its size
    that `memory_budget` bytes allow (default half the GPU memory free at start: a power of
    two, so that a start with a little more or less free memory batches alike); a pass that
    runs out of memory is split in two and retried; work that cannot get smaller and still
    runs out (a reference's prepare, one version, its upload) is a DeviceMemoryError.
    """

    def __init__(self, metrics: Sequence[str] | None = None,
                 device: torch.device | str | None = None,
                 allow_missing: bool = False, batch_size: int | None = None,
                 memory_budget: int | None = None):
        keys = METRICS if metrics is None else (metrics,) if isinstance(metrics, str) \
            else tuple(metrics)
        if not keys:
            raise LabelerError("a Labeler needs at least one metric")
        for name, value in (("batch_size", batch_size), ("memory_budget", memory_budget)):
            if value is not None and (not is_integer(value) or value < 1):
                raise LabelerError(f"{name} must be a whole number of at least 1 (or None), "
                                   f"got {value!r}")
        classes = {key: metric_class(key) for key in keys}
        absent = tuple(weights.missing(keys))
        if absent and (not allow_missing or len(absent) == len(keys)):
            raise weights.WeightsMissingError(weights.missing_message(list(absent)))
        self.device = _labelling_device(device)
        self.absent = absent
        self.batch_size = batch_size
        self.memory_budget = memory_budget or self._default_budget()
        self.bytes_per_pixel: dict[str, float] = {}  # a metric's peak bytes / version pixels
        self._measuring = threading.Lock()  # a call that measures runs alone
        self.metrics = {key: cls(self.device) for key, cls in classes.items() if key not in absent}

    def _default_budget(self) -> int:
        if self.device.type != "cuda":
            return 0
        free, _ = torch.cuda.mem_get_info(self.device)
        return max(1, int(free * CUDA_BUDGET_FRACTION))  # (none: passes halve down to one)

    def share_among(self, calls: int) -> None:
        """Size each call's passes to a `calls`-th of the memory budget: `calls` calls served
        at once (threads sharing this labeler) then fit in it together; a byte at least, so
        that a pass that runs out of memory is halved (a budget of none took all at once)."""
        self.memory_budget = max(1, self.memory_budget // max(1, calls))

    @property
    def keys(self) -> tuple[str, ...]:
        """The metrics this labeler computes."""
        return tuple(self.metrics)

    def score(self, ref: np.ndarray, dists: np.ndarray | Sequence[np.ndarray],
              on_progress: Callable[[int], None] | None = None) -> Scores:
        """Raw scores of each distorted image (N x H x W x 3 uint8, or a list) against `ref`.
        The versions go through all metrics a part at a time; `on_progress(n)` is told as each
        part of n versions is fully labelled. On CUDA, a call that measures a metric's memory
        (its first) runs alone: the device's peak would count another thread's tensors."""
        with self.apart_from_measuring():
            return self._score(ref, dists, on_progress)

    def apart_from_measuring(self) -> contextlib.AbstractContextManager:
        """A block of work on this process's GPU (a call of this labeler, the learned
        denoiser's network) that waits while a call measures the metrics' memory: the device's
        peak would count its tensors too, and the passes sized from it would move."""
        return self._measuring if self._measures() else contextlib.nullcontext()

    def _measures(self) -> bool:
        return (self.device.type == "cuda" and self.batch_size is None
                and any(key not in self.bytes_per_pixel for key in self.metrics))

    def _score(self, ref: np.ndarray, dists: np.ndarray | Sequence[np.ndarray],
               on_progress: Callable[[int], None] | None) -> Scores:
        ref_batch = to_batch(ref, "cpu")  # uploaded once its pair is checked (_on_device)
        no_versions = isinstance(dists, Sized) and len(dists) == 0  # None is a bad input
        if no_versions and isinstance(dists, np.ndarray) and (
                dists.dtype != np.uint8 or dists.shape[1:] != np.shape(ref)):
            raise InvalidPairError(f"no versions, but as {dists.dtype} {dists.shape[1:]}, not "
                                   f"the reference's uint8 {np.shape(ref)}")
        dist_batch = (torch.empty((0, *ref_batch.shape[1:]), dtype=torch.uint8) if no_versions
                      else to_batch(dists, "cpu", pinned=self.device.type == "cuda"))
        for metric in self.metrics.values():
            metric.check_pair(ref_batch, dist_batch)
        if not len(dist_batch):
            return Scores({key: np.empty(0) for key in self.metrics}, self.absent)
        ref_batch = self._on_device(ref_batch)
        if self.device.type == "cuda":
            dist_batch = self._upload_all(dist_batch)
        parts: dict[str, list[torch.Tensor]] = {key: [] for key in self.metrics}
        with torch.inference_mode():
            prepared = {key: self._timed(key, self._prepare, key, metric, ref_batch)
                        for key, metric in self.metrics.items()}
            self._measure(prepared, dist_batch)
            start = 0
            while start < len(dist_batch):  # every metric over one part, then the next part
                size = min(self._pass_size(key, len(dist_batch) - start, pixels(dist_batch))
                           for key in parts)
                part = self._on_device(dist_batch[start:start + size])
                for key, metric in self.metrics.items():
                    parts[key].append(self._timed(key, self._compare, key, metric,
                                                  prepared[key], part))
                start += size
                if on_progress is not None:
                    on_progress(size)
        return Scores({key: torch.cat(values).cpu().numpy().astype(np.float64)
                       for key, values in parts.items()}, self.absent)

    def _upload_all(self, versions: torch.Tensor) -> torch.Tensor:
        """The versions (pinned in host memory by to_batch) on the device in one asynchronous
        upload for every metric; where they do not fit, each part uploaded in its turn."""
        try:
            return versions.to(self.device, non_blocking=True)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            return versions

    def _on_device(self, images: torch.Tensor) -> torch.Tensor:
        """`images` (the reference, or versions) on the labelling device (as they are where
        they are there already); an upload that runs out of memory is tried again with the
        cache emptied, then is a DeviceMemoryError."""
        return _retried_for_memory(
            lambda: images.to(self.device, non_blocking=True),
            f"uploading {len(images)} {_size(images)} image(s) ran out of {self.device} memory")

    def _measure(self, prepared: dict, versions: torch.Tensor) -> None:
        """On CUDA, each metric's peak memory per pixel not yet known, measured on the first
        PROBE_IMAGES versions, whose scores are dropped: a call's passes, and so its scores'
        last bits (a pass's size picks the kernels), never depend on whether it measured."""
        if not self._measures():
            return
        probe = self._on_device(versions[:PROBE_IMAGES])
        for key, metric in self.metrics.items():
            if key not in self.bytes_per_pixel:
                self._timed(key, self._compare, key, metric, prepared[key], probe)

    @staticmethod
    def _timed(key: str, action, *arguments):
        """`action` inside the profiler range of metric `key` (no cost without a profiler)."""
        with torch.profiler.record_function(f"metric:{key}"):
            return action(*arguments)

    def _prepare(self, key: str, metric: Metric, ref_batch: torch.Tensor):
        """The metric's reference side. One that runs out of device memory is tried again
        with the cache emptied (another call may have held the memory), then is a
        DeviceMemoryError: the reference is left out, not the calls after it."""
        return _retried_for_memory(
            lambda: metric.prepare(ref_batch),
            f"{key} ran out of {self.device} memory preparing a {_size(ref_batch)} reference")

    def _pass_size(self, key: str, remaining: int, image_pixels: int) -> int:
        """Versions of `image_pixels` pixels each in this metric's next pass."""
        if self.batch_size is not None:
            return min(self.batch_size, remaining)
        if self.device.type != "cuda":
            return min(CPU_BATCH, remaining)
        if key not in self.bytes_per_pixel:
            return min(PROBE_IMAGES, remaining)
        return batch_for_budget(self.bytes_per_pixel[key] * image_pixels, self.memory_budget,
                                remaining)

    def _compare(self, key: str, metric: Metric, prepared, dists: torch.Tensor) -> torch.Tensor:
        """Scores of `dists` in passes of this metric's size; a pass that runs out of GPU
        memory is retried in halves, and the smaller size is kept. A pass that cannot get
        smaller (one version, or the size chosen) is tried again with the cache emptied, then
        is a DeviceMemoryError."""
        chunks, start, tries = [], 0, 0
        while start < len(dists):
            size = self._pass_size(key, len(dists) - start, pixels(dists))
            try:
                chunks.append(self._compare_pass(key, metric, prepared, dists[start:start + size]))
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                if size > 1 and self.batch_size is None:
                    # half as many next time, at this size or at any other
                    self.bytes_per_pixel[key] = 2 * self.memory_budget / (size * pixels(dists))
                    continue
                tries += 1
                if tries == MEMORY_TRIES:
                    raise DeviceMemoryError(
                        f"{key} ran out of {self.device} memory on a pass of {size} "
                        f"{_size(dists)} version(s) ({MEMORY_TRIES} tries"
                        + ("; the batch size chosen" if self.batch_size is not None else "")
                        + ")") from None
                continue
            start += size
        return torch.cat(chunks)

    def _compare_pass(self, key: str, metric: Metric, prepared, chunk: torch.Tensor
                      ) -> torch.Tensor:
        """One pass; on CUDA the first pass of a metric records its peak bytes per pixel of
        its versions (in a call that runs alone: `score`). A pass that overruns the memory
        later is retried in halves (_compare), and the smaller size kept."""
        if self.device.type != "cuda" or self.batch_size is not None \
                or key in self.bytes_per_pixel:
            return metric.compare_in_passes(prepared, chunk)  # on the device (score uploads once)
        torch.cuda.synchronize(self.device)
        baseline = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        scores = metric.compare_in_passes(prepared, chunk)
        peak = torch.cuda.max_memory_allocated(self.device) - baseline
        self.bytes_per_pixel.setdefault(key, max(peak, 1) / (len(chunk) * pixels(chunk)))
        return scores
