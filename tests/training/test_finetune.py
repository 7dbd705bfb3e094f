"""Fine-tuning and evaluation on a tiny KADID-10k-format set, in one process."""

import json
from pathlib import Path

import numpy as np
import pytest

from training.evaluate import EvaluateConfig, evaluate
from training.finetune import FinetuneConfig, finetune
from training.model import ModelConfig
from training.optim import OptimConfig
from training.transforms import Augment

from .conftest import read_json


@pytest.fixture
def finetuned(kadid_folder, tmp_path):
    config = FinetuneConfig(
        "kadid10k", str(kadid_folder), str(tmp_path / "finetune"),
        ModelConfig("test_resnet", init="random"),
        OptimConfig(lr=3e-3, halve_every=10, epochs=2, batch_size=4),
        Augment(crop=32), repeats=2, eval_crops=3, workers=0, device="cpu")
    return config, finetune(config)


def test_finetune_reports_the_median_over_splits(finetuned):
    config, summary = finetuned
    out = Path(config.out)
    assert summary["repeats"] == 2 and len(summary["splits"]) == 2
    srocc = sorted(split["test"]["srocc"] for split in summary["splits"])
    assert summary["median"]["srocc"] == pytest.approx(np.median(srocc))
    assert read_json(out / "results.json") == json.loads(json.dumps(summary))
    for repeat in range(2):
        split_dir = out / f"split-{repeat}"
        assert (split_dir / "scatter.png").stat().st_size > 10_000
        result = read_json(split_dir / "test.json")
        assert result["test_images"] == 6  # one of the four references, 6 versions
        assert -1 <= result["test"]["srocc"] <= 1 and result["test"]["count"] == 6
    first, second = (set(split["test_groups"]) for split in summary["splits"])
    assert len(first) == len(second) == 1 and not first & second  # distinct references


def test_evaluate_reproduces_the_test_figures_of_a_split(finetuned, tmp_path):
    config, summary = finetuned
    checkpoint = f"{config.out}/split-0/best.pt"
    result = evaluate(EvaluateConfig(checkpoint, "kadid10k", config.root,
                                     str(tmp_path / "evaluation"), subset="test",
                                     seed=config.seed, eval_crops=3, batch_size=4, workers=0,
                                     device="cpu"))
    for name in ("srocc", "plcc", "krcc", "rmse"):
        assert result["figures"][name] == pytest.approx(summary["splits"][0]["test"][name],
                                                        abs=1e-6)
    assert (tmp_path / "evaluation" / "scatter.png").is_file()
    whole = evaluate(EvaluateConfig(checkpoint, "kadid10k", config.root,
                                    str(tmp_path / "all"), eval_crops=3, workers=0,
                                    device="cpu"))
    assert whole["figures"]["count"] == 24
