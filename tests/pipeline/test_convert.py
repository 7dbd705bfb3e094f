"""`iqa-factory convert` and `materialize` (issue 11): a dataset rewritten in another storage
mode is, file for file and byte for byte, the one generating the run in that mode writes (the
real shard worker's datasets of tests/conftest.py); a PNG is dropped only once its replay
gives its pixels; resumable; refused where there is nothing to do."""

import json
import os
import re
import shutil
import socket
import tarfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import distortions
from pipeline import cli
from pipeline.commands.convert import ConversionError, convert, materialize
from pipeline.commands.inspect_dataset import inspect
from pipeline.errors import ForeignOutputError, OutputPathError
from shards.lease import LEASE_FILE, LeaseHeldError
from shards.reader import RunFileError, read_index
from shards.storage import Location
from tests.conftest import rewrite_tar, stats_agree

COMPARED = ("plan.json", "sources.parquet", "failures.jsonl", "ensemble.json")
STORAGE = {"images": ("images", ()), "recipes": ("recipes", ()), "hybrid": ("hybrid", ()),
           "hybrid_kept": ("hybrid", (26,))}


def _files(root) -> dict[str, bytes]:
    """Every shard file but the stats (which time the write), and the run's files."""
    shard_files = {f"shards/{p.name}": p.read_bytes() for p in (root / "shards").iterdir()
                   if not p.name.endswith("_stats.json")}
    return {**shard_files, **{name: (root / name).read_bytes() for name in COMPARED}}


def _same_as_generated(got, expected) -> None:
    files, wanted = _files(got), _files(expected)
    assert sorted(files) == sorted(wanted)
    assert [name for name in wanted if files[name] != wanted[name]] == []
    made = json.loads((got / "manifest.json").read_text())
    original = json.loads((expected / "manifest.json").read_text())
    assert made["plan_digest"] == original["plan_digest"]
    assert made["modes"] == original["modes"]
    made_report = json.loads((got / "report.json").read_text())
    assert made_report["modes"] == json.loads((expected / "report.json").read_text())["modes"]
    assert made["config"] == {**original["config"], "out": str(got)}  # its own folder
    assert (made["store"], made["config"]["keep_pngs"]) == (original["store"],
                                                             original["config"]["keep_pngs"])
    for stats in (got / "shards").glob("*_stats.json"):
        theirs = json.loads((expected / "shards" / stats.name).read_text())
        mine = json.loads(stats.read_text())
        kept = ("tar_bytes", "tar_sha256", "plan_digest", "samples", "libraries")
        assert {k: mine[k] for k in kept} == {k: theirs[k] for k in kept}


@pytest.mark.parametrize("store", ["recipes", "hybrid", "hybrid_kept"])
def test_materialize_gives_the_images_datasets_bytes(store_datasets, tmp_path, store, capsys):
    out = tmp_path / "images"
    assert cli.main(["materialize", str(store_datasets[store]), str(out)]) == 0
    assert "versions replayed and verified" in capsys.readouterr().out
    _same_as_generated(out, store_datasets["images"])


@pytest.mark.parametrize(("source", "target"), [
    ("images", "recipes"), ("images", "hybrid_kept"), ("recipes", "hybrid_kept"),
    ("hybrid_kept", "recipes"), ("hybrid", "hybrid_kept")])
def test_convert_gives_the_dataset_generate_writes_in_that_mode(store_datasets, tmp_path,
                                                                source, target):
    store, keep_pngs = STORAGE[target]
    done = convert(str(store_datasets[source]), str(tmp_path / target), store, keep_pngs)
    _same_as_generated(tmp_path / target, store_datasets[target])
    pngs = {name: _png_count(store_datasets[name]) for name in (source, target)}
    gained = pngs[target] - pngs[source]  # each of these conversions only adds or only drops
    assert (done["replayed"], done["dropped"]) == (max(gained, 0), max(-gained, 0))


def test_a_dataset_whose_run_files_record_no_modes_converts(store_datasets, tmp_path):
    """Datasets of 2026-11-30 hold no `modes` in manifest.json and report.json: the target's
    are its storage."""
    source = tmp_path / "older"
    shutil.copytree(store_datasets["images"], source)
    for name in ("manifest.json", "report.json"):
        document = json.loads((source / name).read_text())
        del document["modes"]
        (source / name).write_text(json.dumps(document))
    convert(str(source), str(tmp_path / "recipes"), "recipes")
    for name in ("manifest.json", "report.json"):  # those generate records in that mode
        assert json.loads((tmp_path / "recipes" / name).read_text())["modes"] == json.loads(
            (store_datasets["recipes"] / name).read_text())["modes"]


def _png_count(root) -> int:
    count = 0
    for path in (root / "shards").glob("*.tar*"):
        with tarfile.open(path) as tar:
            count += sum(name.endswith(".png") for name in tar.getnames())
    return count


def test_the_command_line_converts_with_kept_types(store_datasets, tmp_path, capsys):
    out = tmp_path / "kept"
    assert cli.main(["convert", str(store_datasets["recipes"]), str(out), "--store", "hybrid",
                     "--keep-pngs", "color_block"]) == 0
    assert "PNGs dropped after their replay was verified" in capsys.readouterr().out
    _same_as_generated(out, store_datasets["hybrid_kept"])


def _another_levels_recipe(meta: dict) -> dict:
    """The recipe the bank makes of another level, with that level's quality: not this
    version's (its labels name the level its pixels are)."""
    other = meta["recipe"]["level"] % 5 + 1
    recipe = {**meta["recipe"], "level": other, "params": distortions.get(1).levels[other - 1]}
    return {**meta, "recipe": recipe}


def _another_sha256(meta: dict) -> dict:
    """This version's recipe and labels, and a SHA-256 its replay here does not give (as
    where other libraries made it)."""
    return {**meta, "sha256": "0" * 64}


def _with_a_record_edited(root, tmp_path, edit) -> str:
    """A copy of an images dataset whose first JPEG version's record is `edit`ed (its PNG and
    the parquet index untouched); that version's key."""
    copy = tmp_path / "wrong"
    shutil.copytree(root, copy)
    path = copy / "shards" / "00000.tar"
    with tarfile.open(path) as tar:
        key = next(n.partition(".")[0] for n in tar.getnames() if "_d01_" in n)

    def edited(name: str, data: bytes) -> bytes:
        return json.dumps(edit(json.loads(data))).encode() if name == f"{key}.json" else data

    rewrite_tar(path, edited)  # a shard as written, not one damaged since
    return key


@pytest.mark.parametrize(("edit", "why"), [
    (_another_levels_recipe, "its labels differ from its recipe in chain, level, key"),
    (_another_sha256, "replayed pixels differ"),
])
def test_a_png_whose_replay_differs_is_not_dropped(store_datasets, tmp_path, edit, why):
    key = _with_a_record_edited(store_datasets["images"], tmp_path, edit)
    out = tmp_path / "recipes"
    with pytest.raises(ConversionError, match=rf"sample {key}: {why} .*its PNG is kept"):
        convert(str(tmp_path / "wrong"), str(out), "recipes")
    assert not list((out / "shards").glob("00000*"))  # the shard was not written


def test_convert_resumes_and_refuses_what_it_cannot_do(store_datasets, tmp_path):
    out = tmp_path / "images"
    first = materialize(str(store_datasets["recipes"]), str(out), workers=2)
    assert first["skipped"] == 0 and first["replayed"] == 3 * 6  # 3 references x 6 versions
    tar = out / "shards" / "00000.tar"
    before = tar.stat().st_mtime_ns
    again = materialize(str(store_datasets["recipes"]), str(out))
    assert (again["skipped"], again["replayed"]) == (first["shards"], 0)
    assert tar.stat().st_mtime_ns == before
    with pytest.raises(ConversionError, match="already an images dataset"):
        materialize(str(store_datasets["images"]), str(tmp_path / "other"))
    with pytest.raises(ConversionError, match="already a hybrid --keep-pngs 26 dataset"):
        convert(str(store_datasets["hybrid_kept"]), str(tmp_path / "other"), "hybrid", (26,))
    with pytest.raises(ValueError, match="--keep-pngs applies to --store hybrid, not recipes"):
        convert(str(store_datasets["hybrid"]), str(tmp_path / "other"), "recipes", (26,))
    with pytest.raises(ConversionError, match=r"holds another dataset's plan, not this "
                       r"conversion's \(store 'hybrid' -> 'images'.*new or empty TARGET"):
        convert(str(store_datasets["recipes"]), str(store_datasets["hybrid"]), "images")
    with pytest.raises(ConversionError, match="is the source itself"):
        convert(str(store_datasets["recipes"]), str(store_datasets["recipes"]), "images")
    with pytest.raises(ConversionError, match=r"nothing does not exist"):
        materialize(str(tmp_path / "nothing"), str(tmp_path / "other"))
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ConversionError, match=r"has no plan\.json"):
        materialize(str(tmp_path / "nothing"), str(tmp_path / "other"))
    with pytest.raises(ConversionError, match="workers must be at least 1"):
        materialize(str(store_datasets["recipes"]), str(tmp_path / "other"), workers=0)


def test_a_convert_stopped_before_a_shards_lists_are_copied_leaves_it_unfinished(
        store_datasets, tmp_path, monkeypatch):
    """A shard's stats finish it (the spec: written last). A convert that stops while it
    copies a shard's sources and failures lists leaves no stats there, so readers never count
    it; the rerun makes it, the bytes generate writes in that mode."""
    from shards.writer import ShardWriter

    out = tmp_path / "images"

    def failing(writer, kind, data):
        raise OSError(f"stopped copying the {kind} list")
    monkeypatch.setattr(ShardWriter, "write_list", failing)
    with pytest.raises(OSError, match="stopped copying"):
        materialize(str(store_datasets["recipes"]), str(out))
    assert not list((out / "shards").glob("*_stats.json"))
    monkeypatch.undo()
    assert materialize(str(store_datasets["recipes"]), str(out))["skipped"] == 0
    _same_as_generated(out, store_datasets["images"])


def test_converting_into_a_finished_dataset_of_the_plan_keeps_its_provenance(store_datasets,
                                                                             tmp_path, capsys):
    """Every shard of the target complete already (the images dataset generate wrote):
    nothing is converted, and its manifest and report do not become a conversion's."""
    target = tmp_path / "generated"
    shutil.copytree(store_datasets["images"], target)
    before = {name: (target / name).read_bytes() for name in ("manifest.json", "report.json")}
    done = materialize(str(store_datasets["recipes"]), str(target))
    assert done["skipped"] == done["shards"] and done["replayed"] == 0
    assert "nothing converted, its run files kept" in capsys.readouterr().out
    assert {name: (target / name).read_bytes() for name in before} == before
    assert "converted_from" not in json.loads(before["manifest.json"])  # generate's own



def test_a_rerun_into_a_damaged_finished_target_makes_it_whole(store_datasets, tmp_path,
                                                              capsys):
    """A finished conversion that lost a run file, or whose tar changed in place (its size
    kept), is not 'already converted': the rerun converts the changed shard again and writes
    the run files again, and inspect then finds the target sound."""
    source, target = str(store_datasets["recipes"]), tmp_path / "images"
    materialize(source, str(target))
    for name in ("manifest.json", "sources.parquet"):
        (target / name).unlink()
        done = materialize(source, str(target))
        assert done["skipped"] == done["shards"]
        assert (target / name).exists() and inspect(str(target))[1] == []
    tar = target / "shards" / "00001.tar"
    data = tar.read_bytes()
    at = data.index(b'"level":') + len(b'"level":')
    tar.write_bytes(data[:at] + bytes([(data[at] - 48 + 1) % 10 + 48]) + data[at + 1:])
    assert inspect(str(target))[1] != []  # (the change is one inspect sees)
    capsys.readouterr()
    done = materialize(source, str(target))
    assert done["skipped"] == done["shards"] - 1
    assert "nothing converted" not in capsys.readouterr().out
    assert inspect(str(target))[1] == []
    _same_as_generated(target, store_datasets["images"])


def test_a_relabel_of_the_source_after_its_conversion_reaches_the_finished_target(
        store_datasets, tmp_path, capsys):
    """Converted once, then relabelled: converting again converts nothing, and copies the
    new sidecar (made for the target's plan), which readers and inspect accept."""
    from labelers.ensemble import Ensemble, Mapping01
    from shards.dataset import open_dataset

    source, target = tmp_path / "recipes", tmp_path / "images"
    shutil.copytree(store_datasets["recipes"], source)
    materialize(str(source), str(target))
    ensemble = Ensemble("other", {"mae": 1.0}, {"mae": Mapping01("linear", best=0.0,
                                                                 worst=0.3)})
    ensemble.save(tmp_path / "other.json")
    assert cli.main(["relabel", str(source), "--ensemble", str(tmp_path / "other.json")]) == 0
    capsys.readouterr()
    done = materialize(str(source), str(target))
    assert done["skipped"] == done["shards"]
    sidecar = f"labels-{ensemble.hash}.parquet"
    assert f"the source's newer labels copied: {sidecar}" in capsys.readouterr().out
    assert inspect(str(target))[1] == []
    qualities = {sample["key"]: sample["meta"]["quality"] for sample in open_dataset(
        str(target), labels=ensemble.hash).samples(split=None, decode=False)}
    scores = {row["key"]: row["scores"]["mae"] for row in read_index(
        Location.parse(str(target))).to_pylist() if row["kind"] == "distorted"}
    assert qualities == pytest.approx({key: min(max(1 - mae / 0.3, 0), 1)
                                       for key, mae in scores.items()})  # the linear map


def test_a_rerun_names_a_damaged_relabel_of_the_target_it_cannot_remake(store_datasets,
                                                                        tmp_path, capsys):
    """A sidecar the target alone holds (a relabel of the target after its conversion) that
    is damaged: the rerun writes the run files again, and says the damage it leaves (the
    source has no such labels to copy), rather than call the target whole."""
    source, target = str(store_datasets["recipes"]), tmp_path / "images"
    materialize(source, str(target))
    _sidecar(target, _distorted_keys(target)[1:])  # one sample unlabelled
    problems = inspect(str(target))[1]
    assert len(problems) == 1 and "labels-0123abcd.parquet" in problems[0]
    capsys.readouterr()
    done = materialize(source, str(target))
    assert done["skipped"] == done["shards"]
    said = capsys.readouterr().out
    assert f"note: {target}: {problems[0]} (a relabel of the target" in said
    assert inspect(str(target))[1] == problems  # left as it is: the target's, not the source's


def _sidecar(root, keys: list[str]) -> None:
    """A relabel sidecar of ensemble 0123abcd labelling `keys` 0.5."""
    table = pa.table({"key": keys, "quality": [0.5] * len(keys)})
    pq.write_table(table.replace_schema_metadata({"ensemble_hash": "0123abcd"}),
                   root / "labels-0123abcd.parquet")


def _distorted_keys(root) -> list[str]:
    index = read_index(Location.parse(str(root)), columns=["key", "kind"]).to_pylist()
    return [row["key"] for row in index if row["kind"] == "distorted"]


def test_a_sidecars_row_groups_travel_with_it(store_datasets, tmp_path):
    """relabel writes a row group a shard, which a reader of one shard reads alone; a copy
    written as one table made every shard's read a filtered read of the whole file."""
    source = tmp_path / "relabelled"
    shutil.copytree(store_datasets["images"], source)
    index = read_index(Location.parse(str(source)), columns=["key", "kind"],
                       with_shard=True).to_pylist()
    rows = [row for row in index if row["kind"] == "distorted"]
    schema = pa.schema([("key", pa.string()), ("quality", pa.float64()), ("shard", pa.int32())],
                       metadata={"ensemble_hash": "0123abcd"})
    with pq.ParquetWriter(source / "labels-0123abcd.parquet", schema) as writer:
        for shard in sorted({row["shard"] for row in rows}):
            mine = [row for row in rows if row["shard"] == shard]
            writer.write_table(pa.table({"key": [row["key"] for row in mine],
                                         "quality": [0.5] * len(mine),
                                         "shard": [shard] * len(mine)}, schema=schema))
    convert(str(source), str(tmp_path / "recipes"), "recipes")
    made, copied = (pq.ParquetFile(root / "labels-0123abcd.parquet")
                    for root in (source, tmp_path / "recipes"))
    assert made.num_row_groups == len({row["shard"] for row in rows}) > 1
    assert [copied.read_row_group(group).to_pylist() for group in range(copied.num_row_groups)] \
        == [made.read_row_group(group).to_pylist() for group in range(made.num_row_groups)]


def test_relabel_sidecars_travel_with_the_dataset_and_damaged_run_files_stay(store_datasets,
                                                                           tmp_path):
    source = tmp_path / "relabelled"
    shutil.copytree(store_datasets["images"], source)
    _sidecar(source, _distorted_keys(source))
    convert(str(source), str(tmp_path / "recipes"), "recipes")
    sidecar = "labels-0123abcd.parquet"
    assert pq.read_table(tmp_path / "recipes" / sidecar).to_pylist() == \
        pq.read_table(source / sidecar).to_pylist()  # its rows; its metadata names the target
    _sidecar(source, _distorted_keys(source)[1:])  # one sample unlabelled: damaged
    with pytest.raises(ConversionError, match=rf"{sidecar} labels \d+ samples .* relabel"):
        convert(str(source), str(tmp_path / "recipes2"), "recipes")
    (source / sidecar).unlink()
    sources = pq.read_table(source / "sources.parquet")
    pq.write_table(sources.slice(1), source / "sources.parquet")  # a source's row lost
    with pytest.raises(ConversionError, match=r"sources\.parquet lists \d+ sources, the plan"):
        convert(str(source), str(tmp_path / "recipes2"), "recipes")
    pq.write_table(sources, source / "sources.parquet")
    ensemble = source / "ensemble.json"
    ensemble.write_text(ensemble.read_text()[:-20])  # cut: the target would carry it
    with pytest.raises(ConversionError, match=r"ensemble\.json is damaged"):
        convert(str(source), str(tmp_path / "recipes2"), "recipes")
    ensemble.unlink()
    with pytest.raises(ConversionError, match=r"no ensemble\.json: the ensemble the run's Q"):
        convert(str(source), str(tmp_path / "recipes2"), "recipes")
    assert not (tmp_path / "recipes2").exists()  # refused before anything is written


def test_a_relabelled_dataset_converts_and_its_sidecar_is_read_and_inspected(store_datasets,
                                                                             tmp_path):
    """relabel's sidecar records the plan of the dataset it labelled; a conversion is another
    plan (the store mode is in it), so the sidecar travels made for the target: readers take
    its Q there, and inspect, which checks the sidecar's plan as readers do, finds nothing."""
    from shards import open_dataset

    source = tmp_path / "relabelled"
    shutil.copytree(store_datasets["images"], source)
    assert cli.main(["relabel", str(source), "--ensemble", "default"]) == 0
    [sidecar] = [p.name for p in source.glob("labels-*.parquet")]
    labels = sidecar.removeprefix("labels-").removesuffix(".parquet")
    relabelled = {s["key"]: s["meta"]["quality"] for s in open_dataset(
        str(source), labels=labels).samples(kind="distorted")}
    convert(str(source), str(tmp_path / "recipes"), "recipes")
    target = {s["key"]: s["meta"]["quality"] for s in open_dataset(
        str(tmp_path / "recipes"), labels=labels).samples(kind="distorted")}
    assert target == relabelled
    assert inspect(str(tmp_path / "recipes"))[1] == []
    shutil.copyfile(source / sidecar, tmp_path / "recipes" / sidecar)  # the source's, as is
    assert any("was made for another dataset" in problem
               for problem in inspect(str(tmp_path / "recipes"))[1])


def test_a_tar_changed_after_it_was_written_is_not_converted(store_datasets, tmp_path):
    """Its size and parquet as recorded, one digit of a record changed: the conversion reads
    every byte, so it checks them against the stats' SHA-256 and writes nothing of it."""
    source = tmp_path / "changed"
    shutil.copytree(store_datasets["images"], source)
    tar = source / "shards" / "00000.tar"
    data = tar.read_bytes()
    at = data.index(b'"quality":0.') + len(b'"quality":0.')
    tar.write_bytes(data[:at] + bytes([(data[at] - 48 + 1) % 10 + 48]) + data[at + 1:])
    with pytest.raises(tarfile.ReadError, match="tar SHA-256 differs from its stats"):
        convert(str(source), str(tmp_path / "recipes"), "recipes")
    assert sorted(p.name for p in (tmp_path / "recipes" / "shards").iterdir()) == []
    assert cli.main(["convert", str(source), str(tmp_path / "recipes"), "--store",
                     "recipes"]) == 2
    # a change the record cannot be read past (a key renamed, the size kept): still named as
    # a changed tar, not as the KeyError it meets first
    at = data.index(b'"kind":"distorted"')
    tar.write_bytes(data[:at] + b'"kinx"' + data[at + len(b'"kind"'):])
    with pytest.raises(tarfile.ReadError, match="tar SHA-256 differs from its stats"):
        convert(str(source), str(tmp_path / "recipes"), "recipes")
    stats_agree(tar)  # the same record as its writer wrote it: named with its sample
    with pytest.raises(ConversionError, match=r"sample \S+: its record cannot be read "
                                              r"\(KeyError: 'kind'\)"):
        convert(str(source), str(tmp_path / "recipes"), "recipes")


def test_a_png_that_does_not_decode_is_named_with_its_sample(store_datasets, tmp_path):
    source = tmp_path / "undecodable"
    shutil.copytree(store_datasets["images"], source)
    path = source / "shards" / "00000.tar"
    with tarfile.open(path) as tar:
        key = next(n for n in tar.getnames() if n.endswith("_ref.png")).removesuffix(".png")
    rewrite_tar(path, lambda name, data: bytes(len(data)) if name == f"{key}.png" else data)
    with pytest.raises(ConversionError, match=rf"sample {key}: not a decodable PNG"):
        convert(str(source), str(tmp_path / "recipes"), "recipes")


def test_a_target_holding_files_of_its_own_is_written_beside_them_and_says_so(
        store_datasets, tmp_path, capsys):
    target = tmp_path / "photos"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    (target / ".DS_Store").write_bytes(b"\0")  # the desktop's, and a run's staged file: not
    (target / "plan.json.0123456789ab.partial").write_text("{}")  # named
    convert(str(store_datasets["images"]), str(target), "recipes")
    assert (f"note: {target} holds 1 file(s) or folder(s) of its own (notes.txt): the dataset "
            "is written beside them") in capsys.readouterr().out
    assert (target / "notes.txt").read_text() == "mine" and (target / "plan.json").is_file()


def test_a_folder_of_other_files_is_never_written_and_a_lease_is_respected(store_datasets,
                                                                         tmp_path):
    foreign = tmp_path / "foreign"
    (foreign / "shards").mkdir(parents=True)
    (foreign / "manifest.json").write_text("theirs")
    with pytest.raises(ForeignOutputError, match=r"holds manifest\.json, shards but no plan"):
        convert(str(store_datasets["images"]), str(foreign), "recipes")
    assert (foreign / "manifest.json").read_text() == "theirs"
    with pytest.raises(ForeignOutputError, match="is a file, not a folder"):
        convert(str(store_datasets["images"]), str(foreign / "manifest.json"), "recipes")
    under = foreign / "manifest.json" / "images"  # not errno 20's "Cannot create directory"
    with pytest.raises(ForeignOutputError, match=f"{foreign / 'manifest.json'} is a file where "
                                                 "a folder is wanted"):
        convert(str(store_datasets["images"]), str(under), "recipes")
    with pytest.raises(OutputPathError, match=r"without '#' or '\?'"):
        convert(str(store_datasets["images"]), str(tmp_path / "a?b"), "recipes")
    assert not (tmp_path / "a?b").exists()
    assert sorted(p.name for p in foreign.iterdir()) == ["manifest.json", "shards"]
    busy = tmp_path / "busy"
    busy.mkdir()
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
              "refreshed": time.time()}  # a live writer on this host: this very process
    (busy / LEASE_FILE).write_text(json.dumps(holder))
    with pytest.raises(LeaseHeldError):
        convert(str(store_datasets["images"]), str(busy), "recipes")
    assert sorted(p.name for p in busy.iterdir()) == [LEASE_FILE]
    gone = {"host": "another-host", "pid": 1, "started": 0, "refreshed": 0}  # stale, elsewhere
    (busy / LEASE_FILE).write_text(json.dumps(gone))
    with pytest.raises(LeaseHeldError, match="rerun with --take-over"):
        convert(str(store_datasets["images"]), str(busy), "recipes")
    assert cli.main(["convert", str(store_datasets["images"]), str(busy), "--store", "recipes",
                     "--take-over"]) == 0  # the option the advice names
    assert not (busy / LEASE_FILE).exists() and (busy / "plan.json").exists()


def test_a_convert_interrupted_as_its_lease_is_taken_lets_the_lease_go(store_datasets, tmp_path,
                                                                       monkeypatch):
    """As relabel's: an interrupt as the lease's acquire returns left the target held."""
    from shards.lease import Lease

    acquire = Lease.acquire

    def interrupted_as_it_returns(self, *arguments, **options):
        acquire(self, *arguments, **options)
        raise KeyboardInterrupt
    monkeypatch.setattr(Lease, "acquire", interrupted_as_it_returns)
    with pytest.raises(KeyboardInterrupt):
        convert(str(store_datasets["images"]), str(tmp_path / "recipes"), "recipes")
    assert not (tmp_path / "recipes" / LEASE_FILE).exists()


def test_a_target_that_is_the_source_or_nests_with_it_is_refused(store_datasets, tmp_path,
                                                                   capsys):
    source = tmp_path / "source"
    shutil.copytree(store_datasets["recipes"], source)
    for target, said in ((source, "is the source itself"),
                         (source / "shards" / "inner", "lie one inside the other"),
                         (tmp_path, "lie one inside the other"),
                         (Path(f"{source}/../source"), "is the source itself")):
        assert cli.main(["materialize", str(source), str(target)]) == 2
        assert said in capsys.readouterr().err
    assert not (source / "shards" / "inner").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["source"]


def test_restart_clears_a_runs_files_naming_sidecars_and_refuses_anyone_elses(
        store_datasets, tmp_path, capsys):
    """--restart removes what runs write (shards of any index, staged ones, run files,
    relabel sidecars, each sidecar named); a file or folder in shards/ that no run writes
    stops it before anything is removed."""
    from pipeline.errors import ForeignOutputError
    from pipeline.output_folder import clear_previous_run

    out = tmp_path / "old"
    shutil.copytree(store_datasets["recipes"], out)
    sidecar = out / "labels-0123456789abcdef.parquet"
    sidecar.write_bytes(b"old labels")
    (out / "shards" / "00007_stats.json").write_text("{}")  # a shard of a larger old plan
    (out / "shards" / "00001.tar.gz.0123abcd4567.partial").write_bytes(b"x")  # staged
    for probe in ("probe-0123456789ab.partial", "probe-0123456789ab.partial.0123abcd4567.partial"):
        (out / "shards" / probe).write_bytes(b"probe")  # a storage probe stopped midway
    notes = out / "shards" / "README.txt"
    notes.write_text("mine")
    (out / "shards" / "mine").mkdir()
    location = Location.parse(str(out))
    with pytest.raises(ForeignOutputError, match=r"shards holds 2 file\(s\) or folder\(s\) "
                                                 r"no run writes \(README\.txt, mine\)"):
        clear_previous_run(location)
    assert sidecar.exists() and (out / "plan.json").exists() and notes.exists()
    notes.unlink()
    (out / "shards" / "mine").rmdir()
    clear_previous_run(location)
    printed = capsys.readouterr().out
    assert f"restart: removed {out / 'shards'} (3 finished shards of the previous run)" \
        in printed
    assert f"restart: removed {sidecar.name} (a relabel of the previous run's samples)" \
        in printed
    assert sorted(path.name for path in out.iterdir()) == []


class _StoppedAtTheShards:
    """A file system on which removing a folder is where the process was killed."""

    def __init__(self, fs):
        self.fs = fs

    def __getattr__(self, name):
        return getattr(self.fs, name)

    def delete_dir(self, path):
        raise KeyboardInterrupt(f"killed while removing {path}")


def test_a_restart_stopped_as_it_removes_the_shards_leaves_an_unfinished_run(store_datasets,
                                                                           tmp_path):
    """report.json (a finished run's mark) and the relabels go before the shards: a restart
    killed there leaves a run that reads as unfinished, not a finished one without shards."""
    from pipeline.output_folder import clear_previous_run

    out = tmp_path / "old"
    shutil.copytree(store_datasets["images"], out)
    (out / "labels-0123456789abcdef.parquet").write_bytes(b"old labels")
    assert (out / "report.json").exists()
    location = Location.parse(str(out))
    with pytest.raises(KeyboardInterrupt):
        clear_previous_run(Location(_StoppedAtTheShards(location.fs), location.root))
    assert sorted(path.name for path in out.iterdir()) == [
        "ensemble.json", "failures.jsonl", "manifest.json", "plan.json", "shards",
        "sources.parquet"]


def test_staged_files_an_interrupted_conversion_left_are_named_then_removed(store_datasets,
                                                                           tmp_path):
    out = tmp_path / "recipes"
    convert(str(store_datasets["images"]), str(out), "recipes")
    staged = [out / "shards" / "00001.tar.gz.0123.partial",  # writers killed before their
              out / "sources.parquet.4567.partial",          # rename: a shard, the merge,
              out / "labels-0123abcd.parquet.89ab.partial"]  # and relabel
    for path in staged:
        path.write_bytes(b"x" * 1000)
    theirs = out / "notes.txt.partial"  # a file of the user's, beside the dataset
    theirs.write_bytes(b"mine")
    lines, problems = inspect(str(out))
    assert any("3 staged file(s) (0.0 MB, e.g. " in line and "are no part of the dataset"
               in line for line in lines)
    assert not any("partial" in problem for problem in problems)
    convert(str(store_datasets["images"]), str(out), "recipes")
    assert not any(path.exists() for path in staged) and theirs.exists()
    assert not any("staged file(s)" in line for line in inspect(str(out))[0])


def test_a_source_with_a_damaged_shard_or_no_manifest_is_refused(store_datasets, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(store_datasets["recipes"], damaged)
    (damaged / "shards" / "00001.tar.gz").unlink()
    with pytest.raises(ConversionError, match="00001: tar missing"):
        materialize(str(damaged), str(tmp_path / "out"))
    cut = damaged / "shards" / "00000.tar.gz"
    cut.write_bytes(cut.read_bytes()[:-100])
    with pytest.raises(ConversionError, match=r"00000: tar is \d+ bytes, its stats say"):
        materialize(str(damaged), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # refused before anything is written
    (damaged / "manifest.json").unlink()
    with pytest.raises(ConversionError, match=r"no manifest\.json: not a finished dataset"):
        materialize(str(damaged), str(tmp_path / "out"))


def test_a_source_whose_manifest_is_not_json_is_refused_naming_it(store_datasets, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(store_datasets["recipes"], damaged)
    (damaged / "manifest.json").write_text("{cut")
    with pytest.raises(RunFileError, match=rf"{damaged / 'manifest.json'} is not JSON"):
        materialize(str(damaged), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()



@pytest.mark.parametrize(("edit", "said"), [
    (("report.json", "garbage"), "report.json is not JSON"),
    (("manifest.json", {"config": None}), "manifest.json lacks the field 'config'"),
    (("manifest.json", {"config": {"store": "images"}}),
     r'manifest.json stores versions as \["images", \[\]\], the plan as \["recipes", '),
    (("manifest.json", {"config": {"store": None}}),
     r"manifest.json is damaged \(ValueError"),
])
def test_a_source_whose_run_files_are_damaged_is_refused_before_any_work(
        store_datasets, tmp_path, capsys, edit, said):
    """convert, materialize and relabel read the manifest's storage and the report: damage
    there is named before a shard is written (it was found after every one, or as a KeyError,
    or as a missing .tar.gz of another mode), and relabel writes no sidecar."""
    damaged = tmp_path / "damaged"
    shutil.copytree(store_datasets["recipes"], damaged)
    name, change = edit
    if isinstance(change, str):
        (damaged / name).write_text(change)
    else:
        manifest = json.loads((damaged / name).read_text())
        if change["config"] is None:
            del manifest["config"]
        else:
            manifest["config"].update(change["config"])
        (damaged / name).write_text(json.dumps(manifest))
    with pytest.raises(RunFileError, match=said):
        materialize(str(damaged), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    assert cli.main(["relabel", str(damaged), "--ensemble", "default"]) == 2
    assert re.search(said, capsys.readouterr().err)
    assert not list(damaged.glob("labels-*.parquet"))


def test_a_version_before_its_reference_is_named(store_datasets, tmp_path):
    copy = tmp_path / "reordered"
    shutil.copytree(store_datasets["recipes"], copy)
    rewrite_tar(copy / "shards" / "00000.tar.gz", order=lambda name: "_ref." in name)  # last
    with pytest.raises(ConversionError, match=r"sample \S+: its reference \S+_ref is not "
                                              "before it in its shard"):
        materialize(str(copy), str(tmp_path / "images"))


def test_commands_on_an_object_store_never_print_its_credentials(store_datasets, s3_bucket,
                                                                  capsys, tmp_path):
    target = s3_bucket.uri(f"converted-{tmp_path.name}")
    assert cli.main(["convert", str(store_datasets["recipes"]), target, "--store",
                     "images"]) == 0
    assert cli.main(["inspect", target]) == 0
    assert cli.main(["inspect", s3_bucket.uri("missing")]) == 2
    assert cli.main(["validate-levels", target, "--target", str(tmp_path)]) == 2  # 2 levels
    printed = capsys.readouterr()
    assert f"converted {store_datasets['recipes']} into s3://***@" in printed.out
    assert "dataset s3://***@" in printed.out and "no type of s3://***@" in printed.err
    assert s3_bucket.secret not in printed.out + printed.err
    assert s3_bucket.access not in printed.out + printed.err


@pytest.mark.parametrize("uri", ["file:///data/run#2", "s3://bucket/run#2?region=eu",
                                 "file:///data/run?v=2"])
def test_a_uri_whose_filesystem_would_drop_a_part_is_refused(uri, capsys):
    from shards.storage import StorageUriError

    with pytest.raises(StorageUriError, match="would name another folder"):
        Location.parse(uri)
    assert cli.main(["inspect", uri]) == 2
    assert "would name another folder" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["convert", "", "{other}", "--store", "recipes"],
                                     ["convert", "{other}", " ", "--store", "recipes"],
                                     ["materialize", "{other}", ""],
                                     ["generate", "--out", "", "--metrics", "mae"]])
def test_an_empty_path_is_named_not_read_as_the_filesystems_root(command, tmp_path, capsys):
    """An empty SOURCE, TARGET or OUT (an unset shell variable) names no folder: said so,
    never taken for '/' (where a run would write) nor called a folder inside the other."""
    other = str(tmp_path / "data")
    assert cli.main([part.format(other=other) for part in command]) == 2
    printed = capsys.readouterr()
    assert "names no folder: give a dataset's path or URI" in printed.err
    assert "inside" not in printed.err and not (tmp_path / "data").exists()


def _made_from_folder(folder: Path, out: Path) -> Path:
    """A recipes dataset of the photos in `folder`, one reference a shard, by the real shard
    worker (the run generate makes of them)."""
    from labelers import Labeler
    from labelers.ensemble import Ensemble, Mapping01
    from pipeline.config import RunConfig
    from pipeline.plan import Plan, persist_or_check
    from pipeline.report import write_run_files
    from pipeline.sizing import TargetSize
    from pipeline.sources import list_sources
    from pipeline.worker import produce_shard
    from tests.conftest import finish, local_scorer

    ensemble = Ensemble("test", {"mae": 1.0}, {"mae": Mapping01("linear", best=0.0, worst=0.2)})
    config = RunConfig(sources=str(folder), out=str(out), size=TargetSize(192, 176),
                       shard_refs=1, distortion_ids=(1,), levels=(1,), metrics=("mae",),
                       store="recipes")
    plan = Plan.make(list_sources(str(folder)), config)
    location = Location.parse(config.out)
    persist_or_check(plan, location)
    write_run_files(location, config, plan, ensemble, ())
    for index in range(plan.shard_count):
        produce_shard(index, plan, config, local_scorer(Labeler(metrics=("mae",), device="cpu")),
                      ensemble, location)
    finish(location, plan, config)
    return out


def test_a_shard_converted_from_another_dataset_of_the_plan_is_converted_again(tmp_path):
    """Two datasets of one plan: a source photo changed between their runs (the plan records
    names, not pixels). Converting the second into a target holding the first's conversion
    keeps only the shard made of the same references and converts the other again: the
    target never holds one dataset's pixels under the other's run files."""
    from PIL import Image
    from skimage import data

    from shards.dataset import open_dataset
    from shards.schema import pixel_sha256

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(data.astronaut()).save(folder / "a.png")
    Image.fromarray(data.coffee()).save(folder / "b.png")
    first = _made_from_folder(folder, tmp_path / "first")
    Image.fromarray(data.chelsea()).save(folder / "b.png")
    second = _made_from_folder(folder, tmp_path / "second")
    plans = [json.loads((root / "plan.json").read_text())["digest"] for root in (first, second)]
    assert plans[0] == plans[1]  # what let the first's shard pass for the second's
    target = tmp_path / "images"
    materialize(str(first), str(target))
    done = materialize(str(second), str(target))
    assert (done["shards"], done["skipped"]) == (2, 1)  # the shard of a.png is the same

    def references(root: Path) -> dict[str, str]:
        return {sample["ref_id"]: pixel_sha256(sample["image"])  # the pixels read
                for sample in open_dataset(str(root)).samples(kind="reference")}
    assert references(target) == references(second) != references(first)
    assert inspect(str(target))[1] == []


def test_a_source_being_written_or_remade_during_a_conversion_is_refused(store_datasets,
                                                                         tmp_path, monkeypatch):
    """A source a run is writing is refused at the start, naming the writer; a source that
    becomes another plan's while it is converted (a generate --restart there: its shards are
    remade one by one) is named, shard by shard and before its run files are copied, rather
    than give a target that mixes two plans' shards under one plan's stats."""
    from pipeline.commands import convert as command

    source = tmp_path / "source"
    shutil.copytree(store_datasets["images"], source)
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
              "refreshed": time.time()}  # a live writer on this host: this very process
    (source / LEASE_FILE).write_text(json.dumps(holder))
    with pytest.raises(ConversionError, match=rf"{re.escape(str(source))} is being written "
                                              rf"now \(.*{os.getpid()}"):
        convert(str(source), str(tmp_path / "refused"), "recipes")
    assert not (tmp_path / "refused").exists()
    (source / LEASE_FILE).unlink()
    converted = command.in_processes

    def remade_after_the_first(shard: int | None, run_file: str | None = None):
        def running(function, jobs, workers):
            results = []
            for number, job in enumerate(jobs):
                results += list(converted(function, [job], workers))
                if number == 0 and shard is not None:
                    stats_path = source / "shards" / f"{shard:05d}_stats.json"
                    stats = json.loads(stats_path.read_text())
                    stats_path.write_text(json.dumps({**stats, "plan_digest": "f" * 64}))
            if run_file:
                document = json.loads((source / run_file).read_text())
                (source / run_file).write_text(json.dumps({**document, "plan_digest": "e" * 64}))
            return results
        return running
    monkeypatch.setattr(command, "in_processes", remade_after_the_first(1))
    with pytest.raises(ConversionError, match=r"changed while it was converted \(its shard 1 "
                                              r"is of plan ffffffffffff, not the plan read"):
        convert(str(source), str(tmp_path / "mixed"), "recipes")
    assert not (tmp_path / "mixed" / "report.json").exists()
    shutil.rmtree(source)
    shutil.copytree(store_datasets["images"], source)
    monkeypatch.setattr(command, "in_processes", remade_after_the_first(None, "manifest.json"))
    with pytest.raises(ConversionError, match=r"its manifest\.json is of plan eeeeeeeeeeee"):
        convert(str(source), str(tmp_path / "late"), "recipes")
    assert not (tmp_path / "late" / "report.json").exists()


def test_a_command_on_a_dataset_a_run_writes_names_the_writer(store_datasets, tmp_path,
                                                               capsys):
    """relabel on a folder generate is still writing: not "rerun it to resume" (that rerun
    would be refused), but the writer, and to wait."""
    busy = tmp_path / "busy"
    shutil.copytree(store_datasets["images"], busy)
    (busy / "report.json").unlink()
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
              "refreshed": time.time()}
    (busy / LEASE_FILE).write_text(json.dumps(holder))
    assert cli.main(["relabel", str(busy), "--ensemble", "pmos"]) == 2
    err = capsys.readouterr().err
    assert "has no report.json: a run is writing it now (" in err and "wait until it ends" in err
    (busy / LEASE_FILE).unlink()
    assert cli.main(["relabel", str(busy), "--ensemble", "pmos"]) == 2
    assert "generate has not finished it (rerun it to resume)" in capsys.readouterr().err


def test_a_convert_terminated_mid_shard_lets_its_lease_go_and_leaves_no_staged_file(
        store_datasets, tmp_path):
    """SIGTERM (a pod's stop, `kill`) while a shard is converted stops convert as Ctrl-C
    does: it says so, exits 143, and leaves neither its lease (a rerun from another host
    would need --take-over) nor a staged tar; the rerun converts the dataset whole."""
    import subprocess
    import sys

    target = tmp_path / "recipes"
    script = (
        "import os, signal, sys\n"
        "import pipeline.commands.convert as convert\n"
        "from pipeline.cli import main\n"
        "made = convert._converted\n"
        "def terminated(*args):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return made(*args)\n"
        "convert._converted = terminated\n"
        f"sys.exit(main(['convert', {str(store_datasets['images'])!r}, {str(target)!r},"
        " '--store', 'recipes']))\n")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, timeout=300)
    assert done.returncode == 143, done.stderr
    assert "iqa-factory: terminated (SIGTERM) (the same command resumes a convert run)" \
        in done.stderr
    assert not (target / LEASE_FILE).exists()
    assert not [path.name for path in target.rglob("*") if ".partial" in path.name]
    assert cli.main(["convert", str(store_datasets["images"]), str(target), "--store",
                     "recipes"]) == 0
    assert inspect(str(target))[1] == []  # no finding
