"""A worker node dies while it runs shard work; the job still completes with every sample
exactly once (task retries, actor restarts, the final sweep)."""

import threading
import time

import pytest
import ray
from ray.cluster_utils import Cluster
from ray.util.state import list_tasks

from pipeline.driver import ClusterOptions, generate
from pipeline.inspect_dataset import inspect
from shards.reader import read_index
from shards.storage import Location

pytestmark = [pytest.mark.ray, pytest.mark.slow]
WAIT_SECONDS = 180


def _running_shard_tasks_on(node_id: str) -> list:
    return [task for task in list_tasks(filters=[("state", "=", "RUNNING")])
            if task.name.startswith("shard-") and task.node_id == node_id]


def test_losing_a_worker_node_loses_and_duplicates_nothing(shifted_sources, fast_config):
    folder, ensemble = shifted_sources(4)
    config = fast_config(str(folder), shard_refs=1, ensemble_file=str(ensemble),
                         distortion_ids=(1, 8, 13), levels=(1, 3, 5))

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    doomed = cluster.add_node(num_cpus=3)
    ray.init(address=cluster.address)
    try:
        cluster.wait_for_nodes()
        outcome = {}
        run = threading.Thread(target=lambda: outcome.update(
            report=generate(config, ClusterOptions(actors=1, max_in_flight=2))))
        run.start()
        deadline = time.monotonic() + WAIT_SECONDS
        while not _running_shard_tasks_on(doomed.node_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        victims = _running_shard_tasks_on(doomed.node_id)
        assert victims, "no shard task was running on the node before it was removed"
        cluster.remove_node(doomed)
        cluster.add_node(num_cpus=3)
        run.join(WAIT_SECONDS)
        assert not run.is_alive(), "the run did not finish after the node was lost"
    finally:
        ray.shutdown()
        cluster.shutdown()

    per_reference = 1 + len(config.scenarios)
    assert outcome["report"]["samples"] == 4 * per_reference
    keys = read_index(Location.parse(config.out)).column("key").to_pylist()
    assert len(keys) == len(set(keys)) == 4 * per_reference
    assert inspect(config.out)[1] == []
