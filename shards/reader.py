"""Reading a dataset: which shards are complete, the parquet index, the tar URLs for
WebDataset readers."""

import json
import tarfile

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from shards.storage import Location
from shards.writer import SHARDS_DIR, shard_paths

SOURCES_FILE = "sources.parquet"


def complete_shards(location: Location) -> list[int]:
    """Indices of the shards whose stats file exists (written last, so they are complete)."""
    selector = pafs.FileSelector(location.path(SHARDS_DIR), allow_not_found=True)
    names = [info.base_name for info in location.fs.get_file_info(selector)]
    return sorted(int(name.split("_")[0]) for name in names if name.endswith("_stats.json"))


def shard_stats(location: Location, index: int) -> dict:
    return json.loads(location.read_bytes(shard_paths(location, index)["stats"]))


def read_index(location: Location, shards: list[int] | None = None,
               columns: list[str] | None = None) -> pa.Table:
    """The parquet index of the given (default: every complete) shard, concatenated."""
    indices = complete_shards(location) if shards is None else shards
    tables = []
    for index in indices:
        with location.fs.open_input_file(shard_paths(location, index)["parquet"]) as handle:
            tables.append(pq.read_table(handle, columns=columns))
    if not tables:
        raise FileNotFoundError(f"no complete shard in {location.path(SHARDS_DIR)}")
    return pa.concat_tables(tables)


def read_sources(location: Location) -> pa.Table:
    """sources.parquet: every pristine source with its ref_id, shard, split and status."""
    path = location.path(SOURCES_FILE)
    if not location.exists(path):
        raise FileNotFoundError(f"{path} does not exist: is {location.root} a finished dataset?")
    with location.fs.open_input_file(path) as handle:
        return pq.read_table(handle)


def tar_members(location: Location, path: str, read: bool = True) -> dict[str, dict]:
    """key -> {extension: bytes} of a shard tar, in member order, streamed (bytes are None
    when `read` is False, for a listing that does not hold the images)."""
    members: dict[str, dict] = {}
    with location.fs.open_input_stream(path) as stream, \
            tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            key, _, extension = member.name.partition(".")
            members.setdefault(key, {})[extension] = (
                tar.extractfile(member).read() if read else None)
    return members


def tar_urls(location: Location, shards: list[int] | None = None) -> list[str]:
    """Paths of the complete shards' tars, for webdataset.WebDataset."""
    indices = complete_shards(location) if shards is None else shards
    return [shard_paths(location, index)["tar"] for index in indices]
