"""Before any work on a cluster: check from every worker node that SOURCES can be read, that
OUT is the folder the driver holds (its lease is seen there) and that shards can be written
in it, so a path only the driver's node can see fails at once with a clear error."""

import uuid
from itertools import islice

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pipeline.errors import UnreachableStorageError
from pipeline.plan import Plan, PlannedReference
from pipeline.sources import open_source
from shards.layout import SHARDS_DIR
from shards.lease import writer_refusal
from shards.storage import STAGED_SUFFIX, Location, redact

PROBE_CANDIDATES = 8  # sources the driver tries to read for the probe before probing none


def readable(uri: str, key: str, store: str) -> None:
    """Open the source and read its first byte (never the whole of a large one); DecodeError
    where it cannot be read."""
    with open_source(uri, key, store) as stream:
        stream.read(1)


@ray.remote(num_cpus=0, max_retries=0)
def probe_storage(first: PlannedReference | None, store: str, out: str,
                  holder: dict) -> tuple[str, list[str]]:
    """(this node's address, problems found) after reading a source, finding the lease of the
    driver `holder` names in OUT and writing a file where shards are written."""
    problems = []
    if first is not None:
        try:
            readable(first.uri, first.key, store)
        except ValueError as error:
            problems.append(f"SOURCES: {error}")
    location = Location.parse(out)
    if problem := writer_refusal(location, holder) or _write_problem(location):
        problems.append(f"OUT {redact(out)}: {problem}")
    return ray.util.get_node_ip_address(), problems


def _write_problem(location: Location) -> str | None:
    """Why a file cannot be written in OUT/shards/ (its name staged: a probe stopped before
    deleting it is removed with writers' leftovers at the next start)."""
    probe = location.path(SHARDS_DIR, f"probe-{uuid.uuid4().hex[:12]}{STAGED_SUFFIX}")
    try:
        location.makedirs(location.path(SHARDS_DIR))
        location.write_bytes(probe, b"probe")
        location.delete(probe)
    except OSError as error:
        return str(error)
    return None


def _worker_nodes() -> list[str | None]:
    """The live nodes other than the driver's (None, the driver's own, where it is alone)."""
    here = ray.get_runtime_context().get_node_id()
    others = [node["NodeID"] for node in ray.nodes() if node["Alive"] and node["NodeID"] != here]
    return others or [None]


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


def check_reachable(plan: Plan, sources: str, out: str, holder: dict) -> None:
    """Raise UnreachableStorageError unless every worker node can read SOURCES (a source the
    driver reads), sees the lease of the driver `holder` names in OUT (Lease.identity) and
    can write OUT's shards."""
    first = probe_subject(plan, sources)
    probes = [probe_storage.options(**_placed_on(node)).remote(first, sources, out, holder)
              for node in _worker_nodes()]
    found = [f"from worker node {address}: {'; '.join(problems)}"
             for address, problems in ray.get(probes) if problems]
    if found:
        raise UnreachableStorageError(
            f"{'. '.join(found)}. On a cluster, SOURCES and OUT must be object-store URIs "
            "(s3://, gs://) or a mount every node shares.")


def _placed_on(node: str | None) -> dict:
    return ({"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}
            if node else {})
