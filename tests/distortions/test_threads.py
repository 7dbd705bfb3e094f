"""A process that distorts beside others runs OpenCV and torch on one thread."""

import multiprocessing
import os

import pytest

from distortions.threads import threads_in_use, use_one_thread


def _threads_seen(one_thread: bool, answers) -> None:
    if one_thread:
        use_one_thread()
    answers.put(threads_in_use())


def _in_a_fresh_process(one_thread: bool) -> dict[str, int]:
    """What a spawned process (as a Ray worker or the device check's pool starts) sees."""
    spawn = multiprocessing.get_context("spawn")
    answers = spawn.Queue()
    process = spawn.Process(target=_threads_seen, args=(one_thread, answers))
    process.start()
    try:
        return answers.get(timeout=120)
    finally:
        process.join()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                    reason="one thread is every library's default on one CPU")
def test_a_fresh_process_runs_opencv_and_torch_on_one_thread(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # (a child would take torch's from it)
    default = _in_a_fresh_process(one_thread=False)  # each library's own pool of every core
    assert default["opencv"] > 1 and default["torch"] > 1
    assert _in_a_fresh_process(one_thread=True) == {"opencv": 1, "torch": 1}
