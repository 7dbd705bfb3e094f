"""The device check's variants compute what they would replace: checked here on the CPU
against another library, so that a device run's speed-up compares like with like."""

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import correlate
from scipy.signal import correlate2d

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def device_variants(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import device_variants
    return device_variants


@pytest.mark.parametrize("step, start", [(1, (0, 0)), (2, (0, 0)), (3, (1, 1))])
def test_tap_sums_are_the_reflect1_correlation(device_variants, step, start):
    """corrDn(x, f, 'reflect1', step, start): scipy's correlation with 'mirror' edges (about
    the edge sample, as reflect1) sampled at start, start + step, ...; lopsided random filters
    would show a flipped or shifted tap."""
    rng = np.random.default_rng(5)
    images = rng.uniform(0, 255, (2, 1, 23, 31))
    filters = rng.uniform(-1, 1, (2, 7, 7))
    expected = np.stack([[correlate(image[0], kernel, mode="mirror")[start[0]::step,
                                                                     start[1]::step]
                          for kernel in filters] for image in images])
    filtered = device_variants.corr_dn_by_taps(torch.from_numpy(images),
                                               torch.from_numpy(filters), step, start)
    np.testing.assert_allclose(filtered.numpy(), expected, rtol=1e-12, atol=1e-9)


def test_fused_shifted_sums_are_the_separable_windows_valid_correlation(device_variants):
    """filter2(w, x, 'valid') with w = taps taps^T, as scipy correlates: the fused sums along
    the columns, then the rows (lopsided taps would show one flipped or shifted)."""
    rng = np.random.default_rng(7)
    images = rng.uniform(0, 255, (2, 1, 23, 31))
    taps = rng.uniform(0.1, 1.0, 5)
    expected = np.stack([correlate2d(image[0], np.outer(taps, taps), mode="valid")
                         for image in images])[:, None]
    weights = torch.from_numpy(taps)
    fused = device_variants.shifted_sum_fused
    filtered = fused(fused(torch.from_numpy(images), weights, -1), weights, -2)
    np.testing.assert_allclose(filtered.numpy(), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("key, variant, replaced, replacement", [
    ("vif", "vif_by_taps", "corr_dn", "corr_dn_by_taps"),
    ("ms_ssim", "ms_ssim_fused", "_shifted_sum", "shifted_sum_fused")])
def test_a_metric_with_its_variant_scores_as_it_does_now_and_is_restored(
        device_variants, key, variant, replaced, replacement):
    import importlib

    from bench_labelers import workload

    import labelers
    from pipeline.sizing import TargetSize

    module = importlib.import_module(f"labelers.{key}")
    ref, versions = workload(3, TargetSize(192, 176))
    labeler = labelers.Labeler([key], "cpu")
    now = labeler.score(ref, versions)[key]
    current = getattr(module, replaced)
    with getattr(device_variants, variant)(labeler.metrics[key]):
        assert getattr(module, replaced) is getattr(device_variants, replacement)
        changed = labeler.score(ref, versions)[key]
    assert getattr(module, replaced) is current
    np.testing.assert_allclose(changed, now, rtol=1e-12, atol=0)
