"""Q from a relabel sidecar, `labels-<hash>.parquet` (key, quality, shard; the ensemble's hash
and the metrics used in its metadata): a reader given one takes each distorted sample's Q
from it in place of the Q its record holds (shards.md: "readers take Q from a named sidecar
when given one"), and its record then names that ensemble. Only the rows of the shard being
read are loaded (a sidecar written before it had the shard column is read whole, once)."""

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shards.layout import labels_file, labels_files
from shards.reader import shard_stats
from shards.schema import METRIC_KEYS
from shards.storage import Location


class SidecarError(ValueError):
    """A sidecar that is not there, or that lacks the Q of a sample being read."""


@dataclass(frozen=True)
class SidecarMetadata:
    """What a sidecar's parquet metadata records: the ensemble Q was made with, the metrics it
    was made of, and the plan of the dataset relabel read (a sidecar written before them
    records none: None)."""
    ensemble_hash: str | None
    metrics_used: list[str] | None
    plan_digest: str | None

    @classmethod
    def of(cls, schema: pa.Schema, name: str) -> "SidecarMetadata":
        """The metadata of the sidecar `name` of `schema`; a SidecarError naming it where a
        field is not text, or metrics_used not a JSON list of distinct metric names."""
        recorded = schema.metadata or {}
        damaged = f"{name} is damaged: delete it and relabel again"
        try:
            text = {field: recorded.get(field.encode(), b"").decode() or None
                    for field in ("ensemble_hash", "metrics_used", "plan_digest")}
            metrics = None if text["metrics_used"] is None else json.loads(text["metrics_used"])
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise SidecarError(f"{damaged} (its metadata: {error})") from None
        if metrics is not None and not (isinstance(metrics, list) and metrics
                                        and all(isinstance(m, str) for m in metrics)
                                        and set(metrics) <= set(METRIC_KEYS)
                                        and len(set(metrics)) == len(metrics)):
            raise SidecarError(f"{damaged} (its metrics_used is {metrics!r}, not a list of "
                               f"distinct metric names among {', '.join(METRIC_KEYS)})")
        return cls(text["ensemble_hash"], metrics, text["plan_digest"])

    def named_in_records(self) -> dict:
        """What a record read through the sidecar names of its Q."""
        return {"ensemble_hash": self.ensemble_hash, "metrics_used": self.metrics_used}


@dataclass(frozen=True)
class Sidecar:
    location: Location
    name: str  # labels-<hash>.parquet

    @classmethod
    def named(cls, location: Location, name: str) -> "Sidecar":
        """The sidecar called `name`: its file name, or the hash of its ensemble; a
        SidecarError where there is none, or where it records another ensemble than its
        name says (a copy under another name would give one ensemble's Q as another's)."""
        names = labels_files(location)
        chosen = name if name in names else labels_file(name)
        if chosen not in names:
            raise SidecarError(f"{location.root} has no relabel sidecar {name!r} (its "
                               f"sidecars: {', '.join(names) or 'none'}); `iqa-factory "
                               "relabel` writes one")
        sidecar = cls(location, chosen)
        recorded = sidecar.metadata.ensemble_hash
        if labels_file(str(recorded)) != chosen:
            raise SidecarError(f"{chosen} records ensemble {recorded or 'none'}, not the one "
                               "its name says: a sidecar copied under another name; relabel "
                               "with the ensemble wanted")
        return sidecar

    def _read(self, **options) -> pa.Table:
        try:
            with self.location.fs.open_input_file(self.location.path(self.name)) as handle:
                return pq.read_table(handle, columns=["key", "quality"], **options)
        except (pa.ArrowException, OSError) as error:  # no such column, not a parquet file
            raise SidecarError(self._unreadable(error)) from error

    @cached_property
    def _schema(self) -> pa.Schema:
        self._as_read  # noqa: B018  (the file as its metadata is read: _check_unchanged)
        try:
            with self.location.fs.open_input_file(self.location.path(self.name)) as handle:
                return pq.read_schema(handle)
        except (pa.ArrowException, OSError) as error:
            raise SidecarError(self._unreadable(error)) from error

    @cached_property
    def _as_read(self) -> tuple:
        """The file's size and time of change as its metadata was read."""
        info = self.location.fs.get_file_info(self.location.path(self.name))
        return info.size, info.mtime_ns

    def _check_unchanged(self) -> None:
        """A SidecarError where the file is no longer the one whose metadata (its ensemble,
        its plan) was read: its Q would be named another ensemble's."""
        info = self.location.fs.get_file_info(self.location.path(self.name))
        if (info.size, info.mtime_ns) != self._as_read:
            raise SidecarError(f"{self.name} was replaced or deleted while it was read (its Q "
                               "would be named the ensemble of the file read first); read "
                               "again")

    def _unreadable(self, error: Exception) -> str:
        if isinstance(error, OSError):  # a network error, or pyarrow's on damaged metadata
            return (f"{self.name} could not be read ({error}): if the storage answers, it is "
                    "damaged (delete it and relabel again); else try again")
        return (f"{self.name} cannot be read as a relabel sidecar ({error}); delete it and "
                "relabel again")

    @cached_property
    def metadata(self) -> "SidecarMetadata":
        """What the sidecar records of its Q (SidecarError: damaged)."""
        return SidecarMetadata.of(self._schema, self.name)

    @cached_property
    def _whole(self) -> dict[str, float]:
        return self._by_key(self._read())

    def qualities(self, shard: int) -> dict[str, float]:
        """key -> Q of the sidecar's rows of one shard: from the row groups that hold it where
        their statistics say (relabel writes one a shard: a filtered read parsed the whole
        footer for each shard, 55 ms each at 8,750 shards, shards x shards over a pass)."""
        if "shard" not in self._schema.names:
            return self._whole
        try:
            table = self._shard_rows(shard)
        except SidecarError:
            self._check_unchanged()  # a file replaced meanwhile is said to be
            raise
        self._check_unchanged()
        return self._by_key(table)

    def _shard_rows(self, shard: int) -> pa.Table:
        """The sidecar's rows of one shard, from its row groups where they name one shard
        each, else by a filtered read."""
        groups = self._shard_groups
        if groups is None:
            return self._read(filters=[("shard", "==", shard)])
        try:
            with self.location.fs.open_input_file(self.location.path(self.name)) as handle:
                table = pq.ParquetFile(handle, metadata=self._footer).read_row_groups(
                    groups.get(shard, []), columns=["key", "quality", "shard"])
        except (pa.ArrowException, OSError) as error:
            raise SidecarError(self._unreadable(error)) from error
        return table.filter(pc.equal(table["shard"], shard))

    @cached_property
    def _footer(self) -> pq.FileMetaData:
        """The file's parquet footer."""
        try:
            with self.location.fs.open_input_file(self.location.path(self.name)) as handle:
                return pq.read_metadata(handle)
        except (pa.ArrowException, OSError) as error:
            raise SidecarError(self._unreadable(error)) from error

    @cached_property
    def _shard_groups(self) -> dict[int, list[int]] | None:
        """shard -> the row groups holding its rows, from each group's statistics of the
        shard column, read once; None where a group's do not name one shard (a sidecar
        another tool wrote: read by filter)."""
        footer = self._footer
        column = footer.schema.to_arrow_schema().get_field_index("shard")
        groups: dict[int, list[int]] = {}
        for group in range(footer.num_row_groups):
            if not footer.row_group(group).num_rows:
                continue
            stats = footer.row_group(group).column(column).statistics
            if stats is None or not stats.has_min_max or stats.min != stats.max:
                return None
            groups.setdefault(stats.min, []).append(group)
        return groups

    def _check_dataset(self, shard: int, stats: dict | None) -> None:
        """A SidecarError where the sidecar was made for another dataset than the one whose
        shard `shard` (of `stats`, read where not given) is read (the same sources make the
        same keys: keys alone cannot tell)."""
        made_for = self.metadata.plan_digest
        if made_for is None:
            return
        stats = shard_stats(self.location, shard) if stats is None else stats
        if stats.get("plan_digest") != made_for:
            raise SidecarError(f"{self.name} was made for another dataset (plan "
                               f"{made_for[:12]}; shard {shard} here is of plan "
                               f"{str(stats.get('plan_digest'))[:12]}): relabel this one")

    def relabelled(self, records: Iterator[dict], shard: int, stats: dict | None = None
                   ) -> Iterator[dict]:
        """The records of one shard (of `stats`, read where not given), each distorted one
        with the sidecar's Q."""
        self._check_dataset(shard, stats)
        qualities = self.qualities(shard)
        for item in records:
            meta = item["meta"]
            if meta.get("kind") == "distorted":
                if item["key"] not in qualities:
                    raise SidecarError(f"sample {item['key']} has no Q in {self.name}: a "
                                       "sidecar of another dataset, or made before this "
                                       "shard; relabel again")
                item = {**item, "meta": {**meta, "quality": qualities[item["key"]],
                                         **self.metadata.named_in_records()}}
            yield item

    def _by_key(self, table: pa.Table) -> dict[str, float]:
        """key -> Q; a SidecarError where a Q is not one (quality_problem)."""
        problem = quality_problem(table)
        if problem:
            raise SidecarError(f"{self.name}: {problem}; delete it and relabel again")
        values = table["quality"].to_numpy(zero_copy_only=False).astype(np.float64)
        keys = table["key"].to_pylist()
        by_key = dict(zip(keys, values.tolist(), strict=True))
        if len(by_key) < len(keys):  # a key twice: which Q is its own?
            twice = next(key for key, count in Counter(keys).items() if count > 1)
            raise SidecarError(f"{self.name} gives sample {twice} more than one Q ("
                               f"{len(keys) - len(by_key)} such row(s)); delete it and "
                               "relabel again")
        return by_key


def quality_problem(table: pa.Table) -> str | None:
    """What makes a sidecar's quality column no relabel's Q, in words (None: nothing): Q is
    clipped to 0..1 by its definition (labels.md), so a text, a null, a NaN or a 1.5 is not
    one; the first such sample is named."""
    column = table["quality"]
    if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
        return f"its quality column holds {column.type}, not numbers"
    values = column.to_numpy(zero_copy_only=False).astype(np.float64)  # null: NaN
    outside = np.flatnonzero(~((values >= 0) & (values <= 1)))
    if not outside.size:
        return None
    first = outside[0]
    return (f"sample {table['key'][first].as_py()} has Q {column[first].as_py()}, not a "
            f"number in 0..1 ({outside.size} such)")
