"""A run's result files and figure lines. A figure a run could not define (NaN: constant
predictions or opinion scores) is null in JSON, which has no NaN (Python would write a bare
NaN that other readers refuse), and labelers.correlation.UNDEFINED on screen."""

import math
from pathlib import Path

import numpy as np

from distortions.canonical import each_leaf
from labelers.correlation import figure_text
from shards.storage import atomic_file, without_credentials, write_json_file
from training.checkpoint import BEST

SUMMARY_FILE = "summary.json"  # a pretraining run's result


def json_safe(value):
    """`value` with every non-finite float, however deep in dicts and lists, as None."""
    return each_leaf(value, lambda leaf: None
                     if isinstance(leaf, float) and not math.isfinite(leaf) else leaf)


def write_json(path: Path, document: dict) -> None:
    """A result file, whole or not at all (shards.storage.write_json_file), without NaN or
    credentials."""
    write_json_file(path, json_safe(without_credentials(document)), allow_nan=False)


def write_predictions(path: Path, predicted, opinion) -> None:
    """A test's predictions beside the opinion scores (an .npz of `predicted` and `opinion`),
    whole or not at all."""
    with atomic_file(path) as handle:
        np.savez(handle, predicted=predicted, opinion=opinion)


def figures_line(figures: dict, names: tuple[str, ...]) -> str:
    """'SROCC 0.9012  PLCC ...' of `names`."""
    return "  ".join(f"{name.upper()} {figure_text(figures[name])}" for name in names)


def publish_summary(out: Path, summary: dict, best: str) -> dict:
    """A pretraining run's summary.json in `out`, naming its best epoch's checkpoint, and the
    line that says where those weights are (`best`: the epoch's validation figure, in words)."""
    summary = {**summary, "checkpoint": str(out / BEST)}
    write_json(out / SUMMARY_FILE, summary)
    print(f"best validation {best} at epoch {summary['best_epoch']}; weights in {out / BEST}")
    return summary
