import numpy as np
import pytest
import torch
from scipy import stats

from training.losses import QualityLoss, soft_rank, soft_srocc


def test_soft_rank_tends_to_the_exact_ranks():
    values = torch.tensor([0.3, 0.1, 0.3, 0.9, 0.2], dtype=torch.float64)
    exact = torch.from_numpy(stats.rankdata(values.numpy()))
    errors = [float((soft_rank(values, t) - exact).abs().max()) for t in (1e-1, 1e-2, 1e-4)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-6


def test_soft_srocc_is_close_to_the_exact_srocc_and_has_gradients():
    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.uniform(size=64))
    predicted = (target + torch.from_numpy(rng.normal(scale=0.3, size=64))).requires_grad_()
    exact = stats.spearmanr(predicted.detach().numpy(), target.numpy()).statistic
    soft = soft_srocc(predicted, target, temperature=1e-3)
    assert float(soft.detach()) == pytest.approx(exact, abs=0.01)
    soft.backward()
    assert torch.isfinite(predicted.grad).all()
    assert predicted.grad.abs().sum() > 0


def test_quality_loss_terms():
    target = torch.linspace(0, 1, 16)
    assert float(QualityLoss()(target.clone(), target)) == pytest.approx(0.0, abs=1e-3)
    worse = QualityLoss()(1 - target, target)
    assert float(worse) > 2.0  # 1 - SROCC alone is 2 for reversed order
    plcc_only = QualityLoss.parse("plcc")(2 * target + 1, target)
    assert float(plcc_only) == pytest.approx(0.0, abs=1e-6)
    assert float(QualityLoss()(torch.tensor([0.5]), torch.tensor([0.25]))) == pytest.approx(
        0.0625 + 0.25)  # one sample: no correlation term


def test_unknown_loss_terms_are_refused():
    with pytest.raises(ValueError, match="loss terms"):
        QualityLoss.parse("mse+huber")
