"""The device check's variants compute what they would replace: checked here on the CPU
against another library, so that a device run's speed-up compares like with like."""

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.signal import correlate2d

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def device_variants(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import device_variants
    return device_variants


def test_separable_filtering_is_the_outer_product_windows_valid_correlation(device_variants):
    """filter2(w, x, 'valid') is the correlation with w = taps taps^T: lopsided taps would
    show a row and column pass swapped or flipped."""
    rng = np.random.default_rng(7)
    images = rng.uniform(0, 255, (2, 1, 23, 31))
    taps = rng.uniform(0.1, 1.0, 5)
    expected = np.stack([correlate2d(image[0], np.outer(taps, taps), mode="valid")
                         for image in images])[:, None]
    filtered = device_variants.separable_filter_valid(torch.from_numpy(images),
                                                      torch.from_numpy(taps))
    np.testing.assert_allclose(filtered.numpy(), expected, rtol=1e-12, atol=0)


def test_ms_ssim_with_the_variant_scores_as_it_does_now_and_is_restored(device_variants):
    from bench_labelers import workload

    import labelers
    from labelers import ms_ssim
    from pipeline.sizing import TargetSize

    ref, versions = workload(3, TargetSize(192, 176))
    labeler = labelers.Labeler(["ms_ssim"], "cpu")
    now = labeler.score(ref, versions)["ms_ssim"]
    current = ms_ssim.filter_valid
    with device_variants.separable_ms_ssim(labeler.metrics["ms_ssim"]):
        assert ms_ssim.filter_valid is device_variants.separable_filter_valid
        changed = labeler.score(ref, versions)["ms_ssim"]
    assert ms_ssim.filter_valid is current
    np.testing.assert_allclose(changed, now, rtol=1e-12, atol=0)
