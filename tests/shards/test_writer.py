import gzip
import hashlib
import io
import json
import os
import re
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from shards import keys, stopping
from shards.layout import shard_paths, tar_path
from shards.reader import (
    INDEX_CHANGED,
    DamagedShardError,
    complete_shards,
    read_index,
    shard_problems,
    shard_states,
    tar_urls,
)
from shards.schema import METRIC_KEYS, SCORES_TYPE, finite_counts, sample_json, score_arrays
from shards.storage import Location
from shards.writer import ShardWriter


def _records():
    ref = {"key": keys.reference_key("a"), "ref_id": "a", "kind": "reference", "split": "train",
           "width": 4, "height": 2, "codec": "png", "sha256": "0" * 64}
    dist = {**ref, "key": keys.distorted_key("a", 1, 3), "kind": "distorted",
            "distortion_id": 1, "distortion": "jpeg", "category": "compression", "level": 3,
            "seed": 7, "recipe": {"params": {"quality": 24}},
            "scores": {k: 0.5 for k in ("gmsd", "mae")}, "quality": 0.75,
            "ensemble_hash": "abc", "metrics_used": ["gmsd", "mae"]}
    return [(ref, b"ref-image-bytes"), (dist, b"distorted-image-bytes")]


def _write(root, index=0, store="images"):
    location = Location.parse(str(root))
    writer = ShardWriter(location, index, store)
    for record, data in _records():
        writer.add(record, data)
    writer.finish({"failures": 0})
    return location


def test_a_shard_reads_back_with_webdataset_and_its_index_matches(tmp_path):
    location = _write(tmp_path)
    samples = list(wds.WebDataset(tar_urls(location), shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["a_ref", "a_d01_l3"]
    assert samples[1]["png"] == b"distorted-image-bytes"
    assert json.loads(samples[1]["json"])["recipe"] == {"params": {"quality": 24}}
    index = read_index(location).to_pylist()
    assert [row["key"] for row in index] == [s["__key__"] for s in samples]
    assert index[0]["scores"] is None and index[1]["scores"]["mae"] == 0.5
    assert index[1]["scores"]["lpips"] is None  # a metric not computed stays null
    assert json.loads(index[1]["recipe"]) == {"params": {"quality": 24}}


@pytest.mark.parametrize("store", ["images", "recipes", "hybrid"])
def test_tars_are_byte_reproducible(tmp_path, store):
    first = _write(tmp_path / "one", store=store)
    second = _write(tmp_path / "two", store=store)

    def digest(location):
        return hashlib.sha256(location.read_bytes(tar_path(location, 0, store))).hexdigest()

    assert digest(first) == digest(second)


def test_a_recipes_shard_is_the_images_tar_gzipped_with_a_fixed_header(tmp_path):
    plain = _write(tmp_path / "images").read_bytes(tar_path(Location.parse(str(
        tmp_path / "images")), 0, "images"))
    location = _write(tmp_path / "recipes", store="recipes")
    path = tar_path(location, 0, "recipes")
    assert path.endswith("/shards/00000.tar.gz")
    packed = location.read_bytes(path)
    # RFC 1952: magic 1f 8b, deflate (8), no flags (no file name), MTIME 0
    assert packed[:4] == b"\x1f\x8b\x08\x00" and packed[4:8] == bytes(4)
    assert gzip.decompress(packed) == plain
    with tarfile.open(fileobj=io.BytesIO(packed), mode="r:gz") as tar:
        assert tar.getnames() == ["a_ref.png", "a_ref.json", "a_d01_l3.png", "a_d01_l3.json"]
    samples = list(wds.WebDataset([path], shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["a_ref", "a_d01_l3"]
    stats = json.loads(location.read_bytes(shard_paths(location, 0)["stats"]))
    assert (stats["tar_bytes"], stats["tar_sha256"]) == (len(packed),
                                                         hashlib.sha256(packed).hexdigest())


def test_an_uncompressed_tar_spends_1536_bytes_on_a_900_byte_record(tmp_path):
    # a tar member is a 512-byte header and its data padded to whole 512-byte blocks
    location = Location.parse(str(tmp_path))
    writer = ShardWriter(location, 0, "images")
    record = {"key": keys.distorted_key("a", 1, 3), "pad": ""}
    record["pad"] = "x" * (900 - len(sample_json(record)))
    assert len(sample_json(record)) == 900
    writer.add(record, None)  # a version stored as its recipe: the .json member only
    writer.add({"key": keys.distorted_key("a", 1, 4)}, None)
    writer.finish({"failures": 0})
    data = location.read_bytes(tar_path(location, 0, "images"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    assert members[0].size == 900
    assert [m.offset for m in members] == [0, 1536]  # the second starts where the first ends


def test_stats_are_written_last_and_mark_completion(tmp_path):
    location = Location.parse(str(tmp_path))
    writer = ShardWriter(location, 3)
    writer.add(*_records()[0])
    assert complete_shards(location) == []
    assert not location.exists(tar_path(location, 3, "images"))  # still under its staging name
    stats = writer.finish({"failures": 0})
    assert complete_shards(location) == [3] and stats["samples"] == 1
    assert pq.read_table(shard_paths(location, 3)["parquet"]).num_rows == 1


def test_abort_leaves_no_partial_file(tmp_path):
    location = Location.parse(str(tmp_path))
    writer = ShardWriter(location, 0)
    writer.add(*_records()[0])
    writer.abort()
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == []
    # stopped as it publishes (a cancelled task's interrupt), its index staged: gone too
    writer, publish = ShardWriter(location, 0), location.publish
    writer.add(*_records()[0])

    def stopped_at_the_index(staged: str, final: str) -> None:
        if final.endswith(".parquet"):
            raise KeyboardInterrupt
        publish(staged, final)
    object.__setattr__(location, "publish", stopped_at_the_index)
    with pytest.raises(KeyboardInterrupt):
        writer.publish()
    writer.abort()
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["00000.tar"]


@pytest.mark.parametrize("store", ["local", "s3"])
def test_an_attempt_given_up_leaves_the_shard_another_attempt_published(store, tmp_path,
                                                                        s3_bucket):
    """Two attempts at one shard (a retry beside a task of a driver whose lease was taken
    over): the later one finishes, the earlier one fails or is refused and aborts. On an
    object store, whose uploads complete even when the writer gives up, its partial tar
    replaced the finished one, then its abort deleted it."""
    location = Location.parse(s3_bucket.uri(f"attempts-{tmp_path.name}") if store == "s3"
                              else str(tmp_path))
    given_up = ShardWriter(location, 0)
    given_up.add(*_records()[0])
    finished = ShardWriter(location, 0)
    for record, data in _records():
        finished.add(record, data)
    stats = finished.finish({"failures": 0})
    given_up.abort()
    assert complete_shards(location) == [0]
    tar = location.read_bytes(tar_path(location, 0, "images"))
    assert (len(tar), hashlib.sha256(tar).hexdigest()) == (stats["tar_bytes"],
                                                          stats["tar_sha256"])
    listed = location.fs.get_file_info(pafs.FileSelector(location.path("shards")))
    assert sorted(info.base_name for info in listed) == ["00000.parquet", "00000.tar",
                                                         "00000_stats.json"]  # none staged


def test_a_shard_larger_than_one_s3_copy_is_published_in_parts(s3_bucket, tmp_path,
                                                                monkeypatch):
    from shards import storage

    monkeypatch.setattr(storage, "S3_COPY_BYTES", 0)  # every tar above it
    monkeypatch.setattr(storage, "S3_PART_BYTES", 5 << 20)  # S3's smallest part
    location = Location.parse(s3_bucket.uri(f"parts-{tmp_path.name}"))
    writer = ShardWriter(location, 0)
    (ref, _), (version, _) = _records()
    writer.add(ref, np.random.default_rng(0).bytes(12 << 20))  # three parts
    writer.add(version, b"distorted-image-bytes")
    stats = writer.finish({"failures": 0})
    tar = location.read_bytes(tar_path(location, 0, "images"))
    assert hashlib.sha256(tar).hexdigest() == stats["tar_sha256"]
    assert complete_shards(location) == [0]
    key = f"parts-{tmp_path.name}/shards/00000.tar"
    etag = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=key)["ETag"]
    assert etag.strip('"').endswith("-3")  # a multipart upload's ETag counts its parts


def test_a_published_file_and_its_folder_are_synced_locally(tmp_path, monkeypatch):
    """The staged file's bytes are synced (by its staged name: before the rename, which
    removes that name) and then its folder (the rename itself)."""
    import os

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(
        os.readlink(f"/proc/self/fd/{fd}")) or real(fd))
    location = Location.parse(str(tmp_path))
    final = location.path("notes.json")
    location.write_bytes(final, b"{}")
    [staged_name, folder] = synced
    assert staged_name != final and os.path.dirname(staged_name) == str(tmp_path)
    assert folder == str(tmp_path) and (tmp_path / "notes.json").read_bytes() == b"{}"
    assert not os.path.exists(staged_name)


def test_an_atomic_file_is_synced_then_renamed_or_left_as_it_was(tmp_path, monkeypatch):
    """The one local write-whole-or-not-at-all of checkpoints, feature caches and results."""
    import os

    from shards.storage import atomic_file

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(
        os.readlink(f"/proc/self/fd/{fd}")) or real(fd))
    final = tmp_path / "last.pt"
    with atomic_file(final) as handle:
        handle.write(b"first")
    [staged_name, folder] = synced
    assert staged_name != str(final) and folder == str(tmp_path)
    assert final.read_bytes() == b"first"
    with pytest.raises(RuntimeError), atomic_file(final) as handle:
        handle.write(b"torn")
        raise RuntimeError("the writer failed midway")
    assert final.read_bytes() == b"first" and sorted(tmp_path.iterdir()) == [final]
    leftover = tmp_path / "last.pt.partial"  # a killed writer's
    leftover.write_bytes(b"torn")
    with atomic_file(final) as first, atomic_file(final) as second:  # two writers at once
        first.write(b"one whole file")
        second.write(b"another whole file")
    assert final.read_bytes() in (b"one whole file", b"another whole file")
    assert leftover.read_bytes() == b"torn"  # never written into


def _interrupting_at(step: int, module: str, as_the_handler: bool = False):
    """A trace function raising KeyboardInterrupt (a SIGTERM's, as the commands answer it) at
    the `step`-th line, call or return of `module`'s code, and a count of the steps seen.
    `as_the_handler`: at its lines and calls only (no handler runs as a generator yields), and
    raised as the commands' SIGTERM handler does (held inside `interrupts_held`)."""
    seen = [0]

    def trace(frame, event, arg):
        if module in frame.f_code.co_filename and not (as_the_handler and event == "return"):
            seen[0] += 1
            if seen[0] == step and as_the_handler:
                stopping.interrupt(stopping.SIGTERM_REASON)
            elif seen[0] == step:
                raise KeyboardInterrupt("SIGTERM")
        return trace
    return trace, seen


def test_an_interrupt_at_any_step_of_a_zip_written_whole_is_that_interrupt(tmp_path):
    """zipfile's cleanup can fail on a write an interrupt left open ("Can't close the ZIP file
    while there is an open writing handle"), and its ValueError replaced the interrupt: a
    command showed a crash where it says how to go on (a features cache, predictions). At
    each step of np.savez's zipfile in turn: that KeyboardInterrupt, the file as it was, no
    staged file; after its last step, the new file whole."""
    import sys

    from shards.storage import atomic_file

    final = tmp_path / "features.npz"
    final.write_bytes(b"as it was")
    step = 0
    while final.read_bytes() == b"as it was":
        step += 1
        trace, seen = _interrupting_at(step, "zipfile")
        sys.settrace(trace)
        try:
            with atomic_file(final) as handle:
                np.savez(handle, features=np.arange(12.0), names=np.array(["a", "b"]))
        except KeyboardInterrupt:
            assert seen[0] == step
        finally:
            sys.settrace(None)
        assert [path.name for path in tmp_path.iterdir()] == [final.name]
    assert step > 100  # (an interrupt at the last steps is one a finalizer drops)
    assert np.load(final)["features"].tolist() == list(np.arange(12.0))


def test_an_interrupt_as_an_atomic_file_is_synced_and_renamed_leaves_one_whole_file(tmp_path):
    """The rename was outside the block that removes the staged file: an interrupt just before
    it left the new file whole beside the old one, as `*.partial`. At each step of
    atomic_file's own code after the block wrote: the file old or new, never a staged one."""
    import sys

    from shards.storage import atomic_file

    final = tmp_path / "summary.json"
    final.write_bytes(b"old")
    step, kept = 0, set()
    while True:
        step += 1
        trace, seen = _interrupting_at(step, "shards/storage.py")
        try:
            with atomic_file(final) as handle:
                handle.write(b"new")
                sys.settrace(trace)  # from here: the sync and the rename
        except KeyboardInterrupt:
            pass
        finally:
            sys.settrace(None)
        assert [path.name for path in tmp_path.iterdir()] == [final.name], step
        kept.add(final.read_bytes())
        if seen[0] < step:  # it ran to its end
            break
        final.write_bytes(b"old")
    assert step > 5 and kept == {b"old", b"new"}


@pytest.mark.parametrize("another_writer", [False, True])
def test_a_signal_as_an_atomic_file_is_opened_leaves_no_staged_file_nor_descriptor(
        tmp_path, another_writer):
    """A signal that came after the staged file was created but before atomic_file's cleanup
    could see it left the file (and its descriptor) behind. At each step of atomic_file's own
    code before its block, a SIGTERM as the commands' handler answers it: the file old or new,
    another writer's staged file untouched, none of this writer's left, no descriptor open."""
    import contextlib
    import sys

    from shards.storage import STAGED_SUFFIX, atomic_file

    final = tmp_path / "summary.json"
    theirs = tmp_path / (final.name + STAGED_SUFFIX)
    descriptors = len(os.listdir("/proc/self/fd"))
    step, kept = 0, set()
    while True:
        step += 1
        final.write_bytes(b"old")
        if another_writer:
            theirs.write_bytes(b"theirs")
        trace, seen = _interrupting_at(step, "shards/storage.py", as_the_handler=True)
        with contextlib.suppress(KeyboardInterrupt), stopping.stops_as_interrupts():
            sys.settrace(trace)
            try:
                with atomic_file(final) as handle:
                    sys.settrace(None)
                    handle.write(b"new")
            finally:
                sys.settrace(None)
        left = sorted(path.name for path in tmp_path.iterdir())
        assert left == sorted([final.name, *([theirs.name] if another_writer else [])]), step
        assert not another_writer or theirs.read_bytes() == b"theirs"
        assert len(os.listdir("/proc/self/fd")) == descriptors, step
        kept.add(final.read_bytes())
        if seen[0] < step:  # it ran to its block
            break
    assert step > 5 and kept == {b"old", b"new"}


def test_reading_an_empty_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a dataset written by generate"):
        read_index(Location.parse(str(tmp_path)))
    (tmp_path / "shards").write_text("a file where the shards go")  # pyarrow's own words once
    with pytest.raises(FileNotFoundError, match=r"shards is a file, not the folder of a "
                                                r"dataset's shards$"):
        read_index(Location.parse(str(tmp_path)))


def test_ref_ids_are_sanitised_and_unique():
    assert keys.ref_ids(["I01.v2", "I01_v2", "a b", "", "I01.v2"]) == [
        "I01_v2", "I01_v2-1", "a_b", "image", "I01_v2-2"]
    ids = keys.ref_ids(["Same", "same", "SAME-1", "other"])  # one file each on any disk
    assert ids == ["Same", "same-1", "SAME-1-1", "other"]
    assert len({i.lower() for i in ids}) == len(ids)
    assert "." not in keys.distorted_key("x", 3, 5)
    np.testing.assert_equal(keys.distorted_key("x", 3, 5), "x_d03_l5")


def test_score_arrays_give_nan_where_a_score_or_the_whole_struct_is_null():
    column = pa.chunked_array([
        pa.array([{"mae": 0.25, "gmsd": None}, None], type=SCORES_TYPE),
        pa.array([{"mae": 0.5, "gmsd": 0.125}], type=SCORES_TYPE)])
    arrays = score_arrays(column)
    assert list(arrays) == list(METRIC_KEYS)
    np.testing.assert_array_equal(arrays["mae"], [0.25, np.nan, 0.5])
    np.testing.assert_array_equal(arrays["gmsd"], [np.nan, np.nan, 0.125])
    assert np.isnan(arrays["lpips"]).all() and arrays["mae"].dtype == np.float64


def test_finite_counts_leave_out_nan_and_both_infinities():
    scores = {"mae": np.array([0.5, np.inf, np.nan, -np.inf, 0.0]), "gmsd": np.array([])}
    assert finite_counts(scores) == {"mae": 2, "gmsd": 0}


def _ref_ids_trying_every_suffix(stems: list[str]) -> list[str]:
    """The rule as first written: each source tries base, base-1, base-2, ... from the start."""
    taken, ids = set(), []
    for stem in stems:
        base = keys.safe_name(stem)
        candidate, counter = base, 1
        while candidate.lower() in taken:
            candidate, counter = f"{base}-{counter}", counter + 1
        taken.add(candidate.lower())
        ids.append(candidate)
    return ids


def test_ref_ids_go_on_from_the_last_suffix_and_give_the_ids_of_trying_every_one():
    """Names repeated across folders (img.jpg in each) took quadratic time; the ids are those
    the plain rule gives, literal suffixed names and letter case mixed in."""
    rng = np.random.default_rng(0)
    words = ["img", "IMG", "img-1", "img-2", "Img-3", "a b", "a_b", "x", "x-1", "x.y", ""]
    for _ in range(300):
        stems = [words[i] for i in rng.integers(0, len(words), int(rng.integers(1, 60)))]
        assert keys.ref_ids(stems) == _ref_ids_trying_every_suffix(stems)
    assert keys.ref_ids(["img"] * 3000) == ["img"] + [f"img-{n}" for n in range(1, 3000)]


def test_the_stats_record_the_parquet_index_size_and_sha256(tmp_path):
    location = _write(tmp_path)
    index = location.read_bytes(shard_paths(location, 0)["parquet"])
    stats = json.loads(location.read_bytes(shard_paths(location, 0)["stats"]))
    assert (stats["parquet_bytes"], stats["parquet_sha256"]) == (
        len(index), hashlib.sha256(index).hexdigest())
    assert pq.read_table(pa.BufferReader(index)).num_rows == 2


def _as_a_run_writes(location: Location) -> Location:
    """Each shard with the (empty) sources and failures lists a run writes beside it."""
    for stats in Path(location.path("shards")).glob("*_stats.json"):
        index = int(stats.name.partition("_")[0])
        Path(shard_paths(location, index)["sources"]).write_bytes(b"[]")
        Path(shard_paths(location, index)["failures"]).write_bytes(b"")
    return location


def _damage_index(location: Location, index: int, change) -> str:
    path = shard_paths(location, index)["parquet"]
    with open(path, "r+b") as handle:
        data = bytearray(handle.read())
        handle.seek(0)
        handle.truncate()
        handle.write(change(data))
    return path


def test_an_index_changed_after_it_was_written_is_refused_by_readers_and_resumes(tmp_path):
    """A bit flipped in a parquet index can leave it readable with other values (a key, a
    score); the stats' SHA-256 catches it: readers refuse it naming the file, a resume
    (examine_shard) makes it again. One cut short is damaged by its size alone."""
    location = _write(tmp_path)
    _as_a_run_writes(_write(tmp_path, index=1))

    def flip(data: bytearray) -> bytearray:
        data[len(data) // 3] ^= 0x10
        return data
    path = _damage_index(location, 1, flip)
    with pytest.raises(DamagedShardError, match=f"{path}: {re.escape(INDEX_CHANGED)}"):
        read_index(location)
    assert read_index(location, [0]).num_rows == 2  # the other shard reads
    assert shard_problems(location, 1, None, "images") == [INDEX_CHANGED]
    _damage_index(location, 1, lambda data: data[:-1])
    assert shard_states(location)[1] == {1: f"parquet is {len(Path(path).read_bytes())} "
                                            f"bytes, its stats say "
                                            f"{len(Path(path).read_bytes()) + 1}"}


def test_two_indexes_swapped_are_refused(tmp_path):
    """Indexes of the same size (the same number of rows) swapped between shards read as
    valid parquet of the wrong shard without their SHA-256."""
    location = _write(tmp_path)
    writer = ShardWriter(location, 1)
    for record, data in _records():
        writer.add({**record, "key": record["key"].replace("a_", "b_"), "ref_id": "b"}, data)
    writer.finish({"failures": 0})
    _as_a_run_writes(location)
    first, second = (Path(shard_paths(location, i)["parquet"]) for i in (0, 1))
    assert first.stat().st_size == second.stat().st_size
    first_bytes = first.read_bytes()
    first.write_bytes(second.read_bytes())
    second.write_bytes(first_bytes)
    assert shard_states(location)[0] == [0, 1]  # sizes agree: the listing alone cannot tell
    for index in (0, 1):
        assert shard_problems(location, index, None, "images") == [INDEX_CHANGED]
        with pytest.raises(DamagedShardError):
            read_index(location, [index])


def test_stats_written_before_they_recorded_the_index_read_as_before(tmp_path):
    location = _as_a_run_writes(_write(tmp_path))
    stats_path = Path(shard_paths(location, 0)["stats"])
    stats = json.loads(stats_path.read_text())
    del stats["parquet_bytes"], stats["parquet_sha256"]
    stats_path.write_text(json.dumps(stats))
    assert shard_problems(location, 0, None, "images") == []
    assert read_index(location).num_rows == 2


def test_every_member_carries_the_fixed_metadata_the_writer_documents(tmp_path):
    """ShardWriter: 'Members carry fixed metadata (mtime 0, uid/gid 0, mode 644)', no owner
    names, so the same samples give the same bytes on every machine and account."""
    location = _write(tmp_path)
    with tarfile.open(tar_path(location, 0, "images")) as tar:
        members = tar.getmembers()
    assert members and all(
        (m.mtime, m.uid, m.gid, m.mode, m.uname, m.gname) == (0, 0, 0, 0o644, "", "")
        for m in members)
