"""SIGTERM (`kill`, a batch scheduler's or Kubernetes' stop, torchrun's when a rank fails) ends
a generate or a training run as Ctrl-C does: a KeyboardInterrupt in the main thread, so that
its stop path runs (shard tasks cancelled, actors closed, the output's lease let go) where the
signal's default would kill the process mid-write and Ray's core worker, once started, aborts
it. Ray's blocking calls raise a plain KeyboardInterrupt for any exception a handler raises,
so the signal is also remembered (`terminated`). Ctrl-C is answered the same way, for what
follows.

A handler's exception is lost where the signal lands while a finalizer runs (an object's
`__del__` as the garbage collector frees it, a weakref callback: Python prints "Exception
ignored" and goes on). So each interrupt a handler raises (`interrupt`) is remembered until its
block begins again, `stop_point` raises it again between the steps of long work (a training
step, a scored batch, a turn of generate's loop), a block that ends without it raises it as
it ends, and inside the block no "Exception ignored" traceback is printed for it. The same
holds an interrupt back from work that must finish whole (`interrupts_held`)."""

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from functools import partial

SIGTERM_REASON, SIGINT_REASON = "SIGTERM", "SIGINT"
_RAISED: set[str] = set()  # the reasons of the interrupts handlers raised (see `interrupt`)
_ANSWERED: set[str] = set()  # the reasons whose block runs now (`signal_as_interrupt`)
_HOLDS = 0  # how many `interrupts_held` blocks the main thread is in


def interrupt(reason: str) -> None:
    """For a signal handler: KeyboardInterrupt(reason), remembered for `stop_point`; inside
    `interrupts_held`, only remembered."""
    _RAISED.add(reason)
    if not _HOLDS:
        raise KeyboardInterrupt(reason)


@contextlib.contextmanager
def interrupts_held(raised_as_it_ends: bool = False) -> Iterator[None]:
    """For work that must finish whole once begun (a lease taken or let go: one left half
    made stays for another run to wait out): an interrupt a handler raises inside the block is
    only remembered, and raised at the next stop point or as its signal's block ends; with
    `raised_as_it_ends`, as the block ends (what it made is in the caller's hands by then).
    Nothing where this is not the main thread, where handlers run."""
    global _HOLDS
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = set(_RAISED)
    _HOLDS += 1
    try:
        yield
    finally:
        _HOLDS -= 1
    if raised_as_it_ends and (came := (_RAISED - before) & _ANSWERED):
        raise KeyboardInterrupt(min(came))


@contextlib.contextmanager
def interrupt_kept() -> Iterator[None]:
    """An error raised in the block while an interrupt unwinds it (a library's cleanup that
    fails on the half-done work the interrupt left: torch's zip writer, "unexpected pos";
    zipfile's, "Can't close the ZIP file while there is an open writing handle") raised as
    that interrupt, which a command answers with how to go on, not as a crash."""
    try:
        yield
    except Exception as error:
        if isinstance(error.__context__, KeyboardInterrupt):
            raise error.__context__ from None
        raise


def stop_point() -> None:
    """KeyboardInterrupt where a handler raised one (`interrupt`) in a block that runs: again,
    where the first was lost in a finalizer. Nothing otherwise (nor after the block)."""
    if raised := _RAISED & _ANSWERED:
        raise KeyboardInterrupt(min(raised))


def _interrupt(signum, frame, first: Callable[[], None] | None = None) -> None:
    if first is not None:
        first()
    interrupt(SIGTERM_REASON)


def _ctrl_c(signum, frame) -> None:
    interrupt(SIGINT_REASON)


def terminated() -> bool:
    """Whether a SIGTERM answered here has arrived."""
    return SIGTERM_REASON in _RAISED


def answer_sigterm() -> None:
    """From now on SIGTERM raises KeyboardInterrupt in the main thread (again after ray.init,
    which installs a handler of its own). Nothing where this is not the main thread."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


@contextlib.contextmanager
def signal_as_interrupt(signum: signal.Signals, handler, reason: str) -> Iterator[None]:
    """`handler` (one that calls `interrupt(reason)`) answers `signum` inside the block, which
    begins with no such interrupt remembered and ends with a KeyboardInterrupt where one was
    raised and lost; the handler from before it (the default where that one was not Python's)
    afterwards. Nothing where this is not the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before, nested = signal.getsignal(signum), reason in _ANSWERED
    hook_before = sys.unraisablehook
    _RAISED.discard(reason)
    _ANSWERED.add(reason)
    sys.unraisablehook = partial(_unless_lost, hook_before)
    signal.signal(signum, handler)
    try:
        yield
        if reason in _RAISED:
            raise KeyboardInterrupt(reason)
    finally:
        signal.signal(signum, signal.SIG_DFL if before is None else before)
        sys.unraisablehook = hook_before
        if not nested:
            _ANSWERED.discard(reason)


def _unless_lost(hook, unraisable) -> None:
    """`hook` (sys.unraisablehook's) for what a finalizer raised, but not for an interrupt of
    ours, which `stop_point` raises again: no "Exception ignored" traceback beside the run's
    own word that it stopped."""
    error = unraisable.exc_value
    if not (isinstance(error, KeyboardInterrupt) and error.args and error.args[0] in _RAISED):
        hook(unraisable)


@contextlib.contextmanager
def stops_as_interrupts(on_sigterm: Callable[[], None] | None = None) -> Iterator[None]:
    """SIGTERM inside the block as answer_sigterm has it, and Ctrl-C (SIGINT) where Python's
    own handler answers it (an ignored one, as a job started in the background has, stays
    ignored; a caller's own handler stays), each remembered as `signal_as_interrupt` says:
    `terminated` false as the block begins, an interrupt lost in a finalizer raised again at
    a stop point or as the block ends. The handlers from before it afterwards. `on_sigterm`
    runs first in SIGTERM's handler: what must change the moment the run is stopped (before
    the signals that follow from it are answered, training's children's deaths)."""
    sigterm = partial(_interrupt, first=on_sigterm)
    with contextlib.ExitStack() as stack:
        stack.enter_context(signal_as_interrupt(signal.SIGTERM, sigterm, SIGTERM_REASON))
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            stack.enter_context(signal_as_interrupt(signal.SIGINT, _ctrl_c, SIGINT_REASON))
        yield
