"""Two-process gloo DDP runs through torchrun, on the tiny shards; the process group's
collective timeout."""

import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from shards.lease import TRAIN_LEASE_FILE
from training import checkpoint
from training.cli import main
from training.distributed import Context, collective_timeout, start

TINY_RUN = ["--backbone", "test_resnet", "--init", "random", "--crop", "32",
            "--steps-per-epoch", "3", "--batch-size", "4", "--workers", "0", "--device", "cpu",
            "--patience", "5", "--val-refs", "r5"]


def launched(module: str, *args: str, processes: int = 2,
             monitor_seconds: float = 0.1) -> subprocess.CompletedProcess:
    """`python -m module args` on `processes` ranks through torchrun, its outcome unchecked;
    torchrun stops the other ranks (SIGTERM) within `monitor_seconds` of one's exit."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", f"--monitor-interval={monitor_seconds}",
               "-m", module, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def torchrun(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    result = launched("training", *args, processes=processes)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def weights(out) -> dict[str, torch.Tensor]:
    return checkpoint.load(out / checkpoint.LAST)["model"]


@pytest.mark.slow
def test_two_ranks_take_equal_batches_and_validate_on_gathered_predictions(tiny_dataset,
                                                                          tmp_path):
    out = tmp_path / "run"
    result = torchrun("pretrain", str(tiny_dataset), "--out", str(out), "--epochs", "2",
                      *TINY_RUN)
    history = checkpoint.load(out / checkpoint.LAST)["history"]
    assert [record["rank_batches"] for record in history] == [[3, 3], [3, 3]]
    # validation on r4 and r5 (12 samples, split across the ranks by shard) is gathered whole
    assert all(record["val_count"] == 12 for record in history)
    assert "2 rank(s) on cpu" in result.stdout
    assert (out / checkpoint.BEST).is_file() and (out / "summary.json").is_file()
    assert any((out / "tensorboard").iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("ranks", [2, 3])
def test_resume_gives_the_weights_of_an_uninterrupted_run(tiny_dataset, tmp_path, ranks):
    """Three ranks too: gloo's sums of three or more are grouped by where each gradient lies
    in DDP's buckets, so the buckets' order must not change at a resume."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run = ["pretrain", str(tiny_dataset), *TINY_RUN, "--batch-size", str(2 * ranks)]
    torchrun(*run, "--out", str(straight), "--epochs", "2", processes=ranks)
    torchrun(*run, "--out", str(resumed), "--epochs", "1", processes=ranks)
    after_one = weights(resumed)
    torchrun(*run, "--out", str(resumed), "--epochs", "2", "--resume", processes=ranks)
    expected, actual = weights(straight), weights(resumed)
    assert any(not torch.equal(after_one[k], actual[k]) for k in actual)  # it trained on
    for key, value in expected.items():
        assert torch.equal(value, actual[key]), key


@pytest.mark.slow
def test_a_run_resumed_mid_epoch_gives_the_weights_of_an_uninterrupted_run(tiny_dataset,
                                                                           tmp_path):
    """Each rank's own random state (drop-path) and loss sums come back from rank 0's file."""
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    run = ["pretrain", str(tiny_dataset), "--epochs", "2", "--drop-path", "0.3", *TINY_RUN]
    torchrun(*run, "--out", str(straight))
    crashed = launched("tests.training.crashing", "1", "3", *run, "--out", str(broken),
                       "--checkpoint-every", "2")
    assert crashed.returncode != 0 and "crashed fetching batch 3" in crashed.stderr
    partial = checkpoint.load(broken / checkpoint.LAST)["partial_epoch"]
    assert (partial["epoch"], partial["step"], len(partial["ranks"])) == (1, 2, 2)
    torchrun(*run, "--out", str(broken), "--resume")
    expected = checkpoint.load(straight / checkpoint.LAST)
    actual = checkpoint.load(broken / checkpoint.LAST)
    for key, value in expected["model"].items():
        assert torch.equal(value, actual["model"][key]), key
    assert [r["train_loss"] for r in expected["history"]] == \
        [r["train_loss"] for r in actual["history"]]


@pytest.mark.slow
def test_ranks_told_apart_are_refused_and_a_rank_that_dies_is_said_in_a_line(tiny_dataset,
                                                                              tmp_path):
    """Each rank runs its own command line: one without --resume would train on from scratch
    beside ranks that resumed (mixed state, a last.pt that looks sound), so the run is refused
    before it trains. A rank that dies leaves the others a collective that fails: each says
    so in a line (exit 1, no traceback) and rank 0 lets go of the folder's lease."""
    out = tmp_path / "run"
    run = ["pretrain", str(tiny_dataset), "--out", str(out), *TINY_RUN]
    torchrun(*run, "--epochs", "1")
    before = (out / checkpoint.LAST).read_bytes()
    told_apart = launched("tests.training.one_rank_differs", "1", "without-resume", *run,
                          "--epochs", "2", "--resume")
    assert told_apart.returncode != 0
    assert ("--resume differs between the ranks (rank 0: True, rank 1: False): give every "
            "rank the same command") in told_apart.stderr, told_apart.stderr[-3000:]
    assert (out / checkpoint.LAST).read_bytes() == before
    uneven = launched("training", *run, "--epochs", "2", "--resume", "--batch-size", "3")
    assert "--batch-size 3 is the global batch and must divide evenly across 2 ranks" in \
        uneven.stderr and "pretraining" not in uneven.stdout  # refused before it starts
    lost = launched("tests.training.one_rank_differs", "1", "exits", *run, "--epochs", "2",
                    "--resume", monitor_seconds=30)  # as on another node: no SIGTERM first
    assert lost.returncode != 0
    assert "iqa-factory train: error: rank 0 of 2 stops: a collective failed (" in lost.stderr, \
        lost.stderr[-3000:]
    assert "[rank0]: Traceback" not in lost.stderr
    assert not (out / TRAIN_LEASE_FILE).exists()
    assert (out / checkpoint.LAST).read_bytes() == before
    assert main([*run, "--epochs", "2", "--resume"]) == 0  # an epoch's end: on one rank too
    history = checkpoint.load(out / checkpoint.LAST)["history"]
    assert [record["rank_batches"] for record in history] == [[3, 3], [3]]


def stopped_in_its_first_epoch(command: list[str], out, request) -> tuple[int, str]:
    """`command` (a run that writes `out` and would not end by itself) started, and sent a
    SIGTERM in its first epoch, its DataLoader workers at work: its exit status and stderr."""
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    request.addfinalizer(run.kill)  # no 1000-epoch run left behind where an assert fails
    deadline = time.monotonic() + 300
    while not (out / "tensorboard").is_dir() and time.monotonic() < deadline:
        time.sleep(0.2)  # (fit makes it as it begins)
    time.sleep(4)  # in the first epoch's 200 steps, the loader workers at work
    run.send_signal(signal.SIGTERM)
    stderr = run.communicate(timeout=120)[1]
    return run.returncode, stderr


ENDLESS = ["--epochs", "1000", "--patience", "1000", "--steps-per-epoch", "200"]
WORKERS = [("2" if before == "--workers" else word)
           for before, word in zip(["", *TINY_RUN], TINY_RUN, strict=False)]


@pytest.mark.slow
def test_a_sigterm_to_torchrun_stops_ranks_and_their_loader_workers_in_a_line(tiny_dataset,
                                                                              tmp_path,
                                                                              request):
    """torchrun passes a SIGTERM to each rank's process group: the DataLoader workers die of
    it too, and each loader's finalizer said so ("Exception ignored in ... DataLoader worker
    (pid N) is killed by signal: Terminated") after the rank's own line."""
    out = tmp_path / "run"
    _, stderr = stopped_in_its_first_epoch(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "training", "pretrain", str(tiny_dataset), "--out", str(out), *WORKERS,
         *ENDLESS], out, request)
    assert stderr.count("iqa-factory train: terminated (SIGTERM)") == 2, stderr[-3000:]
    assert "Exception ignored" not in stderr, stderr[-3000:]
    assert "]: Traceback" not in stderr, stderr[-3000:]  # (torch writes "[rank0]: Traceback")
    assert not (out / TRAIN_LEASE_FILE).exists()


@pytest.mark.slow
def test_a_run_lets_go_of_its_lease_where_its_workers_die_of_the_sigterm_meanwhile(
        tiny_dataset, tmp_path, request):
    """The workers' deaths reach their rank as SIGCHLD while it winds down, and torch's
    handler raised each as a RuntimeError wherever the rank was: where that was the lease's
    release, the rank still said it stopped, and the lease stayed (once in CI, in the test
    above). That order held still: the workers die of a SIGTERM just as the lease is let go."""
    out = tmp_path / "run"
    status, stderr = stopped_in_its_first_epoch(
        [sys.executable, "-m", "tests.training.workers_die_at_release", "pretrain",
         str(tiny_dataset), "--out", str(out), *WORKERS, *ENDLESS], out, request)
    assert status == 143, stderr[-3000:]
    assert "iqa-factory train: terminated (SIGTERM)" in stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-3000:]
    assert not (out / TRAIN_LEASE_FILE).exists()


TIMEOUT = "IQA_FACTORY_NCCL_TIMEOUT_MIN"


def test_a_collective_that_timed_out_is_said_as_a_peer_lost_is(monkeypatch):
    """A rank that hangs (SIGSTOP) leaves the others gloo's timeout, not a closed connection:
    the same one line, its first words gloo's own (the text torch 2.14's gloo gave)."""
    from training.distributed import CollectiveError, started

    monkeypatch.setattr("training.distributed.start",
                        lambda device: Context(0, 2, 0, torch.device("cpu")))
    monkeypatch.setattr("training.distributed.stop", lambda context: None)
    timed_out = RuntimeError("[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:129] "
                             "Timed out waiting 60000ms for send operation to complete")
    said = (r"^rank 0 of 2 stops: a collective failed \(Timed out waiting 60000ms for send "
            r"operation to complete\): another rank")
    with pytest.raises(CollectiveError, match=said), started("cpu"):
        raise timed_out
    with pytest.raises(RuntimeError, match="a bug of ours"), started("cpu"):
        raise RuntimeError("a bug of ours")  # not a collective's: as it is


def test_collectives_time_out_after_30_minutes_or_the_variables_minutes(monkeypatch):
    monkeypatch.delenv(TIMEOUT, raising=False)
    assert collective_timeout() == timedelta(minutes=30)  # the README's
    monkeypatch.setenv(TIMEOUT, "5")
    assert collective_timeout() == timedelta(minutes=5)


def test_the_process_group_is_given_the_timeout(monkeypatch):
    """A one-rank gloo group as torchrun's environment starts it (gloo takes the same timeout
    argument as NCCL)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR":
                        "127.0.0.1", "MASTER_PORT": str(port), TIMEOUT: "7"}.items():
        monkeypatch.setenv(name, value)
    start("cpu")
    try:
        backend = dist.group.WORLD._get_backend(torch.device("cpu"))
        assert backend.options._timeout == timedelta(minutes=7)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5"])
def test_a_timeout_that_is_not_whole_minutes_is_refused_clearly(value, monkeypatch, capsys):
    monkeypatch.setenv(TIMEOUT, value)
    assert main(["evaluate", "--checkpoint", "absent.pt", "--dataset", "csv", "--root",
                 "absent.csv", "--out", "o", "--device", "cpu"]) == 2
    assert f"error: {TIMEOUT} must be a whole number of minutes, at least 1; got '{value}'" \
        in capsys.readouterr().err


def _validated_buffers(rank: int, folder: str) -> None:
    """One of two gloo ranks: a batch-norm layer whose running statistics its own forward
    moved, then the buffers fit broadcasts before it validates."""
    from training.distributed import Context, broadcast_buffers

    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank,
                            world_size=2, timeout=timedelta(seconds=60))
    norm = torch.nn.BatchNorm1d(3)
    norm(torch.full((4, 3), float(rank + 1)) + torch.arange(4.0)[:, None])  # its own data
    moved = norm.running_mean.clone()
    broadcast_buffers(Context(rank, 2, rank, torch.device("cpu")), norm)
    torch.save({"moved": moved, "validated": norm.running_mean}, f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


def test_every_rank_validates_with_rank_0s_batch_norm_statistics(tmp_path):
    """Each rank's forward passes move its own running statistics; rank 0's are what its
    checkpoint holds, so every rank takes them before it validates."""
    torch.multiprocessing.spawn(_validated_buffers, args=(str(tmp_path),), nprocs=2)
    first, second = (torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1))
    assert not torch.equal(first["moved"], second["moved"])
    torch.testing.assert_close(second["validated"], first["moved"], rtol=0, atol=0)
    torch.testing.assert_close(first["validated"], first["moved"], rtol=0, atol=0)


@pytest.mark.parametrize("objective", [None, "reconstruction", "restoration", "contrastive"])
def test_batch_norm_is_synchronised_under_ddp_on_gpus_but_for_mocos_shuffling_bn(objective,
                                                                                 tmp_path):
    """The conversion itself (torch's SyncBatchNorm runs on GPUs only: its statistics over the
    ranks are the device check's to see): every batch norm, timm's norm + activation layers
    (EfficientNet's) kept whole with their activation, the same tensors under the same keys;
    none for MoCo (its shuffling BN), on CPU ranks, alone, or without batch norm."""
    from timm.layers import BatchNormAct2d, SyncBatchNormAct

    from training.loop import Run, synchronised_batch_norm
    from training.model import ModelConfig, build_model
    from training.objectives import ObjectiveConfig, build_objective
    from training.optim import OptimConfig
    from training.precision import FP32, Inputs

    def run_on(device: str, world: int, backbone: str = "test_efficientnet") -> Run:
        context = Context(0, world, 0, torch.device(device))
        model = build_model(ModelConfig(backbone, init="random"),
                            outputs=0 if objective else 1).model
        built = None
        if objective:
            inputs = Inputs((0.5,) * 3, (0.5,) * 3, context.device, FP32)
            built = build_objective(ObjectiveConfig(objective, queue_size=8), model, 32, inputs,
                                    context)
            model = built.model
        return Run(context, model, OptimConfig(1e-3, 10, 1, 4), 0, tmp_path, {}, objective=built)

    run = run_on("cuda:0", 2)
    norms = [name for name, module in run.model.named_modules()
             if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)]
    acting = {name: module.act for name, module in run.model.named_modules()
              if isinstance(module, BatchNormAct2d)}
    before = dict(run.model.state_dict(keep_vars=True))
    assert norms and acting
    synchronised = synchronised_batch_norm(run)
    assert synchronised == (objective != "contrastive")
    modules = dict(run.model.named_modules())
    if synchronised:
        assert all(isinstance(modules[name], torch.nn.SyncBatchNorm | SyncBatchNormAct)
                   for name in norms)
        assert all(isinstance(modules[name], SyncBatchNormAct) and modules[name].act is act
                   for name, act in acting.items())
    else:
        assert not any(isinstance(module, torch.nn.SyncBatchNorm | SyncBatchNormAct)
                       for module in modules.values())
    after = run.model.state_dict(keep_vars=True)
    assert after.keys() == before.keys()
    assert all(after[key] is before[key] for key in before)
    for device, world, backbone in (("cpu", 2, "test_efficientnet"),
                                    ("cuda:0", 1, "test_efficientnet"),
                                    ("cuda:0", 2, "test_efficientnet_gn")):
        assert not synchronised_batch_norm(run_on(device, world, backbone))


@pytest.mark.slow
def test_two_ranks_evaluate_to_the_predictions_of_one_in_the_same_order(tiny_dataset,
                                                                        tmp_path):
    """Each rank scores every second image; the gathered predictions are written in the
    images' order, so predictions.npz and the figures are those of one rank (up to float32
    rounding: other batches, one thread a rank)."""
    import json

    import numpy as np

    out = tmp_path / "run"
    assert main(["pretrain", str(tiny_dataset), "--out", str(out), "--epochs", "1",
                 *TINY_RUN]) == 0
    evaluation = ["evaluate", "--checkpoint", str(out / checkpoint.BEST), "--dataset",
                  "shards", "--root", str(tiny_dataset), "--refs", "r3,r4,r5", "--eval-crops",
                  "1", "--workers", "0", "--device", "cpu"]
    assert main([*evaluation, "--out", str(tmp_path / "one")]) == 0
    torchrun(*evaluation, "--out", str(tmp_path / "two"))
    one, two = (np.load(tmp_path / name / "predictions.npz") for name in ("one", "two"))
    assert len(one["predicted"]) == 18  # three references' six versions
    assert np.array_equal(one["opinion"], two["opinion"])
    assert np.allclose(one["predicted"], two["predicted"], rtol=0, atol=1e-6)
    figures = [json.loads((tmp_path / name / "evaluation.json").read_text())["figures"]
               for name in ("one", "two")]
    assert figures[1] == pytest.approx(figures[0], abs=1e-5)
