"""torch IterableDatasets over the shared reader (shards.dataset): groups (pairs, chunks,
triplets) or single samples of one rank, split again across DataLoader workers. In a pass
(not resampled) each shard, hence each group and sample, goes to exactly one (rank, worker);
every random choice is seeded by (seed, epoch, rank, worker), and crops and drawn versions by
(seed, epoch, ref_id[, key]). `collate_groups` stacks groups into tensors."""

import itertools
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch.utils.data import IterableDataset
from webdataset.utils import pytorch_worker_info

from shards.dataset import Dataset, open_dataset
from shards.order import ONE_PASS, Order


@dataclass(frozen=True)
class Request:
    """What to read: Dataset.groups (kind pair | chunk | triplet) or Dataset.samples (kind
    distorted | reference | all), and their keyword arguments (crop, seed, versions, views;
    refs, decode)."""

    method: str
    kind: str
    split: str | None = None
    arguments: dict = field(default_factory=dict)


class DatasetStream(IterableDataset):
    """One rank's share of a request; `rank`/`world_size` None: from torch.distributed (or
    RANK and WORLD_SIZE), resolved here, in the process that builds the loader."""

    def __init__(self, root: str | Dataset, request: Request, reading: Order = ONE_PASS,
                 rank: int | None = None, world_size: int | None = None):
        super().__init__()
        if request.method not in ("groups", "samples"):
            raise ValueError(f"method must be groups or samples; got {request.method!r}")
        if rank is None:
            rank, world_size, _, _ = pytorch_worker_info()
        self.dataset = root if isinstance(root, Dataset) else open_dataset(root)
        self.dataset.where(request.split)  # an empty or unknown split fails here
        self.request, self.reading = request, reading
        self.rank, self.world_size, self.epoch = rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> Order:
        """`reading` (how one rank reads: its shuffle, resampling, length, interleave) at this
        stream's epoch, rank and world size."""
        return replace(self.reading, epoch=self.epoch, rank=self.rank,
                       world_size=self.world_size)

    def __iter__(self):
        request = self.request
        read = getattr(self.dataset, request.method)
        return iter(read(request.kind, request.split, **request.arguments, order=self.order())
                    if request.method == "groups" else
                    read(request.split, request.kind, **request.arguments, order=self.order()))


class MixedStream(IterableDataset):
    """Several streams of one rank read as one. In a pass (validation) one after another, so
    that each group is read once; resampled (training), each item from a stream drawn in
    proportion to its `weight` (the groups of one pass over it), seeded by (seed, epoch, rank,
    worker), `length` items per epoch and worker as each stream's with_epoch."""

    def __init__(self, streams: list[DatasetStream], weights: list[int], seed: int):
        super().__init__()
        if len(streams) != len(weights) or not streams or min(weights) < 0 or not any(weights):
            raise ValueError(f"need a non-negative weight, not all 0, per stream; got {weights}")
        self.streams, self.weights, self.seed, self.epoch = streams, weights, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for stream in self.streams:
            stream.set_epoch(epoch)

    def __iter__(self):
        reading = self.streams[0].reading
        if not reading.resampled:
            return itertools.chain.from_iterable(self.streams)
        return self._drawn(reading.length)

    def _drawn(self, length: int | None):
        _, _, worker, _ = pytorch_worker_info()
        rng = np.random.default_rng([self.seed, self.epoch, self.streams[0].rank, worker])
        streams = [iter(stream) for stream in self.streams]
        weights = np.asarray(self.weights, np.float64)
        drawn = 0
        while (length is None or drawn < length) and weights.any():
            chosen = rng.choice(len(streams), p=weights / weights.sum())
            item = next(streams[chosen], None)
            if item is None:  # (a resampled stream ends only at its with_epoch)
                weights[chosen] = 0
                continue
            drawn += 1
            yield item


def group_dataset(root: str | Dataset, kind: str, split: str | None = None,
                 reading: Order = ONE_PASS, rank: int | None = None,
                 world_size: int | None = None, **arguments) -> DatasetStream:
    """Groups of `kind` (Dataset.groups' arguments: crop, seed, versions, views, ...)."""
    return DatasetStream(root, Request("groups", kind, split, arguments), reading, rank,
                         world_size)


def sample_dataset(root: str | Dataset, kind: str = "distorted", split: str | None = None,
                  reading: Order = ONE_PASS, rank: int | None = None,
                  world_size: int | None = None, **arguments) -> DatasetStream:
    """Single samples of `kind` (Dataset.samples' arguments: refs, seed, decode)."""
    return DatasetStream(root, Request("samples", kind, split, arguments), reading, rank,
                         world_size)


def _channels_first(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 (..., h, w, 3) images of one shape -> a uint8 tensor (N, ..., 3, h, w)."""
    return torch.from_numpy(np.stack(images)).movedim(-1, -3).contiguous()


def collate_groups(groups: list[dict]) -> dict:
    """A DataLoader batch of groups with the same crop, views and version count: reference
    (B, [2,] 3, h, w) and distorted (B, n, [2,] 3, h, w) uint8, ssim_map (B, n, [2,] h, w),
    box (B, [2,] 4); ref_id and meta as lists; with half-scale members reference_half and
    distorted_half too."""
    counts = {len(group["distorted"]) for group in groups}
    if len(counts) > 1:
        raise ValueError(f"groups of {sorted(counts)} versions cannot stack: read chunks "
                         "with versions=n, of references that have n (train pretrain leaves "
                         "out those short of n)")
    batch = {"ref_id": [group["ref_id"] for group in groups],
             "meta": [group["meta"] for group in groups],
             "reference": _channels_first([group["reference"] for group in groups]),
             "distorted": torch.stack([_channels_first(group["distorted"])
                                       for group in groups]),
             "box": torch.tensor([group["box"] for group in groups])}
    if "reference_half" in groups[0]:
        batch["reference_half"] = _channels_first([group["reference_half"]
                                                   for group in groups])
        batch["distorted_half"] = torch.stack([_channels_first(group["distorted_half"])
                                               for group in groups])
    if "ssim_map" in groups[0]:
        batch["ssim_map"] = torch.from_numpy(np.stack([np.stack(group["ssim_map"])
                                                       for group in groups]))
    return batch
