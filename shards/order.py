"""Which shards a reader takes, in what order, and its seeds: webdataset's shard lists
(SimpleShardList for a pass, ResampledShards for an endless stream), split by rank and by
DataLoader worker, a seeded shuffle buffer, with_epoch. Every random choice is a function of
(seed, epoch, rank, worker), whatever process reads."""

import hashlib
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, islice

import numpy as np
import webdataset as wds
from webdataset.utils import pytorch_worker_info

from distortions.registry import is_integer


@dataclass(frozen=True)
class Order:
    """epoch: part of every seed. shuffle: a buffer of that many items (samples or groups),
    and the shard list shuffled per (seed, epoch); 0 keeps shard and member order.
    resampled: shards drawn with replacement without end, per (seed, epoch, rank, worker);
    else one pass, each shard to exactly one rank and DataLoader worker. rank, world_size:
    explicit, or None to ask torch.distributed (or RANK and WORLD_SIZE) through webdataset.
    length: items per epoch per worker (webdataset's with_epoch), the pass repeated if short.
    interleave: shards read at once, each next item taken from one of them drawn per (seed,
    epoch, rank, worker), so that items a shard holds together (a reference's versions) mix
    with other shards' before any buffer; 1 reads shard after shard. share (resampled only):
    each drawn shard gives each of its items with this chance (drawn per (seed, epoch, draw,
    key): `kept_share`), so that an epoch shorter than its open shards reads a share spread
    over the whole of each (their bytes read whole), not the same front part of each every
    epoch (`share_to_spread`); 1 gives them all."""

    epoch: int = 0
    shuffle: int = 0
    resampled: bool = False
    rank: int | None = 0
    world_size: int | None = 1
    length: int | None = None
    interleave: int = 1
    share: float = 1.0

    def __post_init__(self):
        for name in ("epoch", "shuffle", "length", "interleave", "rank", "world_size"):
            value = getattr(self, name)
            if value is not None and not is_integer(value):
                raise ValueError(f"{name} must be a whole number, got {value!r}")
        if (self.rank is None) != (self.world_size is None):
            raise ValueError("give rank and world_size together, or neither")
        if self.world_size is not None and not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in [0, {self.world_size})")
        if self.shuffle < 0 or self.epoch < 0 or (self.length is not None and self.length < 1):
            raise ValueError("shuffle and epoch must be >= 0, length >= 1")
        if self.interleave < 1:
            raise ValueError(f"interleave must be >= 1 shard, got {self.interleave}")
        if isinstance(self.share, bool) or not 0 < self.share <= 1:
            raise ValueError(f"share must be in (0, 1], got {self.share!r}")
        if self.share < 1 and not self.resampled:
            raise ValueError("a share of each shard is read from drawn shards: resampled=True")

    def place(self) -> tuple[int, int, int, int]:
        """(rank, world_size, worker, workers) of the process iterating now."""
        rank, world_size, worker, workers = pytorch_worker_info()
        if self.rank is not None:
            rank, world_size = self.rank, self.world_size
        return rank, world_size, worker, workers


ONE_PASS = Order()  # every shard once, in order (split across DataLoader workers, if any)


def share_to_spread(per_worker: float, interleave: int, items: int, shards: int) -> float:
    """The Order.share that spreads an epoch of `per_worker` items per DataLoader worker over
    the whole of the `interleave` shards it reads at once (`items` in `shards` in all): 1
    where the epoch reads them whole anyway. Resampling draws a shard's items from its start,
    so an epoch shorter than its open shards read the same front part of each, every epoch
    (a tenth of a small dataset's pairs, or less, was never trained on)."""
    per_shard = items / max(1, shards)
    if per_shard <= 0:
        return 1.0
    return min(1.0, per_worker / (interleave * per_shard))


def kept_share(seed: int, order: Order, draw: tuple) -> Callable[[str], bool]:
    """Whether the drawn shard `draw` gives its item `key` in `order`: every one at share 1;
    else each with chance order.share, drawn per (seed, epoch, draw, key)."""
    if order.share >= 1:
        return lambda key: True

    def keeps(key: str) -> bool:
        chance = random.Random(stream_seed(seed, order.epoch, *draw, key)).random()
        return chance < order.share
    return keeps


def check_reading(seed, order) -> None:
    """A ValueError unless `seed` is a non-negative whole number (numpy's too) and `order`
    an Order (checked as a stream is asked for, not as it is read)."""
    if not is_integer(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative whole number, got {seed!r}")
    if not isinstance(order, Order):
        raise ValueError(f"order must be a shards.order.Order, got {order!r}")


def stream_seed(*parts: int | str) -> int:
    """A 32-bit seed from non-negative integers and names, the same in every process (no
    hash())."""
    words = [int.from_bytes(hashlib.sha256(part.encode()).digest()[:8], "little")
             if isinstance(part, str) else int(part) for part in parts]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def _same_seed_for_every_worker() -> int:
    return 0  # the shard seed given to ResampledShards already names the rank and worker


def _no_shards() -> Iterator:
    return iter(())


def _rank_share(source: Iterable, rank: int, world_size: int) -> Iterator:
    """webdataset's split_by_node for an explicit rank."""
    yield from islice(source, rank, None, world_size)


def _numbered(rank: int, worker: int, pool: int) -> Callable[[Iterable[dict]], Iterator[dict]]:
    """Each drawn shard's "draw": (rank, worker, its place in this worker's stream), so what
    is seeded per draw differs where one shard is drawn twice in an epoch (resampling draws
    with replacement, in every worker); and "pool", the shards drawn from (a reader that
    finds every one of them without an item stops drawing: tar_stream.each_shard)."""
    def stage(sources: Iterable[dict]) -> Iterator[dict]:
        for place, source in enumerate(sources):
            yield {**source, "draw": (rank, worker, place), "pool": pool}
    return stage


def shard_stages(urls: list[str], seed: int, order: Order) -> list:
    """The first stages of a pipeline: shard urls for this rank and worker, as {"url"}."""
    rank, world_size, worker, _ = order.place()
    if not urls:
        return [_no_shards]
    if order.resampled:
        return [wds.ResampledShards(urls, seed=stream_seed(seed, order.epoch, rank, worker),
                                    worker_seed=_same_seed_for_every_worker,
                                    deterministic=True), _numbered(rank, worker, len(set(urls)))]
    listing = wds.SimpleShardList(urls, seed=stream_seed(seed, order.epoch)
                                  if order.shuffle else None)
    by_rank = (wds.split_by_node if order.rank is None else
               lambda source: _rank_share(source, rank, world_size))
    return [listing, by_rank, wds.split_by_worker]


def interleaving(seed: int, order: Order) -> Callable[[Iterable[Iterator]], Iterator]:
    """How the item streams of successive shards become one (tar_stream.each_shard's merge):
    one after another, or `order.interleave` of them at once (a shard that ends gives its
    place to the next), each item from one drawn per (seed, epoch, rank, worker)."""
    def merge(shards: Iterable[Iterator]) -> Iterator:
        if order.interleave == 1:
            return chain.from_iterable(shards)
        rank, _, worker, _ = order.place()
        rng = random.Random(stream_seed(seed, order.epoch, rank, worker, "interleave"))
        return _interleaved(iter(shards), order.interleave, rng)
    return merge


def _interleaved(shards: Iterator[Iterator], width: int, rng: random.Random) -> Iterator:
    active = list(islice(shards, width))
    while active:
        place = rng.randrange(len(active))
        try:
            yield next(active[place])
        except StopIteration:
            following = next(shards, None)
            if following is None:
                active.pop(place)
            else:
                active[place] = following


def pipeline(urls: list[str], stages: list, seed: int, order: Order,
             after: list = ()) -> wds.DataPipeline:
    """shard_stages, `stages`, the seeded shuffle buffer, `after` (work better done on
    shuffled items: decoding), cut to `order.length` items per epoch."""
    rank, _, worker, _ = order.place()
    shuffle = []
    if order.shuffle:
        rng = random.Random(stream_seed(seed, order.epoch, rank, worker, "shuffle"))
        shuffle.append(wds.shuffle(order.shuffle, initial=order.shuffle, rng=rng))
    built = wds.DataPipeline(*shard_stages(urls, seed, order), *stages, *shuffle, *after)
    return built.with_epoch(order.length) if order.length else built


class Stream:
    """A re-iterable stream: each iteration builds a fresh pipeline in the process (and
    DataLoader worker) that iterates, so its seeds name that worker."""

    def __init__(self, build: Callable[[], wds.DataPipeline]):
        self._build = build

    def __iter__(self) -> Iterator:
        return iter(self._build())
