"""One CPU thread per process for the bank's work. Where processes that distort run side by
side (a node's shard tasks, the device check's pool), each is one CPU's worth: OpenCV's and
torch's own thread pools would otherwise each take every core of the node, in every process.

Only in a process started afresh (a Ray worker, a spawned one): in a forked child of a process
whose OpenCV pool had run, cv2.setNumThreads hangs (destroying the pool's condition variables,
which the parent's threads held at the fork), so a DataLoader's forked workers keep OpenCV's
default."""

import cv2
import torch


def use_one_thread() -> None:
    """OpenCV and torch on one thread in this process (OMP_NUM_THREADS does not bind
    OpenCV's pool)."""
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def threads_in_use() -> dict[str, int]:
    """The threads OpenCV and torch would use in this process."""
    return {"opencv": cv2.getNumThreads(), "torch": torch.get_num_threads()}
