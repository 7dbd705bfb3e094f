"""What the device check runs: its sections, in order, and how much each does (the full
run on the device, or the tiny CPU rehearsal that `make test` keeps working)."""

from dataclasses import dataclass

import distortions
import labelers
from pipeline.sizing import TargetSize

# the order a run takes them in: training (the most GPU memory) after the pipeline, whose
# Labeler sizes its passes from the memory free when it starts; the objectives last
SECTIONS = ("environment", "agreement", "labelers", "variants", "denoiser", "pipeline", "repeat",
            "passes", "loader", "training", "ddp", "objectives")
DATASET_SECTIONS = ("loader", "ddp", "objectives")  # those that read the pipeline's shards


@dataclass(frozen=True)
class Sizes:
    """How much each section does: the full device run, or the tiny CPU check."""

    image: TargetSize
    versions: int           # distorted versions per labeler measurement
    agreement_photos: tuple[str, ...]
    agreement_versions: int
    denoise_images: int
    train: tuple[tuple[str, int, int, int], ...]   # (backbone, crop, batch, steps)
    pipeline_refs: int
    pipeline_shard_refs: int
    pipeline_distortions: tuple[int, ...]
    pipeline_levels: tuple[int, ...]
    pipeline_metrics: tuple[str, ...]
    ddp_backbone: str
    ddp_crop: int
    objective_batch: int    # groups per step of the objectives' runs (4 steps each)
    objective_crop: int     # their crop: contrastive's two overlapping views fit at x1/2
    pipeline_processes: int | None = None  # the pool's processes (None: one per CPU but one)
    # the pool's produce_shard(overlap_bytes=...) (None: OVERLAP_BYTES; 0: each reference settled
    # before the next begins, its labels awaited while its PNGs are encoded, as until session 39)
    pipeline_overlap_bytes: int | None = None


FULL = Sizes(TargetSize(512, 384), 64, ("astronaut", "coffee"), 6, 16,
             (("resnet50", 224, 256, 12), ("nasnetalarge", 331, 64, 6)),
             45, 1, tuple(d.id for d in distortions.all()), distortions.LEVELS,
             labelers.METRICS, "resnet50", 224, 32, 112)
TINY = Sizes(TargetSize(192, 176), 3, ("astronaut",), 2, 2,
             (("resnet18", 64, 4, 2),), 2, 1, (1, 8, 13), (1, 3), ("mae", "gmsd"),
             "resnet18", 64, 2, 48)
