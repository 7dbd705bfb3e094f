"""The object-store branches against a real S3-compatible server (moto's, in this process):
sources listed and read as (filesystem, key) pairs, so keys with a space, ?, # or % read the
right object; shards, stats and run files written to S3; the lease taken with a conditional
put; credentials in the URIs never reach a file the run writes."""

import gzip
import io
import json
import threading

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from labelers.ensemble import Ensemble, Mapping01
from pipeline import cli
from pipeline.commands.inspect_dataset import inspect
from pipeline.driver import ClusterOptions, generate
from pipeline.sources import list_sources, load
from shards import open_dataset
from shards.lease import Lease, LeaseHeldError
from shards.reader import complete_shards, read_index
from shards.storage import Location

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ODD_KEYS = ("a b.png", "q?x.png", "h#1.png", "p%41.png")


def _upload_odd_sources(s3_bucket, small_image, prefix: str) -> dict[str, np.ndarray]:
    """One distinct image under each odd key; returns the pixels by key."""
    images = {}
    for i, name in enumerate(ODD_KEYS):
        pixels = np.roll(small_image, 31 * i + 5, axis=1)
        encoded = io.BytesIO()
        Image.fromarray(pixels).save(encoded, "PNG")
        s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=f"{prefix}/{name}",
                                    Body=encoded.getvalue())
        images[name] = pixels
    return images


def test_odd_keys_are_listed_and_read_as_listed(s3_bucket, small_image):
    images = _upload_odd_sources(s3_bucket, small_image, "listing")
    sources = list_sources(s3_bucket.uri("listing"))
    assert sorted(s.order_key for s in sources) == sorted(ODD_KEYS)
    for source in sources:  # before: a space or ? raised ArrowInvalid, # and % read elsewhere
        pixels = load(source, store=s3_bucket.uri("listing")).pixels
        assert np.array_equal(pixels, images[source.order_key])
        assert s3_bucket.secret not in source.uri and s3_bucket.access not in source.uri


def test_s3_uris_in_a_list_file_carry_their_size_and_time(s3_bucket, small_image, tmp_path,
                                                          monkeypatch):
    """Each s3:// line of a list file gets its object's size and time (from one listing of
    its folder), so a resume sees it changed; a missing object gets none (its read names it)."""
    _upload_odd_sources(s3_bucket, small_image, "listed")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{s3_bucket.endpoint}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_bucket.access)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_bucket.secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    table = tmp_path / "list.txt"
    names = [*ODD_KEYS, "missing.png"]
    table.write_text("".join(f"s3://{s3_bucket.name}/listed/{name}\n" for name in names))
    told = {source.order_key.rpartition("/")[2]: (source.size, source.mtime_ns)
            for source in list_sources(str(table))}
    for name in ODD_KEYS:
        head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=f"listed/{name}")
        assert told[name] == (head["ContentLength"],
                              int(head["LastModified"].timestamp()) * 1_000_000_000)
    assert told["missing.png"] == (None, None)


def _every_object(s3_bucket, prefix: str) -> dict[str, bytes]:
    client, bucket = s3_bucket.client, s3_bucket.name
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {item["Key"]: client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            for item in listed}


def test_generate_from_s3_to_s3_reads_odd_keys_and_writes_no_credential(
        s3_bucket, local_ray, small_image, fast_config, mae_ensemble, tmp_path, capsys):
    uri = s3_bucket.uri
    _upload_odd_sources(s3_bucket, small_image, "sources")
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
    written = _every_object(s3_bucket, "out/")
    assert "out/generate.lease" not in written  # released at the end
    assert json.loads(written["out/manifest.json"])
    leaked = [key for key, data in written.items() if s3_bucket.secret.encode() in data
              or s3_bucket.access.encode() in data]
    assert leaked == []
    printed = capsys.readouterr()
    assert s3_bucket.secret not in printed.out + printed.err
    # relabelled where it lies: the sidecar written to the bucket, one Q per version
    other = Ensemble("mae-only", {"mae": 1.0}, {"mae": Mapping01("linear", best=0.0,
                                                                 worst=0.5)})
    other.save(tmp_path / "other.json")
    assert cli.main(["relabel", out, "--ensemble", str(tmp_path / "other.json")]) == 0
    with location.fs.open_input_file(location.path(f"labels-{other.hash}.parquet")) as handle:
        labels = pq.read_table(handle).to_pydict()
    distorted = index.filter(pc.equal(index["kind"], "distorted"))
    assert sorted(labels["key"]) == sorted(distorted["key"].to_pylist())
    assert inspect(out)[1] == []  # a sound sidecar


def test_the_s3_lease_admits_one_driver_even_in_the_same_instant(s3_bucket):
    location = Location.parse(s3_bucket.uri("leased"))
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


def test_a_recipes_run_on_s3_writes_each_tar_gzipped_once(s3_bucket, local_ray, small_image,
                                                          fast_config, mae_ensemble, tmp_path):
    uri = s3_bucket.uri
    _upload_odd_sources(s3_bucket, small_image, "recipe-sources")
    ensemble = tmp_path / "ensemble.json"
    mae_ensemble.save(ensemble)
    out = uri("recipes")
    config = fast_config(uri("recipe-sources"), out=out, shard_refs=3,
                         ensemble_file=str(ensemble), store="recipes")
    assert generate(config, ClusterOptions(actors=1))["failures"] == 0
    assert inspect(out)[1] == []  # tar sizes and SHA-256 as the stats say: the stored bytes
    tars = {key: data for key, data in _every_object(s3_bucket, "recipes/").items()
            if ".tar" in key}
    assert sorted(tars) == ["recipes/shards/00000.tar.gz", "recipes/shards/00001.tar.gz"]
    for data in tars.values():  # gzip's magic once: inflated, a plain tar (ustar at 257)
        assert data[:2] == b"\x1f\x8b" and gzip.decompress(data)[257:262] == b"ustar"
    replayed = list(open_dataset(out).samples(kind="distorted"))
    assert len(replayed) == len(ODD_KEYS) * len(config.scenarios)
