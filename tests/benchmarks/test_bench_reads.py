"""The reads benchmark's store answers each request after the latency it is given, and its
projection to the paper's shards is the stated formula."""

import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_reads


def test_the_paper_has_8750_shards_of_16_references():
    assert bench_reads.PAPER_SHARDS == 140_000 // 16 == 8750


def test_each_answer_of_the_store_waits_the_latency():
    server, endpoint = bench_reads.start_s3(0.2)
    try:
        start = time.perf_counter()
        with pytest.raises(urllib.error.HTTPError):  # no such bucket: answered, late
            urllib.request.urlopen(f"http://{endpoint}/no-such-bucket/key")
        assert time.perf_counter() - start >= 0.2
    finally:
        server.shutdown()


def test_figures_are_projected_by_the_time_per_shard():
    figures = bench_reads.projected({"merge": 6.0}, {"merge": 1.5}, shard_count=350,
                                    threads=16)["merge"]
    per_shard_minutes = 8750 / 350 / 60
    assert figures == {"seconds_1_thread": 6.0, "seconds_16_threads": 1.5,
                       "paper_minutes_1_thread": round(6.0 * per_shard_minutes, 2),
                       "paper_minutes_16_threads": round(1.5 * per_shard_minutes, 2)}
