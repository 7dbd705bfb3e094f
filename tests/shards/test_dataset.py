"""open_dataset(...).samples / .pristine: the right samples for each kind and split (against
the parquet index), their pixels and records as stored, local paths and file:// URIs alike,
and a clear error for a dataset without a complete shard."""

import hashlib
import io
import json
import re
import shutil
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from shards import open_dataset
from shards.layout import RunFileError, plan_digest, shard_name, tar_path
from shards.order import Order, share_to_spread
from shards.reader import (
    DamagedShardError,
    complete_shards,
    damage_message,
    read_index,
    shard_problems,
    stray_files,
)
from shards.storage import STAGED_SUFFIX, Location


def _index_keys(root, kind: str, split: str | None) -> list[str]:
    rows = read_index(Location.parse(str(root))).to_pylist()
    return [row["key"] for row in rows if (kind == "all" or row["kind"] == kind)
            and (split is None or row["split"] == split)]


@pytest.mark.parametrize("kind", ["distorted", "reference", "all"])
@pytest.mark.parametrize("split", [None, "train", "val", "test"])
def test_samples_of_each_kind_and_split_are_the_indexed_ones_in_shard_order(generated, kind,
                                                                            split):
    samples = list(open_dataset(str(generated)).samples(split, kind))
    assert [sample["key"] for sample in samples] == _index_keys(generated, kind, split)
    assert samples  # the fixture's seed puts references in every split


def test_a_sample_is_its_stored_pixels_and_record(generated, generated_images):
    samples = list(open_dataset(str(generated)).samples(kind="all"))
    assert len(samples) == len(generated_images)
    for sample in samples:
        pixels, record = generated_images[sample["key"]]
        assert sample["meta"] == record and sample["ref_id"] == record["ref_id"]
        image = sample["image"]
        assert image.dtype == np.uint8 and image.shape == (record["height"],
                                                           record["width"], 3)
        assert np.array_equal(image, pixels)
        assert hashlib.sha256(image.tobytes()).hexdigest() == record["sha256"]


def test_a_sample_holds_the_documented_fields_and_no_others(generated):
    """README: `{key, ref_id, image, meta}` (or `encoded` undecoded), nothing webdataset's
    own stages would add."""
    dataset = open_dataset(str(generated))
    assert sorted(next(iter(dataset.samples()))) == ["image", "key", "meta", "ref_id"]
    assert sorted(next(iter(dataset.pristine()))) == ["image", "key", "meta", "ref_id"]
    assert sorted(next(iter(dataset.samples(decode=False)))) == ["encoded", "key", "meta",
                                                                 "ref_id"]


def test_undecoded_samples_carry_the_stored_bytes(generated):
    dataset = open_dataset(str(generated))
    encoded = next(iter(dataset.samples(decode=False)))
    assert "image" not in encoded and encoded["encoded"][:8] == b"\x89PNG\r\n\x1a\n"


def test_pristine_is_the_references_of_the_split(generated):
    dataset = open_dataset(str(generated))
    for split in (None, "train"):
        keys = [sample["key"] for sample in dataset.pristine(split)]
        assert keys == _index_keys(generated, "reference", split)
        assert all(sample["meta"]["kind"] == "reference" for sample in dataset.pristine(split))


def test_a_dataset_without_sources_parquet_splits_by_its_index(hand_made):
    dataset = open_dataset(str(hand_made))
    assert [s["key"] for s in dataset.samples("test")] == _index_keys(hand_made, "distorted",
                                                                      "test")
    assert {s["ref_id"] for s in dataset.samples("train")} == {"a", "c"}
    with pytest.raises(ValueError, match=r"no reference in split 'val'.*\['test', 'train'\]"):
        dataset.samples("val")
    for typo in ("TRAIN", "valid", ""):  # not an empty split: no split of that name
        with pytest.raises(ValueError, match=rf"split must be one of train, val, test \(None: "
                                             rf"all\), got '{typo}'"):
            dataset.samples(typo)


def test_samples_of_given_references_read_only_their_shards(generated):
    index = read_index(Location.parse(str(generated)), with_shard=True)
    last = index.filter(pc.equal(index["shard"], 2))["ref_id"][0].as_py()
    dataset = open_dataset(str(generated))
    urls, refs = dataset.where(refs=[last])
    assert urls == [tar_path(dataset.location, 2, "images")] and refs == {last}
    keys = [sample["key"] for sample in dataset.samples(refs=[last], kind="all")]
    assert keys == [row["key"] for row in index.to_pylist() if row["ref_id"] == last]
    assert [s["key"] for s in dataset.samples(refs=last, kind="all")] == keys  # one id alone
    with pytest.raises(ValueError, match=r"unknown reference ids \['nobody'\]"):
        dataset.samples(refs=["nobody", last])
    split = dataset.splits[last]
    other = next(name for name in ("train", "val", "test") if name != split)
    assert [s["key"] for s in dataset.samples(split, refs=[last], kind="all")] == keys
    with pytest.raises(ValueError, match=rf"references \['{last}'\] are in split\(s\) "
                                         rf"\['{split}'\], not '{other}'"):
        dataset.samples(other, refs=[last])  # (it read nothing, silently)
    for refs, said in ((5, "refs must be a reference id or a collection of them, got 5"),
                       ([5], r"refs must be reference ids, each a string; got \[5\]")):
        with pytest.raises(ValueError, match=said):
            dataset.samples(refs=refs)
    assert list(dataset.samples(refs=[])) == []  # none: nothing (a part without val refs)


def test_a_file_uri_reads_as_the_path_does(generated):
    by_path = [(s["key"], s["meta"]) for s in open_dataset(str(generated)).samples("train")]
    by_uri = [(s["key"], s["meta"]) for s in
              open_dataset(f"file://{generated}").samples("train")]
    assert by_uri == by_path


def test_a_dataset_without_a_complete_shard_is_refused_clearly(tmp_path, hand_made):
    with pytest.raises(FileNotFoundError, match=f"^{tmp_path / 'nothing'} does not exist$"):
        open_dataset(str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="is a file, not a dataset folder"):
        open_dataset(str(next(hand_made.glob("shards/*.tar"))))
    with pytest.raises(ValueError, match="no dataset path given"):
        open_dataset("")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty is not a dataset written by generate "
                       r"or convert \(it has no plan.json\)$"):
        open_dataset(str(tmp_path / "empty"))
    with_plan = tmp_path / "with_plan"
    shutil.copytree(hand_made, with_plan)
    (with_plan / "plan.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="shards is not a dataset .*: it is the shards "
                       f"folder of a dataset, give {with_plan}$"):  # the usual slip
        open_dataset(str(with_plan / "shards"))
    (tmp_path / "photos" / "shards").mkdir(parents=True)  # a folder of that name, no dataset's
    with pytest.raises(FileNotFoundError, match=r"has no plan.json\)$"):
        open_dataset(str(tmp_path / "photos" / "shards"))
    unfinished = tmp_path / "unfinished"
    shutil.copytree(hand_made, unfinished)
    for stats in unfinished.glob("shards/*_stats.json"):
        stats.unlink()  # the tars and parquets are there, no shard is marked done
    with pytest.raises(FileNotFoundError, match="no complete shard"):
        open_dataset(str(unfinished))
    stale = tmp_path / "stale"
    shutil.copytree(hand_made, stale)
    plan = {"inputs": {"shard_refs": 2}, "references": ["a", "b", "c"]}
    (stale / "plan.json").write_text(json.dumps({**plan, "digest": plan_digest(plan)}))
    with pytest.raises(FileNotFoundError, match="made under another plan"):
        open_dataset(str(stale))


def test_a_plan_edited_by_hand_is_refused_not_read_as_a_smaller_dataset(generated, tmp_path):
    """A reference dropped from plan.json, or its shard_refs raised, would make the readers
    plan fewer shards and read short: the plan's digest no longer matches what it holds, and
    every reader names that."""
    for edit in (lambda plan: plan["references"].pop(),
                 lambda plan: plan["inputs"].update(shard_refs=plan["inputs"]["shard_refs"] + 1),
                 lambda plan: plan.pop("digest")):
        copy = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(generated, copy)
        plan = json.loads((copy / "plan.json").read_text())
        assert plan["digest"] == plan_digest(plan)  # as generate wrote it
        edit(plan)
        (copy / "plan.json").write_text(json.dumps(plan))
        with pytest.raises(RunFileError, match=r"plan\.json: its digest .* is not that of the "
                                               r"plan it holds .*: edited or damaged"):
            open_dataset(str(copy))


def _cut_at_a_member_boundary(tar: Path) -> int:
    """Keep the tar's first half of members, then its end-of-archive blocks: a valid, shorter
    tar. Returns how many members are left."""
    with tarfile.open(tar) as whole:
        members = whole.getmembers()
    kept = members[: len(members) // 2]
    end = kept[-1].offset_data + -(-kept[-1].size // 512) * 512
    data = tar.read_bytes()[:end] + bytes(1024)
    tar.write_bytes(data)
    return len(kept)


def test_a_finished_shard_whose_tar_was_cut_is_refused_not_read_short(tmp_path, hand_made):
    damaged = tmp_path / "damaged"
    shutil.copytree(hand_made, damaged)
    tar = damaged / "shards" / "00000.tar"
    left = _cut_at_a_member_boundary(tar)
    with tarfile.open(tar) as cut:  # tarfile, and so webdataset, read it without an error
        assert len(cut.getmembers()) == left
    with pytest.raises(DamagedShardError, match=r"00000: tar is \d+ bytes, its stats say"):
        open_dataset(str(damaged))
    (damaged / "shards" / "00001.parquet").unlink()
    with pytest.raises(DamagedShardError, match=r"2 finished shard.*00001: parquet missing"):
        open_dataset(str(damaged))
    assert complete_shards(Location.parse(str(damaged))) == []


def test_two_shards_whose_files_were_swapped_are_refused_not_read_for_each_other(tmp_path,
                                                                               generated):
    """Every file of shards 0 and 1 swapped (a copy gone wrong): each stats file still
    matches its own tar and index, but readers choose a reference's shard by its number, and
    would read nothing of it. The stats name their shard: both are refused, and a resume's
    check remakes them."""
    swapped = tmp_path / "swapped"
    shutil.copytree(generated, swapped)
    folder = swapped / "shards"
    for suffix in (".tar", ".parquet", "_stats.json", "_sources.json", "_failures.jsonl"):
        first, second = folder / f"00000{suffix}", folder / f"00001{suffix}"
        first.rename(folder / "moving")
        second.rename(first)
        (folder / "moving").rename(second)
    with pytest.raises(DamagedShardError, match=r"00000: its stats are shard 1's: its files "
                                                r"were renamed or swapped.*00001: its stats "
                                                r"are shard 0's"):
        open_dataset(str(swapped))
    digest = json.loads((swapped / "plan.json").read_text())["digest"]
    assert "its stats are shard 0's: its files were renamed or swapped with another shard's" \
        in shard_problems(Location.parse(str(swapped)), 1, digest, "images")


@pytest.mark.parametrize("damage", ["zeroed", "cut, then padded to its size"])
def test_a_tar_damaged_at_its_recorded_size_is_refused_not_read_short(tmp_path, hand_made,
                                                                      damage):
    """Its size is what its stats say, so only its SHA-256 (inspect, --verify) or reading it
    to its end tells: tarfile reads a zero block as the end of the archive, here at byte 0."""
    from shards.groups import IncompleteShardError
    from shards.tar_stream import ShardReadError

    damaged = tmp_path / "damaged"
    shutil.copytree(hand_made, damaged)
    tar = damaged / "shards" / "00000.tar"
    size = tar.stat().st_size
    if damage == "zeroed":
        tar.write_bytes(bytes(size))
    else:
        _cut_at_a_member_boundary(tar)
        tar.write_bytes(tar.read_bytes().ljust(size, b"\0"))
    assert tar.stat().st_size == size
    dataset = open_dataset(str(damaged))
    with pytest.raises(ShardReadError, match=r"00000\.tar is unreadable: its archive ends "
                                             rf"after \d+ of its {size} bytes"):
        list(dataset.samples(kind="all"))
    with pytest.raises((ShardReadError, IncompleteShardError)):  # whichever sees it first
        list(dataset.groups("pair", crop=16))


@pytest.mark.parametrize("damage", ["zeroed", "zeroed after its first part", "its CRC",
                                    "a byte in its middle"])
def test_a_gzipped_tar_damaged_at_its_size_is_refused_not_read_short(tmp_path, store_datasets,
                                                                     damage):
    """A recipes shard (.tar.gz) keeps its size: tarfile's own inflating would read a zeroed
    or corrupted stream as an archive that ends early, or read changed bytes; the gzip
    trailer's CRC and the inflated end are checked once its last member is read (a changed
    CRC stands for deflated bytes that inflate to others: the same check fails)."""
    from shards.tar_stream import ShardReadError

    damaged = tmp_path / "damaged"
    shutil.copytree(store_datasets["recipes"], damaged)
    tar = damaged / "shards" / "00000.tar.gz"
    data = bytearray(tar.read_bytes())
    if damage == "zeroed":
        data[:] = bytes(len(data))
    elif damage == "zeroed after its first part":
        data[len(data) // 3:] = bytes(len(data) - len(data) // 3)
    elif damage == "its CRC":
        data[-8] ^= 0x10  # the trailer: CRC-32, then the inflated length
    else:  # tarfile then meets a broken member (a record without its .json, say) first
        data[len(data) // 2] ^= 0xFF
    tar.write_bytes(bytes(data))
    with pytest.raises(ShardReadError, match=r"00000\.tar\.gz is unreadable"):
        list(open_dataset(str(damaged)).samples(kind="all"))


def test_a_tar_whose_last_sample_was_zeroed_at_its_recorded_size_is_refused(tmp_path,
                                                                            hand_made):
    """A small last sample zeroed in place ends the archive inside the tar's last record(s),
    where the bytes left unread do not tell: the samples its stats count do."""
    from shards.tar_stream import ShardReadError

    damaged = tmp_path / "damaged"
    shutil.copytree(hand_made, damaged)
    tar = damaged / "shards" / "00000.tar"
    with tarfile.open(tar) as archive:
        members = archive.getmembers()
    last = members[-1].name.partition(".")[0]
    start = min(m.offset for m in members if m.name.partition(".")[0] == last)
    data = bytearray(tar.read_bytes())
    data[start:] = bytes(len(data) - start)
    tar.write_bytes(bytes(data))
    recorded = json.loads((damaged / "shards" / "00000_stats.json").read_text())["samples"]
    assert recorded == len({m.name.partition(".")[0] for m in members})  # one key a sample
    dataset = open_dataset(str(damaged))
    with pytest.raises(ShardReadError, match=rf"00000\.tar is unreadable: its archive holds "
                                             rf"{recorded - 1} samples, its stats {recorded}"):
        list(dataset.samples(kind="all"))


def test_a_gzipped_tar_remade_without_its_last_records_is_refused(tmp_path, store_datasets):
    """A .tar.gz made again without its last records (a sound gzip stream, its CRC its own)
    and padded with zeros to its recorded size: gzip passes the padding over; the samples its
    stats count tell."""
    import gzip
    import io

    from shards.tar_stream import ShardReadError

    damaged = tmp_path / "damaged"
    shutil.copytree(store_datasets["recipes"], damaged)
    tar = damaged / "shards" / "00000.tar.gz"
    size = tar.stat().st_size
    with tarfile.open(tar) as archive:
        members = [(m, archive.extractfile(m).read()) for m in archive.getmembers()]
    keys = list(dict.fromkeys(m.name.partition(".")[0] for m, _ in members))
    kept = io.BytesIO()
    with tarfile.open(fileobj=kept, mode="w") as archive:
        for member, data in members:
            if member.name.partition(".")[0] != keys[-1]:
                archive.addfile(member, io.BytesIO(data))
    shorter = gzip.compress(kept.getvalue())
    assert len(shorter) < size
    tar.write_bytes(shorter.ljust(size, b"\0"))
    with pytest.raises(ShardReadError, match=rf"its archive holds {len(keys) - 1} samples, "
                                             rf"its stats {len(keys)}"):
        list(open_dataset(str(damaged)).samples(kind="all"))


@pytest.mark.parametrize("read", ["samples", "pairs"])
def test_a_tar_with_other_bytes_at_its_recorded_size_is_refused(tmp_path, generated, read):
    """Another run's or another shard's tar of the same size (tarfile pads every tar to
    10 KiB records, so similar shards often are), or a label edited in place: complete by
    its size, and read to its end it hashes to another SHA-256 than its stats record."""
    from shards.tar_stream import TAR_CHANGED, ChangedTarError

    changed = tmp_path / "changed"
    shutil.copytree(generated, changed)
    tar = changed / "shards" / "00000.tar"
    data = bytearray(tar.read_bytes())
    digit = data.index(b'"quality":0.') + len(b'"quality":0.')
    data[digit] = ord("1") if data[digit] != ord("1") else ord("2")  # a label, in place
    tar.write_bytes(bytes(data))
    dataset = open_dataset(str(changed))
    assert dataset.shards == (0, 1, 2)
    stream = dataset.samples(kind="all") if read == "samples" else dataset.groups("pair")
    with pytest.raises(ChangedTarError, match=re.escape(f"00000.tar: {TAR_CHANGED}")):
        list(stream)


def test_a_resampled_stream_over_no_item_of_its_selection_raises_rather_than_draws_forever(
        tmp_path, hand_made):
    """A split whose references lost every version (each failed) has a reference and no
    distorted sample: one pass reads nothing; a resampled stream would draw its shards
    without end and never yield (a DataLoader worker, then a DDP job, hanging)."""
    from shards.keys import reference_key
    from shards.order import Order
    from shards.tar_stream import NothingToDrawError
    from shards.writer import ShardWriter
    from tests.shards.conftest import _png, _record, pattern

    root = tmp_path / "versionless"
    shutil.copytree(hand_made, root)
    writer = ShardWriter(Location.parse(str(root)), 2)
    writer.add(_record("d", reference_key("d"), pattern(3), split="val"), _png(pattern(3)))
    writer.finish({})
    dataset = open_dataset(str(root))
    endless = Order(resampled=True, length=5)
    assert list(dataset.samples("val")) == []
    with pytest.raises(NothingToDrawError, match="none of the 1 shard"):
        list(dataset.samples("val", order=endless))
    with pytest.raises(NothingToDrawError):
        list(dataset.groups("pair", "val", order=endless))
    # a shard without an item beside one with items: drawn from as before
    assert len(list(dataset.samples(refs=["c", "d"], order=endless))) == 5
    assert len(list(dataset.pristine("val", order=endless))) == 5
    # the versions of another split's reference in the shard are no items of this split's
    # (nor, under a share, items "offered": the stream would draw for ever)
    writer = ShardWriter(Location.parse(str(root)), 2)
    writer.add(_record("d", reference_key("d"), pattern(3), split="val"), _png(pattern(3)))
    writer.add(_record("e", reference_key("e"), pattern(4)), _png(pattern(4)))
    writer.add(_record("e", "e_d01_l1", pattern(5), 1, 1), _png(pattern(5)))
    writer.finish({})
    for share in (1.0, 0.5):
        with pytest.raises(NothingToDrawError):
            list(open_dataset(str(root)).groups("pair", "val", order=Order(
                resampled=True, length=5, share=share)))


def test_only_complete_shards_are_read(tmp_path, hand_made):
    partial = tmp_path / "partial"
    shutil.copytree(hand_made, partial)
    (partial / "shards" / "00001_stats.json").unlink()
    dataset = open_dataset(str(partial))
    assert dataset.shards == (0,)
    assert {sample["ref_id"] for sample in dataset.samples(kind="all")} == {"a", "b"}


def test_files_named_like_stats_but_of_no_shard_are_not_read(tmp_path, store_datasets):
    """A macOS copy's `._00000_stats.json` (AppleDouble) and other names that only end like a
    shard's stats are no shard's: the dataset reads as it did (they stopped every reader with
    `invalid literal for int()`), and inspect names them as files of no planned shard."""
    from pipeline.commands.inspect_dataset import inspect

    copy = tmp_path / "copy"
    shutil.copytree(store_datasets["images"], copy)
    for name in ("._00000_stats.json", "000001_stats.json", "x_stats.json", "1_stats.json"):
        (copy / "shards" / name).write_bytes(b"\x00\x05\x16\x07")
    dataset = open_dataset(str(copy))
    assert dataset.shards == (0, 1)
    original = [sample["key"] for sample in open_dataset(str(store_datasets["images"])).samples()]
    assert [sample["key"] for sample in dataset.samples()] == original
    _, problems = inspect(str(copy))
    assert any("4 file(s) in shards/ belong to none of the plan's 2 shards" in problem
               for problem in problems), problems


def test_stats_of_the_first_index_past_the_plan_are_no_part_of_a_finished_dataset(
        tmp_path, store_datasets):
    """shard_states: "Stats outside the plan's shards are no part of it": the plan's 2 shards
    are 00000 and 00001, so a stray 00002_stats.json (the first index past them) is not read,
    not even as damage of the finished dataset."""
    finished = tmp_path / "finished"
    shutil.copytree(store_datasets["images"], finished)
    (finished / "report.json").write_text("{}")
    shutil.copyfile(finished / "shards" / "00001_stats.json",
                    finished / "shards" / "00002_stats.json")
    assert open_dataset(str(finished)).shards == (0, 1)


def test_a_finished_dataset_never_reads_as_a_smaller_one(tmp_path, store_datasets):
    """Once a run of the plan has ended (report.json), every planned shard must be complete:
    one whose stats were lost or replaced by another plan's is damage, not left out; stats
    past the plan's shards are no part of the dataset."""
    finished = tmp_path / "finished"
    shutil.copytree(store_datasets["images"], finished)
    (finished / "report.json").write_text("{}")
    stats = finished / "shards" / "00001_stats.json"
    shutil.copyfile(finished / "shards" / "00000_stats.json",
                    finished / "shards" / "00007_stats.json")  # a stray copy: not read
    assert open_dataset(str(finished)).shards == (0, 1)
    shutil.copyfile(store_datasets["recipes"] / "shards" / "00001_stats.json", stats)
    with pytest.raises(DamagedShardError, match=r"00001: stats of another plan \([0-9a-f]{12}"):
        open_dataset(str(finished))
    stats.unlink()
    with pytest.raises(DamagedShardError, match="00001: stats missing: the finished dataset "
                                                "lost it"):
        open_dataset(str(finished))
    (finished / "report.json").unlink()  # a run still going: its complete shards are read
    going = open_dataset(str(finished))
    assert going.shards == (0,)
    # and readers are told so (training prints it as a NOTICE)
    assert going.unfinished == (f"{finished}: its run has not finished (no report.json): only "
                                "the 1 shard(s) complete so far are read, of 2 planned")
    assert open_dataset(str(store_datasets["images"])).unfinished is None


def test_a_shard_without_its_lists_is_redone_and_unreadable_stats_are_damage(tmp_path,
                                                                              generated):
    copy = tmp_path / "copy"
    shutil.copytree(generated, copy)
    location = Location.parse(str(copy))
    digest = json.loads((copy / "plan.json").read_text())["digest"]
    assert shard_problems(location, 0, digest, "images") == []
    (copy / "shards" / "00000_failures.jsonl").unlink()  # the merge reads it
    (copy / "shards" / "00001_sources.json").unlink()
    assert shard_problems(location, 0, digest, "images") == ["missing failures"]
    assert shard_problems(location, 1, digest, "images") == ["missing sources"]
    (copy / "shards" / "00002_stats.json").write_text("{broken")
    with pytest.raises(DamagedShardError, match="00002: stats are not a JSON object"):
        open_dataset(str(copy))
    for other_json in ("[1]", "null"):  # JSON, but not the object stats are
        (copy / "shards" / "00002_stats.json").write_text(other_json)
        with pytest.raises(DamagedShardError, match="00002: stats are not a JSON object"):
            open_dataset(str(copy))
        assert "not an object" in shard_problems(location, 2, digest, "images")[0]


def test_a_shard_whose_lists_miss_rows_or_break_is_not_complete(tmp_path, generated):
    """A sources row or failure lost from a shard's lists would leave it out of the dataset's
    sources.parquet and failures.jsonl: such a shard is not complete (resumes make it again,
    inspect names it), and a merge that meets one names it, not a bare JSON error."""
    from pipeline.errors import PipelineError
    from pipeline.plan import read_plan
    from pipeline.report import merge

    copy = tmp_path / "copy"
    shutil.copytree(generated, copy)
    location = Location.parse(str(copy))
    digest = json.loads((copy / "plan.json").read_text())["digest"]
    listed = copy / "shards" / "00001_sources.json"
    rows = json.loads(listed.read_text())
    made = sum(row["status"] == "ok" for row in rows)
    listed.write_text(json.dumps(rows[:-1]))
    assert shard_problems(location, 1, digest, "images") == [
        f"its lists hold {len(rows) - 1} sources, its stats {len(rows)}, "
        f"{made - 1} references made, its stats {made}"]
    with pytest.raises(PipelineError, match=r"shard 00001: its lists hold .* nothing merged"):
        merge(location, read_plan(location))
    listed.write_text(json.dumps(rows))
    failures = copy / "shards" / "00000_failures.jsonl"
    kept = failures.read_text()
    failures.write_text(kept + json.dumps({"ref_id": "x", "reason": "empty"}) + "\n")
    assert shard_problems(location, 0, digest, "images") == [
        f"its lists hold {kept.count(chr(10)) + 1} failures, its stats {kept.count(chr(10))}"]
    failures.write_text(kept + '{"ref_id":\n')
    assert shard_problems(location, 0, digest, "images")[0].startswith(
        "sources or failures list unreadable")
    failures.write_text(kept)
    assert shard_problems(location, 0, digest, "images") == []


def test_inspect_names_stats_without_their_counts(tmp_path, store_datasets):
    from pipeline.commands.inspect_dataset import inspect

    copy = tmp_path / "copy"
    shutil.copytree(store_datasets["images"], copy)
    before = inspect(str(copy))[1]
    assert not any("stats" in problem for problem in before)
    stats_path = copy / "shards" / "00000_stats.json"
    stats = json.loads(stats_path.read_text())
    del stats["failures"]
    stats_path.write_text(json.dumps(stats))
    after = inspect(str(copy))[1]
    assert sorted(set(after) - set(before)) == ["shard 00000: its stats record no failures count"]


def test_a_reading_takes_numpy_seeds_and_refuses_what_is_no_seed_or_order(generated):
    """numpy's integers are seeds as ints are (the bank takes them); a float, a negative or
    None seed, a float epoch, a float views or versions and an order that is no Order are
    ValueErrors naming them as the stream is asked for, not errors deep in its reading."""
    from shards.order import Order

    dataset = open_dataset(str(generated))
    shuffled = Order(shuffle=4)
    assert ([s["key"] for s in dataset.samples(seed=np.int64(3), order=shuffled)]
            == [s["key"] for s in dataset.samples(seed=3, order=shuffled)])
    assert len(list(dataset.groups("pair", crop=64, seed=np.int64(0)))) == len(
        list(dataset.groups("pair", crop=64, seed=0)))
    for seed in (-1, 1.5, None, True):
        with pytest.raises(ValueError, match="seed must be a non-negative whole number"):
            dataset.samples(seed=seed, order=shuffled)
        with pytest.raises(ValueError, match="seed must be a non-negative whole number"):
            dataset.groups("pair", crop=64, seed=seed)
    with pytest.raises(ValueError, match=r"order must be a shards\.order\.Order"):
        dataset.samples(order=None)
    with pytest.raises(ValueError, match="epoch must be a whole number"):
        Order(epoch=1.5)
    for given in ({"views": 2.0}, {"views": True}, {"versions": 2.5}, {"versions": True}):
        with pytest.raises(ValueError, match="views and versions are whole numbers"):
            dataset.groups("chunk", crop=64, **given)


def test_an_index_read_for_one_kind_is_the_whole_index_filtered(generated):
    """Kept shard by shard (at paper scale the whole index, then a filtered copy, held 3.4
    times its size in a training process)."""
    location = Location.parse(str(generated))
    whole = read_index(location, with_shard=True)
    for kind in ("distorted", "reference"):
        kept = read_index(location, with_shard=True, kind=kind)
        assert kept.to_pylist() == whole.filter(pc.equal(whole["kind"], kind)).to_pylist()
        assert kept.num_rows and set(kept["kind"].to_pylist()) == {kind}


def test_entries_in_shards_that_are_no_files_are_named(tmp_path, store_datasets):
    """A folder, a link to nothing, a loop of links and a pipe in shards/ are no shard file:
    the store's listing leaves the links out (a planned tar that is a loop read as plainly
    missing), so inspect names each entry and what it is."""
    import os

    from pipeline.commands.inspect_dataset import inspect

    copy = tmp_path / "copy"
    shutil.copytree(store_datasets["images"], copy)
    shards = copy / "shards"
    (shards / "extra").mkdir()
    (shards / "gone.tar").symlink_to(tmp_path / "nowhere")
    (shards / "00001.tar").unlink()
    (shards / "00001.tar").symlink_to(shards / "loop")
    (shards / "loop").symlink_to(shards / "00001.tar")
    os.mkfifo(shards / "pipe")
    _, problems = inspect(str(copy))
    named = [problem for problem in problems if "in shards/ that no shard file can be" in problem]
    assert len(named) == 1, problems
    for entry in ("00001.tar: a link to nothing or a loop of links", "extra: a folder",
                  "gone.tar: a link to nothing or a loop of links"):
        assert entry in named[0] or "..." in named[0], named
    assert named[0].startswith("5 entries are in shards/"), named
    assert any("00001: missing tar" in problem for problem in problems), problems


def _read_over_epochs(dataset, share: float, epochs: int, groups: bool) -> list[list[str]]:
    """The keys each epoch of 4 items from 2 shards open at once reads, resampled."""
    read = []
    for epoch in range(epochs):
        order = Order(epoch, resampled=True, length=4, interleave=2, share=share)
        items = (dataset.groups("pair", crop=16, order=order) if groups
                 else dataset.samples(order=order, decode=False))
        read.append([item["meta"][0]["key"] if groups else item["key"] for item in items])
    return read


@pytest.mark.parametrize("groups", [False, True])
def test_an_epoch_shorter_than_its_open_shards_reads_a_share_spread_over_them(generated,
                                                                            groups):
    """Resampling reads a drawn shard from its start: an epoch of 4 versions from 2 open
    shards of up to 12 read the same few front ones every epoch (at most 4 of each shard),
    the rest never. With the share that spreads an epoch over its shards
    (share_to_spread: 4 / (2 x 10) of each), 40 epochs of 4 read nearly all 30 (uniform
    draws of 160 from 30 miss about 0.2 of one), every epoch still 4; a share so small that a
    drawn shard gives nothing goes on drawing (it is not barren)."""
    dataset = open_dataset(str(generated))
    index = read_index(dataset.location, columns=["key", "kind"], with_shard=True).to_pylist()
    versions = [row for row in index if row["kind"] == "distorted"]
    assert (len(versions), len(dataset.urls)) == (30, 3)
    share = share_to_spread(4, 2, len(versions), len(dataset.urls))
    assert share == pytest.approx(0.2)
    front, spread = (_read_over_epochs(dataset, each, 40, groups) for each in (1.0, share))
    assert {len(epoch) for epoch in front + spread} == {4}
    assert len(set().union(*front)) <= 3 * 4
    assert len(set().union(*spread)) >= 28
    assert all(len(epoch) == 4 for epoch in _read_over_epochs(dataset, 0.01, 3, groups))


def test_a_share_is_of_drawn_shards_and_a_chance():
    for share in (0, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match=r"share must be in \(0, 1\]"):
            Order(resampled=True, share=share)
    with pytest.raises(ValueError, match="a share of each shard is read from drawn shards"):
        Order(share=0.5)
    # an epoch as long as its open shards, or longer, reads them whole
    assert share_to_spread(50, 2, 100, 4) == 1.0 and share_to_spread(10, 2, 100, 4) == 0.2
    assert share_to_spread(10, 2, 0, 4) == 1.0  # (nothing to spread)


def _remade_under_another_plan(root: Path) -> None:
    """What `generate --restart` under other options (another ensemble) leaves where a reader
    opened the dataset: shards whose stats name another plan, their files consistent."""
    for stats in (root / "shards").glob("*_stats.json"):
        recorded = json.loads(stats.read_text())
        stats.write_text(json.dumps({**recorded, "plan_digest": "0" * 64}))


def test_a_dataset_made_again_under_another_plan_while_open_is_refused_not_read(
        tmp_path, store_datasets):
    """A Dataset opened before a restart and read after it (a training run's next epoch) gave
    the new plan's samples, another ensemble's Q, under the old plan's name; each shard's
    stats must name the plan the dataset was opened under, checked before its samples."""
    from shards.reader import DatasetChangedError

    root = tmp_path / "d"
    shutil.copytree(store_datasets["images"], root)
    dataset = open_dataset(str(root))
    assert next(iter(dataset.samples()))
    _remade_under_another_plan(root)
    for read in (lambda: next(iter(dataset.samples())),
                 lambda: next(iter(dataset.groups("pair")))):
        with pytest.raises(DatasetChangedError, match="made again under another plan"):
            read()


def test_a_dataset_opened_unfinished_stays_unfinished_to_its_reader(tmp_path, store_datasets):
    """Its shards are those complete when it was opened: a run that ends later (report.json)
    does not make it read as the whole dataset."""
    root = tmp_path / "d"
    shutil.copytree(store_datasets["images"], root)
    report = (root / "report.json").read_bytes()
    (root / "report.json").unlink()
    (root / "shards" / "00001_stats.json").unlink()
    dataset = open_dataset(str(root))
    (root / "report.json").write_bytes(report)
    assert dataset.shards == (0,) and "only the 1 shard(s) complete" in dataset.unfinished


def _live_writer_lease(root: Path) -> None:
    """The lease a generate driver of another host holds while it writes `root`: fresh."""
    from shards.lease import LEASE_FILE

    (root / LEASE_FILE).write_text(json.dumps({"host": "node-7", "pid": 4242, "started": 1.0,
                                               "command": "generate",
                                               "refreshed": time.time()}))


def test_a_dataset_opened_before_its_first_shard_names_the_run_writing_it(tmp_path):
    """In a run's first seconds (its lease and plan written, no shard done yet) open_dataset
    said `no complete shard` as of a failed run; `inspect` names the run writing it, and so
    must the reader."""
    root = tmp_path / "d"
    (root / "shards").mkdir(parents=True)
    _live_writer_lease(root)
    writing = r"a run is writing it now \(iqa-factory generate on host node-7 pid 4242"
    with pytest.raises(FileNotFoundError, match=rf"no complete shard in .* yet: {writing}"):
        open_dataset(str(root))  # (before its plan.json too)
    plan = {"inputs": {"shard_refs": 1}, "references": ["a"]}
    (root / "plan.json").write_text(json.dumps({**plan, "digest": plan_digest(plan)}))
    with pytest.raises(FileNotFoundError, match=rf"yet: {writing}.*once its first shard"):
        open_dataset(str(root))


def test_a_shard_gone_while_read_says_the_dataset_is_being_made_again(tmp_path,
                                                                      store_datasets):
    """A `generate --restart` deletes the shards folder under a reader (a training run's
    epoch): the store's bare `Failed to open local file '.../00001.tar'` stopped it; the
    reader must say that the dataset is being made again (by whom, where a run holds its
    lease) and what to do."""
    from shards.reader import DatasetChangedError

    root = tmp_path / "d"
    shutil.copytree(store_datasets["images"], root)
    dataset = open_dataset(str(root))
    for tar in (root / "shards").glob("*.tar"):
        tar.unlink()  # (the stats first go, as often as not: both are a shard gone)
    gone = r"a shard complete when the dataset was opened is gone \(.*00000\.tar"
    for read in (lambda: next(iter(dataset.samples())),
                 lambda: next(iter(dataset.groups("pair")))):
        with pytest.raises(DatasetChangedError, match=rf"{gone}.*made again or removed "
                                                      r"while it was read; open it again"):
            read()
    again = tmp_path / "again"  # its stats gone, the tars there (each opened, then its stats)
    shutil.copytree(store_datasets["images"], again)
    dataset = open_dataset(str(again))
    for stats in (again / "shards").glob("*_stats.json"):
        stats.unlink()
    _live_writer_lease(again)
    with pytest.raises(DatasetChangedError, match=r"is gone \(.*00000_stats\.json.*: the "
                                                  r"dataset is being made again \(a run is "
                                                  r"writing it now \(iqa-factory generate"):
        next(iter(dataset.samples()))


def _remade_in_place(shards: Path, stats_written: bool = True) -> None:
    """Shard 00000 made again as a resume makes it (--retry-unreadable): a new tar and parquet
    of the same plan renamed into place, its stats written after them (here at once, or,
    without `stats_written`, not yet)."""
    import pyarrow.parquet as pq

    tar = shards / "00000.tar"
    with tarfile.open(tar) as old:
        members = [(member, old.extractfile(member).read()) for member in old.getmembers()]
    with tarfile.open(tar, "w", format=tarfile.GNU_FORMAT) as new:
        for member, data in reversed(members):  # (the same samples, other bytes)
            new.addfile(member, io.BytesIO(data))
    pq.write_table(pq.read_table(shards / "00000.parquet"), shards / "00000.parquet",
                   compression="snappy")
    if not stats_written:
        return
    stats = json.loads((shards / "00000_stats.json").read_text())
    stats.update(tar_bytes=tar.stat().st_size,
                 tar_sha256=hashlib.sha256(tar.read_bytes()).hexdigest(),
                 parquet_bytes=(shards / "00000.parquet").stat().st_size)
    (shards / "00000_stats.json").write_text(json.dumps(stats))


def _read_through(root: Path) -> dict:
    """A sample and a group stream of the dataset at `root`, each read once to its end: every
    shard's stats read, and kept, by the stream (as a training run's next epoch finds them)."""
    dataset = open_dataset(str(root))
    streams = {"samples": dataset.samples(), "groups": dataset.groups("pair")}
    for stream in streams.values():
        assert list(stream)
    return streams


def test_a_shard_made_again_while_read_by_a_live_run_is_not_called_damaged(tmp_path,
                                                                           store_datasets):
    """A resume making a shard again renames its new tar and parquet into place before their
    stats: a reader holding the old stats read them as damaged (ChangedTarError, or a
    DamagedShardError of its parquet: `changed after it was written`). While a run holds the
    dataset's lease, the reader must say that run is making the shard again; without one, a
    mismatch is still damage."""
    from shards.reader import DatasetChangedError
    from shards.tar_stream import ChangedTarError

    root = tmp_path / "d"
    shutil.copytree(store_datasets["images"], root)
    streams = _read_through(root)
    _remade_in_place(root / "shards", stats_written=False)
    with pytest.raises(ChangedTarError, match="changed after it was written"):
        list(streams["samples"])
    with pytest.raises(DamagedShardError, match=r"00000\.parquet: parquet is"):
        list(streams["groups"])
    _live_writer_lease(root)
    for stream in streams.values():
        with pytest.raises(DatasetChangedError, match=r"a shard changed as it was read, and a "
                                                      r"run is writing it now \(iqa-factory "
                                                      r"generate on host node-7.*making the "
                                                      r"shard again, it is not damaged"):
            list(stream)


def test_a_shard_made_again_since_a_stream_read_it_is_refused_before_its_samples(
        tmp_path, store_datasets):
    """A stream keeps the stats of the shards it read (a training run's epochs): one made
    again since (its tar, parquet and stats rewritten whole, by a resume or a restart) was
    opened under the kept stats, its samples given under their replays, labels and rows
    until its hash failed at its end (an epoch's samples mixed with another making's, and
    called damage). Its stats are read again as its tar is opened and must be those kept."""
    from shards.reader import DatasetChangedError

    root = tmp_path / "d"
    shutil.copytree(store_datasets["images"], root)
    streams = _read_through(root)
    _remade_in_place(root / "shards")
    for name, stream in streams.items():
        given = []  # (shard 00000 is the first one read: nothing before the refusal)
        with pytest.raises(DatasetChangedError, match=r"shard 00000 was made again since this "
                                                      r"stream first read it \(its stats' "
                                                      r"parquet_bytes, tar_sha256 changed\); "
                                                      r"open it again"):
            given.extend(stream)
        assert given == [], name
    _live_writer_lease(root)
    with pytest.raises(DatasetChangedError, match=r"tar_sha256 changed; a run is writing it "
                                                  r"now \(iqa-factory generate on host node-7"):
        list(streams["samples"])


def test_a_dataset_lists_the_shards_of_the_plan_it_opened_not_of_one_written_after(
        tmp_path, store_datasets, monkeypatch):
    """open_dataset reads plan.json, then lists the shards: a restart that writes another
    plan.json between the two must not leave the dataset pinned to one plan and its shards
    listed under the other (readable_shards was given the plan read, and read plan.json
    again)."""
    import shards.dataset
    from shards.layout import plan_file

    root = tmp_path / "d"
    shutil.copytree(store_datasets["images"], root)
    expected = open_dataset(str(root)).shards
    plan = json.loads((root / "plan.json").read_text())
    other = {**plan, "inputs": {**plan["inputs"], "seed": plan["inputs"].get("seed", 0) + 1}}
    other["digest"] = plan_digest(other)

    def read_then_restarted(location: Location) -> dict:
        opened = plan_file(location)
        (root / "plan.json").write_text(json.dumps(other))  # the restart writes its plan
        return opened
    monkeypatch.setattr(shards.dataset, "plan_file", read_then_restarted)
    dataset = open_dataset(str(root))
    assert dataset.plan_digest == plan["digest"] and dataset.shards == expected


def test_a_shard_whose_stats_go_after_the_listing_is_not_complete_not_a_bare_error(
        tmp_path, store_datasets, monkeypatch):
    """A `generate --restart` deleting the shards between open_dataset's listing of the folder
    and its read of a listed stats file: that shard is not complete (pyarrow's bare
    `Failed to open local file` stopped the opening)."""
    import shards.reader

    root = tmp_path / "d"
    shutil.copytree(store_datasets["images"], root)
    (root / "report.json").unlink()  # (a run under way)
    listing = shards.reader.shards_listing(Location.parse(str(root)))
    (root / "shards" / "00001_stats.json").unlink()
    monkeypatch.setattr(shards.reader, "shards_listing", lambda location: dict(listing))
    assert open_dataset(str(root)).shards == (0,)


def test_a_run_that_ends_just_after_the_listing_leaves_no_shard_called_lost(
        tmp_path, store_datasets, monkeypatch):
    """A run finishes its last shard and writes report.json between a reader's listing of the
    shards folder and its look for report.json: the listing lacks that shard, which the
    finished run's dataset was taken to have lost (a DamagedShardError, "stats missing"). The
    look comes before the listing: a run that ends after it is read as one unfinished."""
    import shards.reader

    root = tmp_path / "d"
    shutil.copytree(store_datasets["images"], root)
    last, report = root / "shards" / "00001_stats.json", root / "report.json"
    made = {path: path.read_bytes() for path in (last, report)}
    for path in made:
        path.unlink()  # (a run under way, its last shard's stats not yet written)
    listed = shards.reader.shards_listing

    def listed_then_the_run_ends(location: Location) -> dict[str, int]:
        listing = listed(location)
        for path, data in made.items():
            path.write_bytes(data)
        return listing
    monkeypatch.setattr(shards.reader, "shards_listing", listed_then_the_run_ends)
    assert open_dataset(str(root)).shards == (0,)
    for path in made:
        path.unlink()
    assert shards.reader.shard_states(Location.parse(str(root))) == ([0], {})


@pytest.mark.parametrize("count", [1, 5, 6, 7, 12])
def test_every_damaged_shard_is_named_or_counted_among_the_more(tmp_path, count):
    """damage_message names some damaged shards and counts the rest as "(and N more)": each
    one is named or counted, never silently dropped (its total is stated too)."""
    damaged = {index: "tar missing" for index in range(count)}
    message = damage_message(Location.parse(str(tmp_path)), damaged)
    named = sum(f"{shard_name(index)}: tar missing" in message for index in damaged)
    more = re.search(r"\(and (\d+) more\)", message)
    assert f"{count} finished shard(s)" in message
    assert named + (int(more[1]) if more else 0) == count, message


def test_a_file_staged_by_a_run_under_way_is_no_stray(tmp_path, store_datasets):
    """stray_files: a staged `.partial` (a run under way writing it) is set aside, a file
    belonging to no planned shard is named."""
    copy = tmp_path / "copy"
    shutil.copytree(store_datasets["images"], copy)
    (copy / "shards" / f"00001.tar.0123456789ab{STAGED_SUFFIX}").write_bytes(b"x")
    (copy / "shards" / "notes.txt").write_bytes(b"x")
    assert stray_files(Location.parse(str(copy)), 2, "images") == ["notes.txt"]
