import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from training.losses import Head, MultiTargetLoss, QualityLoss, soft_rank, soft_srocc


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


@pytest.mark.parametrize("scale", [1e-3, 1.0, 150.0])
def test_soft_srocc_is_indifferent_to_the_predictions_scale_and_keeps_its_gradient(scale):
    """SROCC does not change when every prediction is multiplied by c > 0, and neither does
    the soft term (within rounding); at every scale (150: a raw MAD target's, where a fixed
    temperature of 0.01 saturated every sigmoid) every prediction has a gradient, c times
    smaller at c times the scale, as for any function of the predictions / c."""
    rng = np.random.default_rng(1)
    target = torch.from_numpy(rng.uniform(size=16))
    base = target + torch.from_numpy(rng.normal(scale=0.3, size=16))
    predicted = (scale * base).requires_grad_()
    soft = soft_srocc(predicted, target)
    soft.backward()
    reference = base.clone().requires_grad_()
    soft_srocc(reference, target).backward()
    assert float(soft.detach()) == pytest.approx(float(soft_srocc(base, target)), abs=1e-12)
    assert bool((predicted.grad != 0).all())
    torch.testing.assert_close(predicted.grad * scale, reference.grad)
    exact = stats.spearmanr(base.numpy(), target.numpy()).statistic
    assert float(soft.detach()) == pytest.approx(exact, abs=0.02)


def test_quality_loss_terms():
    target = torch.linspace(0, 1, 16)
    assert float(QualityLoss()(target.clone(), target)) == pytest.approx(0.0, abs=1e-3)
    worse = QualityLoss()(1 - target, target)
    assert float(worse) > 2.0  # 1 - SROCC alone is 2 for reversed order
    plcc_only = QualityLoss.parse("plcc")(2 * target + 1, target)
    assert float(plcc_only) == pytest.approx(0.0, abs=1e-6)
    assert float(QualityLoss()(torch.tensor([0.5]), torch.tensor([0.25]))) == pytest.approx(
        0.0625 + 0.25)  # one sample: no correlation term


@pytest.mark.parametrize("terms", ["plcc", "srocc", "mse+mae+srocc+plcc"])
def test_one_predicted_value_gives_the_correlations_no_gradient(terms):
    """Pearson's r of a constant is undefined: its terms add 1 - 0 with no gradient (it
    was 1e12 x the targets' deviations), and MSE + MAE keep their own gradients, those of
    a constant prediction (mean of 2 (p - t) / n and sign(p - t) / n)."""
    target = torch.rand(16, generator=torch.Generator().manual_seed(0))
    predicted = torch.full((16,), 0.5, requires_grad=True)
    loss = QualityLoss.parse(terms)(predicted, target)
    loss.backward()
    expected = torch.zeros(16)
    if "mse" in terms:
        expected += 2 * (0.5 - target) / 16 + torch.sign(0.5 - target) / 16
    torch.testing.assert_close(predicted.grad, expected)
    correlations = sum(term in terms for term in ("plcc", "srocc"))
    assert float(loss.detach()) >= correlations  # each correlation term is 1 - 0


def test_a_small_spread_still_trains_the_correlation():
    """Predictions spread by 1e-3 (a bf16 quantum at 0.5 is 2e-3) are not one value: PLCC
    still ranks them, with the gradient Pearson's r has (finite, non-zero)."""
    target = torch.linspace(0, 1, 16)
    predicted = (0.5 + 1e-3 * torch.linspace(1, -1, 16)).requires_grad_()  # reversed
    loss = QualityLoss.parse("plcc")(predicted, target)
    assert float(loss.detach()) == pytest.approx(2.0, abs=1e-4)
    loss.backward()
    assert torch.isfinite(predicted.grad).all() and predicted.grad.abs().sum() > 0


def test_unknown_loss_terms_are_refused():
    with pytest.raises(ValueError, match="loss terms"):
        QualityLoss.parse("mse+huber")


def _ddp_gradient(rank: int, folder: str) -> None:
    """One of two gloo ranks: its half (two samples) of a fixed batch of four through a linear
    model under DDP and the default loss with the ranks' gather; the gradient saved."""
    from datetime import timedelta
    from functools import partial

    from training.distributed import Context, gather_with_gradients

    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/store",
                                         rank=rank, world_size=2,
                                         timeout=timedelta(seconds=60))
    features, target = _batch()
    model = _linear()
    network = torch.nn.parallel.DistributedDataParallel(model)
    context = Context(rank, 2, rank, torch.device("cpu"))
    loss = QualityLoss(gather=partial(gather_with_gradients, context))
    half = slice(2 * rank, 2 * rank + 2)
    loss(network(features[half])[:, 0], target[half]).backward()
    torch.save(model.weight.grad, f"{folder}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return torch.randn(4, 5, generator=generator), torch.rand(4, generator=generator)


def _linear() -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(5, 1, bias=False)


def test_two_ranks_train_the_correlation_of_the_whole_batch(tmp_path):
    """Two ranks of two samples each give the gradient one process gives on the four: MSE and
    MAE average over the ranks, and the soft SROCC is the global batch's (of two samples alone
    it is always +-1 and has no gradient)."""
    torch.multiprocessing.spawn(_ddp_gradient, args=(str(tmp_path),), nprocs=2)
    first, second = (torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1))
    features, target = _batch()
    model = _linear()
    QualityLoss()(model(features)[:, 0], target).backward()
    torch.testing.assert_close(first, second)
    torch.testing.assert_close(first, model.weight.grad, rtol=1e-5, atol=1e-7)
    apart = _linear()
    QualityLoss(terms=("mse", "mae"))(apart(features)[:, 0], target).backward()
    assert not torch.allclose(model.weight.grad, apart.weight.grad, atol=1e-4)  # SROCC counts


def test_the_mse_and_mae_terms_are_their_textbook_means():
    """Differences of 0.5 and 2: MSE (0.25 + 4) / 2, MAE (0.5 + 2) / 2 (where a difference
    of 0 or 1 would make the two alike)."""
    predicted, target = torch.tensor([1.5, 0.0]), torch.tensor([1.0, 2.0])
    assert float(QualityLoss(("mse",))(predicted, target)) == pytest.approx(2.125)
    assert float(QualityLoss(("mae",))(predicted, target)) == pytest.approx(1.25)


def test_two_samples_have_a_correlation_term():
    """Pearson's r of two points is the sign of their slope: reversed, 1 - r = 2."""
    loss = QualityLoss(("plcc",))(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
    assert float(loss) == pytest.approx(2.0)


def test_soft_srocc_is_pearsons_r_of_the_formulas_soft_ranks_with_the_exact_ranks():
    """The predictions standardised (standard deviation of n - 1, torch's), soft-ranked as
    1/2 + sum_j sigmoid((z_i - z_j) / t) at t = 0.05; the targets' ranks exact."""
    predicted = np.array([0.10, 0.12, 0.50, 0.47, 0.90, 0.30])
    target = np.array([1.0, 3.0, 2.0, 5.0, 6.0, 4.0])
    z = (predicted - predicted.mean()) / predicted.std(ddof=1)
    ranks = 0.5 + (1 / (1 + np.exp(-(z[:, None] - z[None, :]) / 0.05))).sum(axis=1)
    expected = stats.pearsonr(ranks, stats.rankdata(target)).statistic
    found = soft_srocc(torch.tensor(predicted), torch.tensor(target), 0.05)
    assert float(found) == pytest.approx(expected, rel=1e-9)


def test_each_head_is_weighed_and_read_from_its_own_columns():
    """Outputs [3 class logits | 1 quality], targets [class | quality]: the quality head's
    output is column 3 (after the 3 logits), its target column 1; weights 2 and 0.5."""
    heads = (Head("grid", "class", 3, 1, weight=2.0), Head("quality", "regression", 1, 1, 0.5))
    outputs = torch.tensor([[2.0, 0.5, -1.0, 0.3], [0.1, 1.5, 0.2, 0.9]])
    targets = torch.tensor([[0.0, 0.5], [2.0, 1.0]])
    by_hand = (2.0 * F.cross_entropy(outputs[:, :3], torch.tensor([0, 2]))
               + 0.5 * ((0.3 - 0.5) ** 2 + (0.9 - 1.0) ** 2) / 2)
    loss = MultiTargetLoss(heads, QualityLoss(("mse",)))(outputs, targets)
    assert float(loss) == pytest.approx(float(by_hand), rel=1e-6)
