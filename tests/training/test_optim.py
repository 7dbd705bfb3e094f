"""The optimiser and its schedule as the methods state them: MoCo-v2's SGD (momentum 0.9) with
a cosine schedule to 0 over the run's epochs, the weight decay asked for, and the step
schedule's factor every N epochs."""

import math

import pytest
import torch

from training.optim import OptimConfig, optimiser


def _rates(config: OptimConfig) -> list[float]:
    optimizer, schedule = optimiser(torch.nn.Linear(2, 1), config)
    rates = []
    for _ in range(config.epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


def test_the_cosine_schedule_follows_half_a_cosine_over_the_runs_epochs():
    """SGDR's rule without restarts: lr_e = lr (1 + cos(pi e / E)) / 2, e = 0 .. E - 1."""
    config = OptimConfig(lr=0.03, halve_every=1, epochs=6, optimizer="sgd", schedule="cosine")
    expected = [0.03 * (1 + math.cos(math.pi * epoch / 6)) / 2 for epoch in range(6)]
    assert _rates(config) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_the_optimiser_is_the_one_asked_for_with_its_weight_decay(name):
    config = OptimConfig(lr=0.01, halve_every=1, epochs=1, optimizer=name, weight_decay=5e-4)
    optimizer, _ = optimiser(torch.nn.Linear(2, 1), config)
    group = optimizer.param_groups[0]
    assert type(optimizer) is {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[name]
    assert (group["lr"], group["weight_decay"]) == (0.01, 5e-4)
    if name == "sgd":
        assert group["momentum"] == 0.9  # MoCo-v2's


def test_an_sgd_step_is_momentum_0_9_plus_weight_decay_by_hand():
    """Two steps on f(w) = w (gradient 1), w0 = 1, lr 0.1, weight decay 0.5: g = 1 + 0.5 w,
    v1 = g1, v2 = 0.9 v1 + g2, w <- w - lr v (PyTorch's and MoCo's SGD)."""
    weight = torch.nn.Parameter(torch.ones(1))
    model = torch.nn.Module()
    model.weight = weight
    config = OptimConfig(lr=0.1, halve_every=1, epochs=1, optimizer="sgd", weight_decay=0.5)
    optimizer, _ = optimiser(model, config)
    w, velocity = 1.0, 0.0
    for _ in range(2):
        optimizer.zero_grad()
        weight.sum().backward()
        optimizer.step()
        velocity = 0.9 * velocity + (1 + 0.5 * w)
        w -= 0.1 * velocity
    assert weight.item() == pytest.approx(w, rel=1e-6)
