"""Step checkpoints (`--checkpoint-every N`) and exact resume from the middle of an epoch: a
run interrupted after a step checkpoint and resumed ends with the weights, bit for bit, of
the same run left alone."""

import dataclasses
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from pyarrow.parquet import read_table

from iqa_factory.cli import main
from training import checkpoint, pretrain
from training.distributed import Context
from training.finetune import FinetuneConfig, _train_batches
from training.image_data import split
from training.loop import BatchTooSmallError, NonFiniteError, Run, fit
from training.model import ModelConfig, build_model
from training.optim import OptimConfig
from training.pretrain import PretrainConfig
from training.rated_datasets import load as load_images
from training.results_files import SUMMARY_FILE
from training.transforms import Augment

from .crashing import Crash, crashing_at, crashing_fit

CPU = Context(0, 1, 0, torch.device("cpu"))
# randomness everywhere a resume could lose it: drop-path (torch's generator), shifted,
# rotated and flipped crops (the data streams' own generators)
AUGMENT = Augment(crop=32, flip=True, translate=0.1, rotate=10.0)
MODEL = ModelConfig("test_resnet", init="random", drop_path=0.3)


def assert_same_run(expected: dict, actual: dict) -> None:
    """Two last.pt states: the same weights, optimiser and stopping state, the same history
    but for the wall-clock seconds."""
    assert expected["model"].keys() == actual["model"].keys()
    for key, value in expected["model"].items():
        assert torch.equal(value, actual["model"][key]), key
    for index, moments in expected["optimizer"]["state"].items():
        for name, value in moments.items():
            assert torch.equal(value, actual["optimizer"]["state"][index][name]), (index, name)
    assert expected["stopping"] == actual["stopping"]

    def timeless(history: list) -> list:
        return [{k: v for k, v in record.items() if k != "seconds"} for record in history]

    assert timeless(expected["history"]) == timeless(actual["history"])


def _pretrain_config(dataset: Path, out: Path, every: int, workers: int) -> PretrainConfig:
    return PretrainConfig(str(dataset), str(out), MODEL,
                          OptimConfig(lr=3e-3, halve_every=1, epochs=2, batch_size=4,
                                      patience=5, checkpoint_every=every),
                          augment=AUGMENT, val_refs=("r5",), steps_per_epoch=5,
                          workers=workers)


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_a_pretraining_run_resumed_mid_epoch_ends_as_if_never_interrupted(
        tiny_dataset, tmp_path, monkeypatch, workers):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    pretrain.pretrain(_pretrain_config(tiny_dataset, straight, 0, workers))
    with monkeypatch.context() as patch:
        # after the step checkpoint at batch 2
        patch.setattr(pretrain, "fit", crashing_fit(epoch=1, batch=4))
        with pytest.raises(Crash):
            pretrain.pretrain(_pretrain_config(tiny_dataset, broken, 2, workers))
    interrupted = checkpoint.load(broken / checkpoint.LAST)
    assert interrupted["epoch"] == 0 and len(interrupted["history"]) == 1
    assert (interrupted["partial_epoch"]["epoch"], interrupted["partial_epoch"]["step"]) == (1, 2)
    pretrain.pretrain(_pretrain_config(tiny_dataset, broken, 2, workers), resume=True)
    resumed = checkpoint.load(broken / checkpoint.LAST)
    assert "partial_epoch" not in resumed
    assert any(not torch.equal(interrupted["model"][k], v) for k, v in resumed["model"].items())
    assert_same_run(checkpoint.load(straight / checkpoint.LAST), resumed)


def test_a_finetuning_stream_resumed_mid_epoch_ends_as_if_never_interrupted(kadid_folder,
                                                                            tmp_path):
    """The fine-tuning stream (a shuffled sampler, crops seeded per image and epoch), through
    `fit`; the crash comes in the first epoch, before any epoch-end checkpoint."""
    optim = OptimConfig(lr=3e-3, halve_every=1, epochs=2, batch_size=4, checkpoint_every=2)
    config = FinetuneConfig("kadid10k", str(kadid_folder), str(tmp_path), MODEL, optim,
                            AUGMENT, workers=0)
    images = split(load_images("kadid10k", str(kadid_folder)), "reference", 0).train

    def run_fit(out: Path, crash_at: int = 0, resume: bool = False) -> None:
        torch.manual_seed(0)
        run = Run(CPU, build_model(MODEL).model, optim, 0, out, config.to_json())
        batches, steps = _train_batches(CPU, config, images, seed=0)
        if crash_at:
            fit(run, lambda epoch: crashing_at(batches(epoch), crash_at), steps,
                lambda model: {"score": 0.0}, resume)
        else:
            fit(run, batches, steps, lambda model: {"score": 0.0}, resume)

    run_fit(tmp_path / "straight")
    with pytest.raises(Crash):
        run_fit(tmp_path / "broken", crash_at=3)
    interrupted = checkpoint.load(tmp_path / "broken" / checkpoint.LAST)
    assert interrupted["epoch"] == -1 and interrupted["partial_epoch"]["step"] == 2
    run_fit(tmp_path / "broken", resume=True)
    assert_same_run(checkpoint.load(tmp_path / "straight" / checkpoint.LAST),
                    checkpoint.load(tmp_path / "broken" / checkpoint.LAST))


def _tiny_run(out: Path, epochs: int, every: int) -> Run:
    torch.manual_seed(0)
    model = build_model(ModelConfig("test_resnet", init="random")).model
    return Run(CPU, model, OptimConfig(1e-3, 10, epochs, 4, checkpoint_every=every), 0, out,
               {})


def _batches(count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=generator),
             torch.rand(4, generator=generator)) for _ in range(count)]


def test_last_pt_is_written_every_n_batches_and_records_its_place(tmp_path, monkeypatch):
    written = []
    save = checkpoint.save

    def recording_save(state: dict, path: Path) -> None:
        if path.name == checkpoint.LAST:
            partial = state.get("partial_epoch")
            written.append((partial["epoch"], partial["step"]) if partial
                           else ("end of", state["epoch"]))
        save(state, path)

    monkeypatch.setattr(checkpoint, "save", recording_save)
    batches = _batches(6)
    fit(_tiny_run(tmp_path, epochs=2, every=2), lambda epoch: batches, 6,
        lambda model: {"score": 0.0})
    # the step count starts again each epoch; at an epoch's end only its own checkpoint
    assert written == [(0, 2), (0, 4), ("end of", 0), (1, 2), (1, 4), ("end of", 1)]


def test_a_crash_between_the_two_checkpoints_never_loses_the_best_weights(tmp_path,
                                                                          monkeypatch):
    """best.pt is written before last.pt records its epoch as the best: a run that dies
    between the two resumes with a last.pt that does not yet know the epoch, and redoes it."""
    batches, scores = _batches(2), iter([0.5, 0.9, 0.9, 0.7])
    save = checkpoint.save

    def dying_save(state: dict, path: Path) -> None:
        if path.name == checkpoint.LAST and state["epoch"] == 1:
            raise OSError("the node died")
        save(state, path)

    monkeypatch.setattr(checkpoint, "save", dying_save)
    with pytest.raises(OSError, match="the node died"):
        fit(_tiny_run(tmp_path, epochs=3, every=0), lambda epoch: batches, 2,
            lambda model: {"score": next(scores)})
    monkeypatch.setattr(checkpoint, "save", save)
    best = checkpoint.load(tmp_path / checkpoint.BEST)
    assert best["epoch"] == 1 and checkpoint.load(tmp_path / checkpoint.LAST)["epoch"] == 0
    summary = fit(_tiny_run(tmp_path, epochs=3, every=0), lambda epoch: batches, 2,
                  lambda model: {"score": next(scores)}, resume=True)
    assert summary["best_epoch"] == 2  # counted from 1: epoch index 1, made again
    assert checkpoint.load(tmp_path / checkpoint.BEST)["epoch"] == 1


def test_resuming_a_run_that_stopped_early_trains_no_epoch_unless_patience_grows(tmp_path,
                                                                                capsys):
    scores = iter([1.0, 0.5, 0.4, 0.3])  # epoch 0 is the best: patience 1 stops after epoch 1
    batches = _batches(2)

    def run(patience: int) -> Run:
        return dataclasses.replace(_tiny_run(tmp_path, epochs=4, every=0),
                                   optim=OptimConfig(1e-3, 10, 4, 4, patience=patience))

    def validate(model) -> dict:
        return {"score": next(scores)}

    first = fit(run(1), lambda epoch: batches, 2, validate)
    assert first["epochs_run"] == 2
    # the summary counts epochs from 1, as the console does: the first epoch was the best
    assert first["best_epoch"] == 1 and [r["epoch"] for r in first["history"]] == [1, 2]
    assert "epoch 1/4" in capsys.readouterr().out
    stopped = checkpoint.load(tmp_path / checkpoint.LAST)
    summary = fit(run(1), lambda epoch: batches, 2, validate, resume=True)  # a requeue
    assert summary["epochs_run"] == 2 and "nothing to train" in capsys.readouterr().out
    assert_same_run(stopped, checkpoint.load(tmp_path / checkpoint.LAST))
    assert fit(run(3), lambda epoch: batches, 2, validate, resume=True)["epochs_run"] == 4


def test_a_mid_epoch_checkpoint_is_resumed_only_with_as_many_ranks(tmp_path):
    """last.pt left mid-epoch holds every rank's place (gathered by rank 0): the one of a
    one-rank run is given a second rank's entry, as a two-rank run leaves it."""
    batches = _batches(6)
    with pytest.raises(Crash):
        fit(_tiny_run(tmp_path, epochs=1, every=2), lambda epoch: crashing_at(batches, 3), 6,
            lambda model: {"score": 0.0})
    state = checkpoint.load(tmp_path / checkpoint.LAST)
    assert len(state["partial_epoch"]["ranks"]) == 1
    state["partial_epoch"]["ranks"] *= 2
    checkpoint.save(state, tmp_path / checkpoint.LAST)
    with pytest.raises(ValueError, match=r"stopped mid-epoch with 2 rank\(s\): resume it with "
                                         "as many"):
        fit(_tiny_run(tmp_path, epochs=1, every=2), lambda epoch: batches, 6,
            lambda model: {"score": 0.0}, resume=True)


def test_resume_may_change_checkpoint_every_but_no_other_setting(tiny_dataset, tmp_path,
                                                                 capsys):
    out = tmp_path / "run"
    common = ["train", "pretrain", str(tiny_dataset), "--out", str(out), "--backbone",
              "test_resnet", "--init", "random", "--crop", "32", "--workers", "0", "--device",
              "cpu", "--steps-per-epoch", "3", "--batch-size", "4"]
    assert main([*common, "--epochs", "1", "--checkpoint-every", "2"]) == 0
    assert main([*common, "--epochs", "2", "--checkpoint-every", "1", "--resume"]) == 0
    state = checkpoint.load(out / checkpoint.LAST)
    assert state["epoch"] == 1 and state["config"]["optim"]["checkpoint_every"] == 1
    assert main([*common, "--epochs", "3", "--lr", "1e-4", "--resume"]) == 2
    assert "other settings" in (error := capsys.readouterr().err)
    assert f"(optim.lr {state['config']['optim']['lr']!r} -> 0.0001)" in error  # what changed
    unit = state["config"]["optim"]["temperature_unit"]
    assert unit == "standard deviations of the predictions"
    del state["config"]["optim"]["temperature_unit"]  # as the soft SROCC's were before it
    checkpoint.save(state, out / checkpoint.LAST)
    assert main([*common, "--epochs", "3", "--resume"]) == 2
    assert ("(optim.temperature_unit (none) -> 'standard deviations of the predictions') (the "
            "checkpoint trained the soft SROCC with its temperature in the predictions' own "
            "units") in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # refused as the command line is read
        main([*common, "--checkpoint-every", "-1"])
    assert refused.value.code == 2
    assert "--checkpoint-every: must be at least 0, got -1" in capsys.readouterr().err


def _pretrain_args(dataset, out, *extra: str) -> list[str]:
    return ["train", "pretrain", str(dataset), "--out", str(out), "--backbone", "test_resnet",
            "--init", "random", "--crop", "32", "--workers", "0", "--device", "cpu",
            "--steps-per-epoch", "2", "--batch-size", "4", *extra]


def test_a_run_resumes_from_another_working_folder(tiny_dataset, tmp_path, monkeypatch,
                                                   capsys):
    """A requeued job starts elsewhere: the dataset named relative to where the run began is
    the dataset it names now by another path (compared as resolved where each was given)."""
    out = tmp_path / "run"
    monkeypatch.chdir(tiny_dataset.parent)
    assert main(_pretrain_args(Path(tiny_dataset.name), out, "--epochs", "1")) == 0
    monkeypatch.chdir(tmp_path)
    assert main(_pretrain_args(tiny_dataset, out, "--epochs", "2", "--resume")) == 0, \
        capsys.readouterr().err
    assert checkpoint.load(out / checkpoint.LAST)["epoch"] == 1


def test_a_resume_knows_its_start_file_by_its_content(tiny_dataset, tmp_path, monkeypatch,
                                                      capsys):
    """--pretrained-file is compared by what it holds: the same file named another way (or
    moved) resumes; another file under its name is refused, naming it (the run would go on
    from other weights than it started from)."""
    first = tmp_path / "first"
    assert main(_pretrain_args(tiny_dataset, first, "--epochs", "1")) == 0
    start = tmp_path / "start.pt"
    start.write_bytes((first / checkpoint.BEST).read_bytes())
    # a run begun from --init's weights takes no start file on resume (it would be recorded
    # as the start of weights that never came from it)
    assert main(_pretrain_args(tiny_dataset, first, "--epochs", "2", "--resume",
                               "--pretrained-file", str(start))) == 2
    assert (f"--resume with --pretrained-file {start}: {first / checkpoint.LAST} began from "
            "--init's weights, not a file") in capsys.readouterr().err
    out = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    assert main(_pretrain_args(tiny_dataset, out, "--epochs", "1", "--pretrained-file",
                               "start.pt")) == 0
    recorded = checkpoint.load(out / checkpoint.LAST)["config"]["model"]["pretrained_sha256"]
    assert recorded == hashlib.sha256(start.read_bytes()).hexdigest()
    moved = tmp_path / "kept" / "start.pt"
    moved.parent.mkdir()
    start.rename(moved)
    monkeypatch.chdir(moved.parent)
    assert main(_pretrain_args(tiny_dataset, out, "--epochs", "2", "--resume",
                               "--pretrained-file", "./start.pt")) == 0, capsys.readouterr().err
    kept = moved.read_bytes()
    state = checkpoint.load(first / checkpoint.LAST)  # another run's weights, as a start file
    checkpoint.save({**state, "note": "another"}, moved)
    assert main(_pretrain_args(tiny_dataset, out, "--epochs", "3", "--resume",
                               "--pretrained-file", str(moved))) == 2
    assert f"(model.pretrained_sha256 '{recorded}' -> '" in capsys.readouterr().err
    moved.unlink()  # gone: the weights come from last.pt, which records what the start was
    assert main(_pretrain_args(tiny_dataset, out, "--epochs", "3", "--resume",
                               "--pretrained-file", str(moved))) == 0, capsys.readouterr().err
    assert f"{moved} is not there now: the resumed weights are those of the run's last.pt" \
        in capsys.readouterr().out
    state = checkpoint.load(out / checkpoint.LAST)
    assert state["epoch"] == 2 and state["config"]["model"]["pretrained_sha256"] == recorded
    moved.write_bytes(kept)  # back: still the run's start
    assert main(_pretrain_args(tiny_dataset, out, "--epochs", "4", "--resume",
                               "--pretrained-file", str(moved))) == 0, capsys.readouterr().err


def test_a_resume_takes_its_start_from_last_pt_and_fetches_no_weights(tiny_dataset, tmp_path,
                                                                      monkeypatch, capsys):
    """A resume's weights are last.pt's: it neither says it starts from random weights nor
    fetches ImageNet's (a run begun where the hub was reachable resumes where it is not,
    under --init imagenet too), and its summary names the start the run began from."""
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # out of reach here, always
    out = tmp_path / "run"
    assert main(_pretrain_args(tiny_dataset, out, "--epochs", "1")) == 0
    assert "test_resnet starts from random weights" in capsys.readouterr().out
    assert main(_pretrain_args(tiny_dataset, out, "--epochs", "2", "--resume")) == 0
    assert "random weights" not in capsys.readouterr().out
    assert json.loads((out / SUMMARY_FILE).read_text())["start"] == "random"
    state = checkpoint.load(out / checkpoint.LAST)  # as a run begun from ImageNet's weights
    state["config"]["model"]["init"], state["start"] = "imagenet", "imagenet"
    checkpoint.save(state, out / checkpoint.LAST)
    imagenet = [arg if arg != "random" else "imagenet" for arg in _pretrain_args(
        tiny_dataset, out, "--epochs", "3", "--resume")]
    assert main(imagenet) == 0, capsys.readouterr().err
    assert "ImageNet" not in capsys.readouterr().out
    assert json.loads((out / SUMMARY_FILE).read_text())["start"] == "imagenet"


def test_a_mid_epoch_checkpoint_of_two_ranks_is_resumed_on_two_alone(tiny_dataset, tmp_path,
                                                                      capsys):
    """Each rank's place in the epoch and random state are in it: one rank cannot go on for
    two (an epoch's end resumes on any number: test_ddp.py)."""
    out = tmp_path / "run"
    assert main(_pretrain_args(tiny_dataset, out, "--epochs", "1")) == 0
    state = checkpoint.load(out / checkpoint.LAST)
    place = {"step": 1, "rng": checkpoint.rng_state(torch.device("cpu"))}
    state["partial_epoch"] = {"epoch": 1, "step": 1, "ranks": [place, place]}
    checkpoint.save(state, out / checkpoint.LAST)
    capsys.readouterr()
    assert main(_pretrain_args(tiny_dataset, out, "--epochs", "2", "--resume")) == 2
    assert (f"{out / checkpoint.LAST} stopped mid-epoch with 2 rank(s): resume it with as "
            "many") in capsys.readouterr().err


def test_a_resume_under_another_objective_names_that_change_alone(tiny_dataset, tmp_path,
                                                                   capsys):
    """The objective's own settings (a contrastive queue, a temperature) come with it: the
    refusal names the objective, not each of them (the run's other changed defaults, its
    learning rate say, stay named)."""
    out = tmp_path / "run"
    assert main(_pretrain_args(tiny_dataset, out, "--epochs", "1")) == 0
    capsys.readouterr()
    assert main(_pretrain_args(tiny_dataset, out, "--epochs", "2", "--resume", "--objective",
                               "reconstruction")) == 2
    error = capsys.readouterr().err
    assert "objective.name (none) -> 'reconstruction'" in error
    assert "objective.queue_size" not in error and "objective.temperature" not in error


def test_a_resume_with_no_epoch_left_says_so(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_pretrain_args(tiny_dataset, out, "--epochs", "2")) == 0
    before = (out / checkpoint.LAST).read_bytes()
    capsys.readouterr()
    for epochs in ("2", "1"):
        assert main(_pretrain_args(tiny_dataset, out, "--epochs", epochs, "--resume")) == 0
        assert (f"has 2 epoch(s) done, --epochs {epochs}: nothing to train; a larger --epochs "
                "trains on") in capsys.readouterr().out
    assert (out / checkpoint.LAST).read_bytes() == before  # nothing trained, nothing saved


def test_a_last_pt_without_its_training_state_is_named(tiny_dataset, tmp_path, capsys):
    """best.pt copied over last.pt holds the weights but no optimiser or epoch: a clear
    refusal, not a KeyError."""
    out = tmp_path / "run"
    assert main(_pretrain_args(tiny_dataset, out, "--epochs", "1")) == 0
    (out / checkpoint.LAST).write_bytes((out / checkpoint.BEST).read_bytes())
    assert main(_pretrain_args(tiny_dataset, out, "--epochs", "2", "--resume")) == 2
    error = capsys.readouterr().err
    assert f"{out / checkpoint.LAST} holds no optimizer, scheduler" in error
    assert "not the last.pt a training run writes" in error and "Traceback" not in error


def test_checkpoints_a_killed_run_left_half_written_are_removed(tiny_dataset, tmp_path,
                                                                capsys):
    out = tmp_path / "run"
    out.mkdir()
    left = [out / "last.pt.partial", out / "last.pt.0123456789ab.partial",
            out / "best.pt.partial"]
    for path in left:
        path.write_bytes(b"half a checkpoint")
    (out / "notes.partial").write_text("the user's")  # no checkpoint's: kept
    assert main(_pretrain_args(tiny_dataset, out, "--epochs", "1")) == 0
    assert not any(path.exists() for path in left) and (out / "notes.partial").exists()
    assert "removed 3 checkpoint(s) a stopped run left half-written" in capsys.readouterr().out


def test_a_resume_under_an_objective_without_a_setting_blames_no_old_unit(tiny_dataset,
                                                                          tmp_path, capsys):
    """A regression run resumed as reconstruction is refused for its objective; the soft
    SROCC's unit, a setting the reconstruction run has none of, is no old checkpoint's."""
    out = tmp_path / "run"
    assert main(_pretrain_args(tiny_dataset, out, "--epochs", "1")) == 0
    assert main(_pretrain_args(tiny_dataset, out, "--epochs", "2", "--resume", "--objective",
                               "reconstruction", "--versions", "2")) == 2
    error = capsys.readouterr().err
    assert "objective.name" in error and "before it became a share" not in error


def test_resume_over_other_data_is_refused(tiny_dataset, tmp_path, capsys):
    """A dataset whose shards changed since the run began (here one lost its stats, as one
    still being made has none): early stopping would compare validations of two sets."""
    import shutil

    dataset = tmp_path / "data"
    shutil.copytree(tiny_dataset, dataset)
    out = tmp_path / "run"
    common = ["train", "pretrain", str(dataset), "--out", str(out), "--backbone",
              "test_resnet", "--init", "random", "--crop", "32", "--workers", "0", "--device",
              "cpu", "--steps-per-epoch", "2", "--batch-size", "4", "--val-refs", "r5"]
    assert main([*common, "--epochs", "1"]) == 0
    before = checkpoint.load(out / checkpoint.LAST)["data"]
    stats = sorted((dataset / "shards").glob("*_stats.json"))
    assert len(stats) > 1
    stats[0].unlink()
    capsys.readouterr()
    assert main([*common, "--epochs", "2", "--resume"]) == 2
    error = capsys.readouterr().err
    assert "--resume over other data than" in error
    assert f"train samples {before['train samples']} then" in error


def _made_under_plan(dataset: Path, seed: int) -> str:
    """The dataset as generate leaves it under a plan of run seed `seed`: plan.json, and every
    shard's stats naming its digest (returned)."""
    import json

    from shards.layout import plan_digest

    refs = [row["ref_id"] for row in read_table(dataset / "sources.parquet").to_pylist()]
    plan = {"references": refs, "inputs": {"shard_refs": 3, "seed": seed}}
    digest = plan_digest(plan)
    (dataset / "plan.json").write_text(json.dumps({**plan, "digest": digest}))
    for stats in (dataset / "shards").glob("*_stats.json"):
        stats.write_text(json.dumps({**json.loads(stats.read_text()), "plan_digest": digest}))
    return digest


def test_resume_over_the_dataset_made_again_under_another_plan_is_refused(tiny_dataset,
                                                                          tmp_path, capsys):
    """generate --restart at the same path with other options (other distortion types,
    another ensemble) can give the same sample counts: the plan tells the datasets apart."""
    import shutil

    dataset = tmp_path / "data"
    shutil.copytree(tiny_dataset, dataset)
    first = _made_under_plan(dataset, 0)
    out = tmp_path / "run"
    common = ["train", "pretrain", str(dataset), "--out", str(out), "--backbone",
              "test_resnet", "--init", "random", "--crop", "32", "--workers", "0", "--device",
              "cpu", "--steps-per-epoch", "2", "--batch-size", "4", "--val-refs", "r5"]
    assert main([*common, "--epochs", "1"]) == 0
    assert checkpoint.load(out / checkpoint.LAST)["data"]["plan"] == first
    _made_under_plan(dataset, 1)
    capsys.readouterr()
    assert main([*common, "--epochs", "2", "--resume"]) == 2
    error = capsys.readouterr().err
    assert "--resume over other data than" in error and f"plan {first} then" in error
    _made_under_plan(dataset, 0)
    assert main([*common, "--epochs", "2", "--resume"]) == 0


def test_only_pretrain_takes_checkpoint_every(capsys):
    """A step checkpoint resumes mid-epoch, which only pretrain does: finetune resumes its
    splits at epoch ends and refuses the option."""
    from training.cli import _optim, build_parser

    parser = build_parser()
    args = parser.parse_args(["pretrain", "d", "--out", "y", "--checkpoint-every", "5"])
    assert _optim(args).checkpoint_every == 5
    with pytest.raises(SystemExit):
        parser.parse_args(["finetune", "--dataset", "kadid10k", "--root", "x", "--out", "y",
                           "--checkpoint-every", "5"])
    assert "unrecognized arguments: --checkpoint-every" in capsys.readouterr().err
    finetune = parser.parse_args(["finetune", "--dataset", "kadid10k", "--root", "x",
                                  "--out", "y", "--resume"])
    assert finetune.resume and _optim(finetune).checkpoint_every == 0


class _WritesUntil(io.BytesIO):
    """A file whose `interrupted`-th write is stopped by a Ctrl-C (KeyboardInterrupt)."""

    def __init__(self, interrupted: int):
        super().__init__()
        self.interrupted, self.writes = interrupted, 0

    def write(self, data) -> int:
        self.writes += 1
        if self.writes == self.interrupted:
            raise KeyboardInterrupt
        return super().write(data)


def test_a_ctrl_c_while_a_checkpoint_is_written_is_an_interrupt_not_a_crash():
    """A Ctrl-C can come in the middle of torch.save: torch's zip writer, closed there, raised
    its own RuntimeError ("unexpected pos"), and `train` exited 1 with a traceback, not 130
    with how to resume (seen once in CI). At whichever write it comes, it is an interrupt."""
    state = {"weights": torch.zeros(10_000), "bias": torch.ones(10)}
    writes = _WritesUntil(0)
    checkpoint.write(state, writes)
    assert writes.writes > 3
    for interrupted in range(1, writes.writes + 1):
        with pytest.raises(KeyboardInterrupt):
            checkpoint.write(state, _WritesUntil(interrupted))


_INTERRUPTED_AT_EACH_STEP_OF_TORCH_SAVE = """
import gc
import sys
from pathlib import Path

import torch

from training import checkpoint

folder, state = Path(sys.argv[1]), {"weights": torch.zeros(1000), "epoch": 3}

def in_torch_save(frame) -> bool:
    return frame.f_code.co_filename.endswith("serialization.py")

def interrupting_at(step: int):  # a SIGTERM's KeyboardInterrupt raised at that step
    steps = 0
    def trace(frame, event, arg):
        nonlocal steps
        steps += in_torch_save(frame)
        if steps == step:
            raise KeyboardInterrupt
        return trace
    return trace

step, interrupts = 0, 0
while True:
    step += 1
    sys.settrace(interrupting_at(step))
    try:
        checkpoint.save(state, folder / checkpoint.LAST)
    except KeyboardInterrupt:
        interrupts += 1
    finally:
        sys.settrace(None)
    gc.collect()  # the interrupted writer is freed here at the latest
    if (folder / checkpoint.LAST).exists():  # the step count passed the save's last step
        break
print(step - 1, interrupts, sorted(path.name for path in folder.iterdir()), flush=True)
"""


def test_an_interrupt_at_any_step_of_torch_save_neither_aborts_nor_leaves_a_file(tmp_path):
    """A SIGTERM can stop torch.save after its zip writer is made but before it writes the
    archive's end: the writer writes that end when it is freed, once the interrupt is handled,
    and the staged file it wrote to was closed by then. A write raising inside a C++
    destructor aborts the process (SIGABRT, 'write to closed file': seen once in CI, where
    `train` then exited -6, not 143 with how to resume). An interrupt at each step of
    torch.save in turn: each a KeyboardInterrupt, the process alive, no staged file left."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _INTERRUPTED_AT_EACH_STEP_OF_TORCH_SAVE,
                          str(tmp_path)], capture_output=True, text=True,
                         cwd=Path(__file__).parents[2], timeout=300)
    assert run.returncode == 0, run.stderr
    steps, interrupts, files = run.stdout.split(maxsplit=2)
    assert int(steps) > 100 and interrupts == steps, run.stdout
    assert files.strip() == str([checkpoint.LAST])


def test_a_step_checkpoint_never_saves_non_finite_weights(tmp_path):
    run = _tiny_run(tmp_path, epochs=1, every=2)

    def diverging(epoch: int) -> Iterator:
        for index, batch in enumerate(_batches(6), start=1):
            if index == 4:  # the weights break after three steps
                with torch.no_grad():
                    run.model.fc.weight.fill_(float("nan"))
            yield batch

    with pytest.raises(NonFiniteError, match="not finite at batch 4 of epoch 1"):
        fit(run, diverging, 6, lambda model: {"score": 0.0})
    saved = checkpoint.load(tmp_path / checkpoint.LAST)
    assert saved["partial_epoch"]["step"] == 2
    assert all(torch.isfinite(t).all() for t in saved["model"].values() if t.is_floating_point())


def test_a_batch_of_one_on_a_1x1_feature_map_is_a_typed_error_naming_the_fix(tmp_path):
    # batch norm in training needs more than one value per channel: 1 image x 1 x 1 has one
    run = _tiny_run(tmp_path, epochs=1, every=0)
    tiny = [(torch.zeros((1, 3, 8, 8), dtype=torch.uint8), torch.rand(1))]
    with pytest.raises(BatchTooSmallError, match=r"at least 2 images .*--batch-size.* --crop"):
        fit(run, lambda epoch: iter(tiny), 1, lambda model: {"score": 0.0})


@pytest.mark.parametrize(("count", "sizes"), [(9, [4, 4]), (10, [4, 4, 2]), (8, [4, 4])])
def test_a_finetuning_epoch_never_ends_on_a_lone_image(kadid_folder, tmp_path, count, sizes):
    # one image alone in a batch gives batch norm one value per channel on a 1 x 1 map
    optim = OptimConfig(lr=3e-3, halve_every=1, epochs=1, batch_size=4)
    config = FinetuneConfig("kadid10k", str(kadid_folder), str(tmp_path), MODEL, optim,
                            AUGMENT, workers=0)
    images = load_images("kadid10k", str(kadid_folder))[:count]
    batches, steps = _train_batches(CPU, config, images, seed=0)
    assert [len(targets) for _, targets in batches(0)] == sizes and steps == len(sizes)


def test_a_gpu_runs_random_state_resumes_on_a_cpu_without_its_cuda_generator():
    """A mid-epoch checkpoint written on a GPU holds its CUDA generator too: on a CPU the CPU
    generator is put back and the CUDA one left out, rather than failing in torch.cuda."""
    torch.manual_seed(7)
    saved = checkpoint.rng_state(torch.device("cpu"))
    expected = torch.rand(3)
    checkpoint.set_rng_state({**saved, "cuda": torch.zeros(16, dtype=torch.uint8)},
                             torch.device("cpu"))
    assert torch.equal(torch.rand(3), expected)


def _logged_epochs(out: Path) -> list[int]:
    """The epochs of the train/loss curve in OUT's TensorBoard logs, as TensorBoard reads
    them (every event file of the folder)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = EventAccumulator(str(out / "tensorboard"))
    logs.Reload()
    return [event.step for event in logs.Scalars("train/loss")]


def test_a_new_run_into_an_old_runs_folder_starts_fresh_tensorboard_curves(tmp_path):
    """Without --resume the earlier run's curves would read as this run's; a resume keeps
    them and goes on."""
    batches = _batches(2)
    fit(_tiny_run(tmp_path, epochs=2, every=0), lambda epoch: batches, 2,
        lambda model: {"score": 0.0})
    assert _logged_epochs(tmp_path) == [1, 2]
    fit(_tiny_run(tmp_path, epochs=1, every=0), lambda epoch: batches, 2,
        lambda model: {"score": 0.0})
    assert _logged_epochs(tmp_path) == [1]
    fit(_tiny_run(tmp_path, epochs=3, every=0), lambda epoch: batches, 2,
        lambda model: {"score": 0.0}, resume=True)
    assert _logged_epochs(tmp_path) == [1, 2, 3]
