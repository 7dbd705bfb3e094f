import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from fractions import Fraction

import numpy as np
import pytest
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from iqa_factory.cli import main
from shards.lease import TRAIN_LEASE_FILE
from training import checkpoint

from .conftest import png

IMAGES = 30  # enough for a split's validation and test parts to have figures
TINY = ["--backbone", "test_resnet", "--init", "random", "--crop", "32", "--workers", "0",
        "--device", "cpu"]


def test_train_commands_are_reached_through_iqa_factory(capsys):
    from pipeline.cli import main as pipeline_main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    assert "pretrain" in capsys.readouterr().out
    assert pipeline_main(["train", "pretrain", "x"]) == 2  # the pipeline's room has no training
    assert "runs from the iqa-factory command" in capsys.readouterr().err
    module = subprocess.run([sys.executable, "-m", "iqa_factory", "train", "--help"],
                            capture_output=True, text=True, timeout=300)
    assert module.returncode == 0 and "pretrain" in module.stdout


def test_pretraining_without_validation_references_says_how_to_name_some(tiny_dataset, tmp_path,
                                                                       capsys):
    code = main(["train", "pretrain", str(tiny_dataset), "--out", str(tmp_path / "run"),
                 "--exclude-refs", "r4", *TINY])
    assert code == 2
    assert "no `val` reference" in capsys.readouterr().err
    code = main(["train", "pretrain", str(tiny_dataset), "--out", str(tmp_path / "run"),
                 "--val-refs", "r0,r1,r2,r3,r4", *TINY])  # refused before the model is built
    captured = capsys.readouterr()
    assert code == 2 and "pretraining" not in captured.out
    assert "has no `train` sample to pretrain on" in captured.err


def test_pretraining_on_a_dataset_still_being_generated_says_what_it_reads(
        store_datasets, tmp_path, capsys):
    """A dataset whose run has not ended (no report.json) reads its complete shards only:
    a NOTICE says how many of those planned, and a split it leaves empty names that cause."""
    from shards.dataset import open_dataset

    going = tmp_path / "going"
    shutil.copytree(store_datasets["images"], going)
    (going / "report.json").unlink()
    (going / "shards" / "00001_stats.json").unlink()  # shard 1 not finished yet
    refs = sorted(open_dataset(str(going)).references)  # astronaut (train), coffee (test)
    common = ["train", "pretrain", str(going), "--init", "random", "--backbone", "test_resnet",
              "--crop", "32", "--workers", "0", "--device", "cpu", "--batch-size", "2"]
    unfinished = (f"{going}: its run has not finished (no report.json): only the 1 shard(s) "
                  "complete so far are read, of 2 planned")
    assert main([*common, "--out", str(tmp_path / "none"), "--val-refs", ",".join(refs)]) == 2
    assert f"reference is in val or left out (--val-refs, --exclude-refs); {unfinished}" \
        in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "run"), "--val-refs", refs[1], "--epochs",
                 "1", "--steps-per-epoch", "1"]) == 0
    assert f"NOTICE: {unfinished}" in capsys.readouterr().out
    assert main([*common, "--out", str(tmp_path / "pairs"), "--val-refs", refs[1], "--epochs",
                 "1", "--steps-per-epoch", "1", "--objective", "reconstruction"]) == 0
    assert f"NOTICE: {unfinished}" in capsys.readouterr().out  # the label-free objectives too
    assert main([*common, "--out", str(tmp_path / "no_val"), "--objective", "reconstruction"]
                ) == 2  # coffee is a test reference: no val but named ones
    assert f"has no `val` reference: name some with --val-refs; {unfinished}" \
        in capsys.readouterr().err


def test_pretraining_refuses_before_an_epoch_what_it_cannot_validate_or_learn(
        tmp_path, monkeypatch, capsys):
    """A regression run whose validation holds fewer samples than its correlations need (it
    trained an epoch, then stopped), and a dataset whose every version failed (it was told
    the dataset was made label-free), are refused at once, saying what is wrong."""
    from tests.training import conftest

    monkeypatch.setattr(conftest, "NOISE", {1: 4.0, 2: 24.0})  # two versions a reference
    two = conftest.write_tiny_dataset(tmp_path / "two", distortion_ids=(9,))
    assert main(["train", "pretrain", str(two), "--out", str(tmp_path / "run"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "validating on 2 sample(s) of 1 reference(s); the correlations that choose the best " \
           "epoch need at least 3: name more --val-refs" in err
    assert not (tmp_path / "run" / "last.pt").exists()
    every = frozenset((ref, 9) for ref in conftest.SPLITS)
    failed = conftest.write_tiny_dataset(tmp_path / "failed", distortion_ids=(9,), failed=every)
    assert main(["train", "pretrain", str(failed), "--out", str(tmp_path / "run"), *TINY]) == 2
    assert "has no distorted sample: every source or version failed" in capsys.readouterr().err


@pytest.mark.parametrize(("objective", "given", "named"), [
    ("restoration", ["--queue-size", "8", "--loss", "mse"], "--queue-size, --loss do not"),
    ("reconstruction", ["--no-half-scale"], "--no-half-scale does not"),
    ("restoration", ["--translate", "0.1", "--rotate", "5"],
     "--translate, --rotate do not apply to --objective restoration"),
    ("contrastive", ["--soft-rank-temperature", "0.5"], "--soft-rank-temperature does not"),
    ("regression", ["--versions", "3", "--temperature", "0.1"], "--temperature, --versions"),
    ("contrastive", ["--halve-every", "5", "--lr-decay", "0.1"],
     "--halve-every, --lr-decay do not apply to the cosine schedule"),
    ("regression", ["--schedule", "cosine", "--halve-every", "5"],
     "--halve-every does not apply to the cosine schedule (it takes no steps): leave it out"),
    ("regression", ["--target", "class,level", "--loss", "mae"],
     "--loss does not apply to --target class,level (classes: cross-entropy)"),
    ("regression", ["--loss", "mse+plcc", "--soft-rank-temperature", "0.1"],
     "--soft-rank-temperature does not apply to --loss mse+plcc (no srocc term, the soft "
     "rank's): leave it out"),
])
def test_pretrain_refuses_options_its_objective_never_reads(tmp_path, capsys, objective,
                                                            given, named):
    """They would be recorded in its checkpoints, and refuse a resume, for nothing."""
    assert main(["train", "pretrain", str(tmp_path), "--out", str(tmp_path / "run"),
                 "--objective", objective, *given, *TINY]) == 2
    assert f"{named}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_finetune_refuses_a_soft_rank_temperature_its_loss_never_reads(tmp_path, capsys):
    """With no srocc term, the temperature of its soft rank would be recorded for nothing; a
    loss with the term takes it (refused later, here, for the folder that is no dataset)."""
    common = ["train", "finetune", "--dataset", "csv", "--root", str(tmp_path / "absent.csv"),
              "--out", str(tmp_path / "run"), "--soft-rank-temperature", "0.1", *TINY]
    assert main([*common, "--loss", "mse"]) == 2
    assert ("--soft-rank-temperature does not apply to --loss mse (no srocc term, the soft "
            "rank's): leave it out") in capsys.readouterr().err
    assert main([*common, "--loss", "mse+srocc"]) == 2
    assert "soft-rank" not in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_summary_counts_the_validation_samples_read(tiny_dataset, tmp_path):
    """--val-limit 7 of the 18 samples of r0, r3, r4 (6 each): two whole references."""
    out = tmp_path / "run"
    assert main(["train", "pretrain", str(tiny_dataset), "--out", str(out), "--epochs", "1",
                 "--steps-per-epoch", "1", "--val-refs", "r0,r3", "--val-limit", "7",
                 *TINY]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["val_samples"] == summary["history"][0]["val_count"] == 12
    assert summary["val_split_samples"] == 18


def test_resume_without_a_checkpoint_and_bad_datasets_fail_clearly(tiny_dataset, tmp_path,
                                                                 capsys):
    assert main(["train", "pretrain", str(tiny_dataset), "--out", str(tmp_path / "none"),
                 "--resume", "--epochs", "1", "--steps-per-epoch", "1", *TINY]) == 2
    said = capsys.readouterr()
    assert "nothing to resume" in said.err
    assert "pretraining" not in said.out  # refused before the run is announced
    taken = tmp_path / "file.txt"
    taken.write_text("mine")
    assert main(["train", "pretrain", str(tiny_dataset), "--out", str(taken), *TINY]) == 2
    assert f"--out {taken} is a file, not a folder" in capsys.readouterr().err
    for command in (["pretrain", str(tiny_dataset), *TINY],  # a file above it: named first
                    ["evaluate", "--checkpoint", str(taken), "--dataset", "csv", "--root",
                     str(taken), "--device", "cpu"],
                    ["predict", str(tmp_path), "--checkpoint", str(taken), "--device", "cpu"]):
        assert main(["train", *command, "--out", str(taken / "sub" / "run")]) == 2
        error = capsys.readouterr().err
        assert f"--out {taken / 'sub' / 'run'}: {taken} is a file where a folder is wanted" \
            in error, error
    for run in range(2):  # a second run into the folder, without --resume, says it replaces
        assert main(["train", "pretrain", str(tiny_dataset), "--out", str(tmp_path / "pre"),
                     "--epochs", "1", "--steps-per-epoch", "1", *TINY]) == 0
        said = "holds an earlier pretraining run (last.pt): this one removes its checkpoints"
        assert (said in capsys.readouterr().out) == (run == 1)
    assert main(["train", "pretrain", str(tiny_dataset), "--out", str(tmp_path / "pre"),
                 "--val-refs", "nowhere", *TINY]) == 2  # refused: the earlier run is left,
    assert "replaces" not in capsys.readouterr().out  # and no notice says otherwise
    assert main(["train", "finetune", "--dataset", "tid2013", "--root", str(tmp_path),
                 "--out", str(tmp_path / "ft"), *TINY]) == 2
    assert "mos_with_names.txt does not exist" in capsys.readouterr().err


def test_pretraining_refuses_a_dataset_with_a_damaged_shard(tiny_dataset, tmp_path, capsys):
    """A truncated tar (its stats say otherwise): refused by every objective, as open_dataset
    refuses it, rather than trained on as a smaller dataset."""
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_dataset, damaged)
    tar = damaged / "shards" / "00001.tar"
    tar.write_bytes(tar.read_bytes()[:10_000])
    for objective in ("regression", "reconstruction"):
        assert main(["train", "pretrain", str(damaged), "--out", str(tmp_path / objective),
                     "--objective", objective, "--epochs", "1", "--steps-per-epoch", "1",
                     *TINY]) == 2
        error = capsys.readouterr().err
        assert "1 finished shard(s) do not match their stats (00001: tar is 10000 bytes" \
            in error
    assert not (tmp_path / "regression" / "last.pt").exists()


def test_compare_prints_the_median_figures(tmp_path, capsys):
    for name, srocc in (("pretrained", 0.9), ("baseline", 0.7)):
        (tmp_path / name).mkdir()
        figures = dict.fromkeys(("srocc", "plcc", "plcc_raw", "krcc", "rmse", "rmse_raw"), 0.5)
        (tmp_path / name / "results.json").write_text(
            json.dumps({"start": name, "median": {**figures, "srocc": srocc}}))
    assert main(["train", "compare", str(tmp_path / "pretrained" / "results.json"),
                 str(tmp_path / "baseline" / "results.json")]) == 0
    lines = capsys.readouterr().out.splitlines()  # run, kind, start, train -> test, SROCC
    assert lines[2].split()[:7] == ["pretrained", "finetune", "pretrained", "?", "->", "?",
                                    "0.9000"]
    assert lines[3].split()[:7] == ["baseline", "finetune", "baseline", "?", "->", "?",
                                    "0.7000"]


def test_compare_names_a_malformed_results_file_and_reads_a_run_folder(tmp_path, capsys):
    """Hand-made or damaged results files are named, never a TypeError or KeyError; a run's
    folder stands for the results.json or evaluation.json in it."""
    figures = dict.fromkeys(("srocc", "plcc", "plcc_raw", "krcc", "rmse", "rmse_raw"), 0.5)
    cases = {"null_repeats": ({"median": figures, "repeats": None}, "repeats is None"),
             "text_repeats": ({"median": figures, "repeats": "3"}, "repeats is '3'"),
             "zero_repeats": ({"median": figures, "repeats": 0}, "repeats is 0"),
             "probe_without_median": ({"kind": "probe", "start": "x"}, "its median does not"),
             "text_figure": ({"median": {**figures, "plcc_raw": "0.4"}}, "its median does not"),
             "bool_figure": ({"checkpoint": "b.pt", "figures": {**figures, "srocc": True}},
                             "its figures do not hold"),
             "figures_not_a_dict": ({"checkpoint": "b.pt", "figures": [0.5]},
                                    "its figures do not hold"),
             "a_list": ([figures], "neither a results"),
             "nan_figure": ({"median": {**figures, "srocc": float("nan")}},
                            "its median does not"),  # (JSON's NaN: runs write null)
             "infinite_figure": ({"checkpoint": "b.pt", "figures": {**figures,
                                                                    "rmse": float("inf")}},
                                 "its figures do not hold"),
             # a pretraining's summary.json: its best checkpoint, its validation only
             "a_pretraining": ({"checkpoint": "b.pt", "best_score": 0.5, "best_epoch": 1},
                               "it is a pretraining's summary (validation only)")}
    for name, (summary, message) in cases.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(summary))
        assert main(["train", "compare", str(tmp_path / name / "results.json")]) == 2, name
        error = capsys.readouterr().err
        assert "Traceback" not in error and message in error, (name, error)

    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"start": "random", "median": figures,
                                                  "repeats": 3}))
    assert main(["train", "compare", str(run)]) == 0
    row = capsys.readouterr().out.splitlines()[2].split()
    assert row[:3] == ["run", "finetune", "random"] and row[-1] == "3"
    assert main(["train", "compare", str(run), str(run / "results.json")]) == 0  # once
    assert len(capsys.readouterr().out.splitlines()) == 3
    (tmp_path / "empty").mkdir()
    assert main(["train", "compare", str(tmp_path / "empty")]) == 2
    assert "is a folder without a results.json or evaluation.json" in capsys.readouterr().err
    assert main(["train", "compare", "/dev/null"]) == 2  # there, but no file of results
    assert "/dev/null is no results file (a device or a pipe)" in capsys.readouterr().err


def test_a_classification_target_trains_a_class_head_and_reports_accuracy(tiny_dataset,
                                                                          tmp_path):
    out = tmp_path / "levels"
    assert main(["train", "pretrain", str(tiny_dataset), "--out", str(out), "--target", "level",
                 "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4", *TINY]) == 0
    state = checkpoint.load(out / checkpoint.LAST)
    assert state["model"]["fc.weight"].shape[0] == 5  # one logit per level
    record = state["history"][0]
    assert 0.0 <= record["val_accuracy"] <= 1.0 and record["val_count"] == 6
    assert main(["train", "evaluate", "--checkpoint", str(out / checkpoint.BEST), "--dataset",
                 "shards", "--root", str(tiny_dataset), "--refs", "r5", "--out",
                 str(tmp_path / "eval"), "--workers", "0", "--device", "cpu"]) == 2


@pytest.mark.slow
def test_nasnetalarge_pretrains_and_evaluates_with_its_own_normalisation(tiny_dataset,
                                                                         tmp_path):
    out, evaluation = tmp_path / "nasnet", tmp_path / "eval"
    model = ["--backbone", "nasnetalarge", "--init", "random", "--crop", "32", "--workers",
             "0", "--device", "cpu"]
    assert main(["train", "pretrain", str(tiny_dataset), "--out", str(out), "--epochs", "1",
                 "--steps-per-epoch", "1", "--batch-size", "2", "--drop-path", "0.1",
                 "--exclude-refs", "r5", *model]) == 0
    trained = checkpoint.load(out / checkpoint.BEST)["config"]["augment"]
    assert tuple(trained["mean"]) == tuple(trained["std"]) == (0.5, 0.5, 0.5)  # timm's TF cfg
    assert main(["train", "evaluate", "--checkpoint", str(out / checkpoint.BEST), "--dataset",
                 "shards", "--root", str(tiny_dataset), "--refs", "r5", "--eval-crops", "2",
                 "--out", str(evaluation), "--workers", "0", "--device", "cpu"]) == 0
    result = json.loads((evaluation / "evaluation.json").read_text())
    assert result["figures"]["count"] == 6  # r5's distorted versions


def test_evaluate_takes_the_checkpoints_input_and_falls_back_to_imagenet():
    from training.trained import TrainedRun

    def run(config: dict) -> TrainedRun:
        return TrainedRun.of({"model": {"backbone": config.pop("backbone")}, **config})

    nasnet = run({"backbone": "nasnetalarge",
                  "augment": {"crop": 96, "mean": [0.5] * 3, "std": [0.5] * 3}}).augment()
    assert (nasnet.crop, nasnet.mean) == (96, (0.5, 0.5, 0.5))
    older = run({"backbone": "resnet50", "augment": {"crop": 64}}).augment()
    assert older.mean == IMAGENET_DEFAULT_MEAN and older.std == IMAGENET_DEFAULT_STD
    assert run({"backbone": "nasnetalarge"}).augment().crop == 331  # timm's input size
    assert run({"backbone": "nasnetalarge"}).augment(crop=128).crop == 128


def test_a_checkpoint_says_what_its_scores_mean():
    from training.trained import TrainedRun

    fine_tuned = TrainedRun.of({"model": {"backbone": "resnet18"}, "dataset": "koniq10k",
                                "repeat": 2, "seed": 5, "split_by": "image", "refs": ["a"]})
    assert fine_tuned.fine_tuned and (fine_tuned.repeat, fine_tuned.seed) == (2, 5)
    assert fine_tuned.fine_tuned_on("koniq10k", "/anywhere")  # recorded no root: by kind
    from training.trained import resolved_root
    resolved = TrainedRun.of({"model": {"backbone": "resnet18"}, "dataset": "csv",
                              "root": "data/a.csv", "repeat": 0,
                              "root_resolved": resolved_root("data/a.csv")})
    for spelling in (os.path.abspath("data/a.csv"), "./data/a.csv",
                     "file://" + os.path.abspath("data/a.csv")):
        assert resolved.fine_tuned_on("csv", spelling)  # the same file
    assert not resolved.fine_tuned_on("csv", "data/b.csv")  # another CSV: not its own split
    assert not resolved.fine_tuned_on("koniq10k", "data/a.csv")
    typed = TrainedRun.of({"model": {"backbone": "resnet18"}, "dataset": "csv",
                           "root": "data/a.csv", "repeat": 0})  # before roots were resolved
    assert typed.fine_tuned_on("csv", "/elsewhere/data/a.csv")  # by name: never missed
    assert not typed.fine_tuned_on("csv", "data/b.csv")
    assert fine_tuned.score_meaning().startswith("the opinion scores of koniq10k")
    on_ours = TrainedRun.of({"model": {"backbone": "resnet18"}, "dataset": "shards",
                             "root": "out/run", "repeat": 0})  # fine-tuned on a dataset of ours
    assert on_ours.score_meaning() == ("the ensemble label Q of the shards dataset out/run "
                                       "(0 to 1, higher is better)")
    pretrained = TrainedRun.of({"model": {"backbone": "resnet18"}, "dataset": "out/run",
                                "target": "vif"})
    assert not pretrained.fine_tuned and pretrained.refs == ()
    assert pretrained.score_meaning() == "the raw vif scores of out/run (higher is better)"
    gmsd = TrainedRun.of({"model": {"backbone": "resnet18"}, "dataset": "out/run",
                          "target": "gmsd"})  # a distance: GMSD.m gives 0 for a copy
    assert gmsd.score_meaning() == "the raw gmsd scores of out/run (lower is better)"
    under_pmos = TrainedRun.of({"model": {"backbone": "resnet18"}, "dataset": "out/run",
                                "ensemble": "pmos"})
    assert under_pmos.score_meaning().startswith("the ensemble label Q under ensemble pmos of")
    assert under_pmos.pretrained_on(os.path.abspath("out/run")) and not \
        fine_tuned.pretrained_on("data/a.csv")
    elsewhere = TrainedRun.of({"model": {"backbone": "resnet18"}, "dataset": "out/run",
                               "dataset_resolved": "/data/out/run"})  # run in /data
    assert elsewhere.pretrained_on("/data/out/run") and not elsewhere.pretrained_on("out/run")
    from training.pretrain import PretrainConfig
    recorded = PretrainConfig("out/run", "runs/x").to_json()
    assert recorded["dataset"] == "out/run"
    assert recorded["dataset_resolved"] == os.path.realpath("out/run")
    label_free = TrainedRun.of({"model": {"backbone": "resnet18"},
                                "objective": {"name": "contrastive"}})
    assert label_free.objective == "contrastive" and label_free.targets == ("quality",)



@pytest.mark.parametrize(("items", "given", "steps"), [
    (64, None, 4), (65, None, 5), (1, None, 1), (0, None, 1), (64, 7, 7)])
def test_an_epoch_is_one_pass_over_the_train_items_unless_its_steps_are_given(items, given,
                                                                               steps):
    """--steps-per-epoch's help: 'default: the train split once': ceil(items / batch)
    batches of 16, at least one."""
    from dataclasses import replace

    from training.optim import PRETRAIN
    from training.pretrain import PretrainConfig

    config = PretrainConfig("d", "o", optim=replace(PRETRAIN, batch_size=16),
                            steps_per_epoch=given)
    assert config.steps_for(items) == steps

def test_a_checkpoint_file_that_cannot_be_read_is_named_not_a_traceback(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for number in range(IMAGES):
        (tmp_path / f"{number}.png").write_bytes(png(rng.integers(0, 256, (80, 80, 3),
                                                                  dtype=np.uint8)))
    table = tmp_path / "scores.csv"
    table.write_text("path,score\n" + "".join(f"{n}.png,{n}\n" for n in range(IMAGES)))
    good = tmp_path / "good.pt"
    torch.save({"model": {"w": torch.zeros(3)}, "config": {}}, good)
    cut, text, foreign = tmp_path / "cut.pt", tmp_path / "text.pt", tmp_path / "foreign.pt"
    cut.write_bytes(good.read_bytes()[:200])
    text.write_text('{"not": "a checkpoint"}')
    torch.save({"model": Fraction(1, 3)}, foreign)  # a pickle of an object, not a tensor
    large = tmp_path / "large.pt"  # cut inside its tensor's data: torch raises an OSError
    torch.save({"model": {"w": torch.zeros(4000)}, "config": {}}, large)
    cut_inside = tmp_path / "cut_inside.pt"
    cut_inside.write_bytes(large.read_bytes()[:5000])
    for broken, why in ((cut, "truncated or damaged"), (cut_inside, "truncated or damaged"),
                        (text, "not a file torch writes"),
                        (foreign, "it holds objects other than tensors and plain data")):
        assert main(["train", "evaluate", "--checkpoint", str(broken), "--dataset", "csv",
                     "--root", str(table), "--out", str(tmp_path / "e")]) == 2
        error = capsys.readouterr().err
        assert f"{broken} is not a readable checkpoint: {why}" in error
        assert "weights_only set to False" not in error  # torch's advice is never ours
        assert main(["train", "finetune", "--dataset", "csv", "--root", str(table),
                     "--out", str(tmp_path / "f"), "--pretrained-file", str(broken),
                     *TINY]) == 2
        assert f"{broken} is not a readable checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "value", "why"), [
    ("--repeats", "0", "must be at least 1, got 0"),
    ("--steps-per-epoch", "-1", "must be at least 1, got -1"),
    ("--val-limit", "-5", "must be at least 0, got -5"),
    ("--seed", "-1", "must be at least 0, got -1"),  # numpy seeds nothing negative
    ("--eval-crops", "0", "must be at least 1, got 0"),
    ("--batch-size", "two", "expected an integer, got 'two'")])
def test_counts_out_of_range_are_refused_before_any_work(option, value, why, capsys):
    pretraining = option in ("--steps-per-epoch", "--val-limit")
    command = (["pretrain", "dataset"] if pretraining
               else ["finetune", "--dataset", "csv", "--root", "x"])
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *command, "--out", "o", option, value])
    assert exit_info.value.code == 2 and why in capsys.readouterr().err


@pytest.mark.parametrize(("options", "why"), [
    (["--lr", "nan"], "learning rate must be a positive number"),
    (["--lr", "inf"], "learning rate must be a positive number"),
    (["--drop-path", "1"], "drop_path is a rate in [0, 1), got 1.0"),
    (["--drop-path", "-0.1"], "drop_path is a rate in [0, 1), got -0.1"),
    (["--soft-rank-temperature", "0"], "temperature must be a positive number, got 0.0"),
    (["--soft-rank-temperature", "-1"], "temperature must be a positive number, got -1.0"),
    (["--loss", "mse+foo"], "loss terms must be among"),
    (["--loss", "mse+mae+mse"], "each loss term once, got mse+mae+mse"),
    (["--device", "cuda"], "--device cuda was asked for but torch sees no CUDA device")])
def test_settings_out_of_range_are_refused_before_the_data_is_read(options, why, capsys):
    if "cuda" in options and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["train", "finetune", "--dataset", "csv", "--root", "absent.csv", "--out",
                 "o", "--backbone", "resnet18", *options]) == 2
    error = capsys.readouterr().err
    assert why in error and "absent.csv" not in error and "Traceback" not in error


def test_probe_fractions_that_are_not_numbers_are_named(capsys):
    assert main(["train", "probe", "--dataset", "csv", "--root", "absent.csv", "--out", "o",
                 "--init", "random", "--backbone", "resnet18", "--fractions", "nan/10/20"]) == 2
    assert "--fractions takes three positive numbers as TRAIN/VAL/TEST (70/10/20), got " \
        "'nan/10/20'" in capsys.readouterr().err


@pytest.mark.parametrize("workers", ["0", "1"])
def test_an_image_that_cannot_be_read_or_cropped_is_named(tmp_path, capsys, workers):
    rng = np.random.default_rng(0)
    for number in range(IMAGES):
        (tmp_path / f"{number}.png").write_bytes(png(rng.integers(0, 256, (80, 80, 3),
                                                                  dtype=np.uint8)))
    for number in range(IMAGES):  # each truncated: whichever is read first fails
        path = tmp_path / f"{number}.png"
        path.write_bytes(path.read_bytes()[:100])
    table = tmp_path / "scores.csv"
    table.write_text("path,score\n" + "".join(f"{n}.png,{n}\n" for n in range(IMAGES)))
    words = ["train", "finetune", "--dataset", "csv", "--root", str(table), "--out",
             str(tmp_path / "f"), *TINY[:-4], "--workers", workers, "--device", "cpu",
             "--epochs", "1"]
    if workers == "0":
        assert main(words) == 2
        error = capsys.readouterr().err
    else:  # a process of its own, as a user's: its forked worker inherits none of this one's
        # state (such as the threads Ray leaves running after ray.shutdown, pipeline tests')
        run = subprocess.run([sys.executable, "-m", "iqa_factory", *words], capture_output=True,
                             text=True, timeout=600)
        assert run.returncode == 2, run.stderr
        error = run.stderr
    # the decoder's reason (PIL's, for a cut-off PNG), and no worker's exception name
    assert re.search(rf"iqa-factory train: error: {re.escape(str(tmp_path))}/\d+\.png "
                     r"cannot be read as an image \(.*image file is truncated.*\)$",
                     error, re.MULTILINE)
    assert "Traceback" not in error


def test_init_auto_says_it_starts_from_random_weights_and_imagenet_refuses(tiny_dataset,
                                                                         tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # RFC 2606: never resolves
    run = ["train", "pretrain", str(tiny_dataset), "--backbone", "test_resnet", "--crop", "32",
           "--workers", "0", "--device", "cpu", "--epochs", "1", "--steps-per-epoch", "1",
           "--batch-size", "4"]
    assert main([*run, "--out", str(tmp_path / "auto"), "--init", "auto"]) == 0
    assert "NOTICE: ImageNet weights for test_resnet are out of reach (hub.invalid does not " \
        "resolve): starting from RANDOM weights" in capsys.readouterr().out
    assert main([*run, "--out", str(tmp_path / "imagenet"), "--init", "imagenet"]) == 2
    assert "iqa-factory train: error: cannot download ImageNet weights for test_resnet: " \
        "hub.invalid does not resolve" in capsys.readouterr().err


@pytest.mark.parametrize(("config", "given", "named"), [
    ("pretrain", {"steps_per_epoch": -5}, "steps_per_epoch must be a whole number of at "
                                          "least 1, got -5"),
    ("pretrain", {"steps_per_epoch": 0}, "steps_per_epoch must be"),
    ("pretrain", {"val_limit": -1}, "val_limit must be"),
    ("pretrain", {"workers": 2.5}, "workers must be"),
    ("pretrain", {"seed": -1}, "seed must be"),
    ("pretrain", {"device": "cuda:0"}, "device must be one of auto, cpu, cuda, got 'cuda:0'"),
    ("pretrain", {"device": "mps"}, "device must be one of"),
    ("pretrain", {"val_refs": "astronaut"}, "val_refs is a collection of names"),
    ("finetune", {"repeats": 0}, "repeats must be a whole number of at least 1, got 0"),
    ("finetune", {"eval_crops": 0}, "eval_crops must be"),
    ("finetune", {"device": "gpu"}, "device must be one of"),
    ("augment", {"std": (float("nan"), 1.0, 1.0)}, "three finite values"),
    ("augment", {"mean": (0.5, float("inf"), 0.5)}, "three finite values"),
    ("augment", {"crop": 16.5}, "crop must be a whole number of at least 16"),
    ("evaluate", {"workers": -1}, "workers must be a whole number of at least 0"),
    ("evaluate", {"seed": -3}, "seed must be"),
    ("predict", {"workers": 2.5}, "workers must be"),
    ("predict", {"device": "cuda:0"}, "device must be one of"),
    ("probe", {"seed": -1}, "seed must be"),
    ("probe", {"repeats": 0}, "repeats must be a whole number of at least 1"),
])
def test_a_training_setting_out_of_its_domain_is_refused_as_the_config_is_built(
        tmp_path, config, given, named):
    """The API's, as the command line's parsers refuse them: a run on the CPU where CUDA
    was meant, zero batches reported as a success, every batch skipped as non-finite, an
    earlier run's splits removed before an IndexError."""
    from training.evaluate import EvaluateConfig
    from training.finetune import FinetuneConfig
    from training.predict import PredictConfig
    from training.pretrain import PretrainConfig
    from training.probe import Benchmark, EncoderConfig, ProbeConfig
    from training.transforms import Augment

    build = {"pretrain": lambda: PretrainConfig(str(tmp_path), str(tmp_path / "o"), **given),
             "finetune": lambda: FinetuneConfig("kadid10k", str(tmp_path), str(tmp_path / "o"),
                                                **given),
             "augment": lambda: Augment(**given),
             "evaluate": lambda: EvaluateConfig("c.pt", "kadid10k", str(tmp_path),
                                                str(tmp_path / "o"), **given),
             "predict": lambda: PredictConfig("c.pt", (str(tmp_path),), str(tmp_path / "o"),
                                              **given),
             "probe": lambda: ProbeConfig(Benchmark("kadid10k", str(tmp_path)),
                                          str(tmp_path / "o"), EncoderConfig("c.pt"),
                                          **given)}[config]
    with pytest.raises(ValueError, match=re.escape(named)):
        build()
    assert not (tmp_path / "o").exists()


def test_a_new_run_that_stops_in_its_first_epoch_leaves_nothing_of_the_earlier_one(
        tiny_dataset, tmp_path, monkeypatch, capsys):
    """Without --resume a run into a folder holding an earlier run removes that run's
    checkpoints and summary before it writes its own: stopped in its first epoch, it leaves
    no best.pt or summary.json that describes another run beside its own files."""
    from training import pretrain as pretrain_module

    from .crashing import Crash, crashing_fit

    out = tmp_path / "pre"
    assert main(["train", "pretrain", str(tiny_dataset), "--out", str(out), "--epochs", "1",
                 "--steps-per-epoch", "1", *TINY]) == 0
    assert all((out / name).is_file() for name in ("last.pt", "best.pt", "summary.json"))
    earlier_logs = {path.name for path in (out / "tensorboard").iterdir()}
    monkeypatch.setattr(pretrain_module, "fit", crashing_fit(epoch=0, batch=1))
    with pytest.raises(Crash):
        main(["train", "pretrain", str(tiny_dataset), "--out", str(out), "--epochs", "1",
              "--steps-per-epoch", "1", "--seed", "3", *TINY])
    assert "removes its checkpoints, summary and TensorBoard logs" in capsys.readouterr().out
    assert not any((out / name).exists() for name in ("last.pt", "best.pt", "summary.json"))
    assert earlier_logs and not earlier_logs & {p.name for p in (out / "tensorboard").iterdir()}


def test_an_interrupted_pretraining_says_how_to_go_on_without_a_traceback(tiny_dataset,
                                                                          tmp_path, capsys,
                                                                          request):
    """Ctrl-C (SIGINT) in the middle of a run: exit status 130 and a line saying that
    --resume continues from last.pt; then --resume does go on from the epoch written. While
    it runs, a second run into its folder is refused before it touches a file (it would
    remove the first's staged checkpoints, and mix their checkpoints and summaries)."""
    import signal

    out = tmp_path / "run"
    words = [sys.executable, "-m", "iqa_factory", "train", "pretrain", str(tiny_dataset),
             "--out", str(out), "--epochs", "1000", "--patience", "1000",
             "--steps-per-epoch", "1", "--val-refs", "r0,r3", "--val-limit", "7", *TINY]
    run = subprocess.Popen(words, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    request.addfinalizer(run.kill)  # no 1000-epoch run left behind where an assert fails
    deadline = time.monotonic() + 300
    while not (out / checkpoint.LAST).is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (out / checkpoint.LAST).is_file(), run.communicate(timeout=60)
    # as a live run's checkpoint being written looks (the name of one staged beside another:
    # never one the run writes now, which would rename it away)
    staged = out / "best.pt.0123456789ab.partial"
    staged.write_bytes(b"a checkpoint being written")
    second = main(["train", "pretrain", str(tiny_dataset), "--out", str(out), "--epochs", "1",
                   *TINY])  # a second run into the same folder while the first lives
    assert second == 2 and staged.read_bytes() == b"a checkpoint being written"
    assert (f"is being written by iqa-factory train pretrain on host {socket.gethostname()} "
            f"pid {run.pid}") in capsys.readouterr().err
    staged.unlink()
    run.send_signal(signal.SIGINT)
    stderr = run.communicate(timeout=120)[1]
    assert run.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert ("iqa-factory train: interrupted (the same command with --resume goes on from "
            "OUT/last.pt") in stderr
    done = checkpoint.load(out / checkpoint.LAST)["epoch"] + 1  # (epochs count from 0)
    assert main(["train", "pretrain", str(tiny_dataset), "--out", str(out), "--resume",
                 "--epochs", str(done + 1), "--patience", "1000", "--steps-per-epoch", "1",
                 "--val-refs", "r0,r3", "--val-limit", "7", *TINY]) == 0
    assert checkpoint.load(out / checkpoint.LAST)["epoch"] + 1 == done + 1
    assert not (out / TRAIN_LEASE_FILE).exists()  # each run let go of its folder


@pytest.mark.parametrize("sigint", ["default", "ignored"])  # ignored: a background job's
def test_a_run_whose_folder_another_run_took_over_stops_and_leaves_it_theirs(tmp_path,
                                                                              monkeypatch,
                                                                              request, sigint):
    """A run suspended past the stale time finds, as its lease's refresh wakes, that another
    run took its folder over: it stops (LeaseLostError) and leaves that run's lease, also
    where SIGINT is ignored (a job started in the background by a script)."""
    import signal

    from shards import lease as lease_module
    from shards.lease import LeaseLostError
    from training.distributed import Context
    from training.output_lease import sole_writer

    monkeypatch.setattr(lease_module, "REFRESH_SECONDS", 0.05)
    if sigint == "ignored":
        before = signal.signal(signal.SIGINT, signal.SIG_IGN)
        request.addfinalizer(lambda: signal.signal(signal.SIGINT, before))
    path = tmp_path / "out" / TRAIN_LEASE_FILE
    lost = pytest.raises(LeaseLostError, match="another run took this run's lease over "
                                               r"\(iqa-factory train pretrain on host elsewhere")
    alone = Context(0, 1, 0, torch.device("cpu"))
    with lost, sole_writer(str(tmp_path / "out"), "pretrain", alone):
        theirs = {**json.loads(path.read_text()), "host": "elsewhere", "pid": 7}
        path.write_text(json.dumps(theirs))  # as a run that took it over writes it
        time.sleep(30)  # a training step: interrupted well before its end
    assert json.loads(path.read_text()) == theirs


def test_a_run_stopped_before_its_first_checkpoint_says_it_starts_again(tiny_dataset,
                                                                         tmp_path, capsys,
                                                                         monkeypatch):
    """Where no last.pt was written yet, --resume has nothing to go on from (it is refused:
    'nothing to resume'), so the advice is to run the same command again."""
    from training import pretrain

    def stopped_at_once(*arguments, **options):
        raise KeyboardInterrupt
    monkeypatch.setattr(pretrain, "fit", stopped_at_once)
    out = tmp_path / "run"
    assert main(["train", "pretrain", str(tiny_dataset), "--out", str(out), *TINY]) == 130
    assert ("iqa-factory train: interrupted before its first checkpoint (the same command "
            "starts it again; --resume has nothing to go on from)") in capsys.readouterr().err
    assert not (out / checkpoint.LAST).exists()


def test_a_sigtermed_pretraining_lets_go_of_its_folder_and_says_so(tiny_dataset, tmp_path,
                                                                    request):
    """SIGTERM (a scheduler's stop, torchrun's when another rank fails) stops a run as Ctrl-C
    does: exit 143, a line saying so, and its lease let go (a run on another host sharing the
    folder would otherwise be refused for the stale time)."""
    import signal

    out = tmp_path / "run"
    run = subprocess.Popen([sys.executable, "-m", "iqa_factory", "train", "pretrain",
                            str(tiny_dataset), "--out", str(out), "--epochs", "1000",
                            "--patience", "1000", "--steps-per-epoch", "1", "--val-refs",
                            "r0,r3", *TINY],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    request.addfinalizer(run.kill)  # no 1000-epoch run left behind where an assert fails
    deadline = time.monotonic() + 300
    while not (out / checkpoint.LAST).is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (out / TRAIN_LEASE_FILE).is_file(), run.communicate(timeout=60)
    run.send_signal(signal.SIGTERM)
    stderr = run.communicate(timeout=120)[1]
    assert run.returncode == 143, stderr
    assert "iqa-factory train: terminated (SIGTERM)" in stderr and "Traceback" not in stderr
    assert not (out / TRAIN_LEASE_FILE).exists()


def test_a_start_file_inside_out_is_refused(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "best.pt").write_bytes(b"weights")
    assert main(["train", "pretrain", str(tiny_dataset), "--out", str(out),
                 "--pretrained-file", str(out / "best.pt"), *TINY]) == 2
    assert f"--pretrained-file {out / 'best.pt'} is a checkpoint of --out {out}" in \
        capsys.readouterr().err
    assert (out / "best.pt").read_bytes() == b"weights"
    (out / "earlier").mkdir()  # a checkpoint elsewhere in the folder is not removed: taken
    (out / "best.pt").rename(out / "earlier" / "best.pt")
    main(["train", "pretrain", str(tiny_dataset), "--out", str(out),
          "--pretrained-file", str(out / "earlier" / "best.pt"), *TINY])
    assert "is a checkpoint of --out" not in capsys.readouterr().err


def test_the_lease_of_a_run_killed_on_this_host_is_taken_over_with_a_notice(tiny_dataset,
                                                                          tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    out = tmp_path / "run"
    out.mkdir()
    holder = {"host": socket.gethostname(), "pid": int(dead.stdout), "started": time.time(),
              "refreshed": time.time(), "command": "train pretrain"}
    (out / TRAIN_LEASE_FILE).write_text(json.dumps(holder))  # as a SIGKILLed run leaves it
    code = main(["train", "pretrain", str(tiny_dataset), "--out", str(out), "--val-refs",
                 "nowhere", *TINY])  # refused after the lease is taken: nothing trained
    printed = capsys.readouterr()
    assert code == 2 and "unknown reference ids" in printed.err
    assert (f"NOTICE: took over the lease of a stopped run (iqa-factory train pretrain on host "
            f"{socket.gethostname()} pid {holder['pid']}") in printed.out
    assert not (out / TRAIN_LEASE_FILE).exists()


def test_sigterms_answered_in_one_process_filter_the_terminated_workers_once(tmp_path,
                                                                             monkeypatch):
    """Each SIGTERMed run filters DataLoader's 'killed by signal: Terminated' from the
    unraisable hook; runs after it in the same process (a notebook's, a test's) do not wrap
    the hook again and again. Other unraisable errors still reach the hook."""
    import argparse
    import types

    from shards import stopping
    from training import cli

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    monkeypatch.setattr(stopping, "_RAISED", {stopping.SIGTERM_REASON})
    args = argparse.Namespace(command="pretrain", out=str(tmp_path))
    assert [cli._stopped(args) for _ in range(3)] == [143] * 3
    assert sys.unraisablehook.func is cli._unless_a_terminated_worker
    assert sys.unraisablehook.args == (seen.append,)
    worker = types.SimpleNamespace(
        exc_value=RuntimeError("DataLoader worker (pid 7) is killed by signal: Terminated."))
    other = types.SimpleNamespace(exc_value=RuntimeError("something else"))
    sys.unraisablehook(worker)
    sys.unraisablehook(other)
    assert seen == [other]


@pytest.mark.parametrize("raised", [
    "DataLoader worker (pid 7) is killed by signal: Terminated.",
    "DataLoader worker (pid(s) 7, 8) exited unexpectedly",
    "could not let go of the lease"])
def test_an_error_as_a_sigterm_stops_a_run_is_said_unless_it_is_the_workers_deaths(
        tmp_path, monkeypatch, capsys, raised):
    """A RuntimeError in place of the SIGTERM's interrupt ends the run as terminated (143):
    torch's word that the loader workers died of the same signal is no news, but any other
    (the lease's release failing half way, as it did in CI) was swallowed unsaid; it is said
    in a line."""
    import signal

    from training import cli

    def stopped_with_an_error(args) -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # (cut short)
        except KeyboardInterrupt:
            raise RuntimeError(raised) from None
        return 0

    monkeypatch.setattr(cli, "_predict", stopped_with_an_error)
    before = signal.getsignal(signal.SIGCHLD)  # (the SIGTERM puts torch's handler away)
    try:
        code = cli.main(["predict", "a.png", "--checkpoint", "c.pt", "--out",
                         str(tmp_path / "o")])
    finally:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL if before is None else before)
    err = capsys.readouterr().err
    assert code == 143 and "iqa-factory train: terminated (SIGTERM)" in err
    said = f"iqa-factory train: warning: as it stopped: {raised}" in err
    assert said == (raised == "could not let go of the lease"), err


def test_pretraining_validates_on_a_copy_of_a_val_reference_rather_than_train_on_it(
        tiny_dataset, tmp_path, capsys):
    """r0 (train) recorded with the pixels of r4 (val), as a re-encoded copy of it would be:
    read as a val reference, never trained on, and said."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from shards.layout import SOURCES_FILE

    copy = tmp_path / "dataset"
    shutil.copytree(tiny_dataset, copy)
    table = pq.read_table(copy / SOURCES_FILE)
    hashes = [{"r0": "same", "r4": "same"}.get(ref, ref) for ref in table["ref_id"].to_pylist()]
    index = table.schema.get_field_index("sha256")
    pq.write_table(table.set_column(index, "sha256", pa.array(hashes)), copy / SOURCES_FILE)
    assert main(["train", "pretrain", str(copy), "--out", str(tmp_path / "run"), "--epochs",
                 "1", "--steps-per-epoch", "1", *TINY]) == 0
    printed = capsys.readouterr().out
    assert ("NOTICE: 1 reference id(s) are, by id or by pixels, in different splits (r0): each "
            "is in the most held-out one of its copies") in printed
    assert re.search(r"samples of 3 references \(\d+ shards\), validating on \d+ of 2;",
                     printed)  # r1-r3; r4 and r0
