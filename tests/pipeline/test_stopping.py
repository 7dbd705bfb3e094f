"""A SIGTERM inside generate's block is a KeyboardInterrupt (its stop path runs), remembered as
a SIGTERM; outside it, the handler from before is back (the Ray-started path:
test_ray_lifetime_ray.py)."""

import os
import signal
import time

import pytest

from shards.stopping import sigterm_as_interrupt, terminated


def test_a_sigterm_in_the_block_interrupts_and_the_handler_before_comes_back():
    heard = []
    before = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda signum, frame: heard.append(signum))
    try:
        with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
            assert not terminated()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # (the handler runs at once: the sleep is cut short)
        assert terminated() and heard == []
        os.kill(os.getpid(), signal.SIGTERM)  # the handler from before the block again
        time.sleep(0.1)
        assert heard == [signal.SIGTERM]
        with sigterm_as_interrupt():
            assert not terminated()  # each block begins afresh
    finally:
        signal.signal(signal.SIGTERM, before)
