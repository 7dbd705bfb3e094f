"""The run's layout on a cluster's resources, and the concurrency the driver really keeps on a
node declared as 16 CPUs + 1 GPU (counted by the driver and the actor, never timed)."""

from pathlib import Path

import pytest
import ray
import torch

from pipeline.driver import ClusterOptions, generate
from pipeline.scheduling import layout, layout_line

GPU_CALLS_AT_ONCE = 2  # the README: the GPU labeler actor serves "two calls at once"


def test_a_gpu_node_keeps_every_other_cpu_distorting():
    node = layout(cpus=16, gpus=1)
    assert (node.actors, node.concurrency, node.in_flight) == (1, GPU_CALLS_AT_ONCE, 15)
    assert node.actor_resources == {"num_gpus": 1, "num_cpus": 1}
    assert node.overlap  # labels on the GPU: each shard makes its next reference meanwhile


def test_eight_gpu_nodes_scale_both_pools():
    cluster = layout(cpus=8 * 16, gpus=8)
    assert (cluster.actors, cluster.in_flight) == (8, 8 * 16 - 8)


def test_cpu_only_machines_split_the_cores_between_labels_and_distortion():
    small = layout(cpus=2, gpus=0)
    assert (small.actors, small.concurrency, small.in_flight) == (1, 1, 1)
    assert not small.overlap  # its torch threads use every core while the shards wait
    assert not layout(cpus=2, gpus=0, labelled=False).overlap  # nothing to wait on
    big = layout(cpus=16, gpus=0)
    actor_cpus = big.actors * big.actor_resources["num_cpus"]
    assert big.actors == 4 and actor_cpus + big.in_flight == 16


@pytest.mark.parametrize("cpus", [2, 4, 16, 64])
def test_cpu_actors_torch_threads_together_use_every_core(cpus):
    """The module's rule: without GPUs labelling is the bottleneck and "the actors' torch
    threads use every core" (a GPU actor, which only feeds its GPU, keeps one thread)."""
    cpu_only = layout(cpus=cpus, gpus=0)
    assert cpu_only.actors * cpu_only.threads == cpus
    assert layout(cpus=16, gpus=1).threads == 1


def test_the_log_says_what_the_run_found_and_that_later_nodes_go_unused():
    """A run is sized once, at its start (Ray's autoscaler sees no queued demand): the log
    names the resources and the layout, and a cluster without a GPU yet is pointed out."""
    gpu = layout_line({"CPU": 16.0, "GPU": 1.0}, layout(cpus=16, gpus=1))
    assert gpu == ("the cluster has 16 CPUs and 1 GPUs now: 1 labeler actor(s) on GPU, 15 "
                   "shard tasks in flight; nodes that join later are not used")
    cpu = layout_line({"CPU": 2.0}, layout(cpus=2, gpus=0))
    assert "1 labeler actor(s) on CPU" in cpu and "no GPU: labels on CPU" in cpu
    free = layout_line({"CPU": 2.0}, layout(cpus=2, gpus=0, labelled=False))
    assert "no labeler actor (label-free)" in free and "no GPU" not in free


@pytest.mark.parametrize("cpus, gpus, actors", [(1, 0, None), (2, 2, None), (8, 8, None),
                                                 (2, 0, 4), (4, 0, 12), (1, 1, None),
                                                 (16, 1, None), (3, 2, 2)])
def test_the_actors_always_leave_a_whole_cpu_to_the_shard_tasks(cpus, gpus, actors):
    """A shard task takes 1 CPU: actors holding more than cpus - 1 would leave every shard
    pending for ever (a node of 2 CPUs + 2 GPUs once did). And no more shard tasks than the
    CPUs the actors leave: one queued beyond them takes a dead labeler's CPU, and its restart
    waits for ever (test_fault_ray.py: a labeler killed on 2 CPUs)."""
    chosen = layout(cpus=cpus, gpus=gpus, actors=actors)
    held = chosen.actors * chosen.actor_resources["num_cpus"]
    assert cpus - held >= 1 and 1 <= chosen.in_flight <= cpus - held


def test_gpu_actors_hold_a_whole_cpu_or_none_so_some_node_keeps_one():
    """Two nodes of 1 CPU + 1 GPU: half a CPU per actor would leave each node half a CPU,
    and no shard task anywhere; whole CPUs or none leave a node a whole one."""
    for cpus, gpus, per_actor in ((2, 2, 0.0), (3, 2, 1.0), (17, 1, 1.0), (2, 1, 1.0)):
        assert layout(cpus=cpus, gpus=gpus).actor_resources["num_cpus"] == per_actor


def test_more_cpu_actors_than_the_cpus_allow_are_refused_naming_how_many_fit():
    from pipeline.errors import LabelersUnavailableError

    with pytest.raises(LabelersUnavailableError, match=r"--actors 5 on 2 CPUs: .* at most 4 "):
        layout(cpus=2, gpus=0, actors=5)
    assert layout(cpus=2, gpus=0, actors=4).actor_resources == {"num_cpus": 0.25}
    # one CPU: the one actor holds none, asked for or not (the shard tasks take the CPU)
    assert layout(cpus=1, gpus=0, actors=1) == layout(cpus=1, gpus=0)
    with pytest.raises(LabelersUnavailableError, match=r"at most 1 actor\(s\) here"):
        layout(cpus=1, gpus=0, actors=2)


def test_more_gpu_actors_than_gpus_are_refused_at_once():
    """Each holds a whole GPU: an actor more than the GPUs would wait for one until the
    actors' start times out (10 minutes), then fail."""
    from pipeline.errors import LabelersUnavailableError

    with pytest.raises(LabelersUnavailableError, match=r"--actors 4 on 1 GPU\(s\): .* at most 1 "):
        layout(cpus=16, gpus=1, actors=4)
    assert layout(cpus=32, gpus=2, actors=2).actors == 2


def test_a_cpu_actor_holds_no_more_than_a_node_has():
    """Three nodes of 1 CPU: an actor of 2 CPUs (the share the totals allow) would never
    start; one of 1 takes a node, the shard tasks the other two."""
    spread = layout(cpus=3, gpus=0, node_cpus=1)
    assert spread.actor_resources == {"num_cpus": 1} and spread.in_flight == 2
    assert layout(cpus=3, gpus=0).actor_resources == {"num_cpus": 2.0}  # one node of 3
    assert layout(cpus=16, gpus=0, node_cpus=16) == layout(cpus=16, gpus=0)


def test_overrides_win():
    assert layout(cpus=16, gpus=1, actors=1, max_in_flight=3).in_flight == 3
    assert layout(cpus=16, gpus=0, actors=2).actors == 2


def test_more_shard_tasks_in_flight_than_the_actors_leave_cpus_for_is_warned_of():
    """16 CPUs, one GPU actor holding one: 15 tasks run. --max-in-flight 20 is taken, and the
    run's layout line says what it risks; 15 or fewer, or a label-free run, say nothing."""
    resources = {"CPU": 16, "GPU": 1}
    warned = layout_line(resources, layout(cpus=16, gpus=1, max_in_flight=20))
    assert "--max-in-flight 20: more than the 15 the CPUs the actors leave run" in warned
    for quiet in (layout(cpus=16, gpus=1, max_in_flight=15), layout(cpus=16, gpus=1),
                  layout(cpus=16, gpus=1, labelled=False, max_in_flight=20)):
        assert "--max-in-flight" not in layout_line(resources, quiet)


@pytest.fixture
def gpu_node(monkeypatch):
    """A local Ray instance that declares the node the design targets (no GPU is needed: the
    actor's torch sees none and labels on the CPU, as FAKE_GPUS lets it)."""
    from pipeline.driver import FAKE_GPUS

    monkeypatch.setenv(FAKE_GPUS, "1")
    ray.init(num_cpus=16, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.slow
def test_a_16_cpu_1_gpu_node_keeps_15_shards_in_flight(gpu_node, shifted_sources, fast_config):
    folder, ensemble = shifted_sources(18)
    config = fast_config(str(folder), shard_refs=1, distortion_ids=(1,), levels=(1,),
                         metrics=("mae",), ensemble_file=str(ensemble))
    report = generate(config, ClusterOptions())
    scheduling = report["scheduling"]
    assert report["failures"] == 0 and report["samples"] == 18 * 2
    assert scheduling["actors"] == 1
    assert scheduling["actor_resources"] == {"num_gpus": 1, "num_cpus": 1}
    assert scheduling["max_in_flight"] == 15 and scheduling["peak_in_flight"] == 15
    assert scheduling["overlap"]
    [calls] = scheduling["actor_calls"]
    assert calls["calls"] == 18  # one label call per reference; no learned types here
    assert 1 <= calls["peak_concurrent"] <= GPU_CALLS_AT_ONCE


@pytest.mark.ray
@pytest.mark.skipif(torch.cuda.is_available(), reason="torch uses this machine's GPU")
def test_a_labeler_given_a_gpu_torch_cannot_use_stops_the_run_naming_it(tmp_path,
                                                                        shifted_sources,
                                                                        fast_config):
    """A GPU node whose NVIDIA driver is older than torch's CUDA build: Ray gives the actor
    the GPU, torch sees none, and the actor would label on one CPU thread for the whole run.
    The run stops before any shard, naming the actor, its GPU and torch's build."""
    from pipeline.errors import LabelersUnavailableError

    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        folder, ensemble = shifted_sources(1)
        config = fast_config(str(folder), metrics=("mae",), distortion_ids=(1,), levels=(1,),
                             ensemble_file=str(ensemble))
        with pytest.raises(LabelersUnavailableError) as refused:
            generate(config, ClusterOptions())
    finally:
        ray.shutdown()
    message = str(refused.value)
    assert message.startswith("labeler actor 0 holds GPU [")
    assert f"torch {torch.__version__}" in message and "cannot use it" in message
    assert not list(Path(config.out).glob("shards/*.tar"))


def test_a_shard_task_uses_a_labeler_on_its_own_node():
    from pipeline.actors import nearest_labeler

    actors, nodes = ["a", "b", "c"], ["n1", "n2", "n1"]
    assert [nearest_labeler(i, actors, nodes, "n1") for i in range(4)] == ["a", "c", "a", "c"]
    assert nearest_labeler(5, actors, nodes, "n2") == "b"
    # a node without a labeler (a CPU-only node beside GPU nodes): any of them
    assert [nearest_labeler(i, actors, nodes, "n9") for i in range(3)] == actors


@ray.remote(num_gpus=1, num_cpus=0)
class _HoldsTheGpu:
    def ready(self) -> bool:
        return True


@pytest.mark.ray
def test_labelers_the_cluster_cannot_place_fail_with_a_clear_error(gpu_node, shifted_sources,
                                                                   fast_config, monkeypatch):
    from pipeline import driver
    from pipeline.errors import LabelersUnavailableError

    monkeypatch.setattr(driver, "ACTOR_START_SECONDS", 5)
    folder, ensemble = shifted_sources(1)
    config = fast_config(str(folder), metrics=("mae",), ensemble_file=str(ensemble))
    holder = _HoldsTheGpu.remote()  # another job's actor: the labeler's GPU is taken
    ray.get(holder.ready.remote())
    with pytest.raises(LabelersUnavailableError, match="1 labeler actor"):
        generate(config, ClusterOptions(actors=1))


@pytest.mark.ray
def test_a_weight_file_a_labeler_cannot_read_is_named_not_an_actor_death(tmp_path,
                                                                         shifted_sources,
                                                                         fast_config,
                                                                         monkeypatch):
    """Present to the driver's check, unreadable where the actor loads it (a download cut
    short): the run stops before any shard with the file, its SHA-256 and the fix in the
    weights module's words, not Ray's 'actor died' with a traceback."""
    from labelers import weights
    from pipeline.errors import LabelersUnavailableError

    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / weights.BACKBONES["lpips"].filename).write_bytes(b"<html>Access denied</html>")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"TORCH_HOME": str(tmp_path / "torch")}})
    try:
        sources, ensemble = shifted_sources(1)
        config = fast_config(str(sources), metrics=("mae", "lpips"), distortion_ids=(1,),
                             levels=(1,), ensemble_file=str(ensemble))
        with pytest.raises(LabelersUnavailableError) as refused:
            generate(config, ClusterOptions(actors=1))
    finally:
        ray.shutdown()
    message = str(refused.value)
    assert message.startswith("a labeler actor could not load its metrics: ")
    assert str(folder) in message and "is not the published" in message
    assert "iqa-factory weights fetch" in message and "actor died" not in message
    assert not list((tmp_path / "out").glob("shards/*.tar"))
