"""Targets derived from the stored records: `class` (a (type, level) of the run's own grid) and
`multihot` (a bit per grid pair, one per link of a sample's chain); several targets at once,
one head each on a shared backbone; mAP."""

import itertools
import json
import math

import numpy as np
import pytest
import torch

from iqa_factory.cli import main
from shards import open_dataset
from shards.storage import Location
from training import checkpoint
from training.loop import (
    average_precision,
    head_figures,
    mean_average_precision,
    validation_figures,
)
from training.losses import Head
from training.model import ModelConfig, build_model
from training.optim import OptimConfig
from training.pretrain import PretrainConfig, pretrain
from training.shard_data import Target, run_grid
from training.transforms import Augment

from .conftest import write_tiny_dataset
from .test_cli import TINY

# the run's selection, unsorted as a user may give it; the samples use ids 9, 10, levels 1-3
IDS, LEVELS = [10, 3, 9], [3, 1, 2]
GRID = sorted(itertools.product(IDS, LEVELS))  # computed here, independently of training/


@pytest.fixture(scope="module")
def grid_dataset(tmp_path_factory):
    root = write_tiny_dataset(tmp_path_factory.mktemp("grid_dataset"))
    (root / "manifest.json").write_text(json.dumps(
        {"config": {"distortion_ids": IDS, "levels": LEVELS}}))
    return root


def test_class_indices_are_positions_in_the_runs_sorted_grid(grid_dataset):
    grid = run_grid(Location.parse(str(grid_dataset)))
    assert list(grid) == GRID and len(grid) == 9
    target = Target("class", grid)
    assert (target.classes, target.outputs) == (9, 9)
    samples = list(open_dataset(str(grid_dataset)).samples("val", "distorted"))
    assert len(samples) == 6
    for sample in samples:
        meta = sample["meta"]
        assert target.value(meta) == GRID.index((meta["distortion_id"], meta["level"]))
    assert GRID.index((9, 1)) == 3  # (3, 1..3) come first


def test_multihot_sets_a_bit_per_link_of_the_chain_and_class_refuses_mixtures():
    grid = tuple(GRID)
    mixture = {"key": "m", "distortion_id": 10, "level": 2,
               "chain": [{"id": 10, "level": 2}, {"id": 3, "level": 1}]}
    bits = Target("multihot", grid).value(mixture)
    assert [i for i, bit in enumerate(bits) if bit] == sorted(
        [GRID.index((10, 2)), GRID.index((3, 1))])
    assert len(bits) == 9 and sum(bits) == 2
    for name in ("class", "distortion", "level"):  # one class per sample: not a mixture's
        with pytest.raises(ValueError, match=f"composed of 2 distortions: the {name} target"):
            Target(name, grid).value(mixture)
    single = {"key": "s", "distortion_id": 9, "level": 3, "chain": [{"id": 9, "level": 3}]}
    older = {"key": "o", "distortion_id": 9, "level": 3}  # no chain: derived from the fields
    for record in (single, older):
        assert Target("class", grid).value(record) == GRID.index((9, 3))
        assert Target("multihot", grid).value(record) == [
            float(i == GRID.index((9, 3))) for i in range(9)]
    with pytest.raises(ValueError, match="not in the run's selection"):
        Target("multihot", grid).value({**older, "level": 5})
    with pytest.raises(ValueError, match="needs the run's grid"):
        Target("class").value(older)


def test_average_precision_on_hand_computed_examples():
    # ranked 0.9 (+), 0.8, 0.7 (+), 0.6: precision 1/1 and 2/3 at the positives
    assert average_precision(np.array([0.9, 0.8, 0.7, 0.6]),
                             np.array([1, 0, 1, 0])) == pytest.approx((1 + 2 / 3) / 2)
    # a tie is one threshold: at 0.5 P = 1/2, R = 1/2; at 0.2 P = 2/3, R = 1
    assert average_precision(np.array([0.5, 0.5, 0.2]),
                             np.array([1, 0, 1])) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    scores = np.array([[0.9, 0.1, 0.3], [0.8, 0.4, 0.2], [0.7, 0.35, 0.1], [0.6, 0.8, 0.0]])
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]])  # column 2: no positive
    assert mean_average_precision(scores, labels) == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    assert math.isnan(mean_average_precision(scores, np.zeros_like(labels)))


def test_each_head_is_scored_on_its_own_columns_by_hand_computed_figures():
    """Outputs [quality | 3 class logits | 2 multihot logits], targets [quality | class |
    2 bits]: SROCC of ranks 1234 against 1243 is 1 - 6*2/(4*15) = 0.8; the logits' argmax
    0,2,1,1 against 0,2,1,0 is right 3 times in 4; the bits' APs are (1 + 2/3)/2 and 1."""
    heads = (Head("quality", "regression", 1, 1), Head("grid", "class", 3, 1),
             Head("chain", "multihot", 2, 2))
    outputs = np.array([[0.1, 5, 1, 0, 0.9, 0.3],
                        [0.2, 0, 1, 5, 0.1, 0.7],
                        [0.3, 0, 5, 1, 0.8, 0.2],
                        [0.4, 1, 5, 0, 0.2, 0.6]])
    targets = np.array([[1, 0, 1, 0], [2, 2, 0, 1], [4, 1, 0, 0], [3, 0, 1, 1]], float)
    figures = head_figures(outputs, targets, heads)
    assert figures["quality_srocc"] == pytest.approx(0.8)
    assert figures["grid_accuracy"] == 0.75
    assert figures["chain_map"] == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    assert figures["score"] == figures["quality_srocc"] and figures["count"] == 4
    alone = validation_figures(outputs[:, 1:4].argmax(axis=1), targets[:, 1], classes=3)
    assert alone["score"] == alone["accuracy"] == 0.75


def test_several_targets_train_one_head_each_and_report_each_figure(grid_dataset, tmp_path,
                                                                   capsys):
    out = tmp_path / "multi"
    config = PretrainConfig(
        str(grid_dataset), str(out), ModelConfig("test_resnet", init="random"),
        OptimConfig(lr=1e-3, halve_every=1, epochs=2, batch_size=4, patience=5),
        (Target("quality"), Target("class"), Target("multihot")), Augment(crop=32),
        steps_per_epoch=3, workers=0, device="cpu", loss_weights=(1.0, 0.5, 0.5))
    summary = pretrain(config)
    assert [head["name"] for head in summary["heads"]] == ["quality", "class", "multihot"]
    for record in summary["history"]:
        assert math.isfinite(record["train_loss"])
        assert -1 <= record["val_quality_srocc"] <= 1
        assert 0 <= record["val_class_accuracy"] <= 1
        assert 0 < record["val_multihot_map"] <= 1
        assert record["val_score"] == record["val_quality_srocc"]  # early stopping: the first
    assert "class_accuracy" in capsys.readouterr().out
    state = checkpoint.load(out / checkpoint.BEST)
    assert state["config"]["target"] == "quality,class,multihot"
    assert state["config"]["loss_weights"] == [1.0, 0.5, 0.5]
    assert [tuple(pair) for pair in state["config"]["grid"]] == GRID
    heads = {name: state["model"][f"heads.{name}.weight"].shape[0]
             for name in ("quality", "class", "multihot")}
    assert heads == {"quality": 1, "class": 9, "multihot": 9}
    # finetune and evaluate build one head: the backbone and the quality head load into it
    single = build_model(ModelConfig("test_resnet", pretrained_file=str(out / "best.pt")))
    weights = single.model.state_dict()
    assert torch.equal(weights["fc.weight"], state["model"]["heads.quality.weight"])
    backbone = {k.removeprefix("backbone."): v for k, v in state["model"].items()
                if k.startswith("backbone.")}
    assert backbone and all(torch.equal(weights[k], v) for k, v in backbone.items())
    assert main(["train", "evaluate", "--checkpoint", str(out / checkpoint.BEST), "--dataset",
                 "shards", "--root", str(grid_dataset), "--refs", "r5", "--out",
                 str(tmp_path / "eval"), "--workers", "0", "--device", "cpu"]) == 0


def _evaluate(checkpoint_file, dataset, out) -> int:
    return main(["train", "evaluate", "--checkpoint", str(checkpoint_file), "--dataset",
                 "shards", "--root", str(dataset), "--refs", "r5", "--out", str(out),
                 "--workers", "0", "--device", "cpu"])


def test_an_old_single_head_checkpoint_still_loads_in_evaluate(tiny_dataset, tmp_path):
    model = build_model(ModelConfig("test_resnet", init="random")).model
    config = {"model": {"backbone": "test_resnet"}, "target": "quality",
              "augment": {"crop": 32}}
    old = tmp_path / "old.pt"
    torch.save({"model": model.state_dict(), "epoch": 0, "config": config}, old)
    assert _evaluate(old, tiny_dataset, tmp_path / "eval") == 0
    result = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert result["figures"]["count"] == 6
    for target in ("class", "multihot", "class,multihot"):  # no quality head to read
        torch.save({"model": model.state_dict(), "config": {**config, "target": target}}, old)
        assert _evaluate(old, tiny_dataset, tmp_path / "refused") == 2


def test_a_lower_is_better_metric_model_is_negated_before_its_figures(tiny_dataset, tmp_path):
    """Opinion scores rise with quality: the same weights saved as a model of MAE (lower is
    better) are evaluated on their negated predictions, as a model of VIF or Q is not."""
    model = build_model(ModelConfig("test_resnet", init="random")).model
    results = {}
    for target in ("quality", "vif", "mae"):
        saved = tmp_path / f"{target}.pt"
        torch.save({"model": model.state_dict(), "config": {
            "model": {"backbone": "test_resnet"}, "target": target, "augment": {"crop": 32}}},
            saved)
        assert _evaluate(saved, tiny_dataset, tmp_path / target) == 0
        results[target] = (json.loads((tmp_path / target / "evaluation.json").read_text()),
                           np.load(tmp_path / target / "predictions.npz")["predicted"])
    (quality, predicted), (vif, as_vif), (mae, as_mae) = results.values()
    np.testing.assert_array_equal(as_vif, predicted)
    np.testing.assert_array_equal(as_mae, -predicted)
    assert mae["predictions"] == "-mae (lower is better: negated)" and vif["predictions"] == "vif"
    assert mae["figures"]["srocc"] == pytest.approx(-quality["figures"]["srocc"], abs=1e-12)


def test_targets_and_loss_weights_are_checked(grid_dataset, tiny_dataset, tmp_path, capsys):
    def run(dataset, *options) -> int:
        return main(["train", "pretrain", str(dataset), "--out", str(tmp_path / "run"),
                     "--epochs", "1", "--steps-per-epoch", "1", *options, *TINY])

    assert run(grid_dataset, "--target", "quality,class", "--loss-weights", "1") == 2
    assert "--loss-weights must be 2" in capsys.readouterr().err
    for weights in ("1,-1", "0,0", "1,nan"):
        assert run(grid_dataset, "--target", "quality,class", "--loss-weights", weights) == 2
    assert run(grid_dataset, "--loss-weights", "7") == 2  # one target: nothing to weigh
    assert "with one (quality) it changes nothing" in capsys.readouterr().err
    assert run(grid_dataset, "--target", "quality,quality") == 2
    assert "distinct" in capsys.readouterr().err
    for bad in (["--target", "quality,nope"], ["--loss-weights", "1,x"]):
        with pytest.raises(SystemExit):
            run(grid_dataset, *bad)
    assert run(tiny_dataset, "--target", "class") == 2  # no manifest.json: no grid
    assert "manifest.json" in capsys.readouterr().err


def test_a_multi_head_model_starts_from_a_single_head_checkpoint(tmp_path):
    single = build_model(ModelConfig("test_resnet", init="random")).model
    path = tmp_path / "single.pt"
    torch.save({"model": single.state_dict()}, path)
    built = build_model(ModelConfig("test_resnet", pretrained_file=str(path)),
                        heads={"quality": 1, "class": 9})
    weights = built.model.state_dict()
    classifier = {"fc.weight", "fc.bias"}  # test_resnet's timm classifier
    assert all(torch.equal(weights[f"backbone.{k}"], v) for k, v in single.state_dict().items()
               if k not in classifier)
    assert "left new (heads." in built.notices[0]
    assert built.model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)  # the heads side by side


def test_a_multi_target_run_resumes(grid_dataset, tmp_path):
    def config(epochs: int) -> PretrainConfig:
        return PretrainConfig(
            str(grid_dataset), str(tmp_path / "run"), ModelConfig("test_resnet", init="random"),
            OptimConfig(lr=1e-3, halve_every=1, epochs=epochs, batch_size=4, patience=5,
                        checkpoint_every=1),
            (Target("class"), Target("quality")), Augment(crop=32), steps_per_epoch=2,
            workers=0, device="cpu", loss_weights=(2.0, 1.0))

    pretrain(config(1))
    summary = pretrain(config(2), resume=True)
    assert [record["epoch"] for record in summary["history"]] == [1, 2]
    assert summary["history"][1]["val_score"] == summary["history"][1]["val_class_accuracy"]


def test_the_grid_takes_a_types_own_levels_from_the_manifest(tmp_path):
    """A run whose bank gives some types levels of their own (dbcnn's exposure at 2 and 4):
    the class grid holds those pairs only (as the run made them), and older manifests
    without type_levels give every type the run's levels."""
    config = {"distortion_ids": [40, 1], "levels": [1, 2, 3, 4, 5], "type_levels": [[40, [2, 4]]]}
    (tmp_path / "manifest.json").write_text(json.dumps({"config": config}))
    expected = sorted([(1, level) for level in range(1, 6)] + [(40, 2), (40, 4)])
    assert list(run_grid(Location.parse(str(tmp_path)))) == expected
    del config["type_levels"]
    (tmp_path / "manifest.json").write_text(json.dumps({"config": config}))
    assert len(run_grid(Location.parse(str(tmp_path)))) == 10


def test_a_grid_target_is_told_which_of_its_pairs_leave_the_photo_as_it_is(small_image):
    """A class or multihot target over a grid that holds an identity level (the paper's bank:
    gaussian_blur and motion_blur at level 1, mean_shift at 3) is told which: the pairs
    named are those whose version of a photo is the photo (found here by applying them)."""
    import distortions
    from training.pretrain import identity_notices

    grid = tuple((d, level) for d in (3, 13, 15, 18, 20) for level in distortions.LEVELS)
    unchanged = [f"{distortions.get(d).name} level {level}" for d, level in grid
                 if np.array_equal(distortions.apply(small_image, d, level, 7)[0], small_image)]
    assert len(unchanged) == 3
    [class_notice, bits_notice] = identity_notices((Target("class", grid),
                                                   Target("multihot", grid)))
    assert f"class target's {', '.join(unchanged)} leave a photo" in class_notice
    assert "those classes hold undistorted copies" in class_notice
    assert "those bits name undistorted copies" in bits_notice
    dbcnn = tuple(sorted(distortions.grid(distortions.bank_ids("dbcnn"), distortions.LEVELS,
                                          distortions.bank_type_levels("dbcnn"))))
    assert identity_notices((Target("class", dbcnn), Target("quality"))) == []
    # a run's grid is given to each of its targets: a regression target has no classes to name
    assert identity_notices((Target("quality", grid=grid),)) == []
    [one] = identity_notices((Target("class", ((13, 1), (13, 2))),))
    assert "class target's gaussian_blur level 1 leaves a photo as it is" in one
