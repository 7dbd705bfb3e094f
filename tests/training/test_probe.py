"""`train probe`: ridge regression on a frozen encoder's features, checked against the normal
equations and a planted linear relation; its 70/10/20 splits; the command end to end on a
real pretraining checkpoint, and `train compare` of probe, finetune and evaluate runs."""

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from scipy import stats

from training.cli import main
from training.finetune import FIGURES, median_figures
from training.image_data import split
from training.probe import Fractions, _median_split
from training.rated_datasets import LabelledImage
from training.ridge import ALPHA_GRID, ridge_path, select_ridge

from .conftest import png, read_json
from .test_ddp import torchrun

TINY = ["--crop", "32", "--workers", "0", "--device", "cpu"]


def _planted(rng: np.random.Generator, samples: int, width: int, informative: int,
             noise: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features on several scales, y = 0.3 + X w + noise with `informative` non-zero
    weights."""
    features = rng.normal(size=(samples, width)) * rng.uniform(0.5, 20, width)
    weights = np.zeros(width)
    weights[:informative] = rng.normal(size=informative) / features.std(axis=0)[:informative]
    return features, 0.3 + features @ weights + noise * rng.normal(size=samples), weights


def test_the_penalty_grid_spans_1e_6_to_1e3_in_half_decades():
    from training.ridge import ALPHA_GRID

    np.testing.assert_allclose(ALPHA_GRID, np.logspace(-6, 3, 19), rtol=1e-12)


def test_ridge_recovers_a_planted_linear_relation():
    rng = np.random.default_rng(1)
    features, targets, weights = _planted(rng, 400, 12, 12, noise=0.01)
    chosen = select_ridge((features[:240], targets[:240]),
                          (features[240:300], targets[240:300])).ridge
    # back to the raw features' units: w / scale, intercept - mean . w / scale
    raw = chosen.weights / chosen.scale
    assert np.allclose(raw * features.std(axis=0), weights * features.std(axis=0), atol=0.01)
    assert chosen.intercept - chosen.mean @ raw == pytest.approx(0.3, abs=0.01)
    test = chosen.predict(features[300:])
    assert stats.spearmanr(test, targets[300:]).statistic > 0.999
    assert np.sqrt(np.mean((test - targets[300:]) ** 2)) < 0.02


@pytest.mark.parametrize("samples,width", [(50, 8), (20, 35)])  # more samples, more features
def test_ridge_equals_the_normal_equations_and_an_augmented_least_squares(samples, width):
    rng = np.random.default_rng(samples)
    features, targets, _ = _planted(rng, samples, width, 3, noise=0.3)
    standard = (features - features.mean(axis=0)) / features.std(axis=0)
    centred = targets - targets.mean()
    alphas = (1e-3, 0.1, 10.0)
    for fit, alpha in zip(ridge_path(features, targets, alphas), alphas, strict=True):
        penalty = samples * alpha
        normal = np.linalg.solve(standard.T @ standard + penalty * np.eye(width),
                                 standard.T @ centred)
        stacked = np.vstack([standard, np.sqrt(penalty) * np.eye(width)])
        augmented = np.linalg.lstsq(stacked, np.r_[centred, np.zeros(width)], rcond=None)[0]
        assert np.allclose(fit.weights, normal, rtol=1e-7, atol=1e-9)
        assert np.allclose(fit.weights, augmented, rtol=1e-7, atol=1e-9)
        assert fit.intercept == pytest.approx(targets.mean())


def test_the_chosen_penalty_grows_with_the_noise():
    """Clean data pick (nearly) no penalty; 58 noise features of 60 with unit noise pick about
    the Bayes penalty of isotropic features, noise^2 d / (n |w|^2) per sample."""
    for seed in range(5):
        rng = np.random.default_rng(seed)
        features = rng.normal(size=(300, 12))
        targets = features @ rng.normal(size=12) + 0.01 * rng.normal(size=300)
        clean = select_ridge((features[:200], targets[:200]), (features[200:], targets[200:]))
        features = rng.normal(size=(400, 60))
        targets = features[:, 0] + features[:, 1] + rng.normal(size=400)
        noisy = select_ridge((features[:80], targets[:80]), (features[80:], targets[80:]))
        bayes = 1.0 * 60 / (80 * 2.0)
        assert clean.ridge.alpha <= 1e-3
        assert abs(np.log10(noisy.ridge.alpha / bayes)) <= 1.0, noisy.ridge.alpha
        assert min(noisy.rmse) == noisy.rmse[ALPHA_GRID.index(noisy.ridge.alpha)]
        left_out = select_ridge((features[:80], targets[:80]), None)  # no validation part
        assert abs(np.log10(left_out.ridge.alpha / bayes)) <= 1.0, left_out.ridge.alpha


def test_leave_one_out_errors_equal_refits_without_each_sample():
    """The closed form against 30 refits, each without one sample (same standardisation and
    total penalty, unpenalised intercept), solved as an augmented least-squares problem."""
    rng = np.random.default_rng(5)
    features, targets, _ = _planted(rng, 30, 8, 3, noise=0.5)
    alpha = 0.05
    errors = select_ridge((features, targets), None, (alpha, 10 * alpha)).rmse
    standard = (features - features.mean(axis=0)) / features.std(axis=0)
    residuals = []
    for left in range(30):
        keep = np.arange(30) != left
        design = np.vstack([np.c_[np.ones(29), standard[keep]],
                            np.c_[np.zeros(8), np.sqrt(30 * alpha) * np.eye(8)]])
        solution = np.linalg.lstsq(design, np.r_[targets[keep], np.zeros(8)], rcond=None)[0]
        residuals.append(targets[left] - solution[0] - standard[left] @ solution[1:])
    assert errors[0] == pytest.approx(np.sqrt(np.mean(np.square(residuals))), rel=1e-9)


def test_ridge_refuses_what_it_cannot_fit():
    features = np.ones((5, 3))
    fit = ridge_path(np.c_[features, np.arange(5.0)], np.arange(5.0), (1e-6,))[0]
    assert fit.weights[:3].tolist() == [0.0, 0.0, 0.0]  # constant features: no weight
    # constant but for float32 rounding: standardised, the noise would be a signal whose
    # weight blows up on new samples (a probe's RMSE of 193 on scores in [0, 1], once)
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(40, 2))
    targets = signal @ [1.0, -0.5]
    noisy = (0.37 * (1 + rng.normal(size=(40, 1)) * 6e-8)).astype(np.float32)
    with_noise = ridge_path(np.c_[signal, noisy], targets, (1e-6,))[0]
    without = ridge_path(signal, targets, (1e-6,))[0]
    assert with_noise.weights[2] == 0.0
    new = np.c_[rng.normal(size=(10, 2)), np.full(10, np.float32(0.37 * (1 + 3e-7)))]
    np.testing.assert_allclose(with_noise.predict(new), without.predict(new[:, :2]), rtol=1e-12)
    with pytest.raises(ValueError, match="not finite"):
        ridge_path(np.c_[features[:, :2], [np.nan] * 5], np.arange(5.0))
    with pytest.raises(ValueError, match="positive"):
        ridge_path(features, np.arange(5.0), (0.0,))


def test_a_feature_that_is_0_everywhere_gets_no_weight_and_changes_no_prediction():
    """A dead channel (an encoder's ReLU never fired on these images) is a constant like any
    other: the read-out is the normal equations' on the other features alone."""
    rng = np.random.default_rng(3)
    signal = rng.normal(size=(40, 3))
    targets = signal @ [0.5, -1.0, 2.0] + rng.normal(size=40) * 0.1
    alpha = 0.01
    fit = ridge_path(np.c_[signal, np.zeros(40)], targets, (alpha,))[0]
    standardised = (signal - signal.mean(axis=0)) / signal.std(axis=0)
    weights = np.linalg.solve(standardised.T @ standardised + 40 * alpha * np.eye(3),
                              standardised.T @ (targets - targets.mean()))
    np.testing.assert_allclose(fit.weights, [*weights, 0.0], rtol=1e-10, atol=1e-12)
    new = rng.normal(size=(5, 3))
    expected = (new - signal.mean(axis=0)) / signal.std(axis=0) @ weights + targets.mean()
    np.testing.assert_allclose(fit.predict(np.c_[new, np.ones(5)]), expected, rtol=1e-10)


def test_among_penalties_of_equal_error_the_smallest_is_chosen():
    """select_ridge's rule: "the smallest alpha among equals". Features constant on the
    fitting part give every alpha the same read-out (the mean), so every error ties."""
    rng = np.random.default_rng(4)
    train = (np.ones((10, 3)), rng.normal(size=10))
    val = (rng.normal(size=(4, 3)), rng.normal(size=4))
    for chosen in (select_ridge(train, val), select_ridge(train, None)):
        assert len(set(chosen.rmse)) == 1
        assert chosen.ridge.alpha == min(ALPHA_GRID)


def _images(references: int, per_reference: int = 3) -> list[LabelledImage]:
    return [LabelledImage(f"r{ref}_{k}.png", k / 3, f"r{ref}", path=f"r{ref}_{k}.png")
            for ref in range(references) for k in range(per_reference)]


def test_splits_of_70_10_20_by_reference_are_disjoint_sized_and_seeded():
    images, reiqa = _images(20), Fractions(70, 10, 20)

    def parts(seed: int, repeat: int, fractions: Fractions = reiqa):
        found = split(images, "reference", seed, repeat, fractions.val_share,
                      fractions.test_share)
        return [sorted({image.group for image in part})
                for part in (found.train, found.val, found.test)]

    tested = []
    for repeat in range(5):
        train, val, test = parts(7, repeat)
        assert (len(train), len(val), len(test)) == (14, 2, 4)  # 70/10/20 of 20 references
        assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
        assert parts(7, repeat) == [train, val, test]  # the seed's, every time
        tested += test
    assert sorted(tested) == sorted(f"r{ref}" for ref in range(20))  # five disjoint folds
    assert parts(8, 0) != parts(7, 0)
    assert [len(part) for part in parts(0, 0, Fractions(50, 30, 20))] == [10, 6, 4]
    assert Fractions.parse("60/20/20") == Fractions(60, 20, 20)
    for text in ("70/30", "70/10/x", "80/0/20"):
        with pytest.raises(ValueError, match="positive"):
            Fractions.parse(text)


# --- end to end, through the command line, on a real (one-step) pretraining checkpoint ----

@pytest.fixture(scope="module")
def pretrained(tiny_dataset, tmp_path_factory) -> dict[str, Path]:
    """One-step pretraining checkpoints of test_resnet: a quality model and a multi-head one."""
    out = tmp_path_factory.mktemp("pretrained")
    for name, target in (("quality", "quality"), ("heads", "quality,level")):
        assert main(["pretrain", str(tiny_dataset), "--out", str(out / name), "--target",
                     target, "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "4",
                     "--backbone", "test_resnet", "--init", "random", *TINY]) == 0
    return {name: out / name / "best.pt" for name in ("quality", "heads")}


def _features_outside(checkpoint: Path, pixels: list[np.ndarray]) -> np.ndarray:
    """The checkpoint's pooled features computed here with timm directly (whole 32x32
    images: no crop), in the normalisation the checkpoint records."""
    saved = torch.load(checkpoint, weights_only=True)
    model = timm.create_model("test_resnet", num_classes=0)
    state = {key.removeprefix("backbone."): value for key, value in saved["model"].items()
             if not key.startswith(("fc.", "heads."))}
    model.load_state_dict(state)
    augment = saved["config"]["augment"]
    scaled = (np.stack(pixels) / 255.0 - augment["mean"]) / augment["std"]
    with torch.no_grad():
        return model.eval()(torch.from_numpy(scaled.transpose(0, 3, 1, 2)).float()).numpy()


def _planted_csv(folder: Path, checkpoint: Path, references: int, seed: int) -> Path:
    """A csv dataset of 32x32 textures, 3 per reference, whose scores are a fixed linear
    function of the checkpoint's features."""
    folder.mkdir()
    rng = np.random.default_rng(seed)
    pixels = [np.clip(rng.normal(rng.uniform(40, 215), rng.uniform(5, 60), (32, 32, 3)), 0,
                      255).astype(np.uint8) for _ in range(3 * references)]
    features = _features_outside(checkpoint, pixels)
    weights = np.random.default_rng(99).normal(size=features.shape[1])
    rows = ["path,score,group"]
    for index, (image, score) in enumerate(zip(pixels, features @ weights, strict=True)):
        (folder / f"img{index:03d}.png").write_bytes(png(image))
        rows.append(f"img{index:03d}.png,{score:.9f},ref{index // 3}")
    (folder / "scores.csv").write_text("\n".join(rows) + "\n")
    return folder / "scores.csv"


def _probe(checkpoint: Path, csv: Path, out: Path, *extra: str) -> list[str]:
    return ["probe", "--checkpoint", str(checkpoint), "--dataset", "csv", "--root", str(csv),
            "--out", str(out), "--eval-crops", "1", *TINY, *extra]


def test_the_probe_recovers_a_planted_relation_and_compare_lists_every_kind(pretrained,
                                                                           tiny_dataset,
                                                                           tmp_path, capsys):
    checkpoint = pretrained["quality"]
    csv = _planted_csv(tmp_path / "planted", checkpoint, references=80, seed=0)
    out = tmp_path / "probe"
    assert main(_probe(checkpoint, csv, out, "--repeats", "3")) == 0
    summary = read_json(out / "results.json")
    assert summary["kind"] == "probe" and summary["repeats"] == 3 and summary["images"] == 240
    assert summary["median"]["srocc"] > 0.99 and summary["median"]["plcc"] > 0.99
    srocc = [result["test"]["srocc"] for result in summary["splits"]]
    assert summary["median"]["srocc"] == pytest.approx(np.median(srocc))
    tested = [set(result["test_groups"]) for result in summary["splits"]]
    assert all(len(groups) == 16 for groups in tested)  # 20% of 80 references
    assert not (tested[0] & tested[1] or tested[1] & tested[2])
    assert (out / "scatter.png").stat().st_size > 10_000
    saved = np.load(out / "features.npz")
    pixels = [np.asarray(Image.open(csv.parent / f"img{i:03d}.png")) for i in range(240)]
    assert saved["names"].tolist() == [f"img{i:03d}.png" for i in range(240)]
    assert np.allclose(saved["features"], _features_outside(checkpoint, pixels), atol=1e-4)

    capsys.readouterr()
    assert main(_probe(checkpoint, csv, out, "--repeats", "2")) == 0  # features kept
    assert "features of 240 images read from" in capsys.readouterr().out
    assert read_json(out / "results.json")["splits"][0] == summary["splits"][0]
    assert main(_probe(checkpoint, csv, out, "--repeats", "1", "--seed", "1")) == 0
    assert "read from" not in capsys.readouterr().out  # another seed: computed afresh
    changed = csv.parent / "img007.png"  # the same name, other pixels: computed afresh
    changed.write_bytes(png(255 - np.asarray(Image.open(changed))))
    assert main(_probe(checkpoint, csv, out, "--repeats", "1", "--seed", "1")) == 0
    assert "read from" not in capsys.readouterr().out
    assert main(_probe(checkpoint, csv, out, "--repeats", "1", "--seed", "1")) == 0
    assert "features of 240 images read from" in capsys.readouterr().out
    changed.write_bytes(png(np.asarray(Image.open(changed))[::-1]))  # one more: afresh
    assert main(_probe(checkpoint, csv, out, "--repeats", "1", "--seed", "1")) == 0
    assert "read from" not in capsys.readouterr().out

    finetune, evaluation = tmp_path / "finetune", tmp_path / "evaluate"
    assert main(["finetune", "--dataset", "csv", "--root", str(csv), "--out", str(finetune),
                 "--pretrained-file", str(checkpoint), "--backbone", "test_resnet",
                 "--epochs", "1", "--batch-size", "16", "--eval-crops", "1", *TINY]) == 0
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--dataset", "csv", "--root",
                 str(csv), "--out", str(evaluation), "--eval-crops", "1", *TINY]) == 0
    # the checkpoint was pretrained on the tiny shards (the `pretrained` fixture)
    assert read_json(evaluation / "evaluation.json")["trained_on"] == str(tiny_dataset)
    capsys.readouterr()
    # a checkpoint fine-tuned on the probed dataset learnt its test images' scores: said
    assert main(_probe(finetune / "split-0" / "best.pt", csv, tmp_path / "probe-finetuned",
                       "--repeats", "1")) == 0
    assert (f"NOTICE: {finetune / 'split-0' / 'best.pt'} was fine-tuned on {csv}: its features "
            "learnt the scores of images tested here") in capsys.readouterr().out
    fewer = csv.with_name("fewer.csv")  # a copy less one row: not its dataset, yet it holds
    fewer.write_text("".join(csv.read_text().splitlines(keepends=True)[:-1]))  # its images
    assert main(_probe(finetune / "split-0" / "best.pt", fewer, tmp_path / "probe-fewer",
                       "--repeats", "1")) == 0
    held_out = set(read_json(finetune / "results.json")["splits"][0]["test_groups"])
    groups = [line.rsplit(",", 1)[1] for line in fewer.read_text().splitlines()[1:]]
    trained = sum(group not in held_out for group in groups)
    assert (f"was fine-tuned on {trained} of the 239 images tested here"
            in capsys.readouterr().out)
    assert main(["compare", str(out / "results.json"), str(finetune / "results.json"),
                 str(evaluation / "evaluation.json")]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [row[:2] for row in rows] == [["probe", "probe"], ["finetune", "finetune"],
                                         ["evaluate", "evaluate"]]
    assert rows[0][3:6] == ["csv", "->", "csv"]
    # trained on -> tested on; compare shows a long path's tail
    assert str(tiny_dataset).endswith(rows[2][3]) and rows[2][4:6] == ["->", "csv"]
    assert float(rows[0][6]) == pytest.approx(read_json(out / "results.json")["median"]["srocc"],
                                              abs=1e-4)


def test_a_multi_head_encoder_probes_across_datasets_and_against_a_random_start(pretrained,
                                                                                tmp_path,
                                                                                capsys):
    checkpoint = pretrained["heads"]  # backbone.* and heads.quality/level.*
    source = _planted_csv(tmp_path / "source", checkpoint, references=60, seed=1)
    target = _planted_csv(tmp_path / "target", checkpoint, references=10, seed=2)
    out = tmp_path / "cross"
    assert main(_probe(checkpoint, source, out, "--repeats", "2", "--test-dataset", "csv",
                       "--test-root", str(target))) == 0
    summary = read_json(out / "results.json")
    assert summary["cross_dataset"] and summary["test_images"] == 30
    assert all(result["test"]["count"] == 30 for result in summary["splits"])  # all of it
    assert summary["median"]["srocc"] > 0.99  # the same planted weights hold there
    assert all(result["held_out"]["count"] == 36 for result in summary["splits"])
    assert (out / "test_features.npz").is_file()
    # a "cross-dataset" test on the ridge's own training images is refused
    assert main(_probe(checkpoint, source, tmp_path / "same", "--test-dataset", "csv",
                       "--test-root", str(source))) == 2
    assert "--test-dataset holds the images of --dataset" in capsys.readouterr().err
    assert not list((tmp_path / "same").glob("*.npz"))  # refused before any feature
    # too few images for a split's ridge, or to correlate: refused before any feature too
    few = _planted_csv(tmp_path / "few", checkpoint, references=1, seed=3)
    two = few.with_name("two.csv")
    two.write_text("".join(few.read_text().splitlines(keepends=True)[:3]))
    lines = source.read_text().splitlines(keepends=True)
    pair = source.with_name("pair.csv")  # an image of each of two references
    pair.write_text(lines[0] + lines[1] + lines[4])
    for dataset, tested, said in ((source, two, f"the test dataset {two} holds 2 image(s)"),
                                  (pair, None, "the train part of split 0 has 1 image(s)")):
        test = ["--test-dataset", "csv", "--test-root", str(tested)] if tested else []
        assert main(_probe(checkpoint, dataset, tmp_path / "few-out", *test)) == 2
        assert said in capsys.readouterr().err
        assert not list((tmp_path / "few-out").glob("*.npz"))
    baseline = tmp_path / "random"
    assert main(["probe", "--init", "random", "--backbone", "test_resnet", "--dataset", "csv",
                 "--root", str(source), "--out", str(baseline), "--eval-crops", "1",
                 "--repeats", "2", *TINY]) == 0
    random_start = read_json(baseline / "results.json")
    assert random_start["start"] == "random" and random_start["features"] == 96
    # another encoder's features: the relation planted on the checkpoint's is not linear there
    assert random_start["median"]["srocc"] < summary["median"]["srocc"]


def test_shards_with_two_references_probe_and_say_validation_reuses_training(
        pretrained, tiny_dataset, tmp_path, capsys):
    out = tmp_path / "shards"
    assert main(["probe", "--checkpoint", str(pretrained["quality"]), "--dataset", "shards",
                 "--root", str(tiny_dataset), "--refs", "r4,r5", "--out", str(out),
                 "--repeats", "2", "--eval-crops", "2", *TINY]) == 0
    printed = capsys.readouterr().out
    assert "chosen by leave-one-out on the training images" in printed
    assert "ensemble labels Q stand in" in printed
    summary = read_json(out / "results.json")
    assert [result["test_groups"] for result in summary["splits"]] in (
        [["r4"], ["r5"]], [["r5"], ["r4"]])  # two folds of one reference each
    assert all(result["val_is_train"] and result["val_images"] == 0
               and result["test"]["count"] == 6 for result in summary["splits"])


def test_foreign_checkpoints_and_files_are_named_clearly(pretrained, tmp_path, capsys):
    csv = _planted_csv(tmp_path / "data", pretrained["quality"], references=4, seed=3)
    saved = torch.load(pretrained["quality"], weights_only=True)
    text, plain, truncated = (tmp_path / name for name in ("notes.pt", "plain.pt", "cut.pt"))
    text.write_text("not a checkpoint")
    torch.save(saved["model"], plain)
    torch.save({**saved, "model": {key: value for key, value in saved["model"].items()
                                   if not key.startswith("layer4.")}}, truncated)
    cases = [(text, (), "is not a readable checkpoint"),
             (plain, (), "does not name its backbone"),
             (truncated, (), "does not hold the test_resnet model"),
             (pretrained["quality"], ("--backbone", "resnet18"), "not --backbone resnet18"),
             (tmp_path / "absent.pt", (), "no checkpoint at")]
    for checkpoint, extra, message in cases:
        assert main(_probe(checkpoint, csv, tmp_path / "out", *extra)) == 2
        assert message in capsys.readouterr().err
    # evaluate and predict refuse a checkpoint that leaves tensors at their random start too
    assert main(["evaluate", "--checkpoint", str(truncated), "--dataset", "csv", "--root",
                 str(csv), "--out", str(tmp_path / "evaluated"), *TINY]) == 2
    assert "does not hold the test_resnet model" in capsys.readouterr().err
    assert main(["predict", str(csv.parent), "--checkpoint", str(truncated), "--out",
                 str(tmp_path / "predicted"), *TINY]) == 2
    assert "does not hold the test_resnet model" in capsys.readouterr().err
    assert main(_probe(pretrained["quality"], csv, tmp_path / "out", "--test-dataset",
                       "csv")) == 2
    assert "--test-dataset and --test-root go together" in capsys.readouterr().err
    assert main(_probe(pretrained["quality"], csv, tmp_path / "out", "--test-dataset",
                       "shards", "--test-root", str(tmp_path))) == 2
    assert "--test-dataset shards needs --test-refs" in capsys.readouterr().err
    assert main(["compare", str(text)]) == 2
    assert "is not JSON" in capsys.readouterr().err
    (tmp_path / "other.json").write_text(json.dumps({"median": {"srocc": 1.0}}))
    assert main(["compare", str(tmp_path / "other.json")]) == 2
    error = capsys.readouterr().err
    assert "its median does not hold srocc, plcc, krcc, rmse (and plcc_raw" in error
    older = tmp_path / "older" / "results.json"  # a finetune run of before the raw figures
    older.parent.mkdir()
    older.write_text(json.dumps({"start": "random", "median": {
        "srocc": 0.5, "plcc": 0.6, "krcc": 0.4, "rmse": 0.2}}))
    assert main(["compare", str(older)]) == 0
    assert capsys.readouterr().out.splitlines()[2].split() == [
        "older", "finetune", "random", "?", "->", "?", "0.5000", "0.6000", "-", "0.4000",
        "0.2000", "-", "1"]
    figures = {"srocc": 0.5, "plcc": 0.6, "krcc": 0.4, "rmse": 0.2}
    sparse = {"sparse_probe": {"kind": "probe", "median": figures},  # fields left out
              "sparse_eval": {"checkpoint": "best.pt", "figures": figures}}
    for name, summary in sparse.items():  # a row is named after its run's folder
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(summary))
    assert main(["compare", *(str(tmp_path / name / "results.json") for name in sparse)]) == 0
    rows = capsys.readouterr().out.splitlines()[2:4]
    assert [row.split()[:6] for row in rows] == [
        ["sparse_probe", "probe", "?", "?", "->", "?"],
        ["sparse_eval", "evaluate", "best.pt", "?", "->", "?"]]
    (tmp_path / "text.json").write_text(json.dumps({"median": {**figures, "srocc": "high"}}))
    assert main(["compare", str(tmp_path / "text.json")]) == 2
    assert "its median does not hold" in capsys.readouterr().err


@pytest.mark.slow
def test_two_ranks_give_the_features_of_one_process(pretrained, tmp_path):
    """7 references, 21 images: the ranks hold 11 and 10, gathered back in the images' order."""
    csv = _planted_csv(tmp_path / "data", pretrained["quality"], references=7, seed=4)
    command = _probe(pretrained["quality"], csv, tmp_path / "one", "--eval-crops", "2",
                     "--crop", "24", "--repeats", "2", "--batch-size", "4")
    assert main(command) == 0
    command[command.index("--out") + 1] = str(tmp_path / "two")
    torchrun(*command)
    one, two = (np.load(tmp_path / name / "features.npz") for name in ("one", "two"))
    assert two["names"].tolist() == one["names"].tolist()
    assert np.allclose(two["features"], one["features"], atol=1e-6)
    # features a few 1e-7 apart (the ranks' batches of other sizes) move the fitted figures
    # by a few 1e-7 (an RMSE of 0.033 by 4.4e-7 once: its sixth digit, 1.3e-5 of it)
    assert read_json(tmp_path / "two" / "results.json")["median"] == pytest.approx(
        read_json(tmp_path / "one" / "results.json")["median"], rel=1e-5, abs=1e-6)


def test_half_scale_joins_each_crops_features_with_its_half_size_copys(pretrained, tmp_path):
    """Re-IQA's read-out: the features of each image and of its half-size copy side by side;
    the copy here made by PIL's bicubic resize (Re-IQA's), outside the probe."""
    checkpoint = pretrained["quality"]
    csv = _planted_csv(tmp_path / "planted", checkpoint, references=8, seed=0)
    out = tmp_path / "probe"
    assert main(_probe(checkpoint, csv, out, "--repeats", "1", "--half-scale")) == 0
    assert read_json(out / "results.json")["half_scale"] is True
    saved = np.load(out / "features.npz")["features"]
    images = [Image.open(csv.parent / f"img{i:03d}.png") for i in range(24)]
    full = _features_outside(checkpoint, [np.asarray(image) for image in images])
    half = _features_outside(checkpoint, [np.asarray(image.resize((16, 16), Image.BICUBIC))
                                          for image in images])
    assert saved.shape == (24, 2 * full.shape[1])
    assert np.allclose(saved[:, :full.shape[1]], full, atol=1e-4)
    near = 0.02 * np.abs(half).max()  # PIL rounds its copy to 8 bits (0.6% measured)
    assert np.allclose(saved[:, full.shape[1]:], half, atol=near)
    assert not np.allclose(saved[:, full.shape[1]:], full, atol=near)


def test_the_split_shown_is_the_one_nearest_the_reported_median():
    """Splits whose predictions were constant have no SROCC (NaN): the split shown
    (scatter.png, test_predictions.npz) is the one nearest the reported median, which leaves
    NaN out; of an even count the lower middle (the two are as near)."""
    srocc = [0.4, float("nan"), 0.1, 0.3, float("nan"), 0.2]
    results = [{"test": dict.fromkeys(FIGURES, value)} for value in srocc]
    chosen = _median_split(results)
    median = median_figures(results)["srocc"]
    assert median == pytest.approx(0.25)  # of 0.1, 0.2, 0.3, 0.4
    assert abs(srocc[chosen] - median) == pytest.approx(min(
        abs(value - median) for value in srocc if value == value))
    assert srocc[chosen] == 0.2
    odd = [{"test": dict.fromkeys(FIGURES, value)} for value in (0.9, 0.5, 0.7)]
    assert odd[_median_split(odd)]["test"]["srocc"] == median_figures(odd)["srocc"] == 0.7
    assert _median_split([{"test": dict.fromkeys(FIGURES, float("nan"))}] * 3) == 0


def test_a_split_without_a_test_srocc_says_undefined_on_screen_and_in_its_plot(tmp_path,
                                                                              monkeypatch):
    """Constant predictions have no SROCC: the split's line and the scatter plot's title say
    "undefined" (as the median line does), never "nan"."""
    import matplotlib.axes

    from training.correlation import report
    from training.plots import scatter
    from training.probe import split_line

    predicted, opinion = np.full(20, 0.3), np.linspace(0, 1, 20)
    figures = report(predicted, opinion)
    line = split_line({"repeat": 0, "train_images": 40, "val_images": 5, "alpha": 0.1,
                       "test": figures})
    assert line.endswith("test SROCC undefined") and "nan" not in line
    titles = []
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title",
                        lambda axes, text, **_: titles.append(text))
    scatter(predicted, opinion, figures, "constant", tmp_path / "scatter.png")
    assert "SROCC undefined  PLCC undefined  KRCC undefined" in titles[0]
    assert "nan" not in titles[0] and (tmp_path / "scatter.png").is_file()
