"""A labeler actor's turns (pipeline.labeler_calls.Turns): a call that must run alone waits
for the calls running beside it, and the calls that come after it wait for it (the Ray side:
test_fault_ray.py's labeler deaths)."""

import threading
import time

from pipeline.labeler_calls import Turns


def _wait_until(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_call_alone_waits_for_the_running_ones_and_keeps_later_ones_out():
    turns, order, release = Turns(), [], threading.Event()

    def call(name: str, alone: bool, hold: threading.Event | None = None) -> None:
        with turns.turn(alone):
            order.append(f"{name} in")
            if hold is not None:
                hold.wait(timeout=10)
            order.append(f"{name} out")

    first = threading.Thread(target=call, args=("shared", False, release))
    first.start()
    _wait_until(lambda: order == ["shared in"])
    alone = threading.Thread(target=call, args=("alone", True))
    alone.start()
    _wait_until(lambda: turns._alone_waiting == 1)
    later = threading.Thread(target=call, args=("later", False))
    later.start()
    time.sleep(0.2)
    assert order == ["shared in"]  # neither the lone call nor the later one ran beside it
    release.set()
    for thread in (first, alone, later):
        thread.join(timeout=10)
    assert order == ["shared in", "shared out", "alone in", "alone out", "later in", "later out"]


def test_calls_that_need_not_run_alone_run_side_by_side():
    turns, inside, both = Turns(), [], threading.Barrier(2, timeout=10)

    def call() -> None:
        with turns.turn(False):
            inside.append(1)
            both.wait()  # each waits for the other inside: broken if they ran one at a time

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)
    assert len(inside) == 2 and not both.broken
