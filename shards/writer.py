"""Writing one shard: a byte-reproducible WebDataset tar (gzipped in the recipes and hybrid
modes, shards.layout), its parquet index, and the stats file last (its presence means the shard
is complete)."""

import contextlib
import gzip
import hashlib
import io
import tarfile
import time

import pyarrow as pa
import pyarrow.parquet as pq

from shards.layout import DEFAULT_STORE, SHARDS_DIR, compresses, shard_files
from shards.schema import INDEX_SCHEMA, index_row, sample_json
from shards.storage import Location

GZIP_LEVEL = 9
INDEX_COMPRESSION = ("zstd", 9)  # the parquet index's codec and level


class _Hashing:
    """A write-only stream that counts and hashes what passes through it to `stream`."""

    def __init__(self, stream):
        self.stream, self.sha256, self.size = stream, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.stream.write(data)


def _index_bytes(rows: list[dict]) -> bytes:
    """The parquet index of `rows`: a few kB a shard, made in memory to be hashed."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA), sink,
                   compression=INDEX_COMPRESSION[0], compression_level=INDEX_COMPRESSION[1])
    return sink.getvalue().to_pybytes()


class ShardWriter:
    """Streams samples into shard `index`'s tar; `finish` publishes tar and parquet, then stats.

    Members carry fixed metadata (mtime 0, uid/gid 0, mode 644), and a gzipped tar a fixed gzip
    header (no name, mtime 0), so that the same samples in the same order give the same bytes
    (with the same zlib).
    """

    def __init__(self, location: Location, index: int, store: str = DEFAULT_STORE):
        self.location = location
        self.index = index
        self.paths = shard_files(location, index, store)
        location.makedirs(location.path(SHARDS_DIR))
        self._staged_tar = location.attempt_name(self.paths["tar"])
        self._staged_parquet = location.attempt_name(self.paths["parquet"])
        self._stream = location.fs.open_output_stream(self._staged_tar, compression=None)
        self._hashing = _Hashing(self._stream)
        # closed in finish() or abort(): the tar and its gzip layer live as long as the writer
        self._gzip = (gzip.GzipFile(filename="", mode="wb", fileobj=self._hashing,
                                    compresslevel=GZIP_LEVEL, mtime=0)
                      if compresses(store) else None)
        self._tar = tarfile.open(  # noqa: SIM115
            fileobj=self._hashing if self._gzip is None else self._gzip, mode="w|",
            format=tarfile.GNU_FORMAT)
        self._rows: list[dict] = []
        self._list_digests: dict[str, str] = {}
        self._started = time.perf_counter()

    def _member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self._tar.addfile(info, io.BytesIO(data))

    def add(self, record: dict, image_bytes: bytes | None, extension: str = "png") -> None:
        """Append one sample: its image (none for a version stored as its recipe only) and
        its .json (the record)."""
        if image_bytes is not None:
            self._member(f"{record['key']}.{extension}", image_bytes)
        self._member(f"{record['key']}.json", sample_json(record))
        self._rows.append(index_row(record))

    def write_list(self, kind: str, data: bytes) -> None:
        """One of the shard's side lists ("sources", "failures"), written before the stats,
        which record its SHA-256: a list edited afterwards is a changed shard to a resume and
        to `inspect` (shards.reader.shard_lists)."""
        self.location.write_bytes(self.paths[kind], data)
        self._list_digests[f"{kind}_sha256"] = hashlib.sha256(data).hexdigest()

    def finish(self, stats: dict) -> dict:
        """Close and publish the tar and parquet, then write the stats file last, with their
        byte sizes and SHA-256s (what readers, `inspect` and a resume check them against)."""
        self.publish()
        return self.write_stats(stats)

    def publish(self) -> None:
        """Close and publish the tar and parquet (the shard is finished once write_stats has
        run)."""
        self._tar.close()
        if self._gzip is not None:
            self._gzip.close()
        self._stream.close()
        index = _index_bytes(self._rows)
        self._index_digest = {"parquet_bytes": len(index),
                              "parquet_sha256": hashlib.sha256(index).hexdigest()}
        with self.location.fs.open_output_stream(self._staged_parquet,
                                                 compression=None) as stream:
            stream.write(index)
        self.location.publish(self._staged_tar, self.paths["tar"])
        self.location.publish(self._staged_parquet, self.paths["parquet"])

    def write_stats(self, stats: dict) -> dict:
        """The stats file, last: `stats` with the byte sizes and SHA-256s of the tar and the
        parquet index, and the SHA-256s of the lists written through write_list."""
        full_stats = {**stats, "shard": self.index, "samples": len(self._rows),
                      "tar_bytes": self._hashing.size,
                      "tar_sha256": self._hashing.sha256.hexdigest(), **self._index_digest,
                      **self._list_digests,
                      "write_seconds": round(time.perf_counter() - self._started, 3)}
        self.location.write_json(self.paths["stats"], full_stats)
        return full_stats

    def abort(self) -> None:
        """Drop what was staged, the tar and the parquet index (a failed or cancelled shard
        leaves no partial files behind)."""
        layers = (self._tar, self._gzip, self._stream)
        for closing in (layer.close for layer in layers if layer is not None):
            with contextlib.suppress(OSError, tarfile.TarError):
                closing()
        for staged in (self._staged_tar, self._staged_parquet):
            self.location.delete(staged)
