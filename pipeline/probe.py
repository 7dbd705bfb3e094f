"""Before any work on a cluster: check from a worker node that SOURCES can be read and OUT
written, so a path only the head can see fails at once with a clear error."""

import uuid
from itertools import islice

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pipeline.errors import UnreachableStorageError
from pipeline.plan import Plan, PlannedReference
from pipeline.sources import open_source
from shards.storage import Location, redact

PROBE_CANDIDATES = 8  # sources the driver tries to read for the probe before probing none


def readable(uri: str, key: str, store: str) -> None:
    """Open the source and read its first byte (never the whole of a large one); DecodeError
    where it cannot be read."""
    with open_source(uri, key, store) as stream:
        stream.read(1)


@ray.remote(num_cpus=0, max_retries=0)
def probe_storage(first: PlannedReference | None, store: str, out: str) -> tuple[str, list[str]]:
    """(this node's address, problems found) after reading a source and writing to OUT."""
    problems = []
    if first is not None:
        try:
            readable(first.uri, first.key, store)
        except ValueError as error:
            problems.append(f"SOURCES: {error}")
    location = Location.parse(out)
    probe = location.path(f".probe-{uuid.uuid4().hex}")
    try:
        location.makedirs(location.root)
        location.write_bytes(probe, b"probe")
        location.delete(probe)
    except OSError as error:
        problems.append(f"OUT {redact(out)}: {error}")
    return ray.util.get_node_ip_address(), problems


def _another_node() -> str | None:
    """A live node other than the driver's, when the cluster has one."""
    here = ray.get_runtime_context().get_node_id()
    others = [node["NodeID"] for node in ray.nodes() if node["Alive"] and node["NodeID"] != here]
    return others[0] if others else None


def probe_subject(plan: Plan, sources: str) -> PlannedReference | None:
    """The first source (not embedded, among the first few) that the driver itself can read:
    a worker that cannot read it sees other storage. A source unreadable here too is a bad
    source, recorded with its reason when its shard meets it, not a sign of storage that only
    the driver sees."""
    candidates = (ref for ref in plan.references if not ref.uri.startswith("embedded:"))
    for ref in islice(candidates, PROBE_CANDIDATES):
        try:
            readable(ref.uri, ref.key, sources)
        except ValueError:
            continue
        return ref
    return None


def check_reachable(plan: Plan, sources: str, out: str) -> None:
    """Raise UnreachableStorageError unless a worker node can read SOURCES (a source the driver
    reads) and write OUT."""
    first = probe_subject(plan, sources)
    node = _another_node()
    options = ({"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}
               if node else {})
    address, problems = ray.get(probe_storage.options(**options).remote(first, sources, out))
    if problems:
        raise UnreachableStorageError(
            f"from worker node {address}: {'; '.join(problems)}. On a cluster, SOURCES and OUT "
            "must be object-store URIs (s3://, gs://) or a mount every node shares.")
