"""The per-sample record: the sample .json and, column for column, the parquet index."""

import hashlib
import math

import numpy as np
import pyarrow as pa

from distortions.canonical import canonical_json

# every metric a run can compute (labelers.registry.AVAILABLE_METRICS, a test checks): the
# default ensemble's ten, then ssim, mdsi and vsi (appended: stored fields keep their places)
METRIC_KEYS = ("gmsd", "fsim", "vif", "cw_ssim", "nlpd", "mae", "ms_ssim", "mad", "dists",
               "lpips", "ssim", "mdsi", "vsi")
SCORES_TYPE = pa.struct([(key, pa.float64()) for key in METRIC_KEYS])
# the distortions applied, in order: one link for a single distortion, K-M for --compose
CHAIN_TYPE = pa.list_(pa.struct([("id", pa.int32()), ("level", pa.int32())]))


def score_arrays(scores: pa.ChunkedArray | pa.Array) -> dict[str, np.ndarray]:
    """A `scores` column as float64 arrays by metric, NaN where a score, or the whole struct
    (a reference's), is null."""
    column = scores.combine_chunks() if isinstance(scores, pa.ChunkedArray) else scores
    return {field.name: np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)
            for field, values in zip(column.type, column.flatten(), strict=True)}


def record_scores(scores: dict[str, float]) -> dict[str, float | None]:
    """A sample's `scores` field: every metric of METRIC_KEYS, null where the run did not
    score it (the .json holds the fields of its parquet row: spec/shards.md)."""
    unknown = sorted(set(scores) - set(METRIC_KEYS))
    if unknown:
        raise ValueError(f"scores of unknown metrics {unknown}: a record holds {METRIC_KEYS}")
    return {key: None if key not in scores else float(scores[key]) for key in METRIC_KEYS}


def record_score(record: dict, metric: str) -> float:
    """A sample record's raw score of `metric` as a float: NaN where it has none (a reference,
    a label-free run, a metric not scored), as score_arrays gives it."""
    value = (record.get("scores") or {}).get(metric)
    return math.nan if value is None else float(value)


def finite_counts(scores: dict[str, np.ndarray]) -> dict[str, int]:
    """How many finite scores each metric has (score_arrays' NaN and infinities left out)."""
    return {key: int(np.isfinite(values).sum()) for key, values in scores.items()}


def pixel_sha256(img: np.ndarray) -> str:
    """The record's `sha256`: SHA-256 of the decoded pixels' bytes (H x W x 3 uint8, C order)."""
    return hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()


INDEX_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("ref_id", pa.string()),
    ("kind", pa.string()),            # reference | distorted
    ("split", pa.string()),           # train | val | test
    ("distortion_id", pa.int32()),
    ("distortion", pa.string()),
    ("category", pa.string()),
    ("level", pa.int32()),
    ("seed", pa.int64()),
    ("recipe", pa.string()),          # JSON: replays the output from the reference
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("codec", pa.string()),
    ("sha256", pa.string()),          # of the decoded pixels
    ("scores", SCORES_TYPE),          # raw metric values; null for a reference
    ("quality", pa.float64()),        # Q under the run's ensemble; null for a reference
    ("ensemble_hash", pa.string()),
    ("metrics_used", pa.list_(pa.string())),
    ("chain", CHAIN_TYPE),            # [{id, level}] in order; null for a reference (and
                                      # absent in older datasets: readers derive it, chain_of)
])


# labels-<hash>.parquet, relabel's sidecar: each distorted sample's Q under another ensemble
# (a row group per shard; the ensemble's hash and the metrics used in the file's metadata)
SIDECAR_SCHEMA = pa.schema([("key", pa.string()), ("quality", pa.float64()),
                            ("shard", pa.int32())])


# sources.parquet: one row per pristine source
SOURCES_SCHEMA = pa.schema([
    ("ref_id", pa.string()), ("uri", pa.string()), ("original_width", pa.int32()),
    ("original_height", pa.int32()), ("sha256", pa.string()), ("shard", pa.int32()),
    ("split", pa.string()), ("status", pa.string()), ("reason", pa.string()),
    ("conversions", pa.list_(pa.string())),
    ("source_kind", pa.string()),     # synthetic | authentic (null in older datasets)
    ("phash", pa.string()),  # the sized pixels' perceptual hash (null: flat, older datasets)
])


def chain_of(record: dict) -> list[dict] | None:
    """A sample's chain: its own, or (a single-distortion sample of a dataset made before
    chains were recorded) the one link of its distortion_id and level; None for a
    reference."""
    if record.get("chain") is not None:
        return record["chain"]
    if record.get("distortion_id") is None:
        return None
    return [{"id": record["distortion_id"], "level": record["level"]}]


def sample_json(record: dict) -> bytes:
    """The sample's .json member: sorted keys, compact, UTF-8 (byte-reproducible)."""
    return canonical_json(record).encode()


def index_row(record: dict) -> dict:
    """The parquet row of a sample record (the recipe as a JSON string)."""
    row = {name: record.get(name) for name in INDEX_SCHEMA.names}
    if row["recipe"] is not None:
        row["recipe"] = canonical_json(row["recipe"])
    return row
