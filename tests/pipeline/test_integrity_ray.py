"""A dataset's identity across reruns (issue 12): a shard of only bad sources completes, a
restart leaves nothing of the old run, another ensemble is refused, a damaged tar is named
by inspect and redone by a resume, duplicate sources are recorded once."""

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
from PIL import Image

from labelers.ensemble import Ensemble, Mapping01
from pipeline import cli
from pipeline.commands.inspect_dataset import inspect
from pipeline.driver import ClusterOptions, generate
from pipeline.errors import PlanMismatchError
from pipeline.likeness import NEAR_BITS
from pipeline.plan import split_of
from shards import open_dataset
from shards.layout import labels_file, shard_paths, tar_path
from shards.reader import complete_shards, read_index, shard_stats, shards_with_stats
from shards.storage import Location
from training.shard_data import HELD_OUT_ORDER, datasets_splits

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_a_shard_of_only_bad_sources_completes_and_the_run_succeeds(local_ray, tmp_path,
                                                                   shifted_sources,
                                                                   fast_config, capsys):
    folder, ensemble = shifted_sources(2)
    (folder / "x0_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # sorted first:
    (folder / "x1_empty.png").write_bytes(b"")                                 # shard 1 = both
    (folder / "notes.txt").write_text("not a source")
    config = fast_config(str(folder), shard_refs=2, ensemble_file=str(ensemble))
    report = generate(config, ClusterOptions(actors=1))
    assert report["names_skipped"] == {".txt": 1}
    assert "note: names that are not image names were skipped: 1 (.txt 1)" in \
        capsys.readouterr().out.splitlines()[-1]
    out = Location.parse(config.out)
    assert complete_shards(out) == [0, 1]
    empty = shard_stats(out, 1)
    assert (empty["samples"], empty["references"], empty["failures"]) == (0, 0, 2)
    assert report["failures_by_reason"] == {"corrupt": 1, "empty": 1}  # a PNG signature
    assert inspect(config.out)[1] == []


def test_a_run_none_of_whose_sources_can_be_used_says_so_and_fails(local_ray, tmp_path,
                                                                    capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    assert cli.main(["generate", "--sources", str(folder), "--out", str(out), "--size",
                     "192x176", "--distortions", "1", "--levels", "1", "--metrics",
                     "none"]) == 1
    assert "none of the 2 sources could be used" in capsys.readouterr().err
    # what it recorded is whole, and of no sample: inspect, too, exits 1 and says why
    assert inspect(str(out))[1] == ["no sample: none of the 2 sources could be used (their "
                                    "reasons are in failures.jsonl)"]


def test_a_reference_the_labeler_actor_cannot_measure_is_recorded_and_the_run_goes_on(
        local_ray, shifted_sources, fast_config, small_image):
    """A flat source (VIF 0 / 0, a LabelerError raised in the labeler actor): recorded as
    label_failed with the metric's reason, and the shard it shares completes."""
    folder, ensemble = shifted_sources(1)
    Image.fromarray(np.full_like(small_image, 200)).save(folder / "flat.png")
    config = fast_config(str(folder), shard_refs=2, distortion_ids=(1,), levels=(1,),
                         metrics=("mae", "gmsd", "vif"), ensemble_file=str(ensemble))
    report = generate(config, ClusterOptions(actors=1))
    assert report["failures_by_reason"] == {"label_failed": 1}
    out = Location.parse(config.out)
    [failure] = [json.loads(line) for line in
                 out.read_bytes(out.path("failures.jsonl")).decode().splitlines()]
    assert failure["ref_id"] == "flat"  # the metric's own words, not the actor's traceback
    assert failure["detail"].startswith("vif: the reference image is flat")
    assert [(row["ref_id"], row["kind"]) for row in read_index(out).to_pylist()] == \
        [("p0", "reference"), ("p0", "distorted")]
    assert inspect(config.out)[1] == []
    _every_cpu_is_free_again()  # its labeler actor was killed at the end of the run


def test_a_labeler_call_past_the_label_timeout_is_recorded_and_the_run_goes_on(
        local_ray, shifted_sources, fast_config):
    """--label-timeout: a shard waits that long for the labeler actor, then records the
    reference as label_failed, saying why, and goes on (a call that never returns, a hung GPU,
    would otherwise hold its shard, and the run, for ever). A millionth of a second is less
    than any call takes: every reference is left out, every shard still completes."""
    folder, ensemble = shifted_sources(3)
    config = fast_config(str(folder), shard_refs=2, distortion_ids=(1,), levels=(1,),
                         ensemble_file=str(ensemble))
    report = generate(config, ClusterOptions(actors=1, label_timeout=1e-6))
    assert report["failures_by_reason"] == {"label_failed": 3}
    out = Location.parse(config.out)
    assert complete_shards(out) == [0, 1]
    details = [json.loads(line)["detail"] for line in
               out.read_bytes(out.path("failures.jsonl")).decode().splitlines()]
    assert details == ["the labeler actor did not answer within 1e-06 s (--label-timeout): "
                       "the reference and its versions are left out"] * 3
    assert read_index(out).num_rows == 0
    _every_cpu_is_free_again()  # the calls left running ended with their actor


def _every_cpu_is_free_again(seconds: float = 30) -> None:
    """A run leaves no actor holding the cluster's CPUs (a later run would wait for them)."""
    deadline = time.monotonic() + seconds
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"]:
        assert time.monotonic() < deadline, f"CPUs still held {seconds} s after the run"
        time.sleep(0.5)


@pytest.mark.parametrize("store", ["images", "recipes"])
def test_shards_made_on_other_library_versions_are_named_by_the_report_and_inspect(
        local_ray, shifted_sources, tmp_path, capsys, store):
    """A shard whose stats record another library version than the manifest (made on a node
    with another NumPy, or before an upgrade and a resume): the report names it, and inspect
    calls it a problem where readers replay recipes (a note where the PNGs are stored)."""
    folder, ensemble = shifted_sources(2)
    out = tmp_path / "out"
    command = ["generate", "--sources", str(folder), "--out", str(out), "--size", "192x176",
               "--shard-refs", "1", "--distortions", "1", "--levels", "1", "--metrics",
               "mae,gmsd", "--ensemble", str(ensemble), "--store", store]
    assert cli.main(command) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    stats_path = out / "shards" / "00001_stats.json"
    stats = json.loads(stats_path.read_text())
    assert stats["libraries"] == manifest["replay_libraries"]  # made here, as the driver
    assert stats["libraries"]["numpy"] == np.__version__
    assert json.loads((out / "report.json").read_text())["libraries_differing"] == {}
    other = "0.0.1"  # what a node with another NumPy records
    assert manifest["replay_libraries"]["numpy"] != other
    stats["libraries"]["numpy"] = other
    stats_path.write_text(json.dumps(stats))
    capsys.readouterr()
    assert cli.main(command) == 0  # a resume: nothing to make, the report made again
    report = json.loads((out / "report.json").read_text())
    assert report["libraries_differing"] == {"numpy": {other: 1}}
    assert f"warning: shards were made with other library versions or code than " \
           f"manifest.json records (numpy {other} in 1 shard)" in capsys.readouterr().out
    lines, problems = inspect(str(out))
    [named] = [text for text in lines + problems if f"numpy {other} in 1 shard" in text]
    assert (named in problems) == (store == "recipes")
    # shards made before a library or the bank's code digest was recorded: shard 1 lacks the
    # bank's digest, shard 0 every version (the bank's code that made them is unknown)
    del stats["libraries"]["distortions_code"]
    stats_path.write_text(json.dumps(stats))
    first = out / "shards" / "00000_stats.json"
    first.write_text(json.dumps({key: value for key, value in
                                 json.loads(first.read_text()).items() if key != "libraries"}))
    assert cli.main(command) == 0
    recorded = [name for name, version in manifest["replay_libraries"].items() if version]
    assert "distortions_code" in recorded
    assert json.loads((out / "report.json").read_text())["libraries_differing"] == {
        **{name: {"not recorded": 1} for name in recorded},
        "numpy": {other: 1, "not recorded": 1}, "distortions_code": {"not recorded": 2}}
    said = capsys.readouterr().out
    assert "distortions_code not recorded in 2 shards" in said
    lines, problems = inspect(str(out))
    [named] = [text for text in lines + problems if "distortions_code not recorded" in text]
    assert (named in problems) == (store == "recipes")


def test_restart_leaves_no_shard_of_the_old_run(local_ray, shifted_sources, fast_config,
                                                capsys):
    folder, ensemble = shifted_sources(3)
    generate(fast_config(str(folder), shard_refs=1, ensemble_file=str(ensemble)),
             ClusterOptions(actors=1))
    config = fast_config(str(folder), shard_refs=3, levels=(1,), ensemble_file=str(ensemble))
    sidecar = Path(config.out) / labels_file("0" * 16)  # a relabel of the old run's versions
    sidecar.write_bytes(b"old labels")
    strikes = Path(config.out) / "strikes.json"  # a run file: kept, it would quarantine p1
    strikes.write_text(json.dumps({"p1": 2}))
    capsys.readouterr()
    generate(config, ClusterOptions(actors=1, restart=True))
    shards = Path(config.out) / "shards"
    assert (f"restart: removed {shards} (3 finished shards of the previous run)"
            in capsys.readouterr().out)
    out = Location.parse(config.out)
    assert shards_with_stats(out) == [0]  # shards 1 and 2 of the old plan are gone
    assert not sidecar.exists() and not strikes.exists()
    assert set(read_index(out).column("ref_id").to_pylist()) == {"p0", "p1", "p2"}
    assert set(read_index(out).column("level").drop_null().to_pylist()) == {1}


def test_a_source_that_could_not_be_read_is_read_again_with_retry_unreadable(
        local_ray, shifted_sources, fast_config, small_image, tmp_path, capsys):
    """A source whose read failed (here a dangling link, repaired after the run) stays left out
    of its finished shard on a plain resume, which says it can be read now; a resume with
    --retry-unreadable makes that shard again, and only that one, with the source in it."""
    folder, ensemble = shifted_sources(3)  # p0 p1 | p2 p3
    restored = tmp_path / "restored.png"
    (folder / "p3.png").symlink_to(restored)  # not there yet: the read fails
    config = fast_config(str(folder), shard_refs=2, ensemble_file=str(ensemble))
    report = generate(config, ClusterOptions(actors=1, retry_unreadable=True))
    assert report["failures_by_reason"] == {"unreadable": 1}
    printed = capsys.readouterr().out
    assert "note: --retry-unreadable has nothing to read again" in printed  # a first run
    assert "note: 1 source(s) could not be read (failures.jsonl names them): the same command " \
        "with --retry-unreadable tries them again" in printed
    out = Location.parse(config.out)
    first_shard = Path(tar_path(out, 0, config.store)).read_bytes()
    Image.fromarray(np.roll(small_image, 101, axis=1)).save(restored)

    assert generate(config, ClusterOptions(actors=1))["samples_this_run"] == 0
    assert f"note: 1 source(s) left out of finished shards as unreadable or " \
        f"undecodable can be read now " \
        f"({folder / 'p3.png'}): their shards stay as made unless --retry-unreadable makes " \
        "them again" in capsys.readouterr().out
    assert "p3" not in read_index(out).column("ref_id").to_pylist()

    p2 = (folder / "p2.png").read_bytes()  # a source of the shard to make again, replaced:
    Image.fromarray(small_image[::-1].copy()).save(folder / "p2.png")  # still refused, as a
    with pytest.raises(PlanMismatchError, match=r"p2\.png holds other pixels"):  # remake
        generate(config, ClusterOptions(actors=1, retry_unreadable=True))  # may not finish
    (folder / "p2.png").write_bytes(p2)
    report = generate(config, ClusterOptions(actors=1, retry_unreadable=True))
    assert "note: making shard(s) 00001 again (--retry-unreadable)" in capsys.readouterr().out
    per_reference = 1 + len(config.scenarios)
    assert report["samples_this_run"] == 2 * per_reference  # p2 and p3: shard 1 alone
    assert report["failures_by_reason"] == {}
    assert Path(tar_path(out, 0, config.store)).read_bytes() == first_shard
    assert sorted(set(read_index(out).column("ref_id").to_pylist())) == ["p0", "p1", "p2", "p3"]
    assert inspect(config.out)[1] == []


def test_a_source_repaired_after_it_failed_to_decode_is_made_with_retry_unreadable(
        local_ray, shifted_sources, fast_config, small_image, tmp_path, capsys):
    """A source cut short (corrupt) is left out of its finished shard; repaired since, it
    neither refuses a resume (nothing of it is in its shard to mix) nor enters it unasked: a
    plain resume names it and makes nothing; one with --retry-unreadable makes its shard
    again, and only that one, with the source in it."""
    folder, ensemble = shifted_sources(3)  # p0 p1 | p2 p3
    repaired = np.roll(small_image, 101, axis=1)
    Image.fromarray(repaired).save(folder / "p3.png")
    whole = (folder / "p3.png").read_bytes()
    (folder / "p3.png").write_bytes(whole[:len(whole) // 2])  # a copy cut short
    config = fast_config(str(folder), shard_refs=2, ensemble_file=str(ensemble))
    assert generate(config, ClusterOptions(actors=1))["failures_by_reason"] == {"corrupt": 1}
    out = Location.parse(config.out)
    first_shard = Path(tar_path(out, 0, config.store)).read_bytes()
    (folder / "p3.png").write_bytes(whole)
    capsys.readouterr()

    assert generate(config, ClusterOptions(actors=1))["samples_this_run"] == 0
    assert f"note: 1 source(s) left out of finished shards as unreadable or undecodable can " \
        f"be read now ({folder / 'p3.png'})" in capsys.readouterr().out
    assert "p3" not in read_index(out).column("ref_id").to_pylist()
    report = generate(config, ClusterOptions(actors=1, retry_unreadable=True))
    assert "note: making shard(s) 00001 again (--retry-unreadable)" in capsys.readouterr().out
    assert report["samples_this_run"] == 2 * (1 + len(config.scenarios))  # p2 and p3
    assert report["failures_by_reason"] == {}
    assert Path(tar_path(out, 0, config.store)).read_bytes() == first_shard
    assert sorted(set(read_index(out).column("ref_id").to_pylist())) == ["p0", "p1", "p2", "p3"]
    assert inspect(config.out)[1] == []


def test_resuming_under_another_ensemble_is_refused(local_ray, shifted_sources, fast_config,
                                                    tmp_path):
    folder, ensemble = shifted_sources(1)
    generate(fast_config(str(folder), ensemble_file=str(ensemble)), ClusterOptions(actors=1))
    other = tmp_path / "other.json"
    Ensemble("other", {"mae": 1.0}, {"mae": Mapping01("linear", best=0.0, worst=0.5)}).save(other)
    with pytest.raises(PlanMismatchError, match="ensemble_hash"):
        generate(fast_config(str(folder), ensemble_file=str(other)), ClusterOptions(actors=1))


@pytest.mark.parametrize("damage", ["truncate", "zero"])
def test_a_damaged_tar_is_named_by_inspect_and_redone_by_a_resume(local_ray, shifted_sources,
                                                                  fast_config, damage, capsys):
    folder, ensemble = shifted_sources(2)
    config = fast_config(str(folder), shard_refs=1, ensemble_file=str(ensemble))
    generate(config, ClusterOptions(actors=1))
    out = Location.parse(config.out)
    tar = tar_path(out, 1, "images")
    original = out.read_bytes(tar)
    broken = original[:len(original) // 2] if damage == "truncate" else bytes(len(original))
    out.write_bytes(tar, broken)
    _, problems = inspect(config.out)
    assert len(problems) == 1 and problems[0].startswith("shard 00001")
    sidecar = Path(config.out) / labels_file("0" * 16)  # relabelled before the damage
    sidecar.write_bytes(b"labels of the shards as they were")
    # a resume sees a size change; a corruption of the same size needs --verify
    capsys.readouterr()
    generate(config, ClusterOptions(actors=1, verify=damage == "zero"))
    assert out.read_bytes(tar) == original
    assert not sidecar.exists()  # it would not match the remade shard
    # the earlier end's report and merged lists went before the remake (a run stopped during
    # it reads as unfinished, never as the old dataset), and the end wrote them again
    printed = capsys.readouterr().out
    assert "note: removed report.json, sources.parquet, failures.jsonl of the earlier run's " \
        "end" in printed
    assert (f"note: removed {sidecar.name}, made before these shards; relabel again when "
            "done") in printed
    why = "tar SHA-256 differs from its stats" if damage == "zero" else "tar is"
    assert f"note: shard 00001 is made again: {why}" in printed  # a resume says which, and why
    assert "shard 00000 is made again" not in printed
    assert all(out.exists(out.path(name)) for name in ("report.json", "sources.parquet"))
    assert inspect(config.out)[1] == []
    assert json.loads(out.read_bytes(shard_paths(out, 1)["stats"]))["tar_bytes"] == len(original)


def test_duplicates_are_recorded_once_and_stay_in_one_split(local_ray, shifted_sources,
                                                            fast_config):
    folder, ensemble = shifted_sources(1)  # p0.png
    shutil.copyfile(folder / "p0.png", folder / "p1_copy.png")  # the same bytes
    with Image.open(folder / "p0.png") as image:  # the same pixels in other bytes
        image.save(folder / "p2_reencoded.png", compress_level=1)
    assert (folder / "p2_reencoded.png").read_bytes() != (folder / "p0.png").read_bytes()
    with Image.open(folder / "p0.png") as image:  # a copy with loss: other pixels, alike
        image.save(folder / "p3_jpeg.jpg", quality=90)
    seed = next(s for s in range(100) if split_of("p0", s) != split_of("p2_reencoded", s)
                and split_of("p0", s) != split_of("p3_jpeg", s))
    config = fast_config(str(folder), seed=seed, ensemble_file=str(ensemble))
    report = generate(config, ClusterOptions(actors=1))
    out = Location.parse(config.out)
    assert report["failures_by_reason"] == {"duplicate": 1}
    assert set(read_index(out).column("ref_id").to_pylist()) == {"p0", "p2_reencoded",
                                                                  "p3_jpeg"}
    sources = {row["ref_id"]: row for row in
               pq.read_table(out.path("sources.parquet")).to_pylist()}
    assert sources["p1_copy"]["status"] == "duplicate"
    assert sources["p1_copy"]["split"] == sources["p0"]["split"] == split_of("p0", seed)
    assert report["pixel_duplicates"] == [
        {"ref_id": "p2_reencoded", "of": "p0",
         "splits": sorted({split_of("p0", seed), split_of("p2_reencoded", seed)})}]
    # the lossy copy is not the same pixels, but it looks like p0 (the copy of the same
    # pixels is not compared again)
    [near] = report["near_duplicates"]
    assert (near["ref_id"], near["of"]) == ("p3_jpeg", "p0") and 0 <= near["bits"] <= NEAR_BITS
    assert near["splits"] == sorted({split_of("p0", seed), split_of("p3_jpeg", seed)})
    assert sources["p2_reencoded"]["phash"] == sources["p0"]["phash"]
    # training reads the copy in the more held-out split of the two (never trained on
    # through one and validated or tested on through the other), and says so
    held_out = max(split_of("p0", seed), split_of("p2_reencoded", seed), key=HELD_OUT_ORDER.get)
    splits, notices = datasets_splits((open_dataset(config.out),))
    assert splits == [{"p0": held_out, "p2_reencoded": held_out,
                       "p3_jpeg": split_of("p3_jpeg", seed)}]
    assert notices == ["1 reference id(s) are, by id or by pixels, in different splits "
                       f"({'p0' if held_out != split_of('p0', seed) else 'p2_reencoded'}): "
                       "each is in the most held-out one of its copies, never trained on in "
                       "one place and validated on in another"]
    lines, problems = inspect(config.out)
    assert sum("p3_jpeg like p0" in line for line in lines) == 1  # a warning, not a problem
    assert problems == ["p2_reencoded is the same pixels as p0 in another split "
                        f"({' and '.join(report['pixel_duplicates'][0]['splits'])}): remove "
                        "one of the two sources"]
