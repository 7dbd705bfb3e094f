"""What `inspect` says of a dataset's storage: its mode, the bytes its files take per sample
(and its tars' share), and (recipes or hybrid) one version replayed through the reader and
checked against its SHA-256, with the time the replay took."""

import tarfile
import time

import pyarrow.fs as pafs

from shards.dataset import sample_stream
from shards.layout import DEFAULT_STORE
from shards.reader import tar_urls
from shards.replay import Pending, ReplayError
from shards.storage import Location


def bytes_line(location: Location, store: str, shards: list[int], samples: int) -> str:
    """The store mode, the bytes of every file of the dataset in all and per sample of its
    complete `shards` (which hold `samples`), and those shards' tars' share: one listing."""
    listing = location.fs.get_file_info(pafs.FileSelector(location.root, recursive=True))
    sizes = {info.path: info.size for info in listing if info.type == pafs.FileType.File}
    total = sum(sizes.values())
    tars = sum(sizes[url] for url in tar_urls(location, shards))  # listed under the same root
    per_sample = f"{total / samples / 1e3:.1f} kB per sample" if samples else "no sample"
    return (f"storage: {store}, {total / 1e6:.1f} MB for {samples} samples ({per_sample}; "
            f"tars {tars / 1e6:.1f} MB)")


def first_recipe_sample(location: Location, shards: list[int]) -> Pending | None:
    """The first version of the complete `shards` stored as its recipe (None where there is
    none)."""
    for url in tar_urls(location, shards):
        for sample in sample_stream(location, [url], decode=False):
            if isinstance(sample["encoded"], Pending):
                return sample["encoded"]
    return None


def replay_check(location: Location, shards: list[int]) -> tuple[list[str], list[str]]:
    """(lines, problems) of one recipe sample of the complete `shards` replayed and
    verified."""
    try:
        pending = first_recipe_sample(location, shards)
    except (ValueError, OSError, tarfile.TarError) as error:  # a shard damaged since checked
        return [], [f"replay check: {error}"]
    if pending is None:
        return ["replay check: no version is stored as its recipe"], []
    started = time.perf_counter()
    try:
        pending.pixels()
    except ReplayError as error:
        return [], [f"replay check: {error}"]
    took = (time.perf_counter() - started) * 1e3
    return [f"replay check: {pending.key} ({pending.meta['distortion']}) replayed in "
            f"{took:.0f} ms, its SHA-256 the recorded one"], []


def storage_summary(location: Location, store: str, shards: list[int], samples: int
                    ) -> tuple[list[str], list[str]]:
    """(lines, problems) of the dataset's storage: its complete `shards`, which hold
    `samples`."""
    if not shards:
        return [], []
    lines = [bytes_line(location, store, shards, samples)]
    if store == DEFAULT_STORE:
        return lines, []
    replay_lines, problems = replay_check(location, shards)
    return lines + replay_lines, problems
