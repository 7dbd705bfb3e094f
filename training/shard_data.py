"""Pretraining data from the shards (spec/shards.md) through the shared reader (shards.dataset,
on webdataset's stages): which references make each split, which shards hold them, and a
stream of (view, target) per rank and loader worker, seeded by (seed, epoch, rank, worker).
Training streams resample shards without end (each rank takes a fixed number of batches per
epoch, so no rank waits at an all-reduce); evaluation streams read each shard once, split by
rank and worker."""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import IterableDataset

from distortions.banks import grid
from distortions.registry import BANK, LEVELS
from labelers.ensemble import Ensemble, EnsembleError
from shards.dataset import Dataset, readable_shards, sample_stream
from shards.layout import MANIFEST_FILE, run_file, store_of, tar_path
from shards.order import Order, share_to_spread
from shards.reader import read_index
from shards.records import decode
from shards.schema import METRIC_KEYS, chain_of, record_score
from shards.storage import Location
from shards.words import a_few
from training.losses import Head
from training.transforms import Augment, centre_view, train_view

# the paper's classes: its 33 types and 5 levels
CLASS_TARGETS = {"distortion": ("distortion_id", len(BANK)), "level": ("level", len(LEVELS))}
GRID_TARGETS = ("class", "multihot")  # over the run's own (type, level) grid (run_grid)
TARGETS = ("quality", *METRIC_KEYS, *CLASS_TARGETS, *GRID_TARGETS)
EXCLUDED = "excluded"
HELD_OUT_ORDER = {"train": 0, "val": 1, "test": 2, EXCLUDED: 3}  # agreed_splits

Grid = tuple[tuple[int, int], ...]


def run_grid(location: Location) -> Grid:
    """The run's (distortion id, level) pairs, sorted: its selection in manifest.json (each
    type at the run's levels, or at its own: type_levels)."""
    try:
        config = run_file(location, MANIFEST_FILE)["config"]
        own = {d: tuple(levels) for d, levels in config.get("type_levels") or ()}
        return tuple(sorted(grid(config["distortion_ids"], config["levels"], own)))
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(f"{location.root}: no run selection (manifest.json config "
                         f"distortion_ids and levels) for the class/multihot targets: {error}"
                         ) from error


def chain(record: dict) -> list[tuple[int, int]]:
    """A sample's (id, level) links in application order (shards.schema.chain_of)."""
    return [(int(link["id"]), int(link["level"])) for link in chain_of(record)]


@dataclass(frozen=True)
class Target:
    """What the model learns: Q, one raw metric, a class (distortion id or level; or
    `class`, the (type, level) of the run's grid), or `multihot` (a bit per grid pair, set
    for each link of the sample's chain). Q is the one stored in the shards, or with
    `ensemble` the Q of that ensemble over the sample's raw scores of `ensemble_metrics` (what
    `relabel` writes)."""

    name: str = "quality"
    grid: Grid = ()  # the run's sorted (id, level) pairs, for class and multihot
    ensemble: Ensemble | None = None
    ensemble_metrics: tuple[str, ...] = ()

    def __post_init__(self):
        if self.name not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}; got {self.name!r}")

    @property
    def kind(self) -> str:
        if self.name == "multihot":
            return "multihot"
        return "class" if self.name in CLASS_TARGETS or self.name == "class" else "regression"

    @property
    def classes(self) -> int:
        """The class count of a classification target; 0 otherwise."""
        if self.name == "class":
            return len(self.grid)
        return CLASS_TARGETS[self.name][1] if self.name in CLASS_TARGETS else 0

    @property
    def outputs(self) -> int:
        return len(self.grid) if self.kind == "multihot" else self.classes or 1

    def head(self, weight: float = 1.0) -> Head:
        return Head(self.name, self.kind, self.outputs,
                    len(self.grid) if self.kind == "multihot" else 1, weight)

    def value(self, record: dict) -> float | int | list[float]:
        if self.name in GRID_TARGETS:
            return self._grid_value(record)
        if self.name in CLASS_TARGETS:
            field, count = CLASS_TARGETS[self.name]
            self._single(record)
            index = int(record[field]) - 1
            if not 0 <= index < count:
                raise ValueError(f"sample {record['key']} has {field} {record[field]}, beyond "
                                 f"the {count} classes of the {self.name} target (the paper's "
                                 "bank): train the `class` target (the run's own grid)")
            return index
        if self.name == "quality" and self.ensemble is not None:
            return self._ensemble_quality(record)
        value = record["quality"] if self.name == "quality" else (record["scores"] or {}).get(
            self.name)
        if value is None:
            scored = sorted(key for key, score in (record["scores"] or {}).items()
                            if score is not None)
            raise ValueError(f"sample {record['key']} has no {self.name} (its scores: "
                             f"{', '.join(scored) or 'none, a label-free run'}): choose "
                             "another --target")
        return float(value)

    def _single(self, record: dict) -> None:
        """A ValueError for a composed sample: a class target names one distortion."""
        links = chain(record)
        if len(links) != 1:
            raise ValueError(f"sample {record['key']} is composed of {len(links)} distortions: "
                             f"the {self.name} target has one class per sample; train "
                             "multihot on mixtures")

    def _ensemble_quality(self, record: dict) -> float:
        raw = {key: np.array([record_score(record, key)]) for key in self.ensemble_metrics}
        try:
            return float(self.ensemble.quality(raw)[0][0])
        except EnsembleError as error:
            raise ValueError(f"sample {record['key']}: {error}") from error

    def _grid_value(self, record: dict) -> int | list[float]:
        if not self.grid:
            raise ValueError(f"the {self.name} target needs the run's grid (run_grid)")
        links = chain(record)
        outside = [link for link in links if link not in self.grid]
        if outside:
            raise ValueError(f"sample {record['key']} has (id, level) {outside}, not in the "
                             "run's selection (manifest.json)")
        if self.name == "class":
            self._single(record)
            return self.grid.index(links[0])
        bits = [0.0] * len(self.grid)
        for link in links:
            bits[self.grid.index(link)] = 1.0
        return bits


def multi_head(targets: tuple[Target, ...]) -> bool:
    """Whether a run needs the multi-head model: several targets, or a multihot one."""
    return len(targets) > 1 or targets[0].kind == "multihot"


def encode(target: Target | tuple[Target, ...], record: dict) -> torch.Tensor:
    """One target's value (a long class index, or a float), or several side by side as
    floats (a class index as a float; a multihot target's bits), in the heads' order."""
    if isinstance(target, Target) and target.kind != "multihot":
        return torch.tensor(target.value(record),
                            dtype=torch.long if target.classes else torch.float32)
    values = []
    for each in (target,) if isinstance(target, Target) else target:
        value = each.value(record)
        values.extend(value if isinstance(value, list) else [value])
    return torch.tensor(values, dtype=torch.float32)


def reference_splits(dataset: Dataset, val_refs: tuple[str, ...] = (),
                     exclude_refs: tuple[str, ...] = ()) -> dict[str, str]:
    """ref_id -> split of the references in the dataset's complete shards (sources.parquet,
    or the shards' indexes where a resume dropped it), with references moved to `val` or
    excluded on request (held out for fine-tuning, say): an id it does not hold, or one given
    to both, is an error. A reference with the pixels of one in a more held-out split (a
    re-encoded copy: the run's report warns of it) is in that split too."""
    return datasets_splits((dataset,), val_refs, exclude_refs)[0][0]


def datasets_splits(datasets: tuple[Dataset, ...], val_refs: tuple[str, ...] = (),
                    exclude_refs: tuple[str, ...] = ()) -> tuple[list[dict[str, str]],
                                                               list[str]]:
    """reference_splits of each dataset read together, and a notice of the ids agreed: an
    id moves in every dataset that holds it, and is an error only where none does; an id
    several datasets hold in different splits (the same photo, generated with other seeds),
    and ids of the same pixels in one dataset or several, are in the most held-out of them
    in all (agreed_splits)."""
    splits = [dataset.splits for dataset in datasets]
    known = set().union(*splits)
    unknown = sorted((set(val_refs) | set(exclude_refs)) - known)
    if unknown:
        where = " or ".join(dataset.location.root for dataset in datasets)
        raise ValueError(f"unknown reference ids {unknown[:10]}: not in a complete shard of "
                         f"{where} (it has {len(known)}, e.g. {sorted(known)[:5]})")
    both = sorted(set(val_refs) & set(exclude_refs))
    if both:
        raise ValueError(f"references {both} are given to both --val-refs and --exclude-refs: "
                         "validate on them or hold them out, not both")
    return agreed_splits([held_out(each, val_refs, exclude_refs) for each in splits],
                         [dataset.reference_pixels for dataset in datasets])


def agreed_splits(every: list[dict[str, str]], pixels: list[dict[str, str]] | None = None
                  ) -> tuple[list[dict[str, str]], list[str]]:
    """Splits of datasets read together, each id in the most held-out split any of them puts
    it in (left out over test over val over train), and so is every id of the same pixels
    (`pixels`: each dataset's ref_id -> pixel SHA-256; a re-encoded copy): never trained on
    in one place and validated or tested on in another; and a notice naming the ids moved."""
    twins = _same_image(every, pixels or [{} for _ in every])
    most: dict[str, str] = {}
    for number, splits in enumerate(every):
        for ref, split in splits.items():
            image = twins[number, ref]
            if image not in most or HELD_OUT_ORDER.get(split, 0) > HELD_OUT_ORDER.get(
                    most[image], 0):
                most[image] = split
    agreed = [{ref: most[twins[number, ref]] for ref in splits}
              for number, splits in enumerate(every)]
    moved = sorted({ref for before, after in zip(every, agreed, strict=True)
                    for ref, split in before.items() if split != after[ref]})
    notices = [f"{len(moved)} reference id(s) are, by id or by pixels, in different splits "
               f"({a_few(moved)}): each is in the most held-out one of its copies, never "
               "trained on in one place and validated on in another"] if moved else []
    return agreed, notices


def _same_image(every: list[dict[str, str]], pixels: list[dict[str, str]]
                ) -> dict[tuple[int, str], str]:
    """(dataset number, ref_id) -> one name of its image, shared by every id it has across
    the datasets and every id of the same pixels (union-find over ids and pixel hashes)."""
    parent: dict[str, str] = {}

    def root(node: str) -> str:
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node
    for splits, hashes in zip(every, pixels, strict=True):
        for ref in splits:
            if ref in hashes:
                parent[root(f"id:{ref}")] = root(f"px:{hashes[ref]}")
    return {(number, ref): root(f"id:{ref}") for number, splits in enumerate(every)
            for ref in splits}


def held_out(splits: dict[str, str], val_refs: tuple[str, ...],
             exclude_refs: tuple[str, ...]) -> dict[str, str]:
    """`splits` with `val_refs` moved to val and `exclude_refs` excluded (ids it lacks left
    out)."""
    moved = {**dict.fromkeys(val_refs, "val"), **dict.fromkeys(exclude_refs, EXCLUDED)}
    return {ref: moved.get(ref, split) for ref, split in splits.items()}


@dataclass(frozen=True)
class SplitShards:
    """The references of one split, the shards that hold their samples, and the count."""

    name: str
    refs: frozenset[str]
    urls: tuple[str, ...]
    samples: int


LABEL_COLUMNS = ("ref_id", "distortion_id", "quality", "ensemble_hash")  # what a run asks
SCORED_COLUMNS = (*LABEL_COLUMNS, "scores")  # and, for a metric or an --ensemble, the scores


def distorted_index(location: Location, shards: tuple[int, ...] | None = None,
                    columns: tuple[str, ...] = SCORED_COLUMNS) -> pa.Table:
    """`columns` and the shard of every distorted sample of the dataset (of its complete
    `shards`, where the caller has them from open_dataset): the parquet indexes, read once
    for all the questions a run asks of them (training.pretrain.check_labels reads quality,
    scores and ensemble_hash), each shard's kept compact (`_compact`: at 23.1M rows the
    ensemble hash held 1.6 GB, and the scores, 13 numbers a row, 2.4 GB more, which a run
    reads only where it needs them). A dataset with a damaged shard is refused as open_dataset
    refuses it (DamagedShardError), never read as a smaller one."""
    return read_index(location, list(readable_shards(location) if shards is None else shards),
                      [*columns, "kind"], with_shard=True, kind="distorted", each=_compact)


def _compact(table: pa.Table) -> pa.Table:
    """A shard's distorted rows as the index keeps them: `kind` dropped (all are distorted),
    the ensemble hash (one string on every row) dictionary-encoded."""
    table = table.drop_columns(["kind"])
    if "ensemble_hash" not in table.column_names:
        return table
    return table.set_column(table.column_names.index("ensemble_hash"), "ensemble_hash",
                            pc.dictionary_encode(table["ensemble_hash"]))


def reference_sizes(location: Location, shards: tuple[int, ...]) -> dict[str, tuple[int, int]]:
    """ref_id -> (height, width) of each reference image of the complete `shards` (its
    versions share it)."""
    table = read_index(location, list(shards), columns=["ref_id", "kind", "height", "width"],
                       kind="reference")
    return {ref: (height, width) for ref, height, width in zip(
        *(table[column].to_pylist() for column in ("ref_id", "height", "width")), strict=True)}


def split_shards(location: Location, index: pa.Table, splits: dict[str, str],
                 name: str) -> SplitShards:
    """The split's references that have samples in complete shards (`distorted_index`), and
    the shards holding them."""
    named = sorted(ref for ref, split in splits.items() if split == name)
    held = _rows_of(index.select(["ref_id", "shard"]), named)  # (not a copy of every column)
    refs = frozenset(pc.unique(held["ref_id"]).to_pylist())
    counts = _value_counts(held["shard"])
    store = store_of(location)
    urls = tuple(tar_path(location, shard, store) for shard in sorted(counts))
    return SplitShards(name, refs, urls, sum(counts.values()))


def _rows_of(table: pa.Table, refs: list[str]) -> pa.Table:
    """The rows of `table` of the references `refs`."""
    return table.filter(pc.is_in(table["ref_id"], value_set=pa.array(refs, pa.string())))


def _value_counts(column: pa.ChunkedArray) -> dict:
    """value -> its rows, counted by Arrow (a Python list of 23M ids is gigabytes)."""
    return {row["values"]: row["counts"] for row in pc.value_counts(column).to_pylist()}


def references_up_to(counts: dict, limit: int | None, seed: int) -> frozenset:
    """Whole references (ids, or (dataset, id) pairs), the first of a seeded order until their
    counts reach `limit` (all of them where they hold no more, or no limit is set): a
    validation set that is the same whatever the ranks and workers that read it."""
    if not limit or sum(counts.values()) <= limit:
        return frozenset(counts)
    order = sorted(counts)
    np.random.default_rng(seed).shuffle(order)
    chosen, total = [], 0
    for ref in order:
        if total >= limit:
            break
        chosen.append(ref)
        total += counts[ref]
    return frozenset(chosen)


def limited_split(location: Location, index: pa.Table, shards: SplitShards,
                  limit: int | None, seed: int) -> SplitShards:
    """`shards` cut to whole references of about `limit` samples (references_up_to)."""
    counts = _value_counts(_rows_of(index.select(["ref_id"]), sorted(shards.refs))["ref_id"])
    kept = references_up_to(counts, limit, seed)
    if kept == frozenset(counts):
        return shards
    return split_shards(location, index, dict.fromkeys(kept, shards.name), shards.name)


# Shards a training rank reads at once: a shard holds each reference's versions together, so
# one read after another gives batches of a few references; 16 at once give a batch of 16
# about ten (before the shuffle buffer mixes more).
INTERLEAVED_SHARDS = 16


@dataclass(frozen=True)
class StreamConfig:
    root: str
    shards: SplitShards
    target: Target | tuple[Target, ...]  # several: a float vector, the heads side by side
    augment: Augment
    seed: int = 0
    train: bool = True           # resampled, augmented, shuffled; else each shard once
    shuffle_buffer: int = 500
    interleave: int = INTERLEAVED_SHARDS
    per_worker: int | None = None  # training samples one DataLoader worker gives an epoch
    plan: str | None = None  # the plan digest the dataset was opened under (Dataset.plan_digest)


class ShardStream(IterableDataset):
    """(view tensor, target) pairs of one split for one rank."""

    def __init__(self, config: StreamConfig, rank: int = 0, world_size: int = 1):
        super().__init__()
        if not config.shards.urls:
            raise ValueError(f"the {config.shards.name} split of {config.root} has no samples")
        self.config, self.rank, self.world_size = config, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> Order:
        """Training: shards resampled per (seed, epoch, rank, worker), a share of each
        spread over it where an epoch reads less than its open shards hold
        (shards.order.share_to_spread), and a shuffle buffer (of encoded samples: images are
        decoded after it); evaluation: each shard once, to one rank and worker."""
        config = self.config
        if config.train:
            share = 1.0 if config.per_worker is None else share_to_spread(
                config.per_worker, config.interleave, config.shards.samples,
                len(config.shards.urls))
            return Order(self.epoch, config.shuffle_buffer, resampled=True, rank=self.rank,
                         world_size=self.world_size, interleave=config.interleave, share=share)
        return Order(self.epoch, rank=self.rank, world_size=self.world_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        config, order = self.config, self._order()
        worker = order.place()[2]
        rng = np.random.default_rng([config.seed, self.epoch, self.rank, worker])
        for record in sample_stream(Location.parse(config.root), list(config.shards.urls),
                                    "distorted", config.shards.refs, config.seed, order,
                                    decode=False, plan=config.plan):
            pixels = decode(record["encoded"], record["key"])
            view = (train_view(pixels, config.augment, rng) if config.train
                    else centre_view(pixels, config.augment))
            yield view, encode(config.target, record["meta"])
