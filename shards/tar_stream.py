"""Shard tars as webdataset stages: each tar opened through the dataset's pyarrow filesystem
(local paths and object stores alike; webdataset's own gopen does not know pyarrow), then
expanded into samples by webdataset's `tar_file_expander` and `group_by_keys`, one shard at a
time and one member at a time (a shard is never held whole). A gzipped tar (.tar.gz: recipes
and hybrid datasets) is inflated by gzip as it streams, which checks the CRC and length its
gzip trailer records once the last byte is read (tarfile's own inflating checks neither)."""

import contextlib
import gzip
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from itertools import chain

import webdataset as wds
from webdataset.tariterators import group_by_keys, tar_file_expander

from shards.storage import CountingStream, HashingStream, Location

Select = Callable[[str], bool]  # a member's file name -> read it


class ShardReadError(tarfile.ReadError):
    """A shard tar that cannot be read to its end (truncated, corrupted, duplicate members)."""


TAR_CHANGED = ("tar SHA-256 differs from its stats (changed after it was written; "
               "`generate --verify` with the run's options makes it again)")


class ChangedTarError(ShardReadError):
    """A shard tar whose bytes are not the SHA-256 its stats record."""


class NothingToDrawError(ValueError):
    """A resampled stream whose every shard holds no item of its selection (it would draw
    shards without end and never yield)."""


def _unreadable(url: str, stream) -> Callable[[Exception], bool]:
    """webdataset's exception handler for one shard read from `stream`: raise one clear
    error naming the tar (without the " @ <stream>" webdataset appends to a message)."""
    appended = f" @ {stream}"

    def handler(error: Exception) -> bool:
        reason = str(error.args[0]) if error.args else type(error).__name__
        reason = reason.removesuffix(appended)
        if isinstance(error, ShardReadError):  # named already, by the stage before
            raise ShardReadError(reason) from error.__cause__
        raise ShardReadError(f"{url} is unreadable: {reason}") from error
    return handler


def shard_samples(opened: dict, select: Select | None = None) -> Iterator[dict]:
    """The webdataset samples ({"__key__", "__url__", extension: bytes}) of one opened shard,
    in member order, reading only the members `select` accepts. Where `opened` has a "keys"
    set (each_shard's), the key of every member is added to it, read or not."""
    handler = _unreadable(opened["url"], opened["stream"])
    seen, last = opened.get("keys"), [None]

    def selected(name: str) -> bool:
        if seen is not None:
            key = name.partition(".")[0]  # the sample's key, as group_by_keys takes it
            if key != last[0] and key in seen:  # a second sample of one key, not one sample
                raise ShardReadError(f"{opened['url']} is unreadable: sample {key} appears "
                                     "twice, its members apart (written otherwise)")
            seen.add(key)
            last[0] = key
        return select is None or select(name)
    members = tar_file_expander([opened], handler=handler, select_files=selected)
    return group_by_keys(members, handler=handler)


def each_shard(location: Location, per_shard: Callable[[dict], Iterable],
               recorded: Callable[[str], dict] | None = None,
               merge: Callable[[Iterable[Iterator]], Iterator] = chain.from_iterable
               ) -> Callable[[Iterable[dict]], Iterator]:
    """A stage from shard urls to what `per_shard(opened)` makes of each opened shard (with
    `shard_samples`: records, groups), so per-shard state ends with its shard; `merge` makes
    one stream of the shards' (one after another, or order.interleaving's). Each tar is
    opened through the dataset's filesystem when its first item is asked for, and closed at
    its end (or when the pipeline is dropped). A plain tar whose archive ends well before its
    file does (zeroed or overwritten in place, at the size its stats record) is a
    ShardReadError, never read as a shorter shard. With `recorded` (url -> its stats), a
    shard read to its end must hold the samples they count and hash to their SHA-256 (its
    bytes pass through the hash as they are read): a tar of the same size put in its place
    (another shard's, another run's) is a ChangedTarError, never read as this shard. Where
    the shards are drawn without end (a source's "pool": the shards drawn from), a stream
    that has read each of them without an item raises NothingToDrawError (a shard whose
    `per_shard` says it "offered" items, all left out by the order's share, is not one)."""
    def one(source: dict, barren: set[str]) -> Iterator:
        url = source["url"]
        with location.open_stream(url) as stored:  # then its stats: those of the tar opened
            stats = recorded(url) if recorded is not None else {}
            hashing = HashingStream(stored)
            counted = _tar_bytes(url, hashing)
            opened = {**source, "stream": counted, "keys": set()}
            items = 0
            with _inflated_to_end(url, counted):
                for item in per_shard(opened):
                    items += 1
                    yield item
            if not _gzipped(url):
                _check_read_to_end(location, url, counted.count)
            _check_against_stats(url, opened["keys"], hashing, stats)
        if not items and not opened.get("offered") and "pool" in source:
            _check_something_to_draw(barren, url, source["pool"])

    def stage(sources: Iterable[dict]) -> Iterator:
        barren: set[str] = set()  # drawn shards read to their end without an item
        return merge(one(source, barren) for source in sources)
    return stage


def _gzipped(url: str) -> bool:
    return url.lower().endswith(".gz")


def _tar_bytes(url: str, stored) -> CountingStream:
    """The tar's bytes from its `stored` ones (inflated by gzip where it is a .tar.gz),
    counted as they are read."""
    return CountingStream(gzip.GzipFile(fileobj=stored, mode="rb") if _gzipped(url)
                          else stored)


@contextlib.contextmanager
def _inflated_to_end(url: str, counted: CountingStream):
    """Around reading a .tar.gz's members: once they are read, its gzip trailer is checked
    (_check_inflated_to_end); where reading stopped on a bad record, the rest is inflated
    for its CRC first (a damaged .tar.gz reads as bad records: it is named as damage).
    Where gzip itself stopped it (a CRC that fails, a stream cut short), that error is the
    cause: the broken gzip stream is not inflated again (it would only say it ended)."""
    try:
        yield
    except Exception as error:
        if _gzipped(url) and not _raised_by_gzip(error):
            _check_inflated_to_end(url, counted, ended=False)
        raise
    if _gzipped(url):
        _check_inflated_to_end(url, counted)


_GZIP_ERRORS = (gzip.BadGzipFile, zlib.error, EOFError)  # what inflating a damaged .gz raises


def _raised_by_gzip(error: BaseException) -> bool:
    """Whether `error`, or an error in its chain of causes, is the gzip layer's."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, _GZIP_ERRORS):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _check_against_stats(url: str, keys: set[str], read: HashingStream, stats: dict) -> None:
    """A shard read to its end against its stats: the samples they count, then the SHA-256
    of its bytes (what is left after the archive's end read now: its last record at most)."""
    count = stats.get("samples")
    if count is not None and len(keys) != count:
        raise ShardReadError(f"{url} is unreadable: its archive holds {len(keys)} "
                             f"samples, its stats {count} (damaged after it was written)")
    sha256 = stats.get("tar_sha256")
    if sha256 is not None and read.hexdigest_to_end() != sha256:
        raise ChangedTarError(f"{url}: {TAR_CHANGED}")


def _check_something_to_draw(barren: set[str], url: str, pool: int) -> None:
    barren.add(url)
    if len(barren) >= pool:
        raise NothingToDrawError(f"none of the {pool} shard(s) this resampled stream draws "
                                 "from holds an item of its selection (its split, "
                                 "references and kind): there is nothing to draw")


def _check_read_to_end(location: Location, url: str, read: int) -> None:
    """After a plain tar's last member: its end-of-archive marker lies in its last record
    (tarfile pads the file to whole records); more left unread is damage."""
    size = location.fs.get_file_info(url).size
    if size is not None and size - read > tarfile.RECORDSIZE:
        raise ShardReadError(f"{url} is unreadable: its archive ends after {read} of its "
                             f"{size} bytes (zeroed or overwritten after it was written)")


def _check_inflated_to_end(url: str, inflated: CountingStream, ended: bool = True) -> None:
    """After a gzipped tar's last member (`ended`): what is left to inflate is its last record
    at most, and the gzip trailer's CRC and length agree with what was inflated (checked as
    the end is read). A damaged .tar.gz whose tar stops early, or inflates to other bytes, is
    named. Where reading stopped on a bad record instead, the rest is inflated for its CRC
    only (a sound archive with a bad record is that record's error)."""
    read, left = inflated.count, 0
    try:
        while block := inflated.read(1 << 20 if not ended else tarfile.RECORDSIZE):
            left += len(block)
            if ended and left > tarfile.RECORDSIZE:
                break
    except (OSError, EOFError, zlib.error) as error:
        raise ShardReadError(f"{url} is unreadable: {error} (damaged after it was "
                             "written)") from error
    if ended and left > tarfile.RECORDSIZE:
        raise ShardReadError(f"{url} is unreadable: its archive ends after {read} of its "
                             "inflated bytes, with more after it (zeroed or overwritten "
                             "after it was written)")


def read_tar(location: Location, url: str, select: Select | None = None,
             keep_bytes: bool = True) -> Iterator[dict]:
    """The samples of one tar, streamed; without `keep_bytes` each member's bytes are dropped
    as its sample is read (a listing: extension -> None)."""
    def listing(opened: dict) -> Iterator[dict]:
        for sample in shard_samples(opened, select):
            yield sample if keep_bytes else {
                name: value if name.startswith("__") else None
                for name, value in sample.items()}
    return iter(wds.DataPipeline(wds.SimpleShardList([url]), each_shard(location, listing)))


class VerifiedTar:
    """The samples of a tar whose bytes must hash to `sha256` (its stats'), each byte read
    once: iterating raises a ChangedTarError after the last sample where they do not, and
    `check()` reads what is left and raises it at once, for a consumer that met a member it
    cannot use (a tar changed after it was written should be named as that, not as a bad
    record)."""

    def __init__(self, location: Location, url: str, sha256: str):
        self.location, self.url, self.sha256 = location, url, sha256
        self._hashing: HashingStream | None = None

    def __iter__(self) -> Iterator[dict]:
        with self.location.open_stream(self.url) as stream:
            self._hashing = HashingStream(stream)
            counted = _tar_bytes(self.url, self._hashing)
            with _inflated_to_end(self.url, counted):
                yield from shard_samples({"url": self.url, "stream": counted})
            self.check()

    def check(self) -> None:
        """A ChangedTarError where the tar's bytes are not the recorded SHA-256 (call while
        iterating, or once done)."""
        if self._hashing is not None and self._hashing.hexdigest_to_end() != self.sha256:
            raise ChangedTarError(f"{self.url}: {TAR_CHANGED}")
