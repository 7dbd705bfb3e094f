"""A shard's samples wait in a temporary file (pipeline.spill) for the seeded shuffle."""

from pipeline.spill import SpilledSamples


def test_samples_come_back_by_position_whatever_the_order():
    samples = [({"key": f"k{i}"}, bytes([i]) * (i * 37 + 1)) for i in range(50)]
    with SpilledSamples() as spilled:
        spilled.extend(samples[:20])
        assert spilled[3] == samples[3]  # reading between appends keeps later appends intact
        spilled.extend(samples[20:])
        assert len(spilled) == 50
        assert [spilled[i] for i in reversed(range(50))] == samples[::-1]


def test_the_images_wait_on_disk_not_in_memory():
    """64 MB of images pass through while at most about one of them (1 MB) is held: the
    peak of Python's allocations stays far below what keeping them would take."""
    import tracemalloc

    def images():
        for i in range(64):
            yield {"key": f"k{i}"}, bytes([i]) * 2**20

    tracemalloc.start()
    try:
        with SpilledSamples() as spilled:
            spilled.extend(images())
            assert spilled[63][1] == bytes([63]) * 2**20
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(spilled) == 64 and peak < 4 * 2**20
