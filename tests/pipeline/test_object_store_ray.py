"""The object-store branches against a real S3-compatible server (moto's, in this process):
sources listed and read as (filesystem, key) pairs, so keys with a space, ?, # or % read the
right object; shards, stats and run files written to S3; the lease taken with a conditional
put; credentials in the URIs never reach a file the run writes."""

import gzip
import io
import json
import threading

import boto3
import numpy as np
import pytest
from moto.server import ThreadedMotoServer
from PIL import Image

from pipeline.driver import ClusterOptions, generate
from pipeline.inspect_dataset import inspect
from pipeline.lease import Lease, LeaseHeldError
from pipeline.sources import list_sources, load
from shards import open_dataset
from shards.reader import complete_shards, read_index
from shards.storage import Location

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ACCESS, SECRET = "AKIAIQAFACTORYTEST", "S3cr3t-iqa-factory-test"
BUCKET = "iqa-test"
ODD_KEYS = ("a b.png", "q?x.png", "h#1.png", "p%41.png")


@pytest.fixture(scope="module")
def s3():
    """(boto3 client, uri(prefix) -> an s3:// URI with credentials and the server's endpoint)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    client = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                          aws_access_key_id=ACCESS, aws_secret_access_key=SECRET)
    client.create_bucket(Bucket=BUCKET)

    def uri(prefix: str) -> str:
        return (f"s3://{ACCESS}:{SECRET}@{BUCKET}/{prefix}?endpoint_override={host}:{port}"
                "&scheme=http&region=us-east-1")
    yield client, uri
    server.stop()


def _upload_odd_sources(client, small_image, prefix: str) -> dict[str, np.ndarray]:
    """One distinct image under each odd key; returns the pixels by key."""
    images = {}
    for i, name in enumerate(ODD_KEYS):
        pixels = np.roll(small_image, 31 * i + 5, axis=1)
        encoded = io.BytesIO()
        Image.fromarray(pixels).save(encoded, "PNG")
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/{name}", Body=encoded.getvalue())
        images[name] = pixels
    return images


def test_odd_keys_are_listed_and_read_as_listed(s3, small_image):
    client, uri = s3
    images = _upload_odd_sources(client, small_image, "listing")
    sources = list_sources(uri("listing"))
    assert sorted(s.order_key for s in sources) == sorted(ODD_KEYS)
    for source in sources:  # before: a space or ? raised ArrowInvalid, # and % read elsewhere
        pixels = load(source, store=uri("listing")).pixels
        assert np.array_equal(pixels, images[source.order_key])
        assert SECRET not in source.uri and ACCESS not in source.uri


def _every_object(client, prefix: str) -> dict[str, bytes]:
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {item["Key"]: client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
            for item in listed}


def test_generate_from_s3_to_s3_reads_odd_keys_and_writes_no_credential(
        s3, local_ray, small_image, fast_config, mae_ensemble, tmp_path, capsys):
    client, uri = s3
    _upload_odd_sources(client, small_image, "sources")
    ensemble = tmp_path / "ensemble.json"
    mae_ensemble.save(ensemble)
    out = uri("out")
    config = fast_config(uri("sources"), out=out, shard_refs=3, ensemble_file=str(ensemble))
    report = generate(config, ClusterOptions(actors=1))
    assert report["sources_ok"] == len(ODD_KEYS) and report["failures"] == 0
    location = Location.parse(out)
    assert complete_shards(location) == [0, 1]
    assert inspect(out)[1] == []
    index = read_index(location)
    assert len(index) == len(ODD_KEYS) * (1 + len(config.scenarios))
    written = _every_object(client, "out/")
    assert "out/generate.lease" not in written  # released at the end
    assert json.loads(written["out/manifest.json"])
    leaked = [key for key, data in written.items() if SECRET.encode() in data
              or ACCESS.encode() in data]
    assert leaked == []
    printed = capsys.readouterr()
    assert SECRET not in printed.out + printed.err


def test_the_s3_lease_admits_one_driver_even_in_the_same_instant(s3):
    _, uri = s3
    location = Location.parse(uri("leased"))
    racers, wins = 8, []
    start = threading.Barrier(racers)

    def race(k: int) -> None:
        start.wait()
        if location.create_exclusive(location.path("race"), str(k).encode()):
            wins.append(k)
    threads = [threading.Thread(target=race, args=(k,)) for k in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
    assert location.read_bytes(location.path("race")) == str(wins[0]).encode()

    first = Lease(location)
    first.acquire()
    with pytest.raises(LeaseHeldError, match="being written by another driver"):
        Lease(location).acquire()
    first.release()
    second = Lease(location)
    second.acquire()  # free again once released
    second.release()  # (and its refresh thread stopped before the server goes)


def test_a_recipes_run_on_s3_writes_each_tar_gzipped_once(s3, local_ray, small_image,
                                                          fast_config, mae_ensemble, tmp_path):
    client, uri = s3
    _upload_odd_sources(client, small_image, "recipe-sources")
    ensemble = tmp_path / "ensemble.json"
    mae_ensemble.save(ensemble)
    out = uri("recipes")
    config = fast_config(uri("recipe-sources"), out=out, shard_refs=3,
                         ensemble_file=str(ensemble), store="recipes")
    assert generate(config, ClusterOptions(actors=1))["failures"] == 0
    assert inspect(out)[1] == []  # tar sizes and SHA-256 as the stats say: the stored bytes
    tars = {key: data for key, data in _every_object(client, "recipes/").items()
            if ".tar" in key}
    assert sorted(tars) == ["recipes/shards/00000.tar.gz", "recipes/shards/00001.tar.gz"]
    for data in tars.values():  # gzip's magic once: inflated, a plain tar (ustar at 257)
        assert data[:2] == b"\x1f\x8b" and gzip.decompress(data)[257:262] == b"ustar"
    replayed = list(open_dataset(out).samples(kind="distorted"))
    assert len(replayed) == len(ODD_KEYS) * len(config.scenarios)
