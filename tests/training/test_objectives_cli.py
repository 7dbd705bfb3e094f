"""`train pretrain --objective ...` end to end in one process: each objective trains,
checkpoints, resumes mid-epoch exactly, refuses a resume under another objective, and its
best.pt gives `train finetune --pretrained-file`, `train probe` and any plain timm model its
backbone."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from shards import open_dataset
from training import checkpoint, label_free
from training.cli import _augment, _model, _objective, _optim, build_parser, main
from training.model import ModelConfig, build_model
from training.pretrain import PretrainConfig, pretrain
from training.trained import TrainedRun

from .conftest import read_json, write_tiny_dataset
from .crashing import Crash, crashing_fit
from .test_resume import assert_same_run

CROPS = {"contrastive": 16, "reconstruction": 32, "restoration": 32}


def pretrain_args(dataset, out, objective: str, *extra: str) -> list[str]:
    return ["pretrain", str(dataset), "--out", str(out), "--objective", objective,
            "--crop", str(CROPS[objective]), "--backbone", "test_resnet", "--init", "random",
            "--steps-per-epoch", "4", "--batch-size", "2", "--workers", "0", "--device",
            "cpu", "--patience", "5", "--val-refs", "r5", "--versions", "2", "--epochs", "2",
            *(["--queue-size", "64"] if objective == "contrastive" else []), *extra]


def test_contrastive_leaves_out_references_that_cannot_give_a_whole_chunk(tmp_path, capsys):
    """Re-IQA's chunk is the reference and n versions of n different types; a reference whose
    failed versions leave it fewer types is left out, and said (chunks of unequal size do not
    stack into a batch: the run stopped on the first such batch)."""
    dataset = write_tiny_dataset(tmp_path / "dataset", size=(64, 64),
                                 failed=frozenset({("r1", 10)}))
    assert main(pretrain_args(dataset, tmp_path / "out", "contrastive", "--epochs", "1")) == 0
    printed = capsys.readouterr().out
    assert ("NOTICE: 1 train reference(s) have fewer than 2 types among their versions "
            "(some failed, or composed ones share a first type), so no whole chunk: left out "
            "(r1)") in printed
    # test_resnet has batch norm: on one rank, keys without shuffling share their queries' BN
    assert "NOTICE: one rank and --key-splits 1: keys are encoded with the batch-norm" in printed
    summary = read_json(tmp_path / "out" / "summary.json")
    assert (summary["train_refs"], summary["chunk_versions"]) == (3, 2)
    assert main(pretrain_args(dataset, tmp_path / "three", "contrastive", "--versions", "3")
                ) == 2
    assert ("no train reference has 3 types for a chunk (the most: 2): lower --versions"
            in capsys.readouterr().err)


def test_references_too_small_for_the_crops_are_left_out_before_training(tmp_path, capsys):
    """A --size native dataset holds photos of many sizes: one whose image cannot give the
    group's boxes, at full scale or (contrastive) at half scale, is left out and said before
    any training, not met mid-run when its group is cut."""
    dataset = write_tiny_dataset(tmp_path / "dataset", size=(64, 64),
                                 sizes={"r1": (40, 24), "r2": (64, 40)})
    assert main(pretrain_args(dataset, tmp_path / "pairs", "reconstruction", "--epochs", "1")
                ) == 0
    assert ("NOTICE: 1 train reference(s) of " + str(dataset) + " are too small for the "
            "groups' crops, left out (e.g. r1 at full scale: a 32 x 32 crop does not fit a "
            "24 x 40 image)") in capsys.readouterr().out
    # two views of 16 need 16 + 12 rows: r1 has 24; r2's 40 give 20 at half scale
    assert main(pretrain_args(dataset, tmp_path / "chunks", "contrastive", "--epochs", "1")
                ) == 0
    assert ("NOTICE: 2 train reference(s) of " + str(dataset) + " are too small for the "
            "groups' crops, left out (e.g. r1 at full scale: two overlapping 16 x 16 views "
            "need an image of at least 28 x 16; this one is 24 x 40)") in capsys.readouterr().out
    assert read_json(tmp_path / "chunks" / "summary.json")["train_refs"] == 2
    assert main(pretrain_args(dataset, tmp_path / "none", "reconstruction", "--crop", "65")
                ) == 2
    assert "no train reference is large enough for the groups' crops" in \
        capsys.readouterr().err


def test_regression_leaves_out_references_smaller_than_its_crop(tmp_path, capsys):
    dataset = write_tiny_dataset(tmp_path / "dataset", size=(64, 64), sizes={"r1": (40, 24)})
    assert main(["pretrain", str(dataset), "--out", str(tmp_path / "run"), "--crop", "32",
                 "--backbone", "test_resnet", "--init", "random", "--steps-per-epoch", "2",
                 "--batch-size", "2", "--workers", "0", "--device", "cpu", "--epochs", "1"]
                ) == 0
    assert ("NOTICE: 1 reference(s) are smaller than the 32-pixel crop, left out (e.g. r1: a "
            "32 x 32 crop does not fit a 24 x 40 image)") in capsys.readouterr().out
    assert read_json(tmp_path / "run" / "summary.json")["train_samples"] == 3 * 6
    small_val = write_tiny_dataset(tmp_path / "small_val", size=(64, 64), sizes={"r4": (40, 24)})
    assert main(["pretrain", str(small_val), "--out", str(tmp_path / "none"), "--crop", "32",
                 "--backbone", "test_resnet", "--init", "random", "--workers", "0",
                 "--device", "cpu"]) == 2
    assert ("no val sample to read (1 val reference(s) are smaller than the 32-pixel crop: "
            "lower --crop)") in capsys.readouterr().err


def test_val_references_without_groups_are_refused_before_any_training(tmp_path, capsys,
                                                                       monkeypatch):
    """r4 and r5 the val references, every version of them failed: nothing to validate on,
    said before the first batch (not after an epoch's training)."""
    dataset = write_tiny_dataset(tmp_path / "dataset", size=(64, 64), failed=frozenset(
        (ref, distortion) for ref in ("r4", "r5") for distortion in (9, 10)))
    trained = []
    monkeypatch.setattr(label_free, "fit", lambda *args, **kwargs: trained.append(1))
    assert main(pretrain_args(dataset, tmp_path / "out", "reconstruction")) == 2
    assert ("no val reference has a distorted version in a complete shard, so there is no "
            "pair to validate on") in capsys.readouterr().err
    assert not trained


def test_a_shard_still_being_written_is_left_out_not_refused(tmp_path, capsys):
    """A dataset read while its run goes on (a shard without its stats): its references give
    no group, and the others train, as a regression run trains on the complete shards."""
    dataset = write_tiny_dataset(tmp_path / "dataset", size=(64, 64), shard_refs=1)
    (dataset / "shards" / "00002_stats.json").unlink()  # r2's shard
    assert main(pretrain_args(dataset, tmp_path / "out", "reconstruction", "--epochs",
                              "1")) == 0
    assert read_json(tmp_path / "out" / "summary.json")["train_refs"] == 3
    assert "on 3 references, validating on 2" in capsys.readouterr().out


def test_a_validation_limit_keeps_whole_val_references(tmp_path, capsys):
    """--val-limit in groups: whole references of a seeded order, as many ranks or not."""
    dataset = write_tiny_dataset(tmp_path / "dataset", size=(64, 64))
    args = pretrain_args(dataset, tmp_path / "out", "reconstruction", "--epochs", "1",
                         "--val-refs", "r4,r5", "--val-limit", "2")
    assert main(args) == 0
    assert "validating on 1" in capsys.readouterr().out  # 2 pairs each: r4 or r5, not both
    assert read_json(tmp_path / "out" / "summary.json")["history"][0]["val_count"] == 2


@pytest.mark.parametrize("objective", list(CROPS))
def test_a_run_resumed_mid_epoch_ends_as_if_never_interrupted(square_dataset, tmp_path,
                                                              monkeypatch, objective):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    # contrastive: shuffling BN on one rank (2 parts), its random orders resumed too
    splits = ["--key-splits", "2"] if objective == "contrastive" else []
    assert main(pretrain_args(square_dataset, straight, objective, *splits)) == 0
    with monkeypatch.context() as patch:
        patch.setattr(label_free, "fit", crashing_fit(epoch=1, batch=3))
        with pytest.raises(Crash):
            main(pretrain_args(square_dataset, broken, objective, "--checkpoint-every", "2",
                               *splits))
    assert checkpoint.load(broken / checkpoint.LAST)["partial_epoch"]["step"] == 2
    assert main(pretrain_args(square_dataset, broken, objective, "--checkpoint-every", "2",
                              "--resume", *splits)) == 0
    expected = checkpoint.load(straight / checkpoint.LAST)
    assert_same_run(expected, checkpoint.load(broken / checkpoint.LAST))
    summary = read_json(straight / "summary.json")
    assert summary["objective"] == objective and summary["epochs_run"] == 2
    assert all(r["val_score"] == -r["val_loss"] for r in summary["history"])
    if objective == "contrastive":  # the queue and the momentum encoder came back too
        assert int(expected["model"]["queue_pointer"]) == 2 * 4 * 2 * 3 * 2 % 64
        assert any(key.startswith("momentum.backbone.") for key in expected["model"])
        assert summary["history"][0]["lr"] == 0.03  # MoCo-v2's SGD + cosine
        assert summary["history"][1]["lr"] == pytest.approx(0.015)
        assert summary["key_splits"] == 2
    if objective == "reconstruction":
        assert summary["loss"] == "l1" and "LPIPS weights unavailable" in summary["notice"]


def test_resume_under_another_objective_is_refused(square_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(pretrain_args(square_dataset, out, "reconstruction", "--epochs", "1")) == 0
    args = pretrain_args(square_dataset, out, "restoration", "--epochs", "2", "--resume")
    assert main(args) == 2
    assert "objective.name" in capsys.readouterr().err


def test_label_free_pretraining_reads_several_datasets_mixed(tmp_path, capsys):
    """Re-IQA's synthetic and authentic sources, made by two generate runs: one pretraining
    over both, each with its own splits (--val-refs in each that holds it); the datasets are
    settings of the run (a resume with others is refused); regression reads one."""
    first = write_tiny_dataset(tmp_path / "first", size=(64, 64))
    second = write_tiny_dataset(tmp_path / "second", size=(48, 48), distortion_ids=(11,))
    out = tmp_path / "out"
    args = pretrain_args(first, out, "reconstruction", "--epochs", "1")
    args.insert(2, str(second))
    assert main(args) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert (f"on 8 references of 2 datasets ({first}: 4, {second}: 4), validating on 4"
            in printed)  # r5 moved to val in both
    summary = read_json(out / "summary.json")
    assert summary["also"] == [str(second)] and summary["train_refs"] == 8
    assert summary["history"][0]["val_count"] == 4 * 2  # r4 and r5 of each: --versions 2
    assert checkpoint.load(out / checkpoint.LAST)["config"]["also"] == [str(second)]
    trained = TrainedRun.read(out / checkpoint.BEST)  # probe names the references it read
    assert trained.pretrained_on(str(second)) and trained.pretrained_on(f"{first}/")
    assert trained.trained_references(str(second)) == {"r0", "r1", "r2", "r3"}
    alone = pretrain_args(first, out, "reconstruction", "--epochs", "2", "--resume")
    assert main(alone) == 2
    assert "also" in capsys.readouterr().err
    both = pretrain_args(first, out, "reconstruction", "--epochs", "2", "--resume")
    both.insert(2, f"{second}/")  # the same datasets, spelled otherwise
    assert main(both) == 0, capsys.readouterr().err
    assert checkpoint.load(out / checkpoint.LAST)["epoch"] == 1
    regression = ["pretrain", str(first), str(second), "--out", str(tmp_path / "reg"),
                  "--device", "cpu"]
    assert main(regression) == 2
    assert "regression learns one dataset's labels" in capsys.readouterr().err
    twice = pretrain_args(first, tmp_path / "twice", "reconstruction")
    twice.insert(2, f"{first}/")
    assert main(twice) == 2
    assert "a dataset is given twice" in capsys.readouterr().err


def test_a_reference_in_different_splits_of_two_datasets_is_never_trained_and_validated_on(
        tmp_path, capsys, monkeypatch):
    """The same photo generated twice with other seeds: r0 is train in one dataset, val in
    the other. Read together, it is validated on in both and trained on in neither (it was
    trained on through one and validated on through the other, unsaid)."""
    from tests.training import conftest

    first = write_tiny_dataset(tmp_path / "first", size=(64, 64))
    monkeypatch.setitem(conftest.SPLITS, "r0", "val")
    second = write_tiny_dataset(tmp_path / "second", size=(64, 64), distortion_ids=(11,))
    assert open_dataset(str(second)).splits["r0"] == "val"
    out = tmp_path / "out"
    args = pretrain_args(first, out, "reconstruction", "--epochs", "1")
    args.insert(2, str(second))
    assert main(args) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert ("NOTICE: 1 reference id(s) are, by id or by pixels, in different splits (r0): "
            "each is in the most held-out one of its copies") in printed
    assert (f"on 6 references of 2 datasets ({first}: 3, {second}: 3), validating on 6"
            in printed)  # r1-r3 trained on in each; r0, r4 and r5 validated on in each
    assert read_json(out / "summary.json")["history"][0]["val_count"] == 6 * 2
    trained = TrainedRun.read(out / checkpoint.BEST)  # what evaluate and probe call seen
    assert trained.trained_references(str(first)) == {"r1", "r2", "r3"}
    assert trained.trained_references(str(second)) == {"r1", "r2", "r3"}


def test_a_dataset_that_adds_no_train_group_is_said(tmp_path, capsys):
    """Every train reference of the second dataset lost its versions: it counts 4 train
    references, yet gives no pair to train on; the run goes on with the first, and says so
    (its references alone would not be counted out)."""
    first = write_tiny_dataset(tmp_path / "first", size=(64, 64))
    barren = write_tiny_dataset(tmp_path / "barren", size=(64, 64), distortion_ids=(11,),
                                failed=frozenset((ref, 11) for ref in ("r0", "r1", "r2", "r3")))
    args = pretrain_args(first, tmp_path / "out", "reconstruction", "--epochs", "1")
    args.insert(2, str(barren))
    assert main(args) == 0, capsys.readouterr().err
    assert (f"NOTICE: {barren} gives no train pairs (none of its train references has one): "
            "it adds validation only") in capsys.readouterr().out


def test_several_datasets_validate_on_the_same_groups_however_their_paths_are_typed(
        tmp_path, monkeypatch):
    """--val-limit draws whole val references of the datasets in a seeded order: the same
    whatever the spelling of their paths (here one that sorts them the other way round)."""
    first = write_tiny_dataset(tmp_path / "first", size=(64, 64))
    second = write_tiny_dataset(tmp_path / "second", size=(64, 64), distortion_ids=(11,))
    monkeypatch.chdir(tmp_path)
    losses = []
    for number, paths in enumerate(([str(first), str(second)], [str(first), "./second"])):
        args = pretrain_args(paths[0], tmp_path / f"out{number}", "reconstruction",
                             "--epochs", "1", "--val-limit", "4", "--seed", "1")
        args.insert(2, paths[1])  # (seed 1: the typed paths' order drew other references)
        assert main(args) == 0
        history = read_json(tmp_path / f"out{number}" / "summary.json")["history"]
        losses.append((history[0]["val_count"], history[0]["val_loss"]))
    assert losses[0] == losses[1] and losses[0][0] == 4


def test_a_dataset_without_whole_val_chunks_is_left_out_of_validation_not_refused(
        tmp_path, capsys):
    """Its only val reference lacks a type: no whole chunk of 2 types there, said; the other
    dataset validates (alone, it is refused: nothing to validate on)."""
    first = write_tiny_dataset(tmp_path / "first", size=(64, 64))
    short = write_tiny_dataset(tmp_path / "short", size=(64, 64), distortion_ids=(11, 12),
                               failed=frozenset({("r4", 12)}))
    args = pretrain_args(first, tmp_path / "out", "contrastive", "--epochs", "1",
                         "--val-refs", "", "--no-half-scale")
    args.insert(2, str(short))
    assert main(args) == 0, capsys.readouterr().err
    assert (f"{short}: no val reference has 2 types for a chunk (the most: 1): lower "
            "--versions; left out") in capsys.readouterr().out
    alone = pretrain_args(short, tmp_path / "alone", "contrastive", "--val-refs", "",
                          "--no-half-scale")
    assert main(alone) == 2
    assert "no val reference has 2 types" in capsys.readouterr().err


def test_a_run_made_with_an_option_now_refused_still_resumes(square_dataset, tmp_path):
    """--halve-every under the cosine schedule was recorded before pretrain refused it: its
    checkpoint resumes with the option given again (its cosine schedule over its 1 epoch)."""
    out = tmp_path / "run"
    given = build_parser().parse_args(pretrain_args(square_dataset, out, "contrastive",
                                                    "--epochs", "1"))
    pretrain(PretrainConfig(str(square_dataset), str(out), _model(given),
                            replace(_optim(given), halve_every=5), augment=_augment(given),
                            val_refs=("r5",), steps_per_epoch=4, workers=0, device="cpu",
                            objective=_objective(given)))
    resumed = pretrain_args(square_dataset, out, "contrastive", "--epochs", "1", "--resume")
    assert main(resumed) == 2  # without it, another setting
    assert main([*resumed, "--halve-every", "5"]) == 0


def test_a_resume_takes_the_same_paths_spelled_otherwise(square_dataset, tmp_path,
                                                         monkeypatch, capsys):
    first = tmp_path / "run"
    assert main(pretrain_args(square_dataset, first, "reconstruction", "--epochs", "1")) == 0
    moved = tmp_path / "elsewhere" / "run"  # the run folder moved, the dataset relative
    moved.parent.mkdir()
    first.rename(moved)
    monkeypatch.chdir(square_dataset.parent)
    args = pretrain_args(Path(square_dataset.name), f"{moved}/", "reconstruction", "--epochs",
                         "2", "--resume")
    assert main(args) == 0, capsys.readouterr().err
    assert checkpoint.load(moved / checkpoint.LAST)["epoch"] == 1  # its second epoch ran


def test_a_cosine_schedule_resumes_only_over_its_planned_epochs(square_dataset, tmp_path,
                                                                capsys):
    """Cosine decays to 0 at the planned end: more epochs on resume would change it."""
    out = tmp_path / "run"
    assert main(pretrain_args(square_dataset, out, "contrastive", "--epochs", "1")) == 0
    assert main(pretrain_args(square_dataset, out, "contrastive", "--epochs", "2",
                              "--resume")) == 2
    assert "resume it with --epochs 1" in capsys.readouterr().err


@pytest.fixture(scope="module")
def best_files(square_dataset, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("objectives")
    for objective in CROPS:
        assert main(pretrain_args(square_dataset, folder / objective, objective, "--epochs",
                                  "1")) == 0
    return {objective: folder / objective / checkpoint.BEST for objective in CROPS}


@pytest.mark.parametrize("objective", list(CROPS))
@pytest.mark.parametrize("outputs", [0, 1])
def test_an_objective_checkpoint_gives_a_plain_timm_model_all_its_backbone(best_files,
                                                                          objective, outputs):
    saved = checkpoint.load(best_files[objective])["model"]
    built = build_model(ModelConfig("test_resnet", pretrained_file=str(best_files[objective])),
                        outputs)
    backbone_keys = set(timm.create_model("test_resnet", num_classes=0).state_dict())
    own = built.model.state_dict()
    assert backbone_keys <= set(own)
    for key in backbone_keys:  # every backbone tensor is the checkpoint's
        assert torch.equal(own[key], saved[f"backbone.{key}"]), key
    assert f"{len(backbone_keys)} tensors loaded" in built.notices[0]


def test_an_objective_checkpoint_gives_a_multi_head_model_its_backbone(best_files):
    saved = checkpoint.load(best_files["restoration"])["model"]
    built = build_model(ModelConfig("test_resnet",
                                    pretrained_file=str(best_files["restoration"])),
                        heads={"quality": 1, "class": 4})
    own = built.model.state_dict()
    backbone = [key for key in own if key.startswith("backbone.")]
    assert backbone and all(torch.equal(own[key], saved[key]) for key in backbone)
    assert "left new (heads." in built.notices[0]


def test_train_finetune_starts_from_a_contrastive_best_pt(best_files, square_dataset,
                                                         tmp_path, capsys):
    out = tmp_path / "finetune"
    assert main(["finetune", "--dataset", "shards", "--root", str(square_dataset), "--refs",
                 "r0,r1,r2,r3,r4,r5", "--out", str(out), "--pretrained-file",
                 str(best_files["contrastive"]), "--backbone", "test_resnet", "--crop", "32",
                 "--epochs", "1", "--batch-size", "4", "--workers", "0", "--device", "cpu",
                 "--eval-crops", "1"]) == 0
    printed = capsys.readouterr().out
    assert "tensors loaded" in printed and "other parts" in printed
    assert -1 <= read_json(out / "results.json")["median"]["srocc"] <= 1
    # it pretrained on the train split (r5 was its validation): a test part may hold those
    assert (f"NOTICE: {best_files['contrastive']} was pretrained on the samples of 4 of the "
            "references given (r0, r1, r2, ...): optimistic figures; finetune it on "
            "references it never read") in printed



@pytest.mark.parametrize("objective", list(CROPS))
def test_evaluate_refuses_a_label_free_checkpoint_its_head_never_learnt(best_files,
                                                                       square_dataset,
                                                                       tmp_path, capsys,
                                                                       objective):
    assert main(["evaluate", "--checkpoint", str(best_files[objective]), "--dataset", "shards",
                 "--root", str(square_dataset), "--refs", "r0,r1", "--out",
                 str(tmp_path / "eval"), "--workers", "0", "--device", "cpu"]) == 2
    assert (f"was pretrained {objective} (label-free): its quality head never learnt"
            in capsys.readouterr().err)
    assert not (tmp_path / "eval").exists()
    image = tmp_path / "one.png"  # and predict, as evaluate
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(image)
    assert main(["predict", "--checkpoint", str(best_files[objective]), str(image), "--out",
                 str(tmp_path / "scores"), "--workers", "0", "--device", "cpu"]) == 2
    assert (f"was pretrained {objective} (label-free): its quality head never learnt"
            in capsys.readouterr().err)
    assert not (tmp_path / "scores").exists()


def _centre_features(best: Path, images: list[np.ndarray], crop: int) -> np.ndarray:
    """timm's pooled features, computed here, of the centre crops under the checkpoint's
    `backbone.*` tensors and the normalisation its config records."""
    saved = checkpoint.load(best)
    model = timm.create_model("test_resnet", num_classes=0)
    model.load_state_dict({key.removeprefix("backbone."): value for key, value
                           in saved["model"].items() if key.startswith("backbone.")})
    augment = saved["config"]["augment"]
    top, left = ((side - crop) // 2 for side in images[0].shape[:2])
    cut = np.stack([image[top:top + crop, left:left + crop] for image in images]) / 255.0
    scaled = (cut - augment["mean"]) / augment["std"]
    with torch.no_grad():
        return model.eval()(torch.from_numpy(scaled.transpose(0, 3, 1, 2)).float()).numpy()


@pytest.mark.parametrize("objective", list(CROPS))
def test_train_probe_reads_out_every_objectives_frozen_encoder(best_files, square_dataset,
                                                               tmp_path, objective):
    """A probe of each objective's best.pt runs end to end, and the features it reads out are
    the checkpoint's backbone's (one centre crop per image)."""
    out, refs = tmp_path / "probe", "r0,r1,r2,r3,r4,r5"
    assert main(["probe", "--checkpoint", str(best_files[objective]), "--dataset", "shards",
                 "--root", str(square_dataset), "--refs", refs, "--split-by", "image",
                 "--repeats", "2", "--eval-crops", "1", "--crop", "32", "--out", str(out),
                 "--workers", "0", "--device", "cpu"]) == 0
    summary = read_json(out / "results.json")
    assert summary["kind"] == "probe" and len(summary["splits"]) == 2
    saved = np.load(out / "features.npz")
    pixels = {item["key"]: item["image"]
              for item in open_dataset(str(square_dataset)).samples(refs=set(refs.split(",")))}
    images = [pixels[name] for name in saved["names"].tolist()]
    np.testing.assert_allclose(saved["features"],
                               _centre_features(best_files[objective], images, 32), atol=1e-4)


def test_restoration_trains_with_mt_irns_weight_decay_and_step_schedule():
    """seed-methods.md, MT-IRN: weight decay 5e-4 and the learning rate x 0.9 every 10
    epochs; a regression run keeps the reference setup (halved every 20, written as before)."""
    from training.cli import _optim, build_parser
    from training.optim import optimiser

    parser = build_parser()
    restoration = _optim(parser.parse_args(["pretrain", "d", "--out", "y", "--objective",
                                            "restoration"]))
    assert (restoration.weight_decay, restoration.halve_every, restoration.decay) == (
        5e-4, 10, 0.9)
    optimizer, schedule = optimiser(torch.nn.Linear(2, 1), restoration)
    rates = []
    for _ in range(25):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    np.testing.assert_allclose(rates, [1e-3 * 0.9 ** (epoch // 10) for epoch in range(25)],
                               rtol=1e-12)
    chosen = _optim(parser.parse_args(["pretrain", "d", "--out", "y", "--objective",
                                       "restoration", "--lr-decay", "0.8",
                                       "--halve-every", "3"]))
    assert (chosen.halve_every, chosen.decay) == (3, 0.8)
    regression = _optim(parser.parse_args(["pretrain", "d", "--out", "y"]))
    assert (regression.halve_every, regression.decay, regression.reference_setup) == (
        20, 0.5, True)
    with pytest.raises(ValueError, match="decay must be in"):
        _optim(parser.parse_args(["pretrain", "d", "--out", "y", "--lr-decay", "1.5"]))


def test_the_unshuffled_notice_names_only_a_batch_norm_backbone_on_one_key_part():
    from training.distributed import Context
    from training.objectives.contrastive import unshuffled_notice

    one, two = (Context(rank=0, world_size=size, local_rank=0, device=torch.device("cpu"))
                for size in (1, 2))
    norm = timm.create_model("test_resnet", num_classes=0)
    plain = timm.create_model("vit_tiny_patch16_224", num_classes=0)  # layer norm only
    assert unshuffled_notice(norm, one, 1) and not unshuffled_notice(norm, one, 2)
    assert not unshuffled_notice(norm, two, 1) and not unshuffled_notice(plain, one, 1)


@pytest.mark.parametrize(("given", "mirrors"), [([], True), (["--no-flip"], False)])
def test_label_free_training_groups_are_mirrored_unless_no_flip(tmp_path, monkeypatch, given,
                                                                  mirrors):
    """Training groups are mirrored left-right one in two (every member alike: a flip keeps
    quality), as single samples are, unless --no-flip; validation groups never are."""
    dataset = write_tiny_dataset(tmp_path / "dataset", size=(64, 64))
    asked = []
    made = label_free.group_dataset

    def recording(*args, **kwargs):
        asked.append((args[3].length is not None, kwargs["flip"]))  # (training reading, flip)
        return made(*args, **kwargs)
    monkeypatch.setattr(label_free, "group_dataset", recording)
    assert main(pretrain_args(dataset, tmp_path / "run", "restoration", "--epochs", "1",
                              *given)) == 0
    assert sorted(set(asked)) == [(False, False), (True, mirrors)]


def test_a_label_free_checkpoint_from_before_group_flips_is_not_resumed_with_them(tmp_path,
                                                                                 capsys):
    """Label-free groups did not flip before 2026-12-02, whatever augment.flip said: such a
    checkpoint (no group_flips recorded) is refused on resume rather than continued with
    flips, which would not end as its run would have."""
    dataset = write_tiny_dataset(tmp_path / "dataset", size=(64, 64))
    out = tmp_path / "run"
    assert main(pretrain_args(dataset, out, "reconstruction", "--epochs", "1")) == 0
    state = checkpoint.load(out / checkpoint.LAST)
    assert state["config"]["group_flips"] is True
    assert "temperature_unit" not in state["config"]["optim"]  # no soft SROCC: not recorded
    del state["config"]["group_flips"]  # as the earlier version wrote it
    checkpoint.save(state, out / checkpoint.LAST)
    capsys.readouterr()
    assert main(pretrain_args(dataset, out, "reconstruction", "--epochs", "2", "--resume")) == 2
    assert "--resume with other settings" in (said := capsys.readouterr().err)
    assert "(group_flips (none) -> True)" in said


def test_a_queue_too_small_for_one_steps_keys_is_refused_before_any_data_is_read(tmp_path,
                                                                                capsys):
    """One step enqueues a key of every image of the global batch's chunks at each scale:
    --batch-size 2 chunks x (1 reference + --versions 2) x 2 scales = 12 (MoCo's queue must
    hold them); the refusal comes before the dataset (absent here) is opened."""
    absent = tmp_path / "absent"
    for size, half in ((11, []), (5, ["--no-half-scale"])):
        args = pretrain_args(absent, tmp_path / "out", "contrastive", "--queue-size", str(size),
                             *half)
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"--queue-size {size} is smaller than the keys one step enqueues: " \
               f"{2 * 3 * (2 - bool(half))}" in err
    assert main(pretrain_args(absent, tmp_path / "out", "contrastive", "--queue-size", "12")) == 2
    assert "--queue-size" not in capsys.readouterr().err  # refused: the dataset is absent
    assert not (tmp_path / "out").exists()
