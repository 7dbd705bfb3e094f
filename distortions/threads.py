"""One CPU thread per process for the bank's work. Where processes that distort run side by
side (a node's shard tasks, a trainer's loader workers), each is one CPU's worth: OpenCV's
and torch's own thread pools would otherwise each take every core of the node, in every
process, and the node would spend its time switching between them."""

import cv2
import torch


def use_one_thread(_worker_id: int | None = None) -> None:
    """OpenCV and torch on one thread in this process (OMP_NUM_THREADS does not bind
    OpenCV's pool). Takes a DataLoader's worker id, to serve as its worker_init_fn."""
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def threads_in_use() -> dict[str, int]:
    """The threads OpenCV and torch would use in this process."""
    return {"opencv": cv2.getNumThreads(), "torch": torch.get_num_threads()}
