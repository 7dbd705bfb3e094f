"""A SIGTERM inside generate's block is a KeyboardInterrupt (its stop path runs), remembered as
a SIGTERM; outside it, the handler from before is back (the Ray-started path:
test_ray_lifetime_ray.py). One whose interrupt a finalizer swallowed is raised again at the
next stop point of long work, or as its block ends (generate's loop: test_fault_ray.py)."""

import os
import signal
import sys
import threading
import time

import pytest

from shards.stopping import stop_point, stops_as_interrupts, terminated
from tests.conftest import lose_a_signal


def test_a_sigterm_in_the_block_interrupts_and_the_handler_before_comes_back():
    heard = []
    before = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda signum, frame: heard.append(signum))
    try:
        with pytest.raises(KeyboardInterrupt), stops_as_interrupts():
            assert not terminated()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # (the handler runs at once: the sleep is cut short)
        assert terminated() and heard == []
        os.kill(os.getpid(), signal.SIGTERM)  # the handler from before the block again
        time.sleep(0.1)
        assert heard == [signal.SIGTERM]
        with stops_as_interrupts():
            assert not terminated()  # each block begins afresh
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_sigterm_lost_in_a_finalizer_is_raised_at_the_next_stop_point():
    reached = []
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), stops_as_interrupts():
        lose_a_signal()
        reached.append("after the lost interrupt")
        assert terminated()
        stop_point()
        reached.append("after the stop point")
    assert reached == ["after the lost interrupt"]
    stop_point()  # after its block, nothing: a later run in this process is not stopped


class _FailsAsItIsFreed:
    def __del__(self):
        raise ValueError("a finalizer's own error")


def test_a_block_whose_sigterm_was_lost_ends_in_the_interrupt(monkeypatch):
    """Where no stop point comes after it, the block itself ends as the interrupt: the run's
    caller reports it as terminated, as where the handler's exception was not lost, with no
    "Exception ignored" traceback beside it; a finalizer's own error is reported as before."""
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), stops_as_interrupts():
        lose_a_signal()
        _FailsAsItIsFreed()
    assert terminated()
    assert [type(u.exc_value) for u in unraisable] == [ValueError]
    assert sys.unraisablehook == unraisable.append
    with stops_as_interrupts():
        stop_point()  # each block begins afresh


def test_stop_points_run_between_a_training_epochs_steps_and_a_scores_batches(tmp_path):
    """A SIGTERM lost while the second batch is read stops the epoch before its second step,
    and a scoring pass before its second batch (features and validation read through it)."""
    import torch

    from training.distributed import Context
    from training.loop import Run, _loss_function, train_epoch, with_progress
    from training.model import ModelConfig, build_model
    from training.optim import OptimConfig, optimiser

    def batches(count: int):
        for number in range(count):
            if number == 1:
                lose_a_signal()
            yield torch.zeros((2, 3, 32, 32), dtype=torch.uint8), torch.rand(2)

    context = Context(0, 1, 0, torch.device("cpu"))
    scored = []
    with pytest.raises(KeyboardInterrupt), stops_as_interrupts():
        scored.extend(with_progress(batches(3), context, "score"))
    assert len(scored) == 1
    model = build_model(ModelConfig("test_resnet", init="random")).model
    run = Run(context, model, OptimConfig(1e-3, 10, 1, 4), 0, tmp_path, {})
    steps = []
    model.register_forward_hook(lambda module, args, output: steps.append(len(steps)))
    with pytest.raises(KeyboardInterrupt), stops_as_interrupts():
        train_epoch(run, model, batches(3), 3, _loss_function(run), optimiser(model, run.optim)[0])
    assert steps == [0]


def test_a_ctrl_c_lost_in_a_finalizer_is_raised_again_and_an_ignored_one_stays_ignored():
    """Ctrl-C's KeyboardInterrupt is as easily lost as SIGTERM's: where Python's own handler
    answers SIGINT it is remembered too (an interruption, not a termination). A SIGINT
    ignored, as a job started in the background has it, is left ignored."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt, match="SIGINT"), stops_as_interrupts():
            lose_a_signal(signal.SIGINT)
            stop_point()
        assert not terminated()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with stops_as_interrupts():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            stop_point()
    finally:
        signal.signal(signal.SIGINT, before)


def _a_worker_died(signum, frame):
    raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.")


def test_what_a_sigterm_changes_at_once_comes_before_the_signals_that_came_with_it():
    """`on_sigterm` runs first in SIGTERM's handler (training: its DataLoader workers' deaths
    from the same signal are no longer raised, torch's SIGCHLD handler put away), before a
    SIGCHLD pending beside it is answered, even one sent first: Python answers signals in the
    order of their numbers, SIGTERM (15) before SIGCHLD (17)."""
    before = signal.signal(signal.SIGCHLD, _a_worker_died)
    main = threading.main_thread().ident
    seen = []

    def put_away_the_sigchld_handler():
        seen.append(terminated())
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    try:
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"), \
                stops_as_interrupts(on_sigterm=put_away_the_sigchld_handler):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, signal.SIGTERM})
            signal.pthread_kill(main, signal.SIGCHLD)  # both pending in this thread
            signal.pthread_kill(main, signal.SIGTERM)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD, signal.SIGTERM})
            time.sleep(10)  # (cut short)
        assert seen == [False] and terminated()  # before the interrupt was remembered
        time.sleep(0.1)  # the pending SIGCHLD's handler, had it stayed, raised by now
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD, signal.SIGTERM})
        signal.signal(signal.SIGCHLD, before)


def test_a_lease_is_taken_and_let_go_whole_where_a_sigterm_comes_meanwhile(tmp_path,
                                                                         monkeypatch):
    """A SIGTERM as the lease file is written, then as it is deleted: each held back until the
    lease is taken (so `acquired`, and let go) or gone with the folder it made, then raised.
    Inside, the first would leave a lease no one lets go (another run refused or made to wait
    out its staleness), the second a lease and folder behind."""
    from shards.lease import Lease
    from shards.storage import Location

    lease = Lease(Location.parse(str(tmp_path / "out")))
    create, read = lease._create, lease._read

    def create_then_signal() -> bool:
        made = create()
        os.kill(os.getpid(), signal.SIGTERM)
        return made

    def read_then_signal() -> dict:
        found = read()
        os.kill(os.getpid(), signal.SIGTERM)
        return found

    monkeypatch.setattr(lease, "_create", create_then_signal)
    taken, released = [], []
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), stops_as_interrupts():
        try:
            lease.acquire()
            taken.append(lease.acquired)
            stop_point()
        finally:
            monkeypatch.setattr(lease, "_read", read_then_signal)
            lease.release()
            released.append(True)
    assert taken == [True] and released == [True]
    assert not (tmp_path / "out").exists()
