"""Label-free objectives under two-process gloo DDP (torchrun): the same steps on one rank and
on two agree, every rank holds the same weights, momentum encoder and queue, and a two-rank run
of each objective resumed from its mid-epoch checkpoint ends as if never stopped."""


import pytest
import torch

from training import checkpoint

from .test_ddp import launched, torchrun
from .test_resume import assert_same_run

RUN = ["--backbone", "test_resnet", "--init", "random", "--steps-per-epoch", "2",
       "--batch-size", "2", "--workers", "0", "--device", "cpu", "--patience", "5",
       "--val-refs", "r5", "--versions", "2"]


@pytest.mark.slow
def test_two_ranks_take_the_steps_of_one_rank_with_the_global_batch(square_dataset,
                                                                    tmp_path):
    result = launched("tests.training.objective_ranks", str(square_dataset), str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = (torch.load(tmp_path / f"rank-{rank}.pt") for rank in (0, 1))
    for name in ("contrastive", "reconstruction", "restoration"):
        ddp, other, alone = first[name]["ddp"], second[name]["ddp"], first[name]["single"]
        assert ddp.keys() == other.keys() == alone.keys()
        for key, value in ddp.items():
            assert torch.equal(value, other[key]), (name, key)  # identical on both ranks
            # gradients averaged over ranks = the global batch's, up to float rounding
            assert torch.allclose(value.double(), alone[key].double(), rtol=0, atol=1e-4), \
                (name, key)
    contrastive = first["contrastive"]["ddp"]
    # 3 steps x 2 groups x (reference + 2 versions) x 2 scales keys, enqueued in order
    assert int(contrastive["queue_pointer"]) == 36
    # shuffling BN: 2 ranks x 1 part = 1 rank x 2 parts, and not the unshuffled batch's keys
    keys = first["shuffling_bn"]
    both = torch.cat([keys["ddp"], second["shuffling_bn"]["ddp"]])
    assert torch.allclose(both, keys["single"], rtol=0, atol=1e-6)
    assert not torch.allclose(both, keys["unshuffled"], rtol=0, atol=1e-3)


# a rank's batch is one group: restoration feeds only its distorted crop, whose final feature
# map must hold more than one value per channel for batch norm (64 / 32 = 2 x 2)
CROPS = {"contrastive": 16, "reconstruction": 32, "restoration": 64}


@pytest.mark.slow
@pytest.mark.parametrize("objective", list(CROPS))
def test_a_two_rank_run_resumed_mid_epoch_ends_as_if_never_interrupted(square_dataset,
                                                                        tmp_path, objective):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    run = ["pretrain", str(square_dataset), "--objective", objective, "--crop",
           str(CROPS[objective]), "--epochs", "2", *RUN,
           *(["--queue-size", "64"] if objective == "contrastive" else [])]
    result = torchrun(*run, "--out", str(straight))
    assert "2 rank(s) on cpu" in result.stdout
    crashed = launched("tests.training.crashing", "1", "2", *run, "--out", str(broken),
                       "--checkpoint-every", "1")
    assert crashed.returncode != 0 and "crashed fetching batch 2" in crashed.stderr
    torchrun(*run, "--out", str(broken), "--checkpoint-every", "1", "--resume")
    expected = checkpoint.load(straight / checkpoint.LAST)
    actual = checkpoint.load(broken / checkpoint.LAST)
    assert [r["rank_batches"] for r in expected["history"]] == [[2, 2], [2, 2]]
    if objective == "contrastive":
        assert [r["lr"] for r in expected["history"]] == [0.03, pytest.approx(0.015)]  # cosine
        # epochs x steps x global batch x (reference + 2 versions) x scales keys, modulo 64
        assert int(actual["model"]["queue_pointer"]) == 2 * 2 * 2 * 3 * 2 % 64
    assert_same_run(expected, actual)  # weights, momentum encoder, queue, optimiser, history
