"""The run configuration: one frozen, validated object, written into the output."""

from dataclasses import asdict, dataclass, field

import distortions
from labelers.registry import METRICS
from pipeline.decode import DEFAULT_MAX_PIXELS
from pipeline.sizing import TargetSize

SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # train, val, test


@dataclass(frozen=True)
class RunConfig:
    sources: str
    out: str
    seed: int = 0
    size: TargetSize = field(default_factory=TargetSize)
    allow_upscale: bool = False
    shard_refs: int = 16
    limit: int | None = None
    distortion_ids: tuple[int, ...] = tuple(d.id for d in distortions.all())
    levels: tuple[int, ...] = distortions.LEVELS
    metrics: tuple[str, ...] = METRICS
    allow_missing_metrics: bool = False
    ensemble_file: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    codec: str = "png"

    def __post_init__(self):
        if self.shard_refs < 1:
            raise ValueError(f"shard_refs must be at least 1, got {self.shard_refs}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1, got {self.limit}")
        for distortion_id in self.distortion_ids:
            distortions.get(distortion_id)  # raises UnknownDistortionError
        bad_levels = [lv for lv in self.levels if lv not in distortions.LEVELS]
        if bad_levels or not self.levels:
            raise ValueError(f"levels must be a non-empty subset of 1-5, got {self.levels}")
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise ValueError(f"unknown metrics {unknown}; choose from {', '.join(METRICS)}")
        if self.codec != "png":
            raise ValueError(f"codec must be png (lossless), got {self.codec!r}")

    @property
    def scenarios(self) -> list[tuple[int, int]]:
        """(distortion id, level) pairs of every reference, in id then level order."""
        return [(d, lv) for d in self.distortion_ids for lv in self.levels]

    def to_json(self) -> dict:
        data = asdict(self)
        data["size"] = str(self.size)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "RunConfig":
        fields = dict(data)
        fields["size"] = TargetSize.parse(fields["size"])
        for key in ("distortion_ids", "levels", "metrics"):
            fields[key] = tuple(fields[key])
        return cls(**fields)

    def plan_inputs(self) -> dict:
        """What the shard plan depends on (never the cluster's size or timing)."""
        keys = ("seed", "shard_refs", "limit", "distortion_ids", "levels", "metrics", "codec",
                "allow_upscale", "max_pixels")
        return {**{key: getattr(self, key) for key in keys}, "size": str(self.size)}
