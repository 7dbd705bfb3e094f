"""Which reference a labeler actor's process died on. An actor runs several calls at once
(threads), and Ray resubmits every call it held when it restarts the actor, so the death alone
does not say which call killed it. So the progress actor records each call while it runs
(`CallLedger.call`); a death with one call running strikes that call's reference; a death with
several running makes their references suspects, whose calls then run alone (the actor's other
calls wait for them), so that a death among them names its reference; a suspect's call that
ends well clears it. A reference struck QUARANTINE_STRIKES times is refused without running:
it would only kill the actor again. The progress actor's side: pipeline.actors.ProgressActor
(call_begins, call_ends, labeler_restarted)."""

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator

import ray

RUN, REFUSED = "run", "refused"  # the progress actor's verdicts on a call
REFUSED_CALL = ("a labeler actor's process died twice running this reference's calls "
                "(killed, out of memory or crashed): left out")


class Turns:
    """Calls that run side by side, and calls that run alone: one of those waits until the
    running calls have ended and keeps new calls waiting until it ends."""

    def __init__(self):
        self._changed = threading.Condition()
        self._running = 0
        self._alone_waiting = 0
        self._alone = False

    @contextlib.contextmanager
    def turn(self, alone: bool) -> Iterator[None]:
        with self._changed:
            if alone:
                self._alone_waiting += 1
                self._changed.wait_for(lambda: not self._alone and not self._running)
                self._alone_waiting -= 1
                self._alone = True
            else:
                self._changed.wait_for(lambda: not self._alone and not self._alone_waiting)
            self._running += 1
        try:
            yield
        finally:
            with self._changed:
                self._running -= 1
                self._alone = self._alone and not alone
                self._changed.notify_all()


class CallLedger:
    """A labeler actor's calls, each recorded with the progress actor while it runs, a
    suspect's alone; a restart (`reconstructed`: this process took over from one that died)
    is told before the first call runs, and its report gives the suspects."""

    def __init__(self, actor_id: str, reconstructed: bool):
        self.actor_id = actor_id
        self.turns = Turns()
        self.suspects: set[str] = set()  # as the restart's report left them
        self._numbers = itertools.count()
        self._unreported = reconstructed
        self._reporting = threading.Lock()

    @contextlib.contextmanager
    def call(self, progress: "ray.actor.ActorHandle | None", ref_id: str | None,
             refused: Callable[[str], Exception]) -> Iterator[None]:
        """The block runs as a call for `ref_id` in its turn (alone for a suspect), recorded
        from when its turn comes (a call waiting for it runs nothing) until it ends;
        `refused(why)` is raised instead for a reference struck out. Without a progress actor
        or a reference (a caller of the actor's own), the block just runs."""
        if progress is None or ref_id is None:
            yield
            return
        with self._reporting, _unless_lost():
            if self._unreported:
                self.suspects = set(ray.get(progress.labeler_restarted.remote(self.actor_id)))
                self._unreported = False
        number, alone = next(self._numbers), ref_id in self.suspects
        with self.turns.turn(alone):
            if _asked(progress.call_begins, self.actor_id, number, ref_id, alone) == REFUSED:
                raise refused(REFUSED_CALL)
            try:
                yield
            finally:
                with _unless_lost():
                    ray.get(progress.call_ends.remote(self.actor_id, number))
        self.suspects.discard(ref_id)  # (alone, it ended well)


def _unless_lost() -> contextlib.AbstractContextManager:
    """A progress actor lost (restarting: it keeps no calls then) costs a call its record,
    never the call itself."""
    return contextlib.suppress(ray.exceptions.RayActorError)


def _asked(method, *arguments) -> str:
    """The progress actor's verdict on a call; RUN (unrecorded) where it is lost."""
    with _unless_lost():
        return ray.get(method.remote(*arguments))
    return RUN
