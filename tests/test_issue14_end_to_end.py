"""The bank extension end to end, as a user runs it: a DB-CNN-style run (its nine types,
pseudo-MOS labels) trains quality and class heads; a run of composed authentic-like
distortions trains quality and multihot heads. Both through the real command lines."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.commands.pmos_ensemble import PMOS_METRICS
from pipeline.embedded import EMBEDDED_PHOTOS
from shards import open_dataset
from tests.labelers.test_pmos_ensemble import _by_hand

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPOSITORY = Path(__file__).resolve().parents[1]
SMALL = ["--sources", "embedded", "--size", "192x176", "--shard-refs", "1", "--levels", "1,3"]
AUTHENTIC_LIKE = "1,13,15,40,41,42,43"  # JPEG, blurs, exposure, RGB shift, contrast


def _run(*arguments: str) -> None:
    result = subprocess.run([sys.executable, "-m", "iqa_factory", *arguments],
                            cwd=REPOSITORY, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _pretrain(dataset: Path, out: Path, targets: str) -> dict:
    _run("train", "pretrain", str(dataset), "--out", str(out), "--target", targets,
         "--backbone", "test_resnet", "--crop", "32", "--epochs", "1", "--steps-per-epoch",
         "2", "--batch-size", "4", "--val-refs", "coffee", "--workers", "0", "--device", "cpu")
    return json.loads((out / "summary.json").read_text())


def test_a_dbcnn_run_with_pseudo_mos_trains_quality_and_class_heads(tmp_path):
    dataset = tmp_path / "dbcnn"
    _run("generate", *SMALL, "--out", str(dataset), "--bank", "dbcnn",
         "--metrics", "ssim,ms_ssim,mdsi,vsi,fsim,gmsd", "--ensemble", "pmos")
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["modes"]["bank"] == "dbcnn" and len(manifest["config"]["distortion_ids"]) == 9
    metas = [sample["meta"] for sample in open_dataset(str(dataset)).samples(decode=False)]
    scores = {key: np.array([meta["scores"][key] for meta in metas]) for key in PMOS_METRICS}
    # six types at levels 1 and 3, the bank's Gaussian blur at 2-5 and exposures at 2 and 4
    assert len(metas) == len(EMBEDDED_PHOTOS) * (6 * 2 + 4 + 2 * 2)
    assert np.allclose([meta["quality"] for meta in metas], _by_hand(scores), atol=1e-12)
    summary = _pretrain(dataset, tmp_path / "run", "quality,class")
    [record] = summary["history"]
    assert "val_quality_srocc" in record and 0 <= record["val_class_accuracy"] <= 1


def test_composed_authentic_like_distortions_train_quality_and_multihot_heads(tmp_path):
    dataset = tmp_path / "mixtures"
    _run("generate", *SMALL, "--out", str(dataset), "--bank", "registered", "--distortions",
         AUTHENTIC_LIKE, "--compose", "2-4", "--versions-per-ref", "4", "--ensemble", "pmos")
    rows = [json.loads(line) for line in (dataset / "failures.jsonl").read_text().splitlines()]
    assert rows == []
    chains = [sample["meta"]["chain"]
              for sample in open_dataset(str(dataset)).samples(decode=False)]
    assert len(chains) == len(EMBEDDED_PHOTOS) * 4
    assert all(2 <= len(chain) <= 4 and {link["level"] for link in chain} <= {1, 3}
               and {link["id"] for link in chain} <= set(map(int, AUTHENTIC_LIKE.split(",")))
               for chain in chains)
    summary = _pretrain(dataset, tmp_path / "run", "quality,multihot")
    [record] = summary["history"]
    assert "val_quality_srocc" in record and 0 < record["val_multihot_map"] <= 1
