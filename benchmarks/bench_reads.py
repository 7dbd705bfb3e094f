"""Benchmark the reads of a dataset's many small files, one at a time against
shards.reads.READ_THREADS at once: a resume's check of every finished shard
(pipeline.driver._shards_to_make), a reader's opening of the dataset (shard_states: every
stats file), read_index (every parquet index), the run's end merge of every shard's lists, and
finished_plan (what convert and relabel check first). On the local disk, and on an S3 server
(moto) that answers each request after an added latency: 20 ms by default, since AWS's
performance guide puts the median latency of small S3 requests in the tens of milliseconds.
Each figure is projected to the paper's 8,750 shards by its time per shard.

    python benchmarks/bench_reads.py --out docs [--shards 300] [--latency-ms 20]

The dataset is a label-free run (`--metrics none`, one type at one level) of synthetic
192 x 176 references, one per shard: each shard has the paper's files, smaller.
"""

import argparse
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import boto3
from moto.server import DomainDispatcherApplication, create_backend_app
from paper_scale import PAPER_REFERENCES
from report_files import write_report
from synthetic import synthetic_sources
from werkzeug.serving import make_server

import shards.reads
from pipeline.config import RunConfig
from pipeline.driver import ClusterOptions, _shards_to_make
from pipeline.plan import finished_plan, read_plan
from pipeline.report import merge
from shards.layout import MANIFEST_FILE, run_file
from shards.reader import complete_shards, read_index
from shards.storage import Location

PAPER_SHARDS = PAPER_REFERENCES // RunConfig.shard_refs  # 8,750 of 16 references
BUCKET = "bench-reads"
ACCESS, SECRET = "AKIABENCHREADS", "bench-reads-secret"


def make_dataset(work: Path, shards: int) -> Path:
    """A finished label-free dataset of `shards` shards, a reference each."""
    sources = synthetic_sources(shards, work / "sources", 192, 176)
    out = work / "dataset"
    subprocess.run([sys.executable, "-m", "iqa_factory", "generate", "--sources", sources,
                    "--out", str(out), "--metrics", "none", "--distortions", "1", "--levels",
                    "1", "--shard-refs", "1", "--size", "192x176"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def delayed(app: Callable, seconds: float) -> Callable:
    """A WSGI app that answers each request `seconds` later (a store's round trip)."""
    def answer(environ, start_response):
        time.sleep(seconds)
        return app(environ, start_response)
    return answer


def start_s3(latency: float):
    """A threaded moto S3 server whose every answer waits `latency` seconds: (server, host:port)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per request
    app = delayed(DomainDispatcherApplication(create_backend_app), latency)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return server, f"{host}:{port}"


def upload(folder: Path, endpoint: str) -> str:
    """Every file of `folder` put in the bucket; the dataset's s3:// URI."""
    client = boto3.client("s3", endpoint_url=f"http://{endpoint}", region_name="us-east-1",
                          aws_access_key_id=ACCESS, aws_secret_access_key=SECRET)
    client.create_bucket(Bucket=BUCKET)
    for path in folder.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"dataset/{path.relative_to(folder)}")
    return (f"s3://{ACCESS}:{SECRET}@{BUCKET}/dataset?endpoint_override={endpoint}"
            "&scheme=http&region=us-east-1")


def operations(location: Location) -> dict[str, Callable[[], object]]:
    """The dataset-wide reads measured, by name."""
    plan = read_plan(location)
    config = RunConfig.from_json(run_file(location, MANIFEST_FILE)["config"])
    return {
        "resume check": lambda: _shards_to_make(plan, config, ClusterOptions(), location),
        "open for reading (shard_states)": lambda: complete_shards(location),
        "read_index": lambda: read_index(location, columns=["key"]),
        "merge at the run's end": lambda: merge(location, plan),
        "finished_plan": lambda: finished_plan(location),
    }


def timed(location: Location, threads: int) -> dict[str, float]:
    """Seconds each operation takes with `threads` reads in flight."""
    shards.reads.READ_THREADS = threads
    seconds = {}
    for name, operation in operations(location).items():
        start = time.perf_counter()
        operation()
        seconds[name] = time.perf_counter() - start
    return seconds


def projected(serial: dict[str, float], parallel: dict[str, float], shard_count: int,
              threads: int) -> dict:
    """Per operation: its seconds one read at a time and `threads` at once, and both
    projected to the paper's shards by the time per shard."""
    scale = PAPER_SHARDS / shard_count
    return {name: {"seconds_1_thread": round(serial[name], 3),
                   f"seconds_{threads}_threads": round(parallel[name], 3),
                   "paper_minutes_1_thread": round(serial[name] * scale / 60, 2),
                   f"paper_minutes_{threads}_threads": round(parallel[name] * scale / 60, 2)}
            for name in serial}


def measure(uri: str, shard_count: int) -> dict:
    """The operations on the dataset at `uri`, one read at a time and READ_THREADS at once."""
    location, threads = Location.parse(uri), shards.reads.READ_THREADS
    serial, parallel = timed(location, 1), timed(location, threads)
    shards.reads.READ_THREADS = threads
    return projected(serial, parallel, shard_count, threads)


def markdown(result: dict) -> str:
    threads = result["read_threads"]
    lines = ["# Reads of a dataset's many small files", "",
             f"{result['shards']} shards (a reference each), {result['machine']}; each figure "
             f"projected to the paper's {PAPER_SHARDS:,} shards by its time per shard. "
             f"`python benchmarks/bench_reads.py` (`make bench-reads`).", ""]
    for store, figures in result["stores"].items():
        lines += [f"## {store}", "",
                  f"| operation | 1 thread (s) | {threads} threads (s) | paper scale, 1 thread "
                  f"(min) | paper scale, {threads} threads (min) |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {name} | {row['seconds_1_thread']} | {row[f'seconds_{threads}_threads']} "
                  f"| {row['paper_minutes_1_thread']} | "
                  f"{row[f'paper_minutes_{threads}_threads']} |"
                  for name, row in figures.items()]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--shards", type=int, default=300)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        dataset = make_dataset(Path(work), args.shards)
        server, endpoint = start_s3(args.latency_ms / 1000)
        try:
            s3 = upload(dataset, endpoint)
            stores = {"local disk": measure(str(dataset), args.shards),
                      f"S3 (moto), {args.latency_ms:g} ms a request": measure(s3, args.shards)}
        finally:
            server.shutdown()
    result = {"shards": args.shards, "latency_ms": args.latency_ms,
              "read_threads": shards.reads.READ_THREADS, "paper_shards": PAPER_SHARDS,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "stores": stores}
    write_report(args.out, "bench-reads", result, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
