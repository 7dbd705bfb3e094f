"""Ray remote pieces: the labeler actor pool and the shard task."""

import os

import numpy as np
import ray
import torch

from labelers.ensemble import Ensemble
from labelers.labeler import Labeler
from pipeline.config import RunConfig
from pipeline.encoding import decode_png, encode_png
from pipeline.plan import Plan
from pipeline.progress_metrics import record_shard
from pipeline.worker import apply_locally, produce_shard
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

    def apply_distortions(self, ref_png: bytes, jobs: list[tuple[int, int, int]]) -> list:
        """The learned-denoiser types, run here on this actor's device (its GPU)."""
        return apply_locally(decode_png(ref_png), jobs)

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
               labeler: "ray.actor.ActorHandle", progress: "ray.actor.ActorHandle",
               denoise_on_actor: bool) -> dict:
    """Produce one shard; the labels (and, with denoise_on_actor, the learned-denoiser
    distortions) come from `labeler`. Returns its summary."""
    def score_pngs(ref_png: bytes, pngs: list[bytes]):
        return ray.get(labeler.score_pngs.remote(ref_png, pngs))

    def on_reference(samples: int, failures: int) -> None:
        progress.add.remote(samples, failures)

    def on_actor(pixels: np.ndarray, jobs: list[tuple[int, int, int]]) -> list:
        return ray.get(labeler.apply_distortions.remote(encode_png(pixels), jobs))

    outcome = produce_shard(index, Plan.from_json(plan), RunConfig.from_json(config), score_pngs,
                            Ensemble.from_json(ensemble), Location.parse(out), on_reference,
                            on_actor if denoise_on_actor else apply_locally)
    record_shard(outcome)
    return {"index": index, "samples": outcome.samples, "failures": len(outcome.failures),
            "seconds": outcome.seconds}
