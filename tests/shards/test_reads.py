"""read_ahead: reads of many files at once, in order, a bounded number ahead of the caller."""

import random
import threading
import time

import pytest

from shards.reads import READ_THREADS, read_ahead


def test_results_come_in_the_items_order_whatever_order_the_reads_end_in():
    delays = random.Random(0).sample(range(40), 40)

    def squared(item: int) -> int:
        time.sleep(delays[item] / 4000)
        return item * item

    assert list(read_ahead(squared, range(40))) == [item * item for item in range(40)]


def test_the_reads_overlap():
    """READ_THREADS reads wait on each other: run one at a time, the barrier would break."""
    barrier = threading.Barrier(READ_THREADS, timeout=10)

    def meet(item: int) -> int:
        barrier.wait()
        return item

    assert list(read_ahead(meet, range(2 * READ_THREADS))) == list(range(2 * READ_THREADS))


def test_at_most_read_threads_items_are_taken_ahead_of_the_caller():
    taken = []

    def items():
        for item in range(1000):
            taken.append(item)
            yield item

    reads = read_ahead(lambda item: item, items())
    assert next(reads) == 0
    assert len(taken) == READ_THREADS + 1  # the first, and READ_THREADS waiting behind it
    reads.close()


def test_an_error_is_raised_where_its_items_result_is_due_and_later_reads_are_called_off():
    started, results = [], []

    def read(item: int) -> int:
        started.append(item)
        if item == 2:
            raise OSError("file 2 is gone")
        time.sleep(0.001)
        return item

    with pytest.raises(OSError, match="file 2 is gone"):
        for result in read_ahead(read, range(1000)):
            results.append(result)
    assert results == [0, 1]
    assert len(started) <= 3 + READ_THREADS + 1


def test_no_items_read_nothing():
    assert list(read_ahead(lambda item: 1 / 0, [])) == []


def test_an_error_reaches_the_caller_while_the_reads_under_way_still_run():
    """Under `generate --verify` each read hashes a whole tar: an error, or a Ctrl-C, must
    not wait for the 15 others in flight."""
    released, running, lock = threading.Event(), [0], threading.Condition()

    def read(item: int) -> int:
        if item == 0:  # once every other read is under way
            with lock:
                lock.wait_for(lambda: running[0] == READ_THREADS - 1, timeout=60)
            raise OSError("shard 0 is gone")
        with lock:
            running[0] += 1
            lock.notify_all()
        released.wait(timeout=60)
        with lock:
            running[0] -= 1
        return item

    try:
        with pytest.raises(OSError, match="shard 0 is gone"):
            list(read_ahead(read, range(READ_THREADS)))
        with lock:
            assert running[0] > 0  # waited for, they would all have ended
    finally:
        released.set()


def test_a_caller_that_stops_early_goes_on_once_the_reads_under_way_have_ended():
    """No read is left running behind a caller that stopped (a DataLoader worker then
    ending its process, say)."""
    released, running, lock = threading.Event(), [0], threading.Lock()

    def read(item: int) -> int:
        with lock:
            running[0] += 1
        if item:
            released.wait(timeout=60)
        with lock:
            running[0] -= 1
        return item

    reads = read_ahead(read, range(4 * READ_THREADS))
    assert next(reads) == 0
    threading.Timer(0.2, released.set).start()  # the reads under way end a moment later
    reads.close()
    with lock:
        assert running[0] == 0
