"""Ray remote pieces: the labeler actor pool and the shard task."""

import os

import numpy as np
import ray
import torch

from labelers.ensemble import Ensemble
from labelers.labeler import Labeler
from pipeline.config import RunConfig
from pipeline.encoding import decode_png
from pipeline.plan import Plan
from pipeline.progress_metrics import record_shard
from pipeline.worker import produce_shard
from shards.storage import Location


@ray.remote(max_restarts=-1, max_task_retries=3)
class LabelerActor:
    """Loads every metric once and scores PNG-encoded versions against their reference."""

    def __init__(self, metrics: tuple[str, ...], allow_missing: bool, threads: int):
        torch.set_num_threads(max(1, threads))
        self.labeler = Labeler(metrics=metrics, allow_missing=allow_missing)

    def describe(self) -> dict:
        return {"device": str(self.labeler.device), "metrics": self.labeler.keys,
                "absent": self.labeler.absent, "pid": os.getpid()}

    def score_pngs(self, ref_png: bytes, pngs: list[bytes]) -> tuple[dict, tuple[str, ...]]:
        scores = self.labeler.score(decode_png(ref_png), [decode_png(png) for png in pngs])
        return {key: np.asarray(values) for key, values in scores.items()}, scores.absent


@ray.remote(num_cpus=0, max_restarts=-1)
class ProgressActor:
    """Samples and failures reported by shard tasks as each reference finishes."""

    def __init__(self):
        self.samples = self.failures = 0

    def add(self, samples: int, failures: int) -> None:
        self.samples += samples
        self.failures += failures

    def read(self) -> tuple[int, int]:
        return self.samples, self.failures


@ray.remote(max_retries=3)
def shard_task(index: int, plan: dict, config: dict, ensemble: dict, out: str,
               labeler: "ray.actor.ActorHandle", progress: "ray.actor.ActorHandle") -> dict:
    """Produce one shard; the labels come from `labeler`. Returns its summary."""
    def score_pngs(ref_png: bytes, pngs: list[bytes]):
        return ray.get(labeler.score_pngs.remote(ref_png, pngs))

    def on_reference(samples: int, failures: int) -> None:
        progress.add.remote(samples, failures)

    outcome = produce_shard(index, Plan.from_json(plan), RunConfig.from_json(config), score_pngs,
                            Ensemble.from_json(ensemble), Location.parse(out), on_reference)
    record_shard(outcome)
    return {"index": index, "samples": outcome.samples, "failures": len(outcome.failures),
            "seconds": outcome.seconds}
