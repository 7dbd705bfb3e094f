"""The cluster files parse and keep their promises: a head, CPU and GPU workers, the project
installed on every node, a dashboard never exposed publicly, Ray's token authentication on
every node and container, pinned images, a NetworkPolicy that admits only the cluster's own
pods and the operator, and a RayJob whose driver finds the weights it checks."""

from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
LAUNCHERS = ["aws.yaml", "gcp.yaml", "onprem.yaml"]
KUBERAY = ["kuberay-raycluster.yaml", "kuberay-rayjob.yaml"]
WEIGHTS = "/home/ray/.cache/torch/hub/checkpoints"


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


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launchers_start_every_node_with_token_authentication(name):
    config = yaml.safe_load((CLUSTER / name).read_text())
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        starts = [command for command in commands if "ray start" in command]
        assert starts and all(command.startswith("RAY_AUTH_MODE=token ") for command in starts)
    assert any(target.endswith("/.ray/auth_token") for target in config["file_mounts"])


def _documents(name: str) -> dict:
    return {doc["kind"]: doc for doc in yaml.safe_load_all((CLUSTER / name).read_text())}


def _cluster_spec(documents: dict) -> dict:
    if "RayCluster" in documents:
        return documents["RayCluster"]["spec"]
    return documents["RayJob"]["spec"]["rayClusterSpec"]


def _pod_templates(documents: dict) -> list[dict]:
    spec = _cluster_spec(documents)
    templates = [spec["headGroupSpec"]["template"]]
    templates += [group["template"] for group in spec["workerGroupSpecs"]]
    if "RayJob" in documents:
        templates.append(documents["RayJob"]["spec"]["submitterPodTemplate"])
    return templates


@pytest.mark.parametrize("name", KUBERAY)
def test_kuberay_manifests(name):
    documents = _documents(name)
    spec = _cluster_spec(documents)
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"
    gpu_groups = [group for group in spec["workerGroupSpecs"]
                  if "nvidia.com/gpu" in group["template"]["spec"]["containers"][0]
                  ["resources"]["limits"]]
    assert gpu_groups
    if "RayJob" in documents:
        assert documents["RayJob"]["spec"]["entrypoint"].startswith("iqa-factory generate")


@pytest.mark.parametrize("name", KUBERAY)
def test_every_ray_container_authenticates_with_a_secret_token_and_a_pinned_image(name):
    for template in _pod_templates(_documents(name)):
        for container in template["spec"]["containers"]:
            env = {item["name"]: item for item in container["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]  # never inline
            image, _, tag = container["image"].rpartition(":")
            assert image and tag and tag != "latest"


@pytest.mark.parametrize("name", KUBERAY)
def test_only_the_clusters_own_pods_and_the_operator_reach_it(name):
    documents = _documents(name)
    policy = documents["NetworkPolicy"]["spec"]
    selected = policy["podSelector"]["matchLabels"]
    for template in _pod_templates(documents):  # the policy covers every pod
        assert selected.items() <= template["metadata"]["labels"].items()
    assert policy["policyTypes"] == ["Ingress"]
    [rule] = policy["ingress"]
    peers = rule["from"]
    assert {"podSelector": {"matchLabels": selected}} in peers
    operator = [peer for peer in peers if "namespaceSelector" in peer]
    assert len(peers) == 2 and operator[0]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "kuberay-operator"}
    assert "ports" not in rule and "ipBlock" not in str(peers)


def test_the_rayjob_driver_finds_the_weights_it_checks():
    job = _documents("kuberay-rayjob.yaml")["RayJob"]["spec"]
    head = job["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mounts = [m["mountPath"] for m in head["containers"][0].get("volumeMounts", [])]
    assert WEIGHTS in mounts or "--allow-missing-metrics" in job["entrypoint"]
