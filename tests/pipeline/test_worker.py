"""The Ray-free shard worker: bad input is recorded and never stops the run; conversions are
recorded; parquet rows equal tar members; the same shard twice gives the same bytes."""

import errno
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

import distortions
from distortions.threads import use_one_thread
from labelers import Labeler
from labelers.ensemble import Ensemble, Mapping01
from pipeline import cli
from pipeline import worker as worker_module
from pipeline.commands.deep_check import deep_check
from pipeline.commands.inspect_dataset import inspect
from pipeline.config import RunConfig
from pipeline.duplicates import find_duplicates
from pipeline.errors import PlanMismatchError
from pipeline.plan import (
    Plan,
    ShardPlan,
    chosen,
    differences,
    label_identity,
    persist_or_check,
    read_plan,
    split_of,
)
from pipeline.processes import in_processes
from pipeline.report import Tally, build_report, merge
from pipeline.sizing import TargetSize
from pipeline.source_changes import check_modified_sources
from pipeline.sources import IMAGE_EXTENSIONS, list_sources, listing, load, skipped_note
from pipeline.worker import Guard, produce_shard
from shards.layout import plan_digest, shard_paths, store_of, tar_path
from shards.provenance import library_versions
from shards.reader import read_index, shard_problems, shard_stats, tar_urls
from shards.schema import INDEX_SCHEMA, SCORES_TYPE
from shards.storage import Location
from shards.writer import ShardWriter
from tests.conftest import local_scorer, rewrite_tar, stats_agree


class _Quarantining(Guard):
    """Leaves `ref_id` out, as the progress actor does a reference workers died on twice."""

    def __init__(self, ref_id: str):
        super().__init__()
        self.ref_id = ref_id

    def begin(self, ref_id: str) -> bool:
        return ref_id != self.ref_id


def _with_a_nan(scores: dict, metric: str, version: int) -> dict:
    """`scores` with `metric`'s score of `version` not a number (a labeler defect)."""
    scores[metric] = np.asarray(scores[metric]).copy()
    scores[metric][version] = np.nan
    return scores


def _run_all(config, ensemble):
    sources = chosen(list_sources(config.sources), config)
    plan = Plan.make(sources, config, duplicates=find_duplicates(sources, config.sources))
    location = Location.parse(config.out)
    persist_or_check(plan, location)
    scorer = local_scorer(Labeler(metrics=config.metrics, device="cpu"))
    outcomes = [produce_shard(i, plan, config, scorer, ensemble, location)
                for i in range(plan.shard_count)]
    return plan, location, outcomes


@pytest.mark.slow
def test_bad_inputs_are_recorded_and_good_ones_converted(sources_folder, fast_config,
                                                         mae_ensemble):
    folder, good, expected_failures = sources_folder
    config = fast_config(str(folder))
    plan, _, outcomes = _run_all(config, mae_ensemble)
    assert len(plan.references) == len(good) + len(expected_failures)
    failures = {f["ref_id"]: f["reason"] for o in outcomes for f in o.failures}
    assert failures == expected_failures
    rows = {row["ref_id"]: row for o in outcomes for row in o.sources}
    assert {r for r, row in rows.items() if row["status"] == "ok"} == set(good)
    assert all(rows[r]["reason"] == reason for r, reason in expected_failures.items())
    assert "L->RGB" in rows["gray"]["conversions"]
    assert any("alpha composited" in c for c in rows["rgba"]["conversions"])
    assert any("palette" in c for c in rows["palette"]["conversions"])
    assert "CMYK->RGB" in rows["cmyk"]["conversions"]
    assert any("8-bit" in c for c in rows["sixteen"]["conversions"])
    assert any("orientation 6" in c for c in rows["rotated"]["conversions"])
    per_reference = 1 + len(config.scenarios)
    assert sum(o.samples for o in outcomes) == len(good) * per_reference


@pytest.mark.slow
def test_parquet_rows_equal_tar_members_and_labels_are_present(sources_folder, fast_config,
                                                               mae_ensemble):
    folder, good, _ = sources_folder
    config = fast_config(str(folder))
    _, location, _ = _run_all(config, mae_ensemble)
    index = read_index(location).to_pylist()
    samples = list(wds.WebDataset(tar_urls(location), shardshuffle=False))
    assert [s["__key__"] for s in samples] == [row["key"] for row in index]
    assert all("." not in s["__key__"] for s in samples)
    distorted = [row for row in index if row["kind"] == "distorted"]
    assert len(distorted) == len(good) * len(config.scenarios)
    for row in distorted:
        assert 0.0 <= row["quality"] <= 1.0 and row["ensemble_hash"] == mae_ensemble.hash
        assert row["scores"]["mae"] is not None and row["scores"]["lpips"] is None
        assert json.loads(row["recipe"])["distortion_id"] == row["distortion_id"]
    for row in index:
        if row["kind"] == "reference":
            assert row["scores"] is None and row["quality"] is None
    # a reference's .json holds the spec's sample fields (shards.md), null where it has none
    spec_fields = ("key", "ref_id", "kind", "distortion_id", "distortion", "category",
                   "level", "seed", "recipe", "width", "height", "codec", "sha256", "scores",
                   "quality")
    for sample in samples:
        if sample["__key__"].endswith("_ref"):
            record = json.loads(sample["json"])
            assert set(spec_fields) <= set(record)
            assert set(index[0]) <= set(record)  # and every index column (split, chain, ...)
            assert all(record[name] is None for name in
                       ("distortion_id", "distortion", "category", "level", "seed", "recipe",
                        "scores", "quality"))
    # a distorted sample's .json scores are its parquet row's: every metric, null unscored
    rows = {row["key"]: row for row in index}
    for sample in samples:
        record = json.loads(sample["json"])
        if record["kind"] == "distorted":
            assert record["scores"] == rows[sample["__key__"]]["scores"]
            assert set(record["scores"]) == {field.name for field in SCORES_TYPE}
            assert record["scores"]["mae"] is not None and record["scores"]["lpips"] is None
    # each shard: references first, then the distorted samples
    kinds = [row["kind"] for row in pq.read_table(shard_paths(location, 0)["parquet"]).to_pylist()]
    assert kinds == sorted(kinds, key=lambda kind: kind != "reference")


@pytest.mark.slow
def test_the_same_shard_twice_gives_the_same_bytes(tmp_path, fast_config, mae_ensemble):
    digests = []
    for run in ("a", "b"):
        config = fast_config("embedded", out=str(tmp_path / run), limit=2)
        _, location, _ = _run_all(config, mae_ensemble)
        tar = location.read_bytes(tar_path(location, 0, "images"))
        digests.append(hashlib.sha256(tar).hexdigest())
    assert digests[0] == digests[1]


def test_the_denoisers_network_is_timed_apart_from_the_distortions(tmp_path, fast_config,
                                                                    mae_ensemble, monkeypatch):
    """Its own stage (on a GPU node it is the GPU's work, not the shard process's): the other
    stages, timed on the shard's own thread, never overlap, so they add up to no more than
    the shard's time. The network's call moves the clock on by 1,000 s, longer than
    everything else the shard does."""
    config = fast_config("embedded", out=str(tmp_path / "out"), limit=1,
                         distortion_ids=(1, 8), levels=(1, 5))
    sources = chosen(list_sources(config.sources), config)
    plan = Plan.make(sources, config)
    location = Location.parse(config.out)
    persist_or_check(plan, location)
    real_clock, skipped, waited = time.perf_counter, [0.0], []
    monkeypatch.setattr(time, "perf_counter", lambda: real_clock() + skipped[0])

    def slow_network(inputs):
        started = time.perf_counter()
        skipped[0] += 1000.0
        made = distortions.run_learned(inputs)
        waited.append(time.perf_counter() - started)
        return made

    started = time.perf_counter()
    outcome = produce_shard(0, plan, config, local_scorer(Labeler(metrics=("mae",), device="cpu")),
                            mae_ensemble, location, denoise=slow_network)
    wall = time.perf_counter() - started
    assert len(waited) == 1 and outcome.seconds["network"] >= waited[0] >= 1000.0
    assert outcome.seconds["distort"] > 0
    assert outcome.seconds["encode"] > 0 and outcome.seconds["label"] > 0
    assert sum(outcome.seconds.values()) - outcome.seconds["network"] <= wall < 2000.0


def test_a_references_pngs_are_encoded_while_its_labels_are_awaited(tmp_path, fast_config,
                                                                   mae_ensemble, monkeypatch):
    """The labels are made elsewhere (a GPU actor): the shard's CPU encodes the PNGs
    meanwhile. Encoding waits to start until the labels are asked for, and the labeler answers
    only once every PNG is encoded: they overlap, or the test fails."""
    config = fast_config("embedded", out=str(tmp_path / "out"), limit=1,
                         distortion_ids=(1, 13), levels=(1, 5))
    plan = Plan.make(chosen(list_sources(config.sources), config), config)
    location = Location.parse(config.out)
    persist_or_check(plan, location)
    asked, encoded, while_asked = threading.Event(), [], []
    real_encode = worker_module.encode_png

    def encode_png(image):
        if not encoded:
            asked.wait(timeout=5)
        while_asked.append(asked.is_set())
        encoded.append(real_encode(image))
        return encoded[-1]

    scorer = local_scorer(Labeler(metrics=("mae", "gmsd"), device="cpu"))

    def labels_elsewhere(ref, versions, on_labelled, ref_id):
        asked.set()
        deadline = time.monotonic() + 30
        while len(encoded) < 1 + len(versions) and time.monotonic() < deadline:
            time.sleep(0.01)
        return scorer(ref, versions, on_labelled, ref_id)

    monkeypatch.setattr(worker_module, "encode_png", encode_png)
    outcome = produce_shard(0, plan, config, labels_elsewhere, mae_ensemble, location)
    assert outcome.samples == 1 + 4 and len(encoded) == 1 + 4
    assert all(while_asked)
    with tarfile.open(tar_path(location, 0, "images")) as tar:  # the encoded PNGs, each once
        pngs = sorted(tar.extractfile(m).read() for m in tar if m.name.endswith(".png"))
    assert pngs == sorted(encoded)


def test_the_next_reference_is_made_while_a_references_labels_are_awaited(
        tmp_path, fast_config, mae_ensemble):
    """The labels are made elsewhere (a GPU actor): the shard's CPU makes the next reference
    meanwhile, so it never waits on the labeler while it has work and the labeler has the
    next call coming. The labeler answers for the first reference only once the shard has
    begun the second: they overlap, or the test fails."""
    config = fast_config("embedded", out=str(tmp_path / "out"), limit=2, shard_refs=2,
                         distortion_ids=(1, 13), levels=(1,))
    plan = Plan.make(chosen(list_sources(config.sources), config), config)
    first, second = (ref.ref_id for ref in plan.shard(0))
    begun, events = {first: threading.Event(), second: threading.Event()}, []

    class Watching(Guard):
        def begin(self, ref_id: str) -> bool:
            events.append(f"begin {ref_id}")
            begun[ref_id].set()
            return True

    scorer = local_scorer(Labeler(metrics=("mae", "gmsd"), device="cpu"))

    def labels_elsewhere(ref, versions, on_labelled, ref_id):
        events.append(f"answered while {second} begun: {begun[second].wait(timeout=30)}")
        return scorer(ref, versions, on_labelled, ref_id)

    outcome = produce_shard(0, plan, config, labels_elsewhere, mae_ensemble,
                            Location.parse(config.out), lambda *told: events.append(told),
                            guard=Watching())
    assert outcome.samples == 2 * (1 + 2)
    assert events[:3] == [f"begin {first}", f"begin {second}",
                          f"answered while {second} begun: True"]
    told = [event for event in events if isinstance(event, tuple)]
    assert sum(samples for samples, _, _ in told) == outcome.samples  # each version and
    # reference told once, as it is labelled or settles


def test_a_reference_too_large_to_hold_is_settled_before_the_next_begins(
        tmp_path, fast_config, mae_ensemble):
    """A reference whose versions hold more than OVERLAP_BYTES (a native-size run of big
    photos; here one version) is labelled before the next begins: a shard task never holds
    two such."""
    config = fast_config("embedded", out=str(tmp_path / "out"), limit=2, shard_refs=2,
                         distortion_ids=(1,), levels=(1,))
    plan = Plan.make(chosen(list_sources(config.sources), config), config)
    events = []

    class Watching(Guard):
        def begin(self, ref_id: str) -> bool:
            events.append("begin")
            return True

    main = threading.current_thread()

    def settled():
        events.append("settled")

    version_bytes = config.size.width * config.size.height * 3
    produce_shard(0, plan, config, local_scorer(Labeler(metrics=("mae",), device="cpu")),
                  mae_ensemble, Location.parse(config.out),
                  lambda *told: settled() if threading.current_thread() is main else None,
                  guard=Watching(),  # (the labeler tells its parts on the label thread)
                  overlap_bytes=version_bytes - 1)
    assert events == ["begin", "settled", "begin", "settled"]


def test_making_the_next_reference_meanwhile_changes_nothing_the_shard_writes(
        tmp_path, small_image):
    """A shard of references of every fate (labelled, a version without a label, a flat one
    whose VIF fails, one that does not decode, one quarantined) writes the same bytes, every
    one of its files, whether each reference is settled before the next begins or the next
    is made while its labels are awaited: rows, failures and tar members follow the plan."""
    folder = tmp_path / "sources"
    folder.mkdir()
    for i, name in enumerate("abc"):
        Image.fromarray(np.roll(small_image, 17 * i, axis=1)).save(folder / f"{name}.png")
    Image.fromarray(np.full_like(small_image, 128)).save(folder / "d.png")
    (folder / "e.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    ensemble = Ensemble("test", {"mae": 1.0, "vif": 1.0},
                        {"mae": Mapping01("linear", best=0.0, worst=0.2),
                         "vif": Mapping01("linear", best=1.0, worst=0.0)})
    real = local_scorer(Labeler(metrics=("mae", "vif"), device="cpu"))
    calls = []

    def one_nan_in_the_second(ref, versions, on_labelled, ref_id):
        scores = real(ref, versions, on_labelled, ref_id)
        calls.append(len(calls))
        return _with_a_nan(scores, "mae", 1) if len(calls) == 2 else scores

    def files(overlap_bytes: int | None, out: Path) -> dict[str, bytes]:
        calls.clear()
        config = RunConfig(sources=str(folder), out=str(out), size=TargetSize(192, 176),
                           shard_refs=8, distortion_ids=(1, 13), levels=(1, 5),
                           metrics=("mae", "vif"), max_pixels=4_000_000)
        plan = Plan.make(list_sources(str(folder)), config)
        persist_or_check(plan, Location.parse(config.out))
        told = []
        outcome = produce_shard(0, plan, config, one_nan_in_the_second, ensemble,
                                Location.parse(config.out), lambda *call: told.append(call),
                                guard=_Quarantining("b"), overlap_bytes=overlap_bytes)
        assert {f["reason"] for f in outcome.failures} == {
            "quarantined", "label_failed", "corrupt", "no_effect"}
        written = {path.name: path.read_bytes() for path in (out / "shards").iterdir()}
        stats = json.loads(written.pop("00000_stats.json"))
        return {**written, "stats": {k: v for k, v in stats.items()
                                     if k not in ("seconds", "write_seconds")},
                "told": sorted(told)}  # (the labeler's parts told on the label thread)

    overlapped = files(None, tmp_path / "out")
    shutil.move(tmp_path / "out", tmp_path / "first")
    one_at_a_time = files(0, tmp_path / "out")
    assert overlapped == one_at_a_time


def test_the_other_types_are_distorted_while_the_denoisers_network_runs(
        tmp_path, fast_config, mae_ensemble, monkeypatch):
    """The learned types' network runs elsewhere (the GPU actor): the shard distorts the other
    types meanwhile. The first other type waits to start until the network is asked, and the
    network answers only once another type is made: they overlap, or the test fails."""
    config = fast_config("embedded", out=str(tmp_path / "out"), limit=1,
                         distortion_ids=(1, 8, 13), levels=(1,))
    plan = Plan.make(chosen(list_sources(config.sources), config), config)
    location = Location.parse(config.out)
    persist_or_check(plan, location)
    asked, made = threading.Event(), []
    real_apply = distortions.apply

    def apply(image, distortion, level, seed):
        if not made:
            asked.wait(timeout=5)
        made.append(asked.is_set())
        return real_apply(image, distortion, level, seed)

    def network_elsewhere(inputs):
        asked.set()
        deadline = time.monotonic() + 30
        while not made and time.monotonic() < deadline:
            time.sleep(0.01)
        return distortions.run_learned(inputs)

    monkeypatch.setattr(distortions, "apply", apply)
    scorer = local_scorer(Labeler(metrics=("mae", "gmsd"), device="cpu"))
    outcome = produce_shard(0, plan, config, scorer, mae_ensemble, location,
                            denoise=network_elsewhere)
    assert outcome.samples == 1 + 3 and made == [True, True]
    assert outcome.seconds["network"] > 0


def test_the_stats_hold_the_write_stage_and_no_network_time_without_learned_types(
        tmp_path, fast_config, mae_ensemble):
    """The write stage (the tar, the local spill, the lists, publishing) is over before the
    stats are written, so they hold its time; a shard without learned types ran no network."""
    config = fast_config("embedded", out=str(tmp_path / "out"), limit=1,
                         distortion_ids=(1, 13), levels=(1, 5))
    plan = Plan.make(chosen(list_sources(config.sources), config), config)
    location = Location.parse(config.out)
    persist_or_check(plan, location)
    outcome = produce_shard(0, plan, config, local_scorer(Labeler(metrics=("mae",), device="cpu")),
                            mae_ensemble, location)
    seconds = json.loads(Path(shard_paths(location, 0)["stats"]).read_text())["seconds"]
    assert seconds == outcome.seconds
    assert seconds["write"] > 0 and seconds["network"] == 0.0


def test_a_shard_made_again_and_stopped_before_its_stats_reads_as_unfinished(
        tmp_path, fast_config, mae_ensemble, monkeypatch):
    """Its tar and index are published before its stats: the stats of the make before must go
    first, or a resume takes the new tar beside the old stats (whose hash is another tar's)."""
    config = fast_config("embedded", out=str(tmp_path / "out"), limit=1, distortion_ids=(1,),
                         levels=(1,), metrics=("mae",))
    plan = Plan.make(chosen(list_sources(config.sources), config), config)
    location = Location.parse(config.out)
    persist_or_check(plan, location)
    scorer = local_scorer(Labeler(metrics=("mae",), device="cpu"))
    produce_shard(0, plan, config, scorer, mae_ensemble, location)
    stats = Path(shard_paths(location, 0)["stats"])
    assert stats.exists() and not shard_problems(location, 0, plan.digest, config.store)

    def stopped(writer, stats):
        raise KeyboardInterrupt("stopped before the stats")

    monkeypatch.setattr(ShardWriter, "write_stats", stopped)
    with pytest.raises(KeyboardInterrupt):
        produce_shard(0, plan, config, scorer, mae_ensemble, location)
    assert Path(shard_paths(location, 0)["parquet"]).exists()  # published, then stopped
    assert not stats.exists()
    assert shard_problems(location, 0, plan.digest, config.store)


def test_plan_is_deterministic_and_refuses_another_plan(tmp_path, fast_config):
    config = fast_config("embedded")
    plan = Plan.make(list_sources("embedded"), config)
    assert plan.digest == Plan.make(list_sources("embedded"), config).digest
    assert [len(plan.shard(i)) for i in range(plan.shard_count)] == [4, 1]
    location = Location.parse(config.out)
    assert persist_or_check(plan, location) is False
    assert persist_or_check(plan, location) is True
    other = Plan.make(list_sources("embedded"), fast_config("embedded", seed=1))
    with pytest.raises(PlanMismatchError, match="--restart"):
        persist_or_check(other, location)
    assert persist_or_check(other, location, restart=True) is False


def test_a_source_whose_size_changed_since_its_shard_was_made_is_not_resumed(
        tmp_path, fast_config, small_image, mae_ensemble):
    """A source exported again between an interruption and the resume (the same names):
    resuming would mix its finished shard's versions with those made of other pixels. One
    whose shard is not made yet is made from what it holds now (its new size recorded)."""
    folder = tmp_path / "sources"
    folder.mkdir()
    for name, shift in (("a", 0), ("b", 40)):
        Image.fromarray(np.roll(small_image, shift, axis=1)).save(folder / f"{name}.png")
    config = fast_config(str(folder), shard_refs=1, distortion_ids=(1,), levels=(1,),
                         metrics=("mae",))
    location = Location.parse(config.out)
    plan = Plan.make(list_sources(str(folder)), config)
    assert plan.source_bytes == tuple((folder / n).stat().st_size for n in ("a.png", "b.png"))
    persist_or_check(plan, location)
    produce_shard(0, plan, config, local_scorer(Labeler(metrics=("mae",), device="cpu")),
                  mae_ensemble, location)  # shard 0 (a.png) finished, shard 1 not begun
    Image.fromarray(small_image[::-1]).save(folder / "b.png", compress_level=0)
    b_resized = Plan.make(list_sources(str(folder)), config)
    assert b_resized.digest == plan.digest  # the same names: the same dataset, by its plan
    assert persist_or_check(b_resized, location) is True
    check_modified_sources(location, b_resized, config, done=[0])
    assert read_plan(location).source_bytes[1] == (folder / "b.png").stat().st_size
    Image.fromarray(small_image[::-1]).save(folder / "a.png", compress_level=0)
    a_resized = Plan.make(list_sources(str(folder)), config)
    assert a_resized.source_bytes[0] != plan.source_bytes[0]
    with pytest.raises(PlanMismatchError, match=rf"1 sources changed since their shards were "
                       rf"made \({folder / 'a.png'} holds other pixels than shard 00000 was "
                       rf"made from\)\. .*--restart"):
        check_modified_sources(location, a_resized, config, done=[0])
    old = {k: v for k, v in json.loads((tmp_path / "out" / "plan.json").read_text()).items()
           if k not in ("source_bytes", "source_mtimes")}  # a plan made before sizes were kept
    (tmp_path / "out" / "plan.json").write_text(json.dumps(old))
    check_modified_sources(location, a_resized, config, done=[0])  # not compared
    assert persist_or_check(a_resized, location, restart=True) is False
    with pytest.raises(ValueError, match="source_bytes is not one integer"):
        Plan.from_json({**plan.to_json(), "source_bytes": [1]})


def test_a_source_changed_after_listing_but_before_its_shard_read_it_resumes(
        tmp_path, fast_config, small_image, mae_ensemble):
    """The listing records a source's size when the plan is made; a photo exported again
    before its shard's worker read it is in that shard as it is now, so a resume compares its
    pixels (with the SHA-256 of the photo written here, computed independently), not its size,
    and goes on. So does one encoded again without loss (another size, the same pixels)."""
    folder = tmp_path / "sources"
    folder.mkdir()
    Image.fromarray(small_image).save(folder / "a.png")
    config = fast_config(str(folder), shard_refs=1, distortion_ids=(1,), levels=(1,),
                         metrics=("mae",))
    location = Location.parse(config.out)
    plan = Plan.make(list_sources(str(folder)), config)
    persist_or_check(plan, location)
    exported = small_image[::-1].copy()
    Image.fromarray(exported).save(folder / "a.png", compress_level=0)  # before the read
    produce_shard(0, plan, config, local_scorer(Labeler(metrics=("mae",), device="cpu")),
                  mae_ensemble, location)
    recorded = json.loads(Path(shard_paths(location, 0)["sources"]).read_text())[0]["sha256"]
    assert recorded == hashlib.sha256(exported.tobytes()).hexdigest()
    listed = Plan.make(list_sources(str(folder)), config)
    assert listed.source_bytes[0] != plan.source_bytes[0]
    check_modified_sources(location, listed, config, done=[0])
    assert read_plan(location).source_bytes == listed.source_bytes  # recorded for next time
    Image.fromarray(exported).save(folder / "a.png", compress_level=9)  # without loss
    again = Plan.make(list_sources(str(folder)), config)
    assert again.source_bytes[0] != listed.source_bytes[0]
    check_modified_sources(location, again, config, done=[0])
    assert read_plan(location).source_bytes == again.source_bytes


def test_a_source_replaced_in_place_by_one_of_the_same_size_is_not_resumed(
        tmp_path, fast_config, small_image, mae_ensemble):
    """Uncompressed PNGs of the same shape have the same byte size whatever their pixels, so
    only the modification time tells the replacement; the finished shard's recorded SHA-256
    (of the pixels it was made from, computed here independently) says whether it changed."""
    folder = tmp_path / "sources"
    folder.mkdir()
    for name, shift in (("a", 0), ("b", 40)):
        Image.fromarray(np.roll(small_image, shift, axis=1)).save(folder / f"{name}.png",
                                                                  compress_level=0)
    config = fast_config(str(folder), shard_refs=1, distortion_ids=(1,), levels=(1,),
                         metrics=("mae",))
    location = Location.parse(config.out)
    plan = Plan.make(list_sources(str(folder)), config)
    assert plan.source_mtimes == tuple((folder / n).stat().st_mtime_ns for n in ("a.png", "b.png"))
    persist_or_check(plan, location)
    produce_shard(0, plan, config, local_scorer(Labeler(metrics=("mae",), device="cpu")),
                  mae_ensemble, location)  # shard 0 (a.png) finished, shard 1 not begun
    recorded = json.loads(Path(shard_paths(location, 0)["sources"]).read_text())[0]["sha256"]
    assert recorded == hashlib.sha256(np.ascontiguousarray(small_image).tobytes()).hexdigest()

    def replace(name: str, pixels: np.ndarray, seconds_later: int) -> Plan:
        path = folder / name
        size, mtime = path.stat().st_size, path.stat().st_mtime_ns
        Image.fromarray(pixels).save(path, compress_level=0)
        os.utime(path, ns=(mtime + seconds_later * 10**9, mtime + seconds_later * 10**9))
        assert path.stat().st_size == size
        return Plan.make(list_sources(str(folder)), config)

    touched = replace("a.png", small_image, 5)  # the same pixels written again: resumes
    check_modified_sources(location, touched, config, done=[0])
    assert read_plan(location).source_mtimes == touched.source_mtimes  # recorded for next time
    other = replace("a.png", small_image[::-1].copy(), 10)
    assert other.digest == plan.digest and other.source_bytes == plan.source_bytes
    with pytest.raises(PlanMismatchError, match=rf"1 sources changed since their shards were "
                       rf"made \({folder / 'a.png'} holds other pixels than shard 00000 was "
                       rf"made from\)\. .*--restart"):
        check_modified_sources(location, other, config, done=[0])
    assert read_plan(location).source_mtimes == touched.source_mtimes  # nothing recorded
    Image.fromarray(small_image).save(folder / "a.png", compress_level=0)  # restored
    b_changed = replace("b.png", small_image[::-1].copy(), 10)  # its shard is not made yet
    check_modified_sources(location, b_changed, config, done=[0])


@pytest.mark.slow
def test_many_touched_sources_are_decoded_in_processes_and_a_replaced_one_is_named(
        tmp_path, fast_config, small_image, mae_ensemble, monkeypatch):
    """Sources copied without their times: every one of a finished shard is decoded again (in
    worker processes, from DECODE_HERE_BELOW on) and compared with its recorded SHA-256; the
    one replaced by other pixels is named, the others resume."""
    from pipeline import source_changes
    from pipeline.source_changes import DECODE_HERE_BELOW

    pools = []

    def recorded_pool(function, jobs, processes, initializer=None):  # the real pool, watched
        pools.append((len(jobs), processes, initializer))
        return in_processes(function, jobs, processes, initializer)
    monkeypatch.setattr(source_changes, "in_processes", recorded_pool)

    folder = tmp_path / "sources"
    folder.mkdir()
    count = DECODE_HERE_BELOW + 2
    for i in range(count):
        Image.fromarray(np.roll(small_image, 3 * i, axis=1)).save(folder / f"p{i:03d}.png",
                                                                  compress_level=0)
    config = fast_config(str(folder), shard_refs=count, distortion_ids=(1,), levels=(1,),
                         metrics=("mae",))
    location = Location.parse(config.out)
    plan = Plan.make(list_sources(str(folder)), config)
    persist_or_check(plan, location)
    produce_shard(0, plan, config, local_scorer(Labeler(metrics=("mae",), device="cpu")),
                  mae_ensemble, location)
    later = plan.source_mtimes[0] + 10**9
    for path in folder.iterdir():  # every time changed (a copy), no pixel
        os.utime(path, ns=(later, later))
    copied = Plan.make(list_sources(str(folder)), config)
    check_modified_sources(location, copied, config, done=[0])
    assert read_plan(location).source_mtimes == copied.source_mtimes
    assert pools == [(count, os.cpu_count(), use_one_thread)]
    replaced = folder / f"p{count - 5:03d}.png"
    Image.fromarray(small_image[::-1].copy()).save(replaced, compress_level=0)
    os.utime(replaced, ns=(later + 10**9, later + 10**9))
    with pytest.raises(PlanMismatchError, match=rf"1 sources changed since their shards were "
                       rf"made \({replaced} holds other pixels than shard 00000 was made "
                       rf"from\)"):
        check_modified_sources(location, Plan.make(list_sources(str(folder)), config), config,
                               done=[0])


def test_a_source_unreadable_at_one_resume_keeps_its_recorded_size_and_time(
        tmp_path, fast_config, small_image, mae_ensemble, capsys):
    """A resume while a source of a finished shard cannot be listed (a dangling link) keeps
    what the earlier listing recorded, and says so: a replacement made afterwards is still
    compared with its shard. A source that could not be read when its shard was made, and
    decodes now, is named in a note (its shard holds nothing of it: --retry-unreadable)."""
    folder = tmp_path / "sources"
    folder.mkdir()
    Image.fromarray(small_image).save(folder / "a.png", compress_level=0)
    (folder / "b.png").symlink_to(tmp_path / "nowhere.png")  # dangling from the start
    config = fast_config(str(folder), shard_refs=2, distortion_ids=(1,), levels=(1,),
                         metrics=("mae",))
    location = Location.parse(config.out)
    plan = Plan.make(list_sources(str(folder)), config)
    assert plan.source_mtimes[1] is None
    persist_or_check(plan, location)
    produce_shard(0, plan, config, local_scorer(Labeler(metrics=("mae",), device="cpu")),
                  mae_ensemble, location)
    recorded = read_plan(location)
    from dataclasses import replace

    from pipeline.source_changes import touched  # a plan from before times were kept:
    assert touched(replace(recorded, source_mtimes=()), plan) == []  # none decoded again
    (folder / "a.png").rename(tmp_path / "kept.png")
    (folder / "a.png").symlink_to(tmp_path / "gone.png")  # unreadable for this resume
    check_modified_sources(location, Plan.make(list_sources(str(folder)), config), config,
                           done=[0])
    assert f"1 source(s) of finished shards cannot be read now ({folder / 'a.png'})" in \
        capsys.readouterr().out
    assert read_plan(location).source_bytes == recorded.source_bytes  # not None over them
    (folder / "a.png").unlink()
    other = small_image[::-1].copy()  # another photo of the same size, written later
    Image.fromarray(other).save(folder / "a.png", compress_level=0)
    with pytest.raises(PlanMismatchError, match=r"a\.png holds other pixels"):
        check_modified_sources(location, Plan.make(list_sources(str(folder)), config),
                               config, done=[0])
    (folder / "a.png").unlink()
    (tmp_path / "kept.png").rename(folder / "a.png")
    (folder / "b.png").unlink()
    Image.fromarray(np.roll(small_image, 30, axis=0)).save(folder / "b.png")  # repaired
    capsys.readouterr()
    check_modified_sources(location, Plan.make(list_sources(str(folder)), config), config,
                           done=[0])  # nothing of b in its shard: nothing mixed
    assert f"1 source(s) left out of finished shards as unreadable or " \
        f"undecodable can be read now " \
        f"({folder / 'b.png'})" in capsys.readouterr().out


def test_a_source_whose_read_failed_is_not_compared_on_resume(tmp_path, fast_config,
                                                            small_image, mae_ensemble,
                                                            monkeypatch):
    """A source listed with its size whose read failed (EIO: an NFS hiccup) is not in its
    shard: a resume after it changed, in size too, keeps the shard as made (nothing of the
    source is in it to mix); a readable one that changed its pixels is still refused."""
    import errno

    import pipeline.sources as sources

    folder = tmp_path / "sources"
    folder.mkdir()
    for name, shift in (("a", 0), ("b", 40)):
        Image.fromarray(np.roll(small_image, shift, axis=1)).save(folder / f"{name}.png")
    config = fast_config(str(folder), shard_refs=2, distortion_ids=(1,), levels=(1,),
                         metrics=("mae",))
    location = Location.parse(config.out)
    plan = Plan.make(list_sources(str(folder)), config)
    persist_or_check(plan, location)
    opened = sources._opened

    def failing_b(uri, key, store):
        if uri.endswith("b.png"):
            raise OSError(errno.EIO, "Input/output error", uri)
        return opened(uri, key, store)
    monkeypatch.setattr(sources, "_opened", failing_b)
    monkeypatch.setattr(sources.time, "sleep", lambda seconds: None)  # read three times
    outcome = produce_shard(0, plan, config,
                            local_scorer(Labeler(metrics=("mae",), device="cpu")),
                            mae_ensemble, location)
    assert [f["reason"] for f in outcome.failures] == ["unreadable"]
    monkeypatch.undo()
    Image.fromarray(small_image[::-1].copy()).save(folder / "b.png")  # another size
    assert plan.source_bytes[1] != (folder / "b.png").stat().st_size
    check_modified_sources(location, Plan.make(list_sources(str(folder)), config), config,
                           done=[0])
    Image.fromarray(small_image[::-1].copy()).save(folder / "a.png", compress_level=0)
    with pytest.raises(PlanMismatchError, match=r"a\.png holds other pixels"):
        check_modified_sources(location, Plan.make(list_sources(str(folder)), config),
                               config, done=[0])


def test_a_touched_source_left_out_after_decoding_resumes(tmp_path, fast_config, small_image,
                                                          mae_ensemble, monkeypatch, capsys):
    """A reference quarantined (workers died on it) or whose labels failed (VIF of a flat
    image is 0/0) has no pixels' SHA-256 recorded: touching its file, or another of its
    shard, resumes. So does one that failed to decode and, repaired, decodes now (nothing of
    it is in its shard): a note names it, and --retry-unreadable makes its shard again (not
    while it still fails). One that decoded and no longer does is refused, in those words."""
    folder = tmp_path / "sources"
    folder.mkdir()
    Image.fromarray(small_image).save(folder / "a.png")
    Image.fromarray(small_image[::-1].copy()).save(folder / "b.png")
    Image.fromarray(np.full_like(small_image, 128)).save(folder / "c.png")  # flat
    valid = io.BytesIO()  # d: bytes that do not decode, as many as this PNG's
    Image.fromarray(np.roll(small_image, 30, axis=0)).save(valid, format="PNG", compress_level=0)
    (folder / "d.png").write_bytes(b"x" * len(valid.getvalue()))
    config = fast_config(str(folder), shard_refs=4, distortion_ids=(3,), levels=(1,),
                         metrics=("mae", "vif"))  # white noise: a flat image's JPEG is itself
    location = Location.parse(config.out)
    plan = Plan.make(list_sources(str(folder)), config)
    persist_or_check(plan, location)
    outcome = produce_shard(0, plan, config,
                            local_scorer(Labeler(metrics=("mae", "vif"), device="cpu")),
                            mae_ensemble, location, guard=_Quarantining("b"))
    reasons = {f["ref_id"]: f["reason"] for f in outcome.failures}
    assert (reasons["b"], reasons["c"]) == ("quarantined", "label_failed") and "d" in reasons
    for name in ("a.png", "b.png", "c.png", "d.png"):
        os.utime(folder / name, ns=(time.time_ns(), time.time_ns() + 5 * 10**9))
    from pipeline import source_changes

    decoded = []

    def spy(ref, *rest):
        decoded.append(ref.ref_id)
        return prepare(ref, *rest)
    prepare = source_changes.prepare_reference
    monkeypatch.setattr(source_changes, "prepare_reference", spy)
    check_modified_sources(location, Plan.make(list_sources(str(folder)), config), config,
                           done=[0])
    assert decoded == ["a", "d"]  # b killed workers, c's labels failed: nothing to compare
    from pipeline.remakes import retried_shards
    assert retried_shards(plan, config, [0], outcome.failures) == []  # d decodes no better
    (folder / "d.png").write_bytes(valid.getvalue())  # the same size, and it decodes now
    os.utime(folder / "d.png", ns=(time.time_ns(), time.time_ns() + 9 * 10**9))
    capsys.readouterr()
    check_modified_sources(location, Plan.make(list_sources(str(folder)), config), config,
                           done=[0])
    assert (f"note: 1 source(s) left out of finished shards as unreadable or undecodable can "
            f"be read now ({folder / 'd.png'})") in capsys.readouterr().out
    assert retried_shards(plan, config, [0], outcome.failures) == [0]  # --retry-unreadable
    assert retried_shards(plan, config, [], outcome.failures) == []  # shard 0 not finished
    (folder / "a.png").write_bytes(valid.getvalue()[:200])  # decoded, then cut short
    with pytest.raises(PlanMismatchError, match=r"1 sources changed .*a\.png no longer "
                                                r"decodes \(corrupt\), where shard 00000 "
                                                r"was made from it"):
        check_modified_sources(location, Plan.make(list_sources(str(folder)), config),
                               config, done=[0])


def test_splits_are_seeded_and_about_80_10_10():
    splits = [split_of(f"ref{i}", seed=0) for i in range(3000)]
    assert splits == [split_of(f"ref{i}", seed=0) for i in range(3000)]
    shares = {name: splits.count(name) / 3000 for name in ("train", "val", "test")}
    assert shares["train"] == pytest.approx(0.8, abs=0.03)
    assert shares["val"] == pytest.approx(0.1, abs=0.02)
    assert splits != [split_of(f"ref{i}", seed=1) for i in range(3000)]


def test_level_order_check_for_one_and_two_sided_types():
    import distortions
    from pipeline.commands.validate_levels import level_order_holds

    jpeg, blur, shift = (distortions.get(n) for n in ("jpeg", "gaussian_blur", "mean_shift"))
    assert level_order_holds(jpeg, [0.9, 0.8, 0.7, 0.5, 0.3])
    assert not level_order_holds(jpeg, [0.9, 0.8, 0.85, 0.5, 0.3])
    assert level_order_holds(blur, [1.0, 0.95, 0.8, 0.6, 0.4])  # identity level 1
    assert level_order_holds(shift, [0.5, 0.8, 1.0, 0.82, 0.55])
    assert not level_order_holds(shift, [0.8, 0.5, 1.0, 0.82, 0.55])
    pixelate = distortions.get("pixelate")  # the embedded photos' mean Q: L3 above L2
    assert level_order_holds(pixelate, [0.806, 0.797, 0.804, 0.786, 0.640])
    assert not level_order_holds(pixelate, [0.806, 0.797, 0.804, 0.640, 0.786])
    # denoise_blur's level means follow its 50/50 blur draws (the spec notes' PSNR as drawn,
    # 24.6 23.6 24.1 24.1 22.6 dB): not checked, and so neither a pass nor a failure
    from pipeline.commands.validate_levels import failing, markdown
    drawn = distortions.get("denoise_blur")
    assert level_order_holds(drawn, [0.80, 0.78, 0.79, 0.79, 0.75]) is None
    rows = [{"id": 38, "name": "denoise_blur", "new": True, "two_sided": False,
             "quality": [0.80, 0.78, 0.79, 0.79, 0.75], "order_holds": None}]
    table = markdown(rows, "3 photos")
    assert failing(rows) == [] and "| NEW not checked |" in table
    assert "All level orders checked hold. Not checked: denoise_blur." in table


@pytest.mark.parametrize("types", [33, 43, 5])
def test_the_levels_figure_names_the_levels_under_every_column_and_keeps_its_labels_apart(
        types):
    """Panels share their x axis: a column whose last panel sits above an empty cell of the
    grid (ids 27 and 28 of the 33) still shows the level numbers; "mean Q" does not run
    into the tick labels of the first column."""
    import distortions
    from pipeline.commands.validate_levels import figure_of

    rows = [{"id": d.id, "name": d.name, "new": False, "quality": [0.9, 0.8, 0.7, 0.6, 0.5],
             "order_holds": True} for d in distortions.registered()[:types]]
    figure = figure_of(rows)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    axes = figure.axes
    for index in range(len(rows)):
        if index + 7 >= len(rows):  # no panel below
            shown = [t.get_text() for t in axes[index].get_xticklabels() if t.get_visible()]
            assert {"1", "2", "3", "4", "5"} <= set(shown), (index, shown)
    label = figure._supylabel.get_window_extent(renderer)
    for index in range(0, len(rows), 7):
        for tick in axes[index].get_yticklabels():
            if tick.get_visible() and tick.get_text():
                assert not label.overlaps(tick.get_window_extent(renderer))


@pytest.mark.slow
def test_sheet_of_a_shard_shows_its_reference_and_labels(sources_folder, fast_config,
                                                         mae_ensemble, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from pipeline import cli

    folder, _, _ = sources_folder
    config = fast_config(str(folder))
    _, location, _ = _run_all(config, mae_ensemble)
    output = tmp_path / "shard_sheet.png"
    tar = tar_path(location, 0, "images")
    assert cli.main(["sheet", tar, "-o", str(output), "--cell-width", "64"]) == 0
    with Image.open(output) as sheet:
        pixels = np.asarray(sheet.convert("RGB"))
    cell_height = round(64 * config.size.height / config.size.width)
    rows = len(config.distortion_ids)  # a row per type the shard holds, not the bank's 43
    assert pixels.shape[:2] == (28 + rows * (cell_height + 16), 170 + 6 * 64)
    assert pixels.std() > 20
    renamed = tmp_path / "SHARD.TAR"  # a shard by its extension in any case
    renamed.write_bytes(Path(tar).read_bytes())
    assert cli.main(["sheet", str(renamed), "-o", str(tmp_path / "renamed.png"),
                     "--cell-width", "64"]) == 0
    with Image.open(tmp_path / "renamed.png") as sheet:
        assert np.array_equal(np.asarray(sheet.convert("RGB")), pixels)
    assert cli.main(["sheet", tar, "--ref-id", "nobody", "-o", str(output)]) == 2
    held = [row["ref_id"] for row in read_index(location, [0], ["ref_id", "kind"]).to_pylist()
            if row["kind"] == "reference"]  # (the index lists the tar's samples in its order)
    assert 0 < len(held) <= 3
    assert f"has no reference 'nobody' (it holds {', '.join(held)})" in capsys.readouterr().err
    for option in (["--seed", "0"], ["--size", "256x192"], ["--allow-upscale"]):
        assert cli.main(["sheet", tar, *option, "-o", str(output)]) == 2
        assert "as the shard stores them" in capsys.readouterr().err
    missing = tar.replace("00000.tar", "99999.tar")  # pyarrow's "Failed to open local file"
    assert cli.main(["sheet", missing, "-o", str(output)]) == 2
    assert capsys.readouterr().err.strip().endswith(f"{missing}: no such shard tar")


def test_a_source_that_raises_anything_is_recorded_and_its_shard_goes_on(tmp_path, small_image,
                                                                         fast_config,
                                                                         mae_ensemble):
    folder = tmp_path / "odd"
    folder.mkdir()
    for name in ("a.png", "b c.png"):
        Image.fromarray(small_image).save(folder / name)
    listing = tmp_path / "list.txt"  # a scheme pyarrow does not know: a StorageUriError
    listing.write_text(f"{folder / 'a.png'}\nnosuch://{folder / 'b c.png'}\n")
    config = fast_config(str(listing), distortion_ids=(1,), levels=(1,))
    _, _, [outcome] = _run_all(config, mae_ensemble)
    assert outcome.references == 1 and outcome.samples == 2
    [failure] = outcome.failures
    assert failure["reason"] == "internal_error"
    assert "nosuch://: not a URI pyarrow can open (Unrecognized filesystem type" in \
        failure["detail"]


def test_a_shard_made_from_its_part_of_the_plan_is_the_shard_the_whole_plan_makes(
        fast_config, mae_ensemble, tmp_path):
    """Shard tasks get ShardPlan (their references and the plan's digest), not the plan."""
    config = fast_config("embedded", distortion_ids=(1,), levels=(1,), metrics=("mae",),
                         shard_refs=2, limit=3)
    plan = Plan.make(list_sources("embedded"), config)
    part = ShardPlan.from_json(json.loads(json.dumps(plan.part(1).to_json())))
    assert part.references == plan.shard(1) == plan.references[2:3]
    assert part.digest == plan_digest(json.loads(json.dumps(plan.to_json())))
    with pytest.raises(ValueError, match="the plan's part of shard 1, asked for shard 0"):
        part.shard(0)
    scorer = local_scorer(Labeler(metrics=("mae",), device="cpu"))
    made = {}
    for name, given in (("whole", plan), ("part", part)):
        location = Location.parse(str(tmp_path / name))
        persist_or_check(plan, location)
        produce_shard(1, given, config, scorer, mae_ensemble, location)
        made[name] = {path.name: _untimed(path) for path in (tmp_path / name).rglob("*")
                      if path.is_file()}
    assert made["part"] == made["whole"] and any(n.endswith(".tar") for n in made["whole"])
    assert made["part"]["00001_stats.json"]["plan_digest"] == plan.digest


def _untimed(path: Path) -> bytes | dict:
    """A file's bytes; a stats file's fields less its timings."""
    if not path.name.endswith("_stats.json"):
        return path.read_bytes()
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.endswith("seconds")}


def test_the_plan_digest_changes_with_what_q_means(fast_config):
    config = fast_config("embedded")
    sources = list_sources("embedded")
    base = Plan.make(sources, config, label_identity("aaaa", ()))
    assert base.digest != Plan.make(sources, config, label_identity("bbbb", ())).digest
    assert base.digest != Plan.make(sources, config, label_identity("aaaa", ("lpips",))).digest
    other = Plan.make(sources, config, label_identity("bbbb", ("lpips",)))
    assert differences(base, other) == ["ensemble_hash 'aaaa' -> 'bbbb'",
                                        "metrics_absent [] -> ['lpips']"]
    fewer = Plan.make(sources, fast_config("embedded", distortion_ids=(1, 13)))  # tuples
    assert differences(Plan.from_json(json.loads(json.dumps(base.to_json()))), fewer)[0] == \
        "distortion_ids [1, 13, 26] -> [1, 13]"  # one form, as the plan file holds them
    # a plan read back from its file (lists where the run's config has tuples) differs in
    # nothing; a source path spelled otherwise is named where it first differs
    again = Plan.from_json(json.loads(json.dumps(base.to_json())))
    assert differences(again, base) == []
    moved = Plan.from_json({**base.to_json(), "references": [
        {**r.to_json(), "uri": "/elsewhere/" + r.uri} for r in base.references]})
    [sources_line] = differences(base, moved)
    first = base.references[0]
    assert sources_line.endswith(f"the first that differs, {first.ref_id}: uri {first.uri!r} "
                                 f"-> '/elsewhere/{first.uri}')")
    # a source gone from (or new at) the end of the sort order is named too
    last = base.references[-1]
    shorter = Plan.from_json({**base.to_json(), "references": [
        r.to_json() for r in base.references[:-1]]})
    assert differences(base, shorter)[0].endswith(f"gone from the end, {last.uri!r} and on)")
    assert differences(shorter, base)[0].endswith(f"new at the end, {last.uri!r} and on)")


def test_hostile_local_sources_end_in_a_completed_shard_each_recorded(tmp_path, small_image,
                                                                      fast_config,
                                                                      mae_ensemble):
    folder = tmp_path / "hostile"
    (folder / "nested").mkdir(parents=True)
    Image.fromarray(small_image).save(folder / "nested" / "good.png")
    shutil.copyfile(folder / "nested" / "good.png", folder / "nested" / "then_copy.png")
    os.symlink(folder, folder / "nested" / "loop")         # a link back up the tree
    os.mkfifo(folder / "pipe.png")                         # reading it would block forever
    os.symlink("/dev/zero", folder / "zero.png")           # reading it would never end
    floats = (small_image[..., 0] / 255).astype(np.float32)
    Image.fromarray(floats, mode="F").save(folder / "float.tif")
    wide = small_image[..., 0].astype(np.int32) * 70_000   # beyond 16 bits
    Image.fromarray(wide, mode="I").save(folder / "int32.tif")
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.png"), "wb") as handle:  # latin-1
        Image.fromarray(np.roll(small_image, 40, axis=0)).save(handle, "PNG")
    config = fast_config(str(folder), distortion_ids=(1,), levels=(1,), shard_refs=10)
    plan, location, [outcome] = _run_all(config, mae_ensemble)
    names = sorted(ref.uri.rsplit("/", 1)[-1] for ref in plan.references)
    assert len(names) == 6 and names.count("good.png") == 1  # the loop is walked once
    [copy] = plan.duplicates  # the same bytes: planned once, recorded
    assert (copy.ref_id, copy.of) == ("then_copy", "good")
    reasons = {f["uri"].rsplit("/", 1)[-1]: f["reason"] for f in outcome.failures}
    assert reasons == {"pipe.png": "not_a_file", "zero.png": "not_a_file",
                       "float.tif": "unsupported_mode", "int32.tif": "unsupported_mode"}
    assert outcome.references == 2  # good.png and the latin-1 name
    tally = merge(location, plan)  # the merge writes the undecodable name, escaped
    assert tally.sources == 7 and tally.failures["duplicate"] == 1
    rows = pq.read_table(location.path("sources.parquet")).to_pylist()
    assert any(row["uri"].endswith("caf\\xe9.png") for row in rows)
    split = {row["ref_id"]: row["split"] for row in rows}
    assert split["then_copy"] == split["good"]
    assert [row["status"] for row in rows if row["ref_id"] == "then_copy"] == ["duplicate"]
    assert {row["source_kind"] for row in rows} == {"synthetic"}  # the duplicate's too


def test_a_source_deleted_after_listing_is_recorded_unreadable_and_its_shard_goes_on(
        tmp_path, small_image, fast_config, mae_ensemble):
    """A source listed and planned, then deleted before its shard reads it (a sync that
    prunes, a user's clean-up): a failure that names it and why, the other source made, and
    the merged sources list says so; nothing raises."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, shift in (("kept.png", 0), ("gone.png", 40)):
        Image.fromarray(np.roll(small_image, shift, axis=0)).save(folder / name)
    config = fast_config(str(folder), distortion_ids=(1,), levels=(1,), shard_refs=2)
    sources = chosen(list_sources(config.sources), config)
    plan = Plan.make(sources, config)
    location = Location.parse(config.out)
    persist_or_check(plan, location)
    (folder / "gone.png").unlink()
    outcome = produce_shard(0, plan, config, local_scorer(Labeler(metrics=config.metrics,
                                                                  device="cpu")),
                            mae_ensemble, location)
    [failure] = outcome.failures
    assert failure["ref_id"] == "gone" and failure["reason"] == "unreadable"
    assert failure["detail"] == f"unreadable: {folder / 'gone.png'}: no such file"
    assert outcome.references == 1 and outcome.samples == 2  # kept.png and its version
    merge(location, plan)
    rows = {row["ref_id"]: row for row in
            pq.read_table(location.path("sources.parquet")).to_pylist()}
    assert (rows["gone"]["status"], rows["gone"]["reason"]) == ("failed", "unreadable")
    assert rows["kept"]["status"] == "ok"


def test_an_upscaled_source_says_so_in_its_conversions(tmp_path, fast_config, small_image,
                                                      mae_ensemble):
    folder = tmp_path / "sources"
    folder.mkdir()
    Image.fromarray(small_image[:80, :100]).save(folder / "small.png")  # under 192 x 176
    Image.fromarray(small_image).save(folder / "fits.png")               # 192 x 176 exactly
    config = fast_config(str(folder), distortion_ids=(1,), levels=(1,), allow_upscale=True)
    _, _, [outcome] = _run_all(config, mae_ensemble)
    conversions = {row["ref_id"]: row["conversions"] for row in outcome.sources}
    assert conversions == {"small": ["upscaled 2.2x from 100x80 to cover 192x176"],
                           "fits": []}  # max(192 / 100, 176 / 80) = 2.2


def test_progress_moves_as_parts_of_a_reference_are_labelled(tmp_path, fast_config,
                                                             mae_ensemble):
    config = fast_config("embedded", limit=1)  # one reference: 3 types x 2 levels
    plan = Plan.make(list_sources("embedded"), config)
    calls = []
    scorer = local_scorer(Labeler(metrics=config.metrics, device="cpu", batch_size=2))
    outcome = produce_shard(0, plan, config, scorer, mae_ensemble,
                            Location.parse(config.out), lambda *call: calls.append(call))
    assert calls == [(2, 0, 0), (2, 0, 0), (2, 0, 0), (1, 0, 0)]  # three labelled parts,
    assert sum(samples for samples, _, _ in calls) == outcome.samples == 7  # the reference


def test_progress_accounts_for_every_planned_sample_and_failure(tmp_path, fast_config,
                                                                small_image, mae_ensemble):
    """Samples written plus those known never to be (a source that cannot be read, a
    quarantined reference, a version without a label) reach the plan's total, and the failures
    told are the shard's: a progress bar ends at 100% with the summary's failures."""
    folder = tmp_path / "sources"
    folder.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(small_image).save(folder / f"{name}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    config = fast_config(str(folder), distortion_ids=(1, 13), levels=(1, 5))
    plan = Plan.make(list_sources(str(folder)), config)
    persist_or_check(plan, Location.parse(config.out))
    real = local_scorer(Labeler(metrics=config.metrics, device="cpu"))

    def one_nan(ref, versions, on_labelled, ref_id):
        return _with_a_nan(real(ref, versions, on_labelled, ref_id), "gmsd", 0)

    calls = []
    outcome = produce_shard(0, plan, config, one_nan, mae_ensemble, Location.parse(config.out),
                            lambda *call: calls.append(call), guard=_Quarantining("c"))
    planned = len(plan.references) * (1 + len(config.scenarios))  # 4 x 5
    assert sum(samples + left_out for samples, _, left_out in calls) == planned == 20
    assert sum(failures for _, failures, _ in calls) == len(outcome.failures) == 4
    assert outcome.samples == 2 * 4  # a and b: their reference and three labelled versions


def test_a_flat_reference_vif_cannot_measure_is_left_out_with_its_versions(tmp_path,
                                                                          fast_config,
                                                                          small_image,
                                                                          mae_ensemble):
    """VIF of anything against a flat image is 0 / 0 (labelers raise a LabelerError): the
    source is recorded as label_failed, neither it nor a version of it is in the tar, the
    other reference of its shard is kept, and the progress counts still reach the plan."""
    folder = tmp_path / "sources"
    folder.mkdir()
    Image.fromarray(small_image).save(folder / "a.png")
    Image.fromarray(np.full_like(small_image, 128)).save(folder / "flat.png")
    config = fast_config(str(folder), distortion_ids=(3, 6), levels=(1, 5),
                         metrics=("mae", "gmsd", "vif"))  # noise: versions of a flat image
    plan = Plan.make(list_sources(str(folder)), config)  # that are not the image (no_effect)
    location = Location.parse(config.out)
    persist_or_check(plan, location)
    calls = []
    outcome = produce_shard(0, plan, config, local_scorer(Labeler(config.metrics, "cpu")),
                            mae_ensemble, location, lambda *call: calls.append(call))
    [failure] = outcome.failures
    assert (failure["ref_id"], failure["reason"]) == ("flat", "label_failed")
    assert "vif" in failure["detail"] and "flat" in failure["detail"]
    rows = {row["ref_id"]: row for row in outcome.sources}
    assert (rows["flat"]["status"], rows["flat"]["reason"]) == ("failed", "label_failed")
    assert rows["a"]["status"] == "ok"
    keys = [sample["__key__"] for sample in wds.WebDataset(tar_urls(location, [0]),
                                                           shardshuffle=False)]
    assert sorted(keys) == sorted(["a_ref"] + [f"a_d{d:02d}_l{lv}" for d in (3, 6)
                                              for lv in (1, 5)])
    assert sum(samples + left_out for samples, _, left_out in calls) == 2 * (1 + 4)
    assert sum(failures for _, failures, _ in calls) == 1


def test_a_version_that_leaves_its_reference_as_it_is_is_left_out_as_no_effect(
        tmp_path, fast_config, mae_ensemble):
    """A grayscale photo (decoded to R = G = B) has no colour for color_diffusion (27),
    saturation_hsv (30) or saturation_lab (31) to change: their versions would be copies of
    the reference labelled as distortions. Each is left out as no_effect, but the spec's
    identity level (saturation_lab 1), whose pixels may be the reference's: every other
    version kept (JPEG's) differs from the reference, compared here."""
    from skimage import data

    folder = tmp_path / "sources"
    folder.mkdir()
    Image.fromarray(data.camera()).save(folder / "camera.png")  # 8-bit grayscale
    config = fast_config(str(folder), distortion_ids=(1, 27, 30, 31), levels=(1, 2, 3, 4, 5),
                         metrics=("mae",))
    plan = Plan.make(list_sources(str(folder)), config)
    location = Location.parse(config.out)
    persist_or_check(plan, location)
    outcome = produce_shard(0, plan, config, local_scorer(Labeler(("mae",), "cpu")),
                            mae_ensemble, location)
    left_out = sorted((f["distortion_id"], f["level"]) for f in outcome.failures)
    assert left_out == [(27, lv) for lv in range(1, 6)] + [(30, lv) for lv in range(1, 6)] + [
        (31, lv) for lv in range(2, 6)]
    assert {f["reason"] for f in outcome.failures} == {"no_effect"}
    samples = {sample["__key__"]: sample for sample in wds.WebDataset(
        tar_urls(location, [0]), shardshuffle=False).decode("rgb8")}
    reference = samples.pop("camera_ref")["png"]
    assert np.ptp(reference.astype(int), axis=2).max() == 0  # R = G = B
    assert sorted(samples) == sorted([f"camera_d01_l{lv}" for lv in range(1, 6)]
                                     + ["camera_d31_l1"])
    assert not any(np.array_equal(sample["png"], reference) for key, sample in samples.items()
                   if key != "camera_d31_l1")  # saturation_lab 1: the spec's identity level
    chained = fast_config(str(folder), out=str(tmp_path / "chained"), distortion_ids=(27, 30),
                          levels=(2, 5), compose=(2, 2), versions_per_ref=3, metrics=("mae",))
    plan = Plan.make(list_sources(str(folder)), chained)
    persist_or_check(plan, Location.parse(chained.out))
    outcome = produce_shard(0, plan, chained, local_scorer(Labeler(("mae",), "cpu")),
                            mae_ensemble, Location.parse(chained.out))
    assert [(f["reason"], len(f["chain"])) for f in outcome.failures] == [("no_effect", 2)] * 3
    assert outcome.samples == 1  # the reference alone
    # JPEG then saturation_hsv (or the other way round): the chain's pixels differ from the
    # reference's (JPEG's), but the saturation link changed nothing: labelled with it, the
    # version would name it (its multi-hot, its class): left out too, the link named
    mixed = fast_config(str(folder), out=str(tmp_path / "mixed"), distortion_ids=(1, 30),
                        levels=(5,), compose=(2, 2), versions_per_ref=3, metrics=("mae",))
    plan = Plan.make(list_sources(str(folder)), mixed)
    persist_or_check(plan, Location.parse(mixed.out))
    outcome = produce_shard(0, plan, mixed, local_scorer(Labeler(("mae",), "cpu")),
                            mae_ensemble, Location.parse(mixed.out))
    assert [f["reason"] for f in outcome.failures] == ["no_effect"] * 3
    assert all(f["detail"].startswith("saturation_hsv level 5 left its input as it was")
               for f in outcome.failures)
    assert outcome.samples == 1


def test_inspect_counts_a_reference_left_out_after_some_versions_failed(tmp_path, fast_config,
                                                                       small_image,
                                                                       mae_ensemble):
    """A flat image's JPEG 2000 version fails (its rate control cannot reach the ratio), then
    VIF refuses the reference: its versions' failures count no sample of the tar, and the
    shard is sound (inspect once subtracted them twice and called it a problem)."""
    from pipeline.report import write_run_files
    from tests.conftest import finish

    folder = tmp_path / "sources"
    folder.mkdir()
    Image.fromarray(small_image).save(folder / "a.png")
    Image.fromarray(np.full_like(small_image, 128)).save(folder / "flat.png")
    config = fast_config(str(folder), distortion_ids=(2, 13), levels=(1,),
                         metrics=("mae", "gmsd", "vif"))
    plan = Plan.make(list_sources(str(folder)), config)
    location = Location.parse(config.out)
    persist_or_check(plan, location)
    write_run_files(location, config, plan, mae_ensemble, ())
    outcome = produce_shard(0, plan, config, local_scorer(Labeler(config.metrics, "cpu")),
                            mae_ensemble, location)
    assert sorted((f["ref_id"], f["reason"]) for f in outcome.failures) == [
        ("flat", "distortion_failed"), ("flat", "label_failed")]
    assert outcome.samples == 1 + 2  # a's reference and its two versions
    finish(location, plan, config)
    _, problems = inspect(config.out)
    assert problems == []


def test_inspect_compares_every_record_with_its_index_row(fast_config, mae_ensemble):
    """The index alone changed (its row count, all the stats hold of it, unchanged): what
    training's checks, splits and counts read is no longer what its samples say. inspect
    compares every record of every tar with its row, not only the deep check's sample."""
    from pipeline.report import write_run_files
    from tests.conftest import finish

    config = fast_config("embedded", limit=2, shard_refs=1, distortion_ids=(1, 13))
    plan, location, _ = _run_all(config, mae_ensemble)
    write_run_files(location, config, plan, mae_ensemble, ())
    finish(location, plan, config)
    assert inspect(config.out)[1] == []
    path = shard_paths(location, 1)["parquet"]
    rows = pq.read_table(path).to_pylist()
    victim = next(row for row in rows if row["kind"] == "distorted")
    victim["quality"] = victim["quality"] / 2 + 0.25  # another Q in 0..1
    pq.write_table(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA), path)
    [changed] = inspect(config.out)[1]
    assert re.fullmatch(r"shard 00001: parquet is \d+ bytes, its stats say \d+", changed)
    stats_agree(Path(path))  # as if written so: the records still differ from the index
    assert inspect(config.out)[1] == [
        f"shard 00001: 1 record(s) of the tar differ from the index, e.g. {victim['key']}: its "
        "tar record and its index row differ in quality (changed after it was written)"]


def test_a_reference_moved_to_another_split_after_writing_is_named_and_never_read_so(
        fast_config, mae_ensemble):
    """A shard's sources list edited to put a reference in another split (a training one
    read as test): the SHA-256 its stats record of the list makes it a changed shard, which
    a resume makes again and inspect names; without that hash (an older shard's stats)
    inspect compares the list with the plan; and a reader refuses a sources.parquet whose
    splits are not the plan's."""
    from pipeline.report import write_run_files
    from shards import open_dataset
    from shards.reader import DamagedRunFileError
    from tests.conftest import finish

    config = fast_config("embedded", limit=2, shard_refs=1, distortion_ids=(1, 13))
    plan, location, _ = _run_all(config, mae_ensemble)
    write_run_files(location, config, plan, mae_ensemble, ())
    finish(location, plan, config)
    assert inspect(config.out)[1] == []
    [moved] = plan.shard(0)
    other = next(split for split in ("train", "val", "test") if split != moved.split)
    paths = {kind: Path(path) for kind, path in shard_paths(location, 0).items()}
    rows = json.loads(paths["sources"].read_text())
    rows[0]["split"] = other
    paths["sources"].write_text(json.dumps(rows))
    assert shard_problems(location, 0, plan.digest, config.store) == [
        "its sources list's SHA-256 is not the one its stats record: changed since the shard "
        "was written"]
    assert len(inspect(config.out)[1]) == 1
    stats = json.loads(paths["stats"].read_text())
    del stats["sources_sha256"]  # as the stats of a shard written before they held it
    paths["stats"].write_text(json.dumps(stats))
    assert shard_problems(location, 0, plan.digest, config.store) == []
    assert inspect(config.out)[1] == [
        f"shard 00000: its sources list put 1 reference(s) in another split than the plan "
        f"({moved.ref_id} {moved.split} -> {other}): changed after it was written"]
    assert {split for split in open_dataset(config.out).splits.values()} <= {
        ref.split for ref in plan.references}  # sources.parquet still holds the plan's
    merged = location.path("sources.parquet")
    table = pq.read_table(merged)
    splits = [other if ref_id == moved.ref_id else split for ref_id, split in
              zip(table["ref_id"].to_pylist(), table["split"].to_pylist(), strict=True)]
    pq.write_table(table.set_column(table.schema.get_field_index("split"), "split",
                                    pa.array(splits)), merged)
    with pytest.raises(DamagedRunFileError, match=rf"1 reference\(s\) in another split in "
                                                  rf"sources.parquet than in plan.json "
                                                  rf"\({moved.ref_id} {moved.split} -> {other}\)"):
        open_dataset(config.out).samples(split=other)


def test_inspect_names_a_manifest_or_failures_list_that_is_not_the_runs(fast_config,
                                                                        mae_ensemble):
    """manifest.json (training takes the grid from it) edited against plan.json, which the
    shards' stats name by its digest, and failures.jsonl holding a line no shard lists."""
    from pipeline.report import write_run_files
    from tests.conftest import finish

    config = fast_config("embedded", limit=2, shard_refs=1, distortion_ids=(1, 13))
    plan, location, outcomes = _run_all(config, mae_ensemble)
    write_run_files(location, config, plan, mae_ensemble, ())
    finish(location, plan, config)
    assert inspect(config.out)[1] == []
    manifest_path = Path(location.path("manifest.json"))
    kept = manifest_path.read_text()
    edits = {"seed": ("config", "seed", 7), "levels": ("config", "levels", [1, 2, 5]),
             "shards": (None, "shards", 3), "plan_digest": (None, "plan_digest", "0" * 64)}
    for what, (section, name, value) in edits.items():
        manifest = json.loads(kept)
        (manifest[section] if section else manifest)[name] = value
        manifest_path.write_text(json.dumps(manifest))
        problem = inspect(config.out)[1][0]  # (the shards, counted by its grid, may follow)
        assert problem.startswith("manifest.json is not the run of plan.json (") and (
            f"{'config ' if section else ''}{what} " in problem), problem
    older = json.loads(kept)  # as written before the type_levels mode: not a problem
    del older["modes"]["type_levels"], older["config"]["type_levels"]
    manifest_path.write_text(json.dumps(older))
    assert inspect(config.out)[1] == []
    older["modes"]["compose_share"] = 0.5
    manifest_path.write_text(json.dumps(older))
    assert inspect(config.out)[1][0].startswith(
        "manifest.json is not the run of plan.json (modes.compose_share 0.5, its config's 0.0")
    manifest_path.write_text(kept)
    failures_path = Path(location.path("failures.jsonl"))
    listed = sum(len(outcome.failures) for outcome in outcomes)
    assert len(failures_path.read_text().splitlines()) == listed
    with failures_path.open("a") as handle:
        handle.write(json.dumps({"ref_id": "astronaut", "reason": "label_failed"}) + "\n")
    assert inspect(config.out)[1] == [
        f"failures.jsonl lists {listed + 1} failures, the shards' lists and the plan's "
        f"duplicates {listed}: edited or damaged; rerun generate on the dataset to merge it "
        "again"]


def test_a_reader_refuses_an_index_whose_rows_are_not_its_stats_samples(fast_config,
                                                                        mae_ensemble):
    """An index with a row less (or one twice), its stats' size and SHA-256 made to agree: the
    stats still count the samples the tar holds, so a reader names the shard rather than read
    a sample short (or twice)."""
    from pipeline.report import write_run_files
    from shards.reader import DamagedShardError
    from tests.conftest import finish, stats_agree

    config = fast_config("embedded", limit=2, shard_refs=1, distortion_ids=(1, 13))
    plan, location, _ = _run_all(config, mae_ensemble)
    write_run_files(location, config, plan, mae_ensemble, ())
    finish(location, plan, config)
    path = shard_paths(location, 1)["parquet"]
    rows = pq.read_table(path).to_pylist()
    for changed in (rows[:-1], rows + rows[-1:]):
        pq.write_table(pa.Table.from_pylist(changed, schema=INDEX_SCHEMA), path)
        stats_agree(Path(path))
        with pytest.raises(DamagedShardError, match=rf"00001.parquet: stats say {len(rows)} "
                                                    rf"samples, parquet has {len(changed)}"):
            read_index(location)
        assert shard_problems(location, 1, plan.digest, config.store) == [
            f"stats say {len(rows)} samples, parquet has {len(changed)}"]


def test_inspect_reads_a_gzipped_shard_to_its_trailer(fast_config, mae_ensemble):
    """A .tar.gz (recipes store) whose gzip trailer's CRC was flipped, its stats made to
    agree with the new bytes: every member still reads, but the inflated bytes are not what
    was written; inspect (not only --deep and the readers) names the shard."""
    from pipeline.report import write_run_files
    from tests.conftest import finish, stats_agree

    config = fast_config("embedded", limit=2, shard_refs=1, distortion_ids=(1, 13),
                         store="recipes")
    plan, location, _ = _run_all(config, mae_ensemble)
    write_run_files(location, config, plan, mae_ensemble, ())
    finish(location, plan, config)
    assert inspect(config.out)[1] == []
    path = Path(tar_path(location, 0, config.store))
    data = bytearray(path.read_bytes())
    data[-8] ^= 0x01  # the trailer: CRC-32, then the inflated length
    path.write_bytes(bytes(data))
    stats_agree(path)
    [problem] = inspect(config.out)[1]
    assert problem.startswith("shard 00000: tar unreadable (ShardReadError: ") and (
        "CRC check failed" in problem), problem


def test_the_deep_check_names_the_sample_whose_png_does_not_decode(fast_config,
                                                                   mae_ensemble):
    """A byte flipped inside a reference's PNG (its stats made to agree): the deep check names
    the sample, not only its shard."""
    from pipeline.report import write_run_files
    from shards.keys import reference_key
    from tests.conftest import finish, rewrite_tar

    config = fast_config("embedded", limit=1, shard_refs=1, distortion_ids=(1,))
    plan, location, _ = _run_all(config, mae_ensemble)
    write_run_files(location, config, plan, mae_ensemble, ())
    finish(location, plan, config)
    key = reference_key(plan.references[0].ref_id)

    def flipped(name: str, data: bytes) -> bytes:
        if name != f"{key}.png":
            return data
        changed = bytearray(data)
        changed[len(data) // 2] ^= 0xFF  # inside its image data: its chunk's CRC fails
        return bytes(changed)
    rewrite_tar(Path(tar_path(location, 0, config.store)), change=flipped)
    assert (f"deep check: shard 0: sample {key}: not a decodable PNG (changed after it was "
            "written)") in deep_check(location, 5)[1]


@pytest.mark.slow
def test_deep_inspection_replays_and_rescores_and_catches_a_tampered_score(tmp_path,
                                                                          fast_config,
                                                                          mae_ensemble):
    from pipeline.report import write_run_files

    config = fast_config("embedded", limit=2, shard_refs=1, distortion_ids=(1, 8, 13))
    plan, location, _ = _run_all(config, mae_ensemble)
    write_run_files(location, config, plan, mae_ensemble, ())  # ensemble.json: Q's ensemble
    lines, problems = deep_check(location, 100)  # all 12 versions
    assert problems == []
    assert "12 replayed exactly" in lines[0] and "re-scored with gmsd, mae" in lines[0]
    path = shard_paths(location, 1)["parquet"]
    rows = pq.read_table(path).to_pylist()
    victim = next(row for row in rows if row["kind"] == "distorted")

    def tamper(**fields) -> None:
        """The victim's record changed in its tar and its index row alike."""
        victim.update({name: json.dumps(value, sort_keys=True, separators=(",", ":"))
                       if name == "recipe" else value for name, value in fields.items()})
        pq.write_table(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA), path)
        stats_agree(Path(path))
        rewrite_tar(Path(tar_path(location, 1, "images")), change=lambda member, data: (
            json.dumps({**json.loads(data), **fields}).encode()
            if member == f"{victim['key']}.json" else data))

    made = victim["quality"]  # Q changed alone: its scores' Q under the ensemble is not it
    tamper(quality=made / 2 + 0.25)
    assert deep_check(location, 100)[1] == [
        f"{victim['key']}: its Q {made / 2 + 0.25:.6g} is not {made:.6g}, its ensemble's Q "
        "of its raw scores (changed after it was made)"]
    tamper(quality=made)
    stored = victim["scores"]["mae"]
    tamper(scores={**victim["scores"], "mae": stored + 0.01})
    _, problems = deep_check(location, 100)
    assert problems == [f"{victim['key']}: mae scores {stored:.6g} here, {stored + 0.01} "
                        "stored"]
    found = [bool(deep_check(location, 1, seed)[1]) for seed in range(48)]
    assert any(found) and not all(found)  # a seed draws one of the 12 versions
    recipe = json.loads(victim["recipe"])  # a level value of its own is not replayed
    name = next(iter(distortions.get(recipe["distortion_id"]).levels[0]))
    tamper(recipe={**recipe, "params": {**recipe["params"], name: 10**6}})
    lines, problems = deep_check(location, 100)
    assert problems[0].startswith(f"{victim['key']}: its recipe cannot be replayed: ")
    assert f"parameters {name} are not those the level and seed give" in problems[0]
    assert "1 recipe refused" in lines[0]
    # the index alone changed: the record readers replay is not the copy the check samples
    victim["recipe"] = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    pq.write_table(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA), path)
    stats_agree(Path(path))
    lines, problems = deep_check(location, 100)
    assert problems == [f"{victim['key']}: its tar record and its index row differ in recipe "
                        "(changed after it was written)"]
    assert "1 record differs from the index" in lines[0]


@pytest.mark.parametrize(("mode", "kept_type"), [("images", 1), ("hybrid_kept", 26)])
def test_deep_inspection_names_a_version_whose_png_the_store_mode_keeps_but_is_gone(
        store_datasets, tmp_path, mode, kept_type):
    """A version the store mode keeps as pixels, found with its recipe alone, is a problem,
    not a replay (images: every version; hybrid --keep-pngs 26: the colour-block ones)."""
    out = tmp_path / mode
    shutil.copytree(store_datasets[mode], out)
    location = Location.parse(str(out))
    tar = Path(tar_path(location, 0, store_of(location)))
    victim = next(row["key"] for row in read_index(location, [0]).to_pylist()
                  if row["distortion_id"] == kept_type)
    rewrite_tar(tar, keep=lambda name: name != f"{victim}.png")
    lines, problems = deep_check(location, 100, keep_pngs=(26,) if mode == "hybrid_kept"
                                 else ())
    assert problems == [f"{victim}: its tar holds no PNG of it, though the store mode "
                        f"{store_of(location)} keeps one"]
    assert "1 PNG missing" in lines[0]
    _, shallow = inspect(str(out))
    assert any("samples lack or hold a PNG against the store mode" in p for p in shallow)


def _quality_by_scenario(rows: list[dict]) -> dict[str, list[float]]:
    """Each distorted row's Q under its "id-level" key, as a reader sees the samples."""
    by_scenario: dict[str, list[float]] = {}
    for row in rows:
        if row["kind"] == "distorted":
            scenario = f"{row['distortion_id']:02d}-{row['level']}"
            by_scenario.setdefault(scenario, []).append(row["quality"])
    return by_scenario


def test_the_report_folds_each_shards_labels_into_per_scenario_sums(fast_config,
                                                                    mae_ensemble):
    config = fast_config("embedded", limit=3, shard_refs=1, distortion_ids=(1, 13),
                         levels=(1, 5))
    plan, location, _ = _run_all(config, mae_ensemble)
    tally = merge(location, plan)
    by_scenario = _quality_by_scenario(read_index(location).to_pylist())
    assert sorted(tally.quality_count) == sorted(by_scenario)  # one sum per scenario, so
    for scenario, values in by_scenario.items():                # memory does not grow with
        assert tally.quality_count[scenario] == len(values) == 3  # the samples
        assert tally.quality_sum[scenario] / len(values) == pytest.approx(np.mean(values))


def test_shard_stats_hold_q_summed_by_scenario_and_older_label_lists_add_up_alike(
        fast_config, mae_ensemble):
    config = fast_config("embedded", limit=2, shard_refs=2, distortion_ids=(1, 13),
                         levels=(1, 5))
    _, location, _ = _run_all(config, mae_ensemble)
    stats = shard_stats(location, 0)
    rows = read_index(location, [0]).to_pylist()
    by_scenario = _quality_by_scenario(rows)
    assert stats["labels"] == sum(map(len, by_scenario.values())) == 2 * 2 * 2
    assert sorted(stats["quality_by_scenario"]) == sorted(by_scenario)
    for scenario, values in by_scenario.items():
        count, total = stats["quality_by_scenario"][scenario]
        assert count == len(values) and total == pytest.approx(sum(values))
    older = {key: value for key, value in stats.items() if key != "quality_by_scenario"}
    older["labels"] = [[row["distortion_id"], row["level"], row["quality"]] for row in rows
                       if row["kind"] == "distorted"]  # the per-version list stats once held
    sums, older_sums = Tally(), Tally()
    sums.add(stats, [], [])
    older_sums.add(older, [], [])
    assert sorted(older_sums.quality_count) == sorted(sums.quality_count)
    for scenario, count in sums.quality_count.items():
        assert older_sums.quality_count[scenario] == count
        assert older_sums.quality_sum[scenario] == pytest.approx(sums.quality_sum[scenario])


def test_a_list_file_with_a_byte_order_mark_and_crlf_keeps_its_first_entry(tmp_path,
                                                                          small_image):
    for name in ("first.png", "second.png"):
        Image.fromarray(small_image).save(tmp_path / name)
    listing = tmp_path / "list.csv"  # as Excel saves a CSV
    listing.write_bytes(b"\xef\xbb\xbffirst.png\r\nsecond.png\r\n")
    sources = list_sources(str(listing))
    assert [source.stem for source in sources] == ["first", "second"]
    assert all(Path(source.uri).is_file() for source in sources)


def test_a_kadis_style_csv_names_its_images_in_the_first_column(tmp_path, small_image):
    (tmp_path / "ref_imgs").mkdir()
    for name in ("a-fleshy-plant-1464418.png", "zebra.png"):
        Image.fromarray(small_image).save(tmp_path / "ref_imgs" / name)
    listing_file = tmp_path / "kadis700k_ref_imgs.csv"  # a header and more columns, as KADIS's
    listing_file.write_text("ref_im,dist_type_1,dist_type_2\n"
                       "ref_imgs/zebra.png,11,3\n"
                       "ref_imgs/a-fleshy-plant-1464418.png,7,16\n"
                       "ref_imgs/notes.txt,1,2\n")  # not an image name: skipped, counted
    listed = listing(str(listing_file))
    assert [source.order_key for source in listed.sources] == [
        "ref_imgs/a-fleshy-plant-1464418.png", "ref_imgs/zebra.png"]
    assert all(Path(source.uri).is_file() for source in listed.sources)
    assert listed.skipped == {".txt": 1}  # the header row is not counted


@pytest.mark.parametrize("suffix", [".txt", ".lst", ".LST"])
def test_a_text_list_takes_each_line_whole_commas_included(tmp_path, small_image, suffix):
    names = ("img,1.png", "b.png", "c, d.jpg")
    for name in names:
        Image.fromarray(small_image).save(tmp_path / name, format="PNG")
    listing_file = tmp_path / f"list{suffix}"
    listing_file.write_text("\n".join(str(tmp_path / name) for name in names) + "\nnotes\n")
    listed = listing(str(listing_file))
    assert sorted(Path(source.uri).name for source in listed.sources) == sorted(names)
    assert listed.skipped == {"": 1}  # a line that names no image is counted, first or not
    listing_file.write_text("paths\n" + str(tmp_path / names[0]) + "\n")
    assert listing(str(listing_file)).skipped == {"": 1}


def test_names_that_are_not_images_are_skipped_and_counted_by_extension(tmp_path, small_image):
    folder = tmp_path / "photos"
    (folder / "deeper").mkdir(parents=True)
    for name in ("a.png", "deeper/b.JPG", "c.avif", "d.jfif"):
        Image.fromarray(small_image).save(folder / name, format="PNG")  # any bytes: listing
    for name in ("e.heic", "f.HEIC", "deeper/notes.txt", "README"):
        (folder / name).write_bytes(b"not listed")
    listed = listing(str(folder))
    assert [source.order_key for source in listed.sources] == ["a.png", "c.avif", "d.jfif",
                                                               "deeper/b.JPG"]
    assert listed.skipped == {".heic": 2, ".txt": 1, "": 1}
    note = skipped_note(listed.skipped)
    assert note.startswith("names that are not image names were skipped: 4 (.heic 2, ")
    assert "no extension 1" in note


def test_every_source_extension_is_a_format_pillow_reads_and_decodes_as_pillow_does(
        tmp_path, small_image):
    """Each listed extension is one Pillow registers (its own table, not ours); an image saved
    under each that Pillow can write is listed and decodes to Pillow's own pixels."""
    registered = Image.registered_extensions()
    assert set(registered) >= IMAGE_EXTENSIONS
    writable = [suffix for suffix in sorted(IMAGE_EXTENSIONS) if registered[suffix] in Image.SAVE]
    assert {".avif", ".png", ".jpg", ".tga", ".jp2"} <= set(writable)
    image = Image.fromarray(small_image)
    for suffix in writable:
        path = tmp_path / f"im{suffix}"
        (image.convert("1") if suffix == ".pbm" else image).save(path)
    listed = listing(str(tmp_path))
    assert listed.skipped == {} and len(listed.sources) == len(writable)
    for source in listed.sources:
        with Image.open(source.uri) as stored:
            expected = np.asarray(stored.convert("RGB"))
        np.testing.assert_array_equal(load(source).pixels, expected, err_msg=source.uri)


def test_sources_that_name_no_image_are_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.txt").write_text("no photos here")
    (tmp_path / "photos.heic").write_bytes(b"")
    (tmp_path / "list.txt").write_text("photos.heic\n")
    for spec in ("empty", "notes", "list.txt"):
        with pytest.raises(ValueError, match="name no image"):
            list_sources(str(tmp_path / spec))
    out = tmp_path / "out"
    assert cli.main(["generate", "--sources", str(tmp_path / "empty"), "--out", str(out),
                     "--allow-missing-metrics"]) == 2
    assert "name no image" in capsys.readouterr().err
    assert not out.exists()  # the refused run leaves no empty folder behind


@pytest.mark.parametrize("extension", [".png", ".tiff"])
@pytest.mark.parametrize("channels", [3, 4])
def test_sixteen_bit_colour_is_rounded_to_8_bits_and_recorded(extension, channels):
    from shards.decode import decode

    rng = np.random.default_rng(7)
    values = rng.integers(0, 65536, (6, 5, channels), dtype=np.uint16)
    values[0, 0, :3] = [51528, 4736, 65535]  # high bytes 201, 18: nearest 200, 18, 255
    if channels == 4:
        values[..., 3] = 65535  # opaque
    written, data = cv2.imencode(extension, values)  # OpenCV writes BGR(A)
    assert written
    decoded = decode(data.tobytes())
    rgb = values[..., 2::-1].astype(np.float64)
    np.testing.assert_array_equal(decoded.pixels, np.clip(np.rint(rgb / 257), 0, 255))
    assert decoded.pixels[0, 0].tolist() == [255, 18, 200]
    assert any(c.endswith(";16B->8-bit") or c.endswith(";16N->8-bit")
               for c in decoded.conversions)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_each_exif_orientation_is_shown_upright_as_pillow_does(orientation, small_image):
    from PIL import ImageOps

    from shards.decode import decode

    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(small_image[:40, :60]).save(buffer, "PNG", exif=exif)
    with Image.open(io.BytesIO(buffer.getvalue())) as stored:
        upright = np.asarray(ImageOps.exif_transpose(stored).convert("RGB"))
    decoded = decode(buffer.getvalue())
    np.testing.assert_array_equal(decoded.pixels, upright)
    assert (orientation == 1) != any(f"orientation {orientation}" in c
                                     for c in decoded.conversions)


def test_a_version_a_metric_cannot_score_is_recorded_and_the_others_are_kept(fast_config,
                                                                            mae_ensemble):
    """A metric's NaN for one version (a labeler defect on some input): that version is left
    out with its reason, never given a NaN Q; the shard completes with the others."""
    config = fast_config("embedded", limit=1, distortion_ids=(1, 13), levels=(1,))
    plan = Plan.make(list_sources("embedded"), config)
    location = Location.parse(config.out)
    persist_or_check(plan, location)
    real = local_scorer(Labeler(metrics=config.metrics, device="cpu"))

    def one_nan(ref, versions, on_labelled, ref_id):  # the second version: gaussian_blur level 1
        return _with_a_nan(real(ref, versions, on_labelled, ref_id), "gmsd", 1)

    outcome = produce_shard(0, plan, config, one_nan, mae_ensemble, location)
    assert [(f["reason"], f["distortion_id"]) for f in outcome.failures] == [("label_failed", 13)]
    assert "gmsd gave a score that is not a finite number" in outcome.failures[0]["detail"]
    rows = [row for row in read_index(location).to_pylist() if row["kind"] == "distorted"]
    assert [row["distortion_id"] for row in rows] == [1]
    assert all(np.isfinite(row["quality"]) for row in rows)


def test_q_of_fewer_metrics_than_the_ensemble_weighs_records_them(fast_config, mae_ensemble):
    config = fast_config("embedded", limit=1, distortion_ids=(1,), levels=(1,), metrics=("mae",))
    _, location, _ = _run_all(config, mae_ensemble)  # the ensemble weighs mae and gmsd
    rows = [row for row in read_index(location).to_pylist() if row["kind"] == "distorted"]
    assert [row["metrics_used"] for row in rows] == [["mae"]]


def test_deep_inspection_lists_an_undecodable_shard_and_an_unreadable_index(fast_config,
                                                                           mae_ensemble):
    """The damage a deep check looks for is a problem it lists, not an error that ends it."""
    config = fast_config("embedded", limit=2, shard_refs=1, distortion_ids=(1,), levels=(1,))
    _, location, _ = _run_all(config, mae_ensemble)
    tar = Path(tar_path(location, 0, "images"))
    original = tar.read_bytes()
    data = bytearray(original)
    at = data.index(b"IDAT") + 40  # inside the first PNG's compressed pixels
    data[at] ^= 0xFF
    tar.write_bytes(bytes(data))
    lines, problems = deep_check(location, 100)
    assert any(problem.startswith("deep check: shard 0: ") for problem in problems)
    assert lines  # the summary of what could be checked is still there
    # a valid tar with one member renamed: the sample its index lists is named as absent (it
    # once stopped on a KeyError); a tar zeroed at its size, as unreadable
    with tarfile.open(fileobj=io.BytesIO(original)) as source, \
            tarfile.open(tar, "w") as renamed:
        for member in source.getmembers():
            data = source.extractfile(member).read()
            member.name = member.name.replace("_d01_l1.", "_dXX_l1.")
            member.pax_headers = {}
            renamed.addfile(member, io.BytesIO(data))
    other = Path(tar_path(location, 1, "images"))
    other.write_bytes(bytes(other.stat().st_size))
    _, problems = deep_check(location, 100)
    assert any(re.match(r"deep check: shard 0: 1 sample\(s\) the index lists are not in "
                        r"its tar \(\w+_d01_l1", problem) for problem in problems)
    assert any(problem.startswith("deep check: shard 1: ") and "its archive ends" in problem
               for problem in problems)
    Path(shard_paths(location, 1)["parquet"]).write_bytes(b"not parquet")
    _, problems = deep_check(location, 100)
    assert len(problems) == 1 and problems[0].startswith("deep check: ")


def test_a_jpeg2000_ratio_the_codec_cannot_reach_is_recorded_and_the_others_kept(
        tmp_path, fast_config, mae_ensemble):
    """OpenJPEG's achievable ratios on this noise jump past 400 +- 5%: its JPEG 2000 level 5
    is left out as distortion_failed, naming the ratio it reached at best (never kept at
    another ratio), and its other versions are made."""
    folder = tmp_path / "sources"
    folder.mkdir()
    noise = np.random.default_rng(1).integers(0, 256, (176, 192, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "noise.png")  # 192 x 176: kept as it is
    config = fast_config(str(folder), distortion_ids=(1, 2), levels=(1, 5))
    _, location, [outcome] = _run_all(config, mae_ensemble)
    [failure] = outcome.failures
    assert (failure["reason"], failure["distortion_id"], failure["level"]) == (
        "distortion_failed", 2, 5)
    reached = re.search(r"reaches ratio ([\d.]+) at best, not within 5% of 400",
                        failure["detail"])
    assert reached and abs(float(reached[1]) / 400 - 1) > 0.05
    rows = [row for row in read_index(location).to_pylist() if row["kind"] == "distorted"]
    assert sorted((row["distortion_id"], row["level"]) for row in rows) == [(1, 1), (1, 5), (2, 1)]


def test_inspect_checks_shards_in_processes_with_the_serial_findings_in_shard_order(
        fast_config, mae_ensemble, monkeypatch):
    from pipeline import processes
    from pipeline.commands import inspect_dataset
    from pipeline.report import write_run_files
    from tests.conftest import finish

    config = fast_config("embedded", limit=4, shard_refs=1, distortion_ids=(1, 13),
                         levels=(1, 5), metrics=("mae",))
    plan, location, _ = _run_all(config, mae_ensemble)
    write_run_files(location, config, plan, mae_ensemble, ())
    finish(location, plan, config)
    stats_path = Path(shard_paths(location, 1)["stats"])
    stats = json.loads(stats_path.read_text())
    stats_path.write_text(json.dumps({**stats, "labels": stats["labels"] + 1}))
    tar = Path(tar_path(location, 3, store_of(location)))
    damaged = bytearray(tar.read_bytes())
    damaged[700] ^= 0xFF  # inside the first member's bytes: the tar's SHA-256 differs
    tar.write_bytes(bytes(damaged))
    pools = []

    class CountedPool(processes.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(processes, "ProcessPoolExecutor", CountedPool)
    shard_bytes = sum(path.stat().st_size for path in Path(config.out, "shards").iterdir())
    monkeypatch.setattr(inspect_dataset, "BYTES_PER_PROCESS", shard_bytes // 2)
    serial = inspect(config.out)
    assert not pools
    pooled = inspect(config.out, workers=3)
    assert pools == [(2,)]  # each process given half the tar bytes at least: two
    assert pooled == serial
    shard_problems = [p for p in serial[1] if p.startswith("shard ")]
    assert [p[:11] for p in shard_problems] == ["shard 00001", "shard 00003"]
    assert f"its stats count {stats['labels'] + 1} labels" in shard_problems[0]
    assert "SHA-256" in shard_problems[1]


@pytest.mark.parametrize(("text", "said"), [("{cut", "is not JSON"),
                                            ("[1]", "holds list, not an object")])
def test_a_damaged_plan_file_refuses_a_resume_saying_restart(tmp_path, fast_config, text,
                                                             said):
    """generate cannot rebuild the plan a dataset was made under: a plan.json that is not a
    JSON object is named, with --restart (not 'rerun generate', which would meet it again)."""
    from shards.reader import RunFileError

    config = fast_config("embedded")
    location = Location.parse(config.out)
    persist_or_check(Plan.make(list_sources("embedded"), config), location)
    (Path(config.out) / "plan.json").write_text(text)
    with pytest.raises(RunFileError, match=rf"plan\.json {said}.*--restart starts over"):
        persist_or_check(Plan.make(list_sources("embedded"), config), location)


_WRITES_CUT_SHORT = """
import hashlib, os, resource, signal, sys
from labelers import Labeler
from labelers.ensemble import Ensemble, Mapping01
from pipeline.config import RunConfig
from pipeline.plan import Plan, persist_or_check
from pipeline.report import write_run_files
from pipeline.sizing import TargetSize
from pipeline.sources import list_sources
from pipeline.worker import produce_shard
from tests.conftest import local_scorer
from shards.layout import tar_path
from shards.reader import shard_problems
from shards.storage import Location

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
ensemble = Ensemble("test", {"mae": 1.0}, {"mae": Mapping01("linear", best=0.0, worst=0.2)})
scorer = local_scorer(Labeler(metrics=("mae",), device="cpu"))


def shard(out, limit=None):
    # shard 0 made in out, first with writes limited to `limit` bytes a file where given:
    # (the error's errno, the files that attempt left in shards/, the problems a resume
    # checks, the finished tar's size and SHA-256)
    config = RunConfig(sources="embedded", out=out, seed=3, size=TargetSize(192, 176),
                       shard_refs=2, limit=2, distortion_ids=(1, 13), levels=(1, 5),
                       metrics=("mae",))
    plan = Plan.make(list_sources("embedded"), config)
    location = Location.parse(out)
    persist_or_check(plan, location)
    write_run_files(location, config, plan, ensemble, ())
    errno, left = None, None
    if limit:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        try:
            produce_shard(0, plan, config, scorer, ensemble, location)
        except OSError as error:
            errno = f"{type(error).__name__}:{error.errno}"
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        left = sorted(os.listdir(location.path("shards")))
    produce_shard(0, plan, config, scorer, ensemble, location)
    tar = location.read_bytes(tar_path(location, 0, "images"))
    return errno, left, shard_problems(location, 0, plan.digest, "images", verify_hash=True), \
        len(tar), hashlib.sha256(tar).hexdigest()


*_, size, whole = shard(os.path.join(sys.argv[1], "whole"))
for share in (0.05, 0.5, 0.98):
    out = os.path.join(sys.argv[1], str(share))
    errno, left, problems, _, again = shard(out, int(share * size))
    print(share, errno, left, problems, again == whole)
"""


def test_a_shard_whose_writes_fail_midway_leaves_nothing_and_is_made_again_the_same(tmp_path):
    """Writes fail for real (past the file size limit, EFBIG, as a full disk fails them with
    ENOSPC) at 5%, 50% and 98% of the shard's tar: the attempt raises the OSError (at 50% the
    node's own temporary file of the shard's samples fails first: a SpillError, which the
    driver does not take for a full output), leaves no file in shards/, and the next attempt
    makes the shard complete, byte for byte the tar of a shard made without a failure."""
    done = subprocess.run([sys.executable, "-c", _WRITES_CUT_SHORT, str(tmp_path)],
                          capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{share} {error}:{errno.EFBIG} [] [] True"
        for share, error in ((0.05, "OSError"), (0.5, "SpillError"), (0.98, "OSError"))]


def test_a_library_absent_here_and_unrecorded_by_a_shard_is_no_difference(monkeypatch):
    """libraries_differing's docstring: `not recorded` counts the shards that record no
    version of a library this code records one of; of one absent here too (None), such a
    shard and the manifest agree: nothing differs."""
    import pipeline.report

    here = {"numpy": "1.0", "torch": None}
    monkeypatch.setattr(pipeline.report, "library_versions", lambda: here)
    tally = Tally()
    tally.add({"samples": 0, "distorted": 0, "seconds": {}, "libraries": {"numpy": "1.0"}},
              [], [])
    assert tally.libraries_differing(here) == {}


def test_the_reports_rate_counts_only_the_samples_this_run_made():
    """build_report's docstring: samples an earlier run finished are in the counts but not in
    the rate of this run: 10 samples of which 6 were there, in 2 s, is 2 samples/s."""
    report = build_report(Tally(samples=10, distorted=8), 2.0, (), earlier_samples=6)
    assert (report["samples"], report["samples_this_run"]) == (10, 4)
    assert report["samples_per_second"] == 2.0


def test_the_report_tells_a_library_a_shard_records_absent_from_one_it_does_not_record():
    """A shard made before a library or code digest was recorded lacks it: `not recorded`
    (its bank code is unknown), counted only where this code records a version; a shard that
    records a library as absent (a worker without it) keeps that, `None`."""
    here = library_versions()
    stats = {"samples": 0, "distorted": 0, "seconds": {}}
    tally = Tally()
    tally.add({**stats, "libraries": {**here, "torch": None}}, [], [])
    tally.add({**stats, "libraries": {name: version for name, version in here.items()
                                      if name != "distortions_code"}}, [], [])
    assert tally.libraries_differing(here) == {"torch": {"None": 1},
                                               "distortions_code": {"not recorded": 1}}
