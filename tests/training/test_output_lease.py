"""Each training command's function holds its output folder as the command line does, so a
program calling them (not `iqa-factory train`) cannot mix two runs' files in one folder."""

import pytest

from shards.lease import TRAIN_LEASE_FILE, Lease, LeaseHeldError
from shards.storage import Location


def _runs(tmp_path):
    """Each command's function with a config whose output folder is tmp_path/"o" (their other
    inputs do not exist: a run that got past the lease would fail on them instead)."""
    from training.evaluate import EvaluateConfig, evaluate
    from training.finetune import FinetuneConfig, finetune
    from training.predict import PredictConfig, predict_images
    from training.pretrain import PretrainConfig, pretrain
    from training.probe import Benchmark, EncoderConfig, ProbeConfig, probe

    out, missing = str(tmp_path / "o"), str(tmp_path / "missing")
    return {"pretrain": lambda: pretrain(PretrainConfig(missing, out, device="cpu")),
            "finetune": lambda: finetune(FinetuneConfig("kadid10k", missing, out,
                                                        device="cpu")),
            "evaluate": lambda: evaluate(EvaluateConfig("c.pt", "kadid10k", missing, out,
                                                        device="cpu")),
            "predict": lambda: predict_images(PredictConfig("c.pt", (missing,), out,
                                                            device="cpu")),
            "probe": lambda: probe(ProbeConfig(Benchmark("kadid10k", missing), out,
                                               EncoderConfig("c.pt"), device="cpu"))}


@pytest.mark.parametrize("command", ["pretrain", "finetune", "evaluate", "predict", "probe"])
def test_a_training_function_refuses_a_folder_another_run_holds(tmp_path, command):
    out = tmp_path / "o"
    holder = Lease(Location.parse(str(out)), "train pretrain", TRAIN_LEASE_FILE)
    holder.acquire()
    try:
        staged = out / "best.pt.partial"  # as a live run's checkpoint being written looks
        staged.write_bytes(b"a checkpoint being written")
        with pytest.raises(LeaseHeldError, match="is being written by iqa-factory train "
                                                 "pretrain on host"):
            _runs(tmp_path)[command]()
        assert sorted(p.name for p in out.iterdir()) == ["best.pt.partial", TRAIN_LEASE_FILE]
        assert staged.read_bytes() == b"a checkpoint being written"
    finally:
        holder.release()


@pytest.mark.parametrize("command", ["pretrain", "finetune", "evaluate", "predict", "probe"])
def test_a_training_function_lets_go_of_its_folder_however_it_ends(tmp_path, command):
    """Refused for its missing inputs after taking the lease: the lease is gone, and another
    run may take the folder."""
    with pytest.raises((ValueError, OSError)):
        _runs(tmp_path)[command]()
    assert not (tmp_path / "o" / TRAIN_LEASE_FILE).exists()


@pytest.mark.slow
def test_under_torchrun_every_rank_stops_at_rank_0s_refusal(tiny_dataset, tmp_path):
    """Rank 0 holds the lease; the others learn of its refusal (they would wait for it in
    the process group's start, deaf to torchrun's SIGTERM until killed 30 s later)."""
    from .test_ddp import TINY_RUN, launched

    out = tmp_path / "o"
    holder = Lease(Location.parse(str(out)), "train pretrain", TRAIN_LEASE_FILE)
    holder.acquire()
    try:
        result = launched("iqa_factory", "train", "pretrain", str(tiny_dataset), "--out",
                          str(out), "--epochs", "1", *TINY_RUN)
    finally:
        holder.release()
    assert result.returncode != 0
    refusal = "iqa-factory train: error: " + str(out)
    assert result.stderr.count(refusal) == 2, result.stderr[-3000:]  # said on both ranks
    assert "is being written by iqa-factory train pretrain" in result.stderr
    assert "forcefully exiting" not in result.stderr  # no rank left waiting to be killed


@pytest.mark.slow
def test_rank_0_lets_go_of_its_lease_where_another_rank_dies_before_it_is_told(tiny_dataset,
                                                                              tmp_path):
    from .test_ddp import TINY_RUN, launched

    out = tmp_path / "o"
    result = launched("tests.training.dying_rank", "pretrain", str(tiny_dataset), "--out",
                      str(out), "--epochs", "1", *TINY_RUN)
    assert result.returncode != 0
    assert not out.exists(), result.stderr[-3000:]  # the lease gone, and the folder it made


def test_a_lease_lost_while_a_finalizer_ran_still_stops_the_run(tmp_path):
    """The lease's stop signal landing in a finalizer loses its interrupt (see
    shards.stopping): the block ends in LeaseLostError all the same, leaving the new holder's
    lease."""
    import json

    import torch

    from shards.lease import LeaseLostError
    from tests.conftest import lose_a_signal
    from training.distributed import Context
    from training.output_lease import LEASE_LOST_SIGNAL, sole_writer

    path = tmp_path / "o" / TRAIN_LEASE_FILE
    with pytest.raises(LeaseLostError, match="another run took this run's lease over"), \
            sole_writer(str(tmp_path / "o"), "pretrain", Context(0, 1, 0, torch.device("cpu"))):
        theirs = {**json.loads(path.read_text()), "host": "elsewhere", "pid": 7}
        path.write_text(json.dumps(theirs))  # as a run that took it over writes it
        lose_a_signal(LEASE_LOST_SIGNAL)  # as the refresh thread sends it on finding that
    assert json.loads(path.read_text()) == theirs


def test_the_lease_lost_handler_stays_until_the_refresh_has_stopped(tmp_path, monkeypatch):
    """A refresh that finds the lease lost sends LEASE_LOST_SIGNAL (SIGUSR1) to the main
    thread; one sent as the run lets go would, under the signal's default, kill the process.
    So the handler is the run's while the lease is released, the one from before after."""
    import signal

    import torch

    from training.distributed import Context
    from training.output_lease import LEASE_LOST_SIGNAL, sole_writer

    at_release = []
    release = Lease.release
    monkeypatch.setattr(Lease, "release", lambda lease: (
        at_release.append(signal.getsignal(LEASE_LOST_SIGNAL)), release(lease)))
    before = signal.getsignal(LEASE_LOST_SIGNAL)
    with sole_writer(str(tmp_path / "o"), "pretrain", Context(0, 1, 0, torch.device("cpu"))):
        during = signal.getsignal(LEASE_LOST_SIGNAL)
    assert during not in (signal.SIG_DFL, signal.SIG_IGN, None, before)
    assert at_release == [during]
    assert signal.getsignal(LEASE_LOST_SIGNAL) == before
