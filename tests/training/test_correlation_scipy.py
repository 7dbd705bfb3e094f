"""The figures through scipy.stats agree with the pairwise implementation they replaced, and
degenerate input gives NaN quietly."""

import tracemalloc
import warnings

import numpy as np
import pytest

from training.correlation import FIT_PAIRS, fit_logistic, krcc, plcc, report, rmse, srocc


def _old_plcc(x, y):
    dx, dy = x - x.mean(), y - y.mean()
    denominator = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / denominator) if denominator > 0 else float("nan")


def _old_ranks(values):
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    sizes = np.diff(np.r_[first, len(values)])
    ranks = np.empty(len(values))
    ranks[order] = first[group] + (sizes[group] + 1) / 2
    return ranks


def _old_krcc(x, y):
    """The replaced O(n^2) tau-b: every ordered pair's signs at once."""
    sx, sy = np.sign(x[:, None] - x[None, :]), np.sign(y[:, None] - y[None, :])
    n = len(x)
    pairs = n * (n - 1)
    denominator = np.sqrt((pairs - ((sx == 0).sum() - n)) * (pairs - ((sy == 0).sum() - n)))
    return float((sx * sy).sum() / denominator) if denominator > 0 else float("nan")


@pytest.mark.parametrize(("seed", "n", "step"), [(0, 3, 1.0), (1, 10, 0.5), (2, 400, 0.1),
                                                 (3, 1500, 1.0), (4, 700, 0.0)])
def test_scipy_figures_equal_the_replaced_ones_with_ties(seed, n, step):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = x + rng.normal(scale=0.7, size=n)
    if step:  # rounding makes ties in both series
        x, y = np.round(x / step) * step, np.round(y / step) * step
    assert plcc(x, y) == pytest.approx(_old_plcc(x, y), abs=1e-12, nan_ok=True)
    assert srocc(x, y) == pytest.approx(_old_plcc(_old_ranks(x), _old_ranks(y)), abs=1e-12,
                                        nan_ok=True)
    assert krcc(x, y) == pytest.approx(_old_krcc(x, y), abs=1e-12, nan_ok=True)
    figures = report(x, y)
    assert figures["rmse_raw"] == rmse(x, y)
    if n < FIT_PAIRS:
        assert np.isnan(figures["plcc"]) and np.isnan(figures["rmse"])
        return
    fitted = fit_logistic(x, y)(x)
    assert figures["plcc"] == pytest.approx(_old_plcc(fitted, y), abs=1e-12, nan_ok=True)


def test_kendall_needs_linear_memory_at_validation_size():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 500, 20_000).astype(float)
    y = x + rng.integers(0, 300, 20_000)
    tracemalloc.start()
    try:
        value = krcc(x, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 0.6 < value < 1
    assert peak < 32 * 2**20  # the pairwise version held about 1 GB


@pytest.mark.parametrize("bad", ["constant", "nan", "inf"])
def test_degenerate_series_give_nan_without_warnings(bad):
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=50), rng.normal(size=50)
    if bad == "constant":
        x[:] = 0.25
    else:
        x[7] = np.nan if bad == "nan" else np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figures = report(x, y)
        single = [plcc(x, y), srocc(x, y), krcc(x, y), plcc(y, x), srocc(y, x), krcc(y, x)]
    assert np.isnan(single).all()
    assert all(np.isnan(figures[name]) for name in ("plcc", "plcc_raw", "srocc", "krcc"))
    assert figures["count"] == 50
    if bad == "constant":  # the fitted logistic is a constant: its RMSE is still defined
        assert figures["rmse"] >= np.std(y) - 1e-9
    else:
        assert np.isnan(figures["rmse"]) and not np.isfinite(figures["rmse_raw"])


def test_short_or_mismatched_series_are_still_refused():
    with pytest.raises(ValueError, match="at least 3"):
        krcc([1.0, 2.0], [2.0, 1.0])
    with pytest.raises(ValueError, match="one length"):
        report([1.0, 2.0, 3.0], [1.0, 2.0])


def test_the_logistic_fit_does_not_depend_on_the_predictions_scale():
    """The 4-parameter logistic family is closed under x -> a x + b (a > 0): its least-squares
    figures must be the same (a weak correlation at a spread of 1e-3 used to stop at the
    start curve: fitted PLCC 0.356 below the raw 0.359, RMSE 0.301 above a constant's 0.179)."""
    rng = np.random.default_rng(338)
    x = rng.normal(size=100)
    y = 0.4 * x + rng.normal(size=100)
    y = (y - y.min()) / np.ptp(y)
    figures = report(x, y)
    for scaled in (x * 1e-3, x * 1e3 + 7, 0.5 + x * 1e-12):  # (1e-12: the logistic's floor)
        other = report(scaled, y)
        assert other["plcc"] == pytest.approx(figures["plcc"], abs=1e-9)
        assert other["rmse"] == pytest.approx(figures["rmse"], abs=1e-9)
    assert figures["plcc"] >= figures["plcc_raw"]  # the line is close to the logistic's middle


@pytest.mark.parametrize("seed", range(40))
def test_the_fitted_curve_is_never_worse_than_a_constant(seed):
    """A constant (the opinions' mean) is a rising logistic of no rise: the least-squares fit
    has an RMSE no larger than the opinions' standard deviation."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=80) * 1e-3
    y = 0.2 * x / 1e-3 + rng.normal(size=80)
    assert report(x, y)["rmse"] <= np.std(y) + 1e-12


def test_the_fitted_figures_need_more_pairs_than_the_logistic_has_parameters():
    """Four parameters bend a rising logistic through nearly any 3 or 4 rising points: its
    PLCC is about 1 whatever the predictions (raw 0.89 here), so the fitted figures are
    undefined there; the rank and raw figures are not."""
    predicted, opinion = [0.1, 0.15, 0.9, 0.12], [1.0, 2.0, 3.0, 1.5]
    for count in (3, 4):
        x, y = np.asarray(predicted[:count]), np.asarray(opinion[:count])
        assert plcc(x, y) < 0.95 < 0.999 < plcc(fit_logistic(x, y)(x), y)
        figures = report(x, y)
        assert np.isnan(figures["plcc"]) and np.isnan(figures["rmse"])
        assert figures["srocc"] == 1.0 and figures["plcc_raw"] == pytest.approx(plcc(x, y))
    five = report([0.1, 0.15, 0.9, 0.12, 0.3], [1.0, 2.0, 3.0, 1.5, 2.5])
    assert np.isfinite(five["plcc"]) and np.isfinite(five["rmse"])


def test_an_epochs_line_says_undefined_for_a_validation_figure_that_is_not_a_number():
    """Validation on 3 or 4 images has no fitted PLCC; constant predictions no SROCC."""
    from training.loop import _describe

    line = _describe({"epoch": 0, "train_loss": 0.5, "val_loss": 0.25,
                      "val_srocc": float("nan"), "val_plcc": 0.3, "lr": 1e-3, "seconds": 1.0},
                     3, improved=False)
    assert "srocc undefined" in line and "plcc 0.3000" in line and "nan" not in line
