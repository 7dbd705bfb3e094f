"""Under torchrun rank 0 alone reads a dataset's distorted index (about 1 GB at 23.1M rows)
and sends what the run takes from it to the other ranks; an error it meets stops every rank
with the same message."""

import subprocess

import pytest

from .test_ddp import TINY_RUN, launched

LABEL_FREE = ["--objective", "contrastive", "--crop", "16", "--versions", "2",
              "--queue-size", "64"]


def counted_torchrun(log, *args: str) -> subprocess.CompletedProcess:
    return launched("tests.training.counting_ranks", str(log), *args)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["regression", "contrastive"])
def test_two_ranks_read_the_distorted_index_once(square_dataset, tmp_path, objective):
    log = tmp_path / "reads.log"
    result = counted_torchrun(log, "pretrain", str(square_dataset), "--out",
                              str(tmp_path / "run"), "--epochs", "1", *TINY_RUN,
                              *(LABEL_FREE if objective == "contrastive" else []))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 rank(s) on cpu" in result.stdout
    assert log.read_text().split() == ["0"]  # one read, by rank 0


@pytest.mark.slow
def test_an_error_rank_0_meets_in_the_index_stops_both_ranks_with_its_message(
        square_dataset, tmp_path):
    log = tmp_path / "reads.log"
    assert TINY_RUN[-2:] == ["--val-refs", "r5"]
    result = counted_torchrun(log, "pretrain", str(square_dataset), "--out",
                              str(tmp_path / "run"), *TINY_RUN[:-2], "--val-refs", "nowhere")
    assert result.returncode != 0
    said = "iqa-factory train: error: unknown reference ids"
    assert result.stderr.count(said) == 2, result.stderr[-3000:]  # each rank says it
    assert log.read_text().split() == ["0"]


class Refusal(Exception):
    def __init__(self, shard: int, why: str):
        super().__init__(f"shard {shard}: {why}")  # its args (one string) do not rebuild it


def test_an_error_that_does_not_travel_is_sent_as_a_runtime_error_quoting_it():
    from training.distributed import _portable

    sent = _portable(Refusal(3, "damaged"))
    assert type(sent) is RuntimeError and str(sent) == "Refusal: shard 3: damaged"
    travels = ValueError("unknown reference ids: nowhere")
    assert _portable(travels) is travels
