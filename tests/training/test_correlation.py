import numpy as np
import pytest
from scipy import stats

from training.correlation import krcc, plcc, report, rmse, srocc


@pytest.fixture
def tied_pairs():
    rng = np.random.default_rng(3)
    x = np.round(rng.normal(size=300), 1)   # many ties
    y = np.round(x + rng.normal(scale=0.8, size=300), 1)
    return x, y


def test_correlations_equal_scipy_with_ties(tied_pairs):
    x, y = tied_pairs
    assert plcc(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
    assert srocc(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert krcc(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    assert rmse(x, y) == pytest.approx(np.sqrt(np.mean((x - y) ** 2)))


def test_kendall_chunks_agree_with_scipy_on_a_long_series():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 50, 5000).astype(float)
    y = x + rng.integers(0, 30, 5000)
    assert krcc(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)


def test_logistic_fit_straightens_a_monotone_curve():
    x = np.linspace(-3, 3, 200)
    y = 1 / (1 + np.exp(-2 * x))
    figures = report(x, y)
    assert figures["srocc"] == pytest.approx(1.0)
    assert figures["plcc_raw"] < 0.97
    assert figures["plcc"] > 0.999
    assert figures["rmse"] < figures["rmse_raw"]
    assert figures["count"] == 200


def test_the_fitted_logistic_rises_so_backward_rankings_score_low():
    x = np.linspace(-3, 3, 200)
    y = 1 / (1 + np.exp(2 * x))  # falls as x rises
    figures = report(x, y)
    assert figures["srocc"] == pytest.approx(-1.0)
    assert figures["plcc"] < 0.1


def test_predictions_that_run_against_the_opinions_keep_their_negative_plcc():
    """No rising curve fits them better than a constant: the fitted PLCC is the raw one
    (Pearson's, negative), not the NaN of a flat curve that a median would pass over."""
    rng = np.random.default_rng(0)
    short, long = rng.uniform(0, 1, 50), rng.uniform(0, 1, 500)
    for x, y in ((-short + rng.normal(0, 0.1, 50), short),
                 (-0.2 * short + rng.normal(0, 0.3, 50), short),
                 (-long + rng.normal(0, 0.01, 500), long)):
        figures = report(x, y)
        assert np.isfinite(figures["plcc"])
        assert figures["plcc"] == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-3)
        assert figures["plcc"] < 0
    assert np.isnan(report(np.ones(50), short)["plcc"])  # constant predictions: undefined


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least 3"):
        srocc([1, 2], [2, 1])
    with pytest.raises(ValueError, match="one length"):
        plcc([1, 2, 3], [1, 2])


def test_input_of_two_dimensions_is_refused():
    """Two tables of one shape are no pair of series: refused, not flattened (Kendall's tau)
    nor read as columns of variables."""
    table = np.arange(12.0).reshape(4, 3)
    for correlation in (plcc, srocc, krcc, rmse):
        with pytest.raises(ValueError, match="1-D"):
            correlation(table, table[::-1])


def test_opinions_all_alike_leave_the_fitted_figures_undefined():
    """A curve fitted to one opinion score is that score: its RMSE was 0 whatever was
    predicted, the best figure there is. Undefined, as the correlations are; the raw RMSE
    (predictions against the opinions as they are) stays a number."""
    predicted = np.array([0.1, 0.5, 0.9, 0.3, 0.7])
    figures = report(predicted, np.full(5, 0.4))
    assert np.isnan(figures["rmse"]) and np.isnan(figures["plcc"])
    assert figures["rmse_raw"] == pytest.approx(np.sqrt(np.mean((predicted - 0.4) ** 2)))
