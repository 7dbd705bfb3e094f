"""The cluster files parse and keep their promises: a head, CPU and GPU workers, the project
installed on every node, a dashboard never exposed publicly, Ray's token authentication on
every node and container, pinned images, a NetworkPolicy that admits only the cluster's own
pods and the operator, and a RayJob whose driver finds the weights it checks."""

import importlib.metadata
import re
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
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert any("pip install -e" in command for command in config["setup_commands"])
    assert any("torch/hub/checkpoints" in target for target in config["file_mounts"])
    if config["provider"]["type"] != "local":
        assert config["head_node_type"] in config["available_node_types"]
        assert {"cpu_worker", "gpu_worker"} <= set(config["available_node_types"])


@pytest.mark.parametrize("name", LAUNCHERS)
def test_ray_up_would_accept_each_launcher_file(name):
    """What `ray up` does first, offline: Ray's own prepare_config and validate_config (an
    on-prem file naming its node types skipped the local provider's defaults and failed)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(yaml.safe_load((CLUSTER / name).read_text())))


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_cloud_workers_declare_their_resources_and_all_start(name):
    """Ray fills a node type's resources in on AWS and Kubernetes only: declared here, so the
    scheduler knows a GPU worker's GPU on every cloud. generate sizes its actors and tasks to
    the nodes up when it starts and never queues work that would make the autoscaler add
    more, so every worker starts with the cluster (min_workers = max_workers). A labelled run
    is bound by labelling, which a GPU node's own CPUs outpace: GPU nodes only, by default."""
    types = yaml.safe_load((CLUSTER / name).read_text())["available_node_types"]
    assert types["cpu_worker"]["resources"] == {"CPU": 16}
    assert types["gpu_worker"]["resources"] == {"CPU": 16, "GPU": 1}
    assert types["cpu_worker"]["min_workers"] == types["cpu_worker"]["max_workers"] == 0
    assert types["gpu_worker"]["min_workers"] == types["gpu_worker"]["max_workers"] > 0


@pytest.mark.parametrize("name", LAUNCHERS)
def test_every_launcher_head_runs_no_shard_task(name):
    """The head holds Ray's control processes and the driver. A cloud head type declares CPU 0,
    which Ray starts it with; the local provider declares no resources (Ray's own preparation
    of the file shows it), so the on-prem head says so itself, or Ray counts its CPUs."""
    from ray.autoscaler._private.util import prepare_config

    config = prepare_config(yaml.safe_load((CLUSTER / name).read_text()))
    declared = config["available_node_types"][config["head_node_type"]]["resources"]
    [start] = [command for command in config["head_start_ray_commands"]
               if "ray start --head" in command]
    if config["provider"]["type"] == "local":
        assert declared == {} and "--num-cpus=0" in start.split()
    else:
        assert declared["CPU"] == 0


def test_the_gcp_gpu_workers_scheduling_is_one_object_that_stops_them_for_maintenance():
    """Ray's GCP provider sends a node_config as the Compute API's instance body, whose
    `scheduling` is an object (a list is refused); a VM with a GPU cannot live-migrate."""
    types = yaml.safe_load((CLUSTER / "gcp.yaml").read_text())["available_node_types"]
    for node_type in types.values():
        config = node_type["node_config"]
        if "scheduling" in config or "guestAccelerators" in config:
            assert config["scheduling"] == {"onHostMaintenance": "TERMINATE"}


def _disk_gb(node_config: dict) -> int:
    """The boot disk a launcher's node type asks for (AWS or GCP), in GB."""
    if "BlockDeviceMappings" in node_config:
        return node_config["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"]
    return node_config["disks"][0]["initializeParams"]["diskSizeGb"]


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_every_cloud_node_has_disk_for_the_install_and_the_spill(name):
    """torch's CUDA wheels take several GB and each of 15 shard tasks spills some 1 GB (a
    default shard's encoded versions): an AMI's default 8 GB root volume would fill."""
    types = yaml.safe_load((CLUSTER / name).read_text())["available_node_types"]
    for node_type in types.values():
        assert _disk_gb(node_type["node_config"]) >= 100


@pytest.mark.parametrize("name", LAUNCHERS)
def test_every_node_installs_into_a_python_3_11_first_on_the_path(name):
    """The project pins Python 3.11; a stock image's python3 is another (Ubuntu 22.04's 3.10,
    24.04's 3.12). Ray runs every command through an interactive shell that reads ~/.bashrc,
    so the venv put first on PATH there is what `ray`, `pip` and the job's `python` are."""
    commands = yaml.safe_load((CLUSTER / name).read_text())["setup_commands"]
    venv = next(i for i, command in enumerate(commands) if "--python 3.11" in command)
    on_path = next(i for i, command in enumerate(commands)
                   if ".bashrc" in command and "iqa-venv/bin:$PATH" in command)
    install = next(i for i, command in enumerate(commands) if "pip install -e" in command)
    assert venv < on_path < install and "iqa-venv" in commands[venv]


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
def test_the_head_runs_no_shard_task_and_workers_have_room_to_spill(name):
    """The head pod holds Ray's control processes and the driver: shard tasks (each some
    hundreds of MB and 1 GB of spill) there could take the whole cluster down with it. GPU
    pods only by default, as the launcher files."""
    spec = _cluster_spec(_documents(name))
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    for group in spec["workerGroupSpecs"]:
        [container] = group["template"]["spec"]["containers"]
        assert _quantity(container["resources"]["requests"]["ephemeral-storage"]) >= 40 * 2**30
        if "nvidia.com/gpu" not in container["resources"]["limits"]:
            assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 0


@pytest.mark.parametrize("name", KUBERAY)
def test_every_worker_group_starts_whole_with_the_cluster(name):
    """generate sizes itself to the pods up at its start and never queues work, so a group's
    maxReplicas above its replicas would never be reached (no in-tree autoscaling): min = max."""
    for group in _cluster_spec(_documents(name))["workerGroupSpecs"]:
        assert group["replicas"] == group["minReplicas"] == group["maxReplicas"]


@pytest.mark.parametrize("name", KUBERAY)
def test_every_ray_container_authenticates_with_a_secret_token_and_a_pinned_image(name):
    # the operator sends the token to the dashboard (a RayJob's status) only under authOptions
    assert _cluster_spec(_documents(name))["authOptions"] == {
        "mode": "token", "secretName": "iqa-factory-ray-token"}
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


def _quantity(text: str) -> float:
    units = {"Gi": 2**30, "Mi": 2**20, "m": 1e-3}
    for suffix, factor in units.items():
        if str(text).endswith(suffix):
            return float(str(text)[: -len(suffix)]) * factor
    return float(text)


@pytest.mark.parametrize("name", KUBERAY)
def test_ray_pods_request_less_than_the_node_they_are_sized_for(name):
    """Without requests Kubernetes requests the limits, and a pod of a 16-CPU node's 16 CPUs
    never fits one: the kubelet, the system and the daemon sets hold part of it (Allocatable).
    Each Ray container requests less than its limits (Ray counts the limits), the GPU alike."""
    spec = _cluster_spec(_documents(name))
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:
        [container] = group["template"]["spec"]["containers"]
        resources = container["resources"]
        for kind in ("cpu", "memory"):
            assert _quantity(resources["requests"][kind]) < _quantity(resources["limits"][kind])
        assert resources["requests"].get("nvidia.com/gpu") == resources["limits"].get(
            "nvidia.com/gpu")


@pytest.mark.parametrize("name", KUBERAY)
def test_the_cluster_runs_the_ray_version_the_project_pins(name):
    """A driver joins only a cluster of its own Ray version: the operator's rayVersion and
    the image comment's rayproject tag are pyproject's pin, which is what is installed."""
    pinned = re.search(r'"ray\[default\]==([\d.]+)"',
                       (CLUSTER.parent / "pyproject.toml").read_text()).group(1)
    assert pinned == importlib.metadata.version("ray")
    assert _cluster_spec(_documents(name))["rayVersion"] == pinned
    # the image to build from: Ray's GPU image (CUDA for the GPU pods), the same everywhere
    image = {f"{pinned}-py311-gpu"}
    text = (CLUSTER / name).read_text()
    assert set(re.findall(r"rayproject/ray:([\w.-]+)", text)) <= image
    assert set(re.findall(r"rayproject/ray:([\w.-]+)",
                          (CLUSTER / "README.md").read_text())) == image
