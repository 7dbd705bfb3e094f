from pipeline.spill import SpilledSamples


def test_samples_come_back_by_position_whatever_the_order():
    samples = [({"key": f"k{i}"}, bytes([i]) * (i * 37 + 1)) for i in range(50)]
    with SpilledSamples() as spilled:
        spilled.extend(samples[:20])
        assert spilled[3] == samples[3]  # reading between appends keeps later appends intact
        spilled.extend(samples[20:])
        assert len(spilled) == 50
        assert [spilled[i] for i in reversed(range(50))] == samples[::-1]
