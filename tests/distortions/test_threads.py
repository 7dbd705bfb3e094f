"""Processes that distort side by side run OpenCV and torch on one thread each."""

import os

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from distortions.threads import threads_in_use, use_one_thread


class _Threads(Dataset):
    """Each item: the threads OpenCV and torch would use in the worker that loads it."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, _index: int) -> torch.Tensor:
        seen = threads_in_use()
        return torch.tensor([seen["opencv"], seen["torch"]])


def _seen_by_workers(**options) -> list[list[int]]:
    loader = DataLoader(_Threads(), batch_size=None, num_workers=2, **options)
    return [item.tolist() for item in loader]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenCV's own default is one thread")
def test_a_loader_worker_runs_opencv_and_torch_on_one_thread():
    # without it, OpenCV in a worker keeps a pool of every core (torch alone sets itself to 1)
    assert all(opencv > 1 for opencv, _ in _seen_by_workers())
    assert _seen_by_workers(worker_init_fn=use_one_thread) == [[1, 1], [1, 1]]
