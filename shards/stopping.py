"""SIGTERM (`kill`, a batch scheduler's or Kubernetes' stop, torchrun's when a rank fails) ends
a generate or a training run as Ctrl-C does: a KeyboardInterrupt in the main thread, so that
its stop path runs (shard tasks cancelled, actors closed, the output's lease let go) where the
signal's default would kill the process mid-write and Ray's core worker, once started, aborts
it. Ray's blocking calls raise a plain KeyboardInterrupt for any exception a handler raises,
so the signal is also remembered (`terminated`)."""

import contextlib
import signal
import threading
from collections.abc import Iterator

_RECEIVED = threading.Event()


def _interrupt(signum, frame) -> None:
    _RECEIVED.set()
    raise KeyboardInterrupt("SIGTERM")


def terminated() -> bool:
    """Whether a SIGTERM answered here has arrived."""
    return _RECEIVED.is_set()


def answer_sigterm() -> None:
    """From now on SIGTERM raises KeyboardInterrupt in the main thread (again after ray.init,
    which installs a handler of its own). Nothing where this is not the main thread."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """answer_sigterm inside the block (`terminated` false as it begins); the handler from
    before it (the default where that one was not Python's) afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGTERM)
    _RECEIVED.clear()
    answer_sigterm()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if before is None else before)
