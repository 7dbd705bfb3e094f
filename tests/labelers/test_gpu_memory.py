"""The GPU's own out-of-memory errors (the allocator's, under a per-process cap), not injected
ones: a pass too large is split and scores the same; work that cannot fit is a
DeviceMemoryError, and the labeler scores the next call as before."""

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest
import torch

import labelers
from labelers.inputs import to_batch
from tests.conftest import ON_CUDA

pytestmark = ON_CUDA

VERSIONS = 64  # of 512 x 384: a MAD pass of all of them peaked at 10 GB on the H200 (run 4)


@pytest.fixture(scope="module")
def versions() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (384, 512, 3), dtype=np.uint8)
    noise = rng.normal(0, 12, (VERSIONS, 384, 512, 3))
    return ref, np.clip(np.rint(ref + noise), 0, 255).astype(np.uint8)


@contextlib.contextmanager
def memory_cap(cap_bytes: float) -> Iterator[None]:
    """The caching allocator limited to `cap_bytes` of this device (its cache emptied first,
    so that only live tensors count), lifted afterwards."""
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(cap_bytes / total)
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()


def test_a_pass_the_gpu_cannot_hold_is_split_and_scores_the_same(versions):
    ref, dists = versions
    expected = labelers.Labeler(["mad"], "cuda", batch_size=VERSIONS).score(ref, dists)["mad"]
    capped = labelers.Labeler(["mad"], "cuda", memory_budget=10**12)
    capped.bytes_per_pixel["mad"] = 1.0  # the budget says all 64 fit in one pass: they do not
    with memory_cap(3e9):
        scores = capped.score(ref, dists)["mad"]
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-9)
    # the split was kept: the next pass size is at most half of the 64
    assert capped.memory_budget / (capped.bytes_per_pixel["mad"] * 384 * 512) <= VERSIONS / 2


def test_work_that_cannot_fit_is_a_device_memory_error_and_the_next_call_runs(versions):
    ref, dists = versions
    labeler = labelers.Labeler(["mad"], "cuda")
    # 20 MB: not one version's 160 MB for MAD, nor the reference's, nor the 20 MiB segment
    # the caching allocator takes for an upload of 1 to 10 MiB (device run 6 met that first)
    with memory_cap(20e6), pytest.raises(labelers.DeviceMemoryError,
                                         match="ran out of cuda memory"):
        labeler.score(ref, dists[:4])
    after = labeler.score(ref, dists[:4])["mad"]
    alone = labelers.Labeler(["mad"], "cpu").score(ref, dists[:4])["mad"]
    np.testing.assert_allclose(after, alone, rtol=1e-4, atol=1e-4)


def test_a_fresh_labelers_first_call_scores_the_same_bits_as_its_second(versions):
    """A call's passes pick its kernels, so its scores' last bits (device run 7: one pass of 64
    against passes of 8 moved MAD by 2.8e-14, DISTS by 3.4e-7). The first call measures each
    metric's memory on versions whose scores it drops, then runs the passes every later call
    runs: two runs of one plan (references of one size) label a reference alike whichever
    reference came first."""
    ref, dists = versions
    labeler = labelers.Labeler(["mad", "ms_ssim", "vif"], "cuda")
    first = labeler.score(ref, dists)
    second = labeler.score(ref, dists)
    for key, scores in first.items():
        assert scores.tobytes() == second[key].tobytes(), key


def test_read_only_versions_are_pinned_for_their_upload_and_score_as_writable_ones(versions):
    """A Ray actor's call reads its versions from the object store, read-only: to_batch copies
    them into the page-locked memory their asynchronous upload needs, as they are."""
    ref, dists = versions
    frozen = dists[:8].copy()
    frozen.flags.writeable = False
    batch = to_batch(frozen, "cpu", pinned=True)
    assert batch.is_pinned() and batch.shape == (8, 3, 384, 512)
    assert torch.equal(batch.permute(0, 2, 3, 1), torch.from_numpy(dists[:8]))
    labeler = labelers.Labeler(["mae", "gmsd"], "cuda")
    for key, scores in labeler.score(ref, frozen).items():
        assert scores.tobytes() == labeler.score(ref, dists[:8].copy())[key].tobytes(), key
