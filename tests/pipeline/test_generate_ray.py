"""The Ray driver end to end on a few tiny images: exact counts, keys, labels, the files of the
format, byte-identical tars whatever the actor count, and resume."""

import hashlib
import json
import time

import pyarrow.parquet as pq
import pytest
import ray
import webdataset as wds
from ray.util.state import list_tasks

from pipeline.commands.inspect_dataset import inspect
from pipeline.driver import ClusterOptions, generate
from pipeline.errors import UnreachableStorageError
from pipeline.plan import Plan, PlannedReference
from pipeline.reachability import check_reachable, probe_storage, probe_subject
from pipeline.sources import list_sources
from shards.layout import shard_paths, tar_path
from shards.lease import Lease
from shards.reader import complete_shards, read_index, tar_urls
from shards.storage import Location

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=True, log_to_driver=False)  # the state API needs it
    yield
    ray.shutdown()


def _digests(out: str) -> list[str]:
    location = Location.parse(out)
    return [hashlib.sha256(location.read_bytes(tar_path(location, i, "images"))).hexdigest()
            for i in complete_shards(location)]


def test_generate_end_to_end(local_ray, shifted_sources, fast_config, mae_ensemble):
    folder, ensemble = shifted_sources(3)
    config = fast_config(str(folder), shard_refs=2, ensemble_file=str(ensemble))
    report = generate(config, ClusterOptions(actors=1))
    per_reference = 1 + len(config.scenarios)
    assert report["samples"] == 3 * per_reference and report["failures"] == 0
    assert not report["scheduling"]["overlap"]  # labels on a CPU actor: one reference at a time
    out = Location.parse(config.out)
    assert complete_shards(out) == [0, 1]
    index = read_index(out).to_pylist()
    samples = list(wds.WebDataset(tar_urls(out), shardshuffle=False))
    assert [s["__key__"] for s in samples] == [row["key"] for row in index]
    assert {row["ref_id"] for row in index} == {"p0", "p1", "p2"}
    assert all(row["quality"] is not None for row in index if row["kind"] == "distorted")
    sources = pq.read_table(out.path("sources.parquet")).to_pylist()
    assert [row["status"] for row in sources] == ["ok"] * 3
    assert out.read_bytes(out.path("failures.jsonl")) == b""
    manifest = json.loads(out.read_bytes(out.path("manifest.json")))
    assert manifest["ensemble_hash"] == mae_ensemble.hash and manifest["shards"] == 2
    assert report["mean_quality_by_scenario"]["13-1"] == pytest.approx(1.0)
    lines, problems = inspect(config.out)
    assert problems == [] and "3 references in 2 shards" in lines[0]
    stats_path = shard_paths(out, 1)["stats"]
    stats = json.loads(out.read_bytes(stats_path))
    out.write_bytes(stats_path, json.dumps({**stats, "samples": stats["samples"] + 1}).encode())
    _, problems = inspect(config.out)
    assert any("stats say" in problem for problem in problems)


def test_actor_count_does_not_change_the_bytes_and_reruns_resume(
        local_ray, shifted_sources, fast_config, tmp_path, capsys):
    folder, ensemble = shifted_sources(3)
    outs = []
    for actors in (1, 2):
        config = fast_config(str(folder), shard_refs=2, out=str(tmp_path / f"a{actors}"),
                             ensemble_file=str(ensemble))
        generate(config, ClusterOptions(actors=actors))
        outs.append(config)
    assert _digests(outs[0].out) == _digests(outs[1].out)
    stats_before = Location.parse(outs[0].out).read_bytes(
        shard_paths(Location.parse(outs[0].out), 0)["stats"])
    capsys.readouterr()
    generate(outs[0], ClusterOptions(actors=1))
    assert ("resuming: 2 of 2 shards done (their 2 tar(s) kept by their sizes, their indexes "
            "and lists by their SHA-256; --verify hashes the tars too, reading them all)"
            ) in capsys.readouterr().out
    generate(outs[0], ClusterOptions(actors=1, verify=True))
    assert ("resuming: 2 of 2 shards done (their 2 tar(s), indexes and lists kept by their "
            "SHA-256)\n") in capsys.readouterr().out
    assert Location.parse(outs[0].out).read_bytes(
        shard_paths(Location.parse(outs[0].out), 0)["stats"]) == stats_before


def test_the_probe_refuses_unreachable_sources_and_outputs(local_ray, shifted_sources,
                                                           fast_config, tmp_path):
    folder, _ = shifted_sources(2)
    config = fast_config(str(folder))
    plan = Plan.make(list_sources(config.sources), config)
    fine, blocked = tmp_path / "fine", tmp_path / "blocked"
    leases = [Lease(Location.parse(str(out))) for out in (fine, blocked)]
    for lease in leases:
        lease.acquire()
    try:
        holder = leases[0].identity()
        check_reachable(plan, config.sources, str(fine), holder)  # readable, writable, its lease
        assert list((fine / "shards").iterdir()) == []  # the probe's file deleted
        (blocked / "shards").write_text("a file where shards are written")
        with pytest.raises(UnreachableStorageError, match=r"OUT .*blocked.*shards"):
            check_reachable(plan, config.sources, str(blocked), leases[1].identity())
        # OUT on the driver's machine only: a worker node sees another folder, without the lease
        with pytest.raises(UnreachableStorageError,
                           match=r"lease is gone \(.*this node does not share the folder"):
            check_reachable(plan, config.sources, str(tmp_path / "elsewhere"), holder)
        assert not (tmp_path / "elsewhere").exists()  # nothing written where the lease is not
        with pytest.raises(UnreachableStorageError, match="another driver holds its lease"):
            check_reachable(plan, config.sources, str(fine), leases[1].identity())
    finally:
        for lease in leases:
            lease.release()
    # a source the worker cannot read (here: gone after the driver chose it) is refused
    gone = PlannedReference("gone", str(tmp_path / "gone.png"), "gone.png", "train")
    _, problems = ray.get(probe_storage.remote(gone, config.sources, str(fine), holder))
    assert problems[0] == f"SOURCES: unreadable: {gone.uri}: no such file"
    # a source the driver cannot read either is a bad source, recorded as its shard meets it:
    # the probe reads the first one the driver can (a dangling link sorts first here)
    (tmp_path / "0dangling.png").symlink_to(tmp_path / "nowhere.png")
    dangling = PlannedReference("0dangling", str(tmp_path / "0dangling.png"), "", "train")
    bad_first = Plan(plan.inputs, (gone, dangling, *plan.references))
    assert probe_subject(bad_first, config.sources) == plan.references[0]
    assert probe_subject(Plan(plan.inputs, (gone, dangling)), config.sources) is None


def test_learned_denoiser_on_the_actors_gives_the_same_bytes(local_ray, shifted_sources,
                                                             fast_config, tmp_path):
    # On a cluster with GPUs the denoiser network runs on the labeler actors; forced here on the
    # CPU, that route must give the same samples as running them in the shard task.
    folder, ensemble = shifted_sources(2)
    digests = []
    for on_actors in (False, True):
        config = fast_config(str(folder), distortion_ids=(1, 8, 11), levels=(1, 5),
                             out=str(tmp_path / f"actors-{on_actors}"),
                             ensemble_file=str(ensemble))
        report = generate(config, ClusterOptions(actors=1, denoise_on_actors=on_actors))
        assert report["failures"] == 0
        digests.append(_digests(config.out))
    assert digests[0] == digests[1] and digests[0]
    deadline = time.monotonic() + 30  # task events reach the state API asynchronously
    while not _actor_denoising_calls() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _actor_denoising_calls(), "the denoised types never went through the actors"


def _actor_denoising_calls() -> list:
    return list_tasks(filters=[("name", "=", "LabelerActor.denoise")])


def test_a_label_free_run_with_k_versions_starts_no_labeler_actor(local_ray, shifted_sources,
                                                                  fast_config):
    folder, _ = shifted_sources(2)
    config = fast_config(str(folder), shard_refs=1, metrics=(), versions_per_ref=2)
    report = generate(config, ClusterOptions())
    assert report["scheduling"]["actors"] == 0 and report["scheduling"]["actor_calls"] == []
    assert report["modes"]["labels"] == "none" and report["modes"]["versions_per_ref"] == 2
    assert report["samples"] == 2 * (1 + 2)
    index = read_index(Location.parse(config.out)).to_pylist()
    assert all(row["quality"] is None and row["scores"] is None for row in index)
    lines, problems = inspect(config.out, deep=2)
    assert problems == [] and any("labels none" in line for line in lines)
    assert "label-free: nothing to re-score" in lines[-1]
