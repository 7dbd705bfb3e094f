"""The run's progress counts: a shard is counted once, however many attempts it took."""

from pipeline.actors import ShardTally


def test_a_retried_shard_counts_once_and_a_live_one_no_more_than_its_plan():
    tally = ShardTally(planned=[10, 10, 4])
    tally.add(0, 6, 1)        # an attempt at shard 0 dies after 6 samples
    tally.forget(0)
    assert tally.read() == (0, 0)
    tally.add(0, 7, 1)        # the retry, while a late report of the dead attempt arrives
    tally.add(0, 6, 1)
    tally.add(1, 3, 0)
    assert tally.read() == (10 + 3, 2)  # shard 0 at most its 10 planned samples
    tally.settle(0, failures=1)         # finished: its planned samples, its real failures
    tally.settle(2, failures=4)         # a shard of four sources that all failed
    assert tally.read() == (10 + 3 + 4, 1 + 0 + 4)
    tally.add(1, 7, 0)
    tally.settle(1, failures=0)
    assert tally.read() == (sum(tally.planned), 5)


def test_a_report_arriving_after_its_shard_settled_is_not_counted_again():
    # a labeler actor's last report can reach the progress actor after the driver's settle
    tally = ShardTally(planned=[10, 10])
    tally.add(0, 8, 0)
    tally.settle(0, failures=0)
    tally.add(0, 2, 1)
    tally.settle(0, failures=0)
    assert tally.read() == (10, 0)
    tally.add(1, 4, 0)
    assert tally.read() == (14, 0)
