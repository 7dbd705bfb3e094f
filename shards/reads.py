"""Reads of many files at once. A dataset at paper scale has 8,750 shards and each check of
one reads several small files; on an object store each read waits tens of milliseconds for its
answer, so one at a time the waits add up to minutes (docs/bench-reads.md). Threads overlap
the waits: the store's client and hashlib release the GIL while they wait or hash."""

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

READ_THREADS = 16  # reads in flight at once


def read_ahead(function: Callable, items: Iterable) -> Iterator:
    """function(item) for each item, in the items' order, run in READ_THREADS threads at most
    that many items ahead of the caller, so a caller that keeps what it reads only briefly
    never holds more than that many results. An error is raised where its item's result is
    due; the reads after it that have not started are called off, and those under way are
    not waited for (they end on their own). A caller that stops early waits for them."""
    pending, ahead = iter(items), READ_THREADS
    pool, wait = ThreadPoolExecutor(ahead), False
    try:
        window = deque(pool.submit(function, item) for item in islice(pending, ahead))
        while window:
            result = window.popleft().result()
            window.extend(pool.submit(function, item) for item in islice(pending, 1))
            yield result
        wait = True
    except GeneratorExit:  # its caller stopped early: the reads under way end before it goes
        wait = True        # on (none is left running as a process ends)
        raise
    finally:  # an error or an interrupt reaches the caller at once, not after the reads in
        pool.shutdown(wait=wait, cancel_futures=True)  # flight (whole tars under --verify)
