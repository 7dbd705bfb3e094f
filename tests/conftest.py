"""Shared fixtures: small images the tests make or the project commits."""

import hashlib
import io
import json
import os
import signal
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shards.layout import STORE_MODES

# the marks of a test of the GPU's own (`pytest -m gpu`: the device check runs them), skipped
# where torch sees no CUDA device: a test's `pytestmark`, a parameter's marks, or `on_cuda`
ON_CUDA = [pytest.mark.gpu,
           pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


class _SignalledAsItIsFreed:
    def __init__(self, signum: signal.Signals):
        self.signum = signum

    def __del__(self):
        signal.raise_signal(self.signum)


def lose_a_signal(signum: signal.Signals = signal.SIGTERM) -> None:
    """`signum` raised in a finalizer: a handler's KeyboardInterrupt is raised there, where
    Python prints "Exception ignored" and drops it (as where SIGTERM lands while the garbage
    collector frees a progress bar)."""
    _SignalledAsItIsFreed(signum)  # freed at once, in this line


def on_cuda(test):
    """`test` marked ON_CUDA."""
    for mark in ON_CUDA:
        test = mark(test)
    return test


def local_scorer(labeler):
    """pipeline.worker's score_images answered by a Labeler in this process, as the labeler
    actor answers a shard task's calls (the Ray-free worker's tests)."""
    def score_images(ref: np.ndarray, versions: np.ndarray, on_labelled, ref_id: str) -> dict:
        return dict(labeler.score(ref, versions, on_labelled))
    return score_images


DATA = Path(__file__).parent / "data"
MINIMUM_IMAGE = DATA / "astronaut_192x176.png"


@dataclass(frozen=True)
class S3Bucket:
    """A bucket on a local moto S3 server: the boto3 client and the credentials it uses."""

    client: object
    name: str
    access: str
    secret: str
    endpoint: str  # host:port
    server: object = None  # moto's ThreadedMotoServer (its WSGI app sees every request)

    def uri(self, prefix: str) -> str:
        """An s3:// URI of `prefix` with the credentials and the server's endpoint."""
        return (f"s3://{self.access}:{self.secret}@{self.name}/{prefix}"
                f"?endpoint_override={self.endpoint}&scheme=http&region=us-east-1")


@pytest.fixture(scope="module")
def s3_bucket():
    """An empty bucket on moto's S3 server, running for the test module."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    access, secret, name = "AKIAIQAFACTORYTEST", "S3cr3t-iqa-factory-test", "iqa-test"
    client = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                          aws_access_key_id=access, aws_secret_access_key=secret)
    client.create_bucket(Bucket=name)
    yield S3Bucket(client, name, access, secret, f"{host}:{port}", server)
    server.stop()


@pytest.fixture(scope="session")
def small_image() -> np.ndarray:
    """The committed 192 x 176 crop of skimage's astronaut (the bank's minimum size)."""
    with Image.open(MINIMUM_IMAGE) as image:
        return np.asarray(image.convert("RGB")).copy()


@pytest.fixture(scope="session")
def embedded_small() -> dict[str, np.ndarray]:
    """The five embedded photos at 256 x 192 (cover and centre-crop)."""
    from pipeline.embedded import EMBEDDED_PHOTOS, embedded_photo
    from pipeline.sizing import TargetSize, cover_and_crop

    size = TargetSize(256, 192)
    return {name: cover_and_crop(embedded_photo(name), size) for name in EMBEDDED_PHOTOS}


@pytest.fixture(scope="session")
def store_datasets(tmp_path_factory) -> dict[str, Path]:
    """The same run generated in each storage mode (--store images, recipes, hybrid, and
    "hybrid_kept": hybrid --keep-pngs 26) by the real shard worker: 3 embedded photos at
    192 x 176 x (JPEG, the learned white-noise denoiser, colour block) x levels 1 and 5, in 2
    shards, with their manifests and merged sources. {mode: dataset folder}."""
    from labelers import Labeler
    from labelers.ensemble import Ensemble, Mapping01
    from pipeline.config import RunConfig
    from pipeline.plan import Plan, persist_or_check
    from pipeline.report import write_run_files
    from pipeline.sizing import TargetSize
    from pipeline.sources import list_sources
    from pipeline.worker import produce_shard
    from shards.storage import Location

    base = tmp_path_factory.mktemp("stores")
    ensemble = Ensemble("test", {"mae": 1.0}, {"mae": Mapping01("linear", best=0.0, worst=0.2)})
    scorer = local_scorer(Labeler(metrics=("mae",), device="cpu"))
    made = {}
    variants = {**{store: (store, ()) for store in STORE_MODES}, "hybrid_kept": ("hybrid", (26,))}
    for name, (store, keep_pngs) in variants.items():
        config = RunConfig(sources="embedded", out=str(base / name), seed=3,
                           size=TargetSize(192, 176), shard_refs=2, limit=3,
                           distortion_ids=(1, 8, 26), levels=(1, 5), metrics=("mae",),
                           store=store, keep_pngs=keep_pngs)
        plan = Plan.make(list_sources("embedded"), config)
        location = Location.parse(config.out)
        persist_or_check(plan, location)
        write_run_files(location, config, plan, ensemble, ())
        for index in range(plan.shard_count):
            produce_shard(index, plan, config, scorer, ensemble, location)
        finish(location, plan, config)
        made[name] = base / name
    return made


def finish(location, plan, config) -> dict:
    """What generate's end writes once every shard is made: the merged run files and
    report.json (a relabel or convert refuses a dataset without it). Returns the report."""
    from pipeline.report import build_report, merge

    report = build_report(merge(location, plan), 1.0, (), config.modes())
    location.write_json(location.path("report.json"), report)
    return report


def rewrite_tar(tar: Path, change=None, order=None, keep=None) -> None:
    """Rewrite a shard tar (gzipped or not) with tarfile: each member's bytes become
    change(its name, its bytes) (kept where `change` is None), in the order `order` (a sort
    key of member names) or their own, without the members whose name `keep` (a predicate)
    refuses; its stats then agree with the new bytes."""
    with tarfile.open(tar) as archive:
        members = [(m, archive.extractfile(m).read()) for m in archive.getmembers()
                   if keep is None or keep(m.name)]
    if order is not None:
        members.sort(key=lambda item: order(item[0].name))
    mode = "w:gz" if tar.suffix == ".gz" else "w"
    with tarfile.open(tar, mode, format=tarfile.GNU_FORMAT) as archive:
        for member, data in members:
            data = data if change is None else change(member.name, data)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    stats_agree(tar)


def stats_agree(shard_file: Path) -> None:
    """Make the stats of a rewritten shard tar or parquet index record its new size and
    SHA-256, as if its writer had written those bytes (what a damaged-shard check cannot tell
    from a good shard)."""
    stats_path = shard_file.parent / f"{shard_file.name.partition('.')[0]}_stats.json"
    stats = json.loads(stats_path.read_text())
    data = shard_file.read_bytes()
    kind = "parquet" if shard_file.suffix == ".parquet" else "tar"
    stats.update({f"{kind}_bytes": len(data), f"{kind}_sha256": hashlib.sha256(data).hexdigest()})
    stats_path.write_text(json.dumps(stats))


def stats_before_index_digests(parquet: Path) -> None:
    """Make the stats of a shard whose parquet index was rewritten as an older writer wrote
    them: without the index's size and SHA-256 (what shards made before they did hold)."""
    stats_path = parquet.with_name(f"{parquet.stem}_stats.json")
    stats = json.loads(stats_path.read_text())
    stats_path.write_text(json.dumps({key: value for key, value in stats.items()
                                      if key not in ("parquet_bytes", "parquet_sha256")}))


RAY_DRIVER_THREAD = "gcs_client_io_s"  # (gcs_client_io_service, its name cut to 15 characters)


def ray_ran_here() -> bool:
    """Whether a Ray driver ran in this process: ray.shutdown leaves its native threads (this
    one among them; False where /proc cannot tell)."""
    for comm in Path("/proc/self/task").glob("*/comm"):
        try:
            if comm.read_text().strip() == RAY_DRIVER_THREAD:
                return True
        except OSError:  # a thread that ended meanwhile
            continue
    return False


def pytest_collection_modifyitems(items) -> None:
    """The tests marked `ray` (a local Ray instance started in this process) run last: the
    others fork DataLoader workers, and a fork from a process that holds Ray's leftover
    threads died once of a heap abort in a child (glibc: "malloc(): unaligned fastbin chunk
    detected", CI of stop 67). A user's `iqa-factory train` never runs Ray."""
    items.sort(key=lambda item: item.get_closest_marker("ray") is not None)  # (stable)


@pytest.fixture(autouse=True)
def _ray_only_where_marked(request):
    """A test that starts Ray in this process and is not marked `ray` fails, so that the order
    above holds (it would run among the tests that fork)."""
    if request.node.get_closest_marker("ray") is not None or ray_ran_here():
        yield
        return
    yield
    if ray_ran_here():
        pytest.fail("this test started Ray in the pytest process: mark it `ray`, which runs "
                    "it after the tests that fork DataLoader workers (tests/conftest.py)")


_EXIT_STATUS: list[int] = []
CALIBRATION_SKIP = "calibration file"  # how a skip for want of a calibration pair begins


def pytest_terminal_summary(terminalreporter) -> None:
    """Say at the end how many calibration tests skipped for want of the pairs (kept outside the
    repository): a green run without them has not checked the labels' calibration."""
    reasons = [str(report.longrepr[-1]) for report in terminalreporter.stats.get("skipped", [])
               if isinstance(report.longrepr, tuple) and CALIBRATION_SKIP in str(report.longrepr)]
    if reasons:
        terminalreporter.write_line(
            f"note: {len(reasons)} calibration test(s) skipped, the labels' calibration unchecked "
            f"in this run: {reasons[0].removeprefix('Skipped: ')}", yellow=True)


def pytest_sessionfinish(session, exitstatus) -> None:
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config) -> None:
    """End the process with pytest's own status once everything is reported, skipping the
    interpreter's teardown: a full run once passed every test, then segfaulted while native
    libraries (torch, Ray, a test's server threads) were torn down, and make saw a failure."""
    if _EXIT_STATUS and not hasattr(config, "workerinput"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
