"""The cluster files parse and keep their promises: a head, CPU and GPU workers, the project
installed on every node, and a dashboard that is never exposed publicly."""

from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
LAUNCHERS = ["aws.yaml", "gcp.yaml", "onprem.yaml"]


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_files(name):
    config = yaml.safe_load((CLUSTER / name).read_text())
    assert config["head_node_type"] in config["available_node_types"]
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert any("pip install -e" in command for command in config["setup_commands"])
    assert any("torch/hub/checkpoints" in target for target in config["file_mounts"])
    if config["provider"]["type"] != "local":
        assert {"cpu_worker", "gpu_worker"} <= set(config["available_node_types"])


@pytest.mark.parametrize("name", ["kuberay-raycluster.yaml", "kuberay-rayjob.yaml"])
def test_kuberay_manifests(name):
    manifest = yaml.safe_load((CLUSTER / name).read_text())
    spec = manifest["spec"] if manifest["kind"] == "RayCluster" else manifest["spec"][
        "rayClusterSpec"]
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"
    gpu_groups = [group for group in spec["workerGroupSpecs"]
                  if "nvidia.com/gpu" in group["template"]["spec"]["containers"][0]
                  ["resources"]["limits"]]
    assert gpu_groups
    if manifest["kind"] == "RayJob":
        assert manifest["spec"]["entrypoint"].startswith("iqa-factory generate")
