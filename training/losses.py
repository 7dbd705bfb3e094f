"""The quality-aware loss: MSE + MAE + (1 - SROCC) of the batch by default, SROCC through a
soft rank so it has gradients; a PLCC term is available."""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

TERMS = ("mse", "mae", "srocc", "plcc")


def soft_rank(values: torch.Tensor, temperature: float) -> torch.Tensor:
    """Differentiable ranks 1..n: rank_i = 1/2 + sum_j sigmoid((v_i - v_j) / t). It tends to the
    exact (average) ranks as t -> 0."""
    differences = (values[:, None] - values[None, :]) / temperature
    return 0.5 + torch.sigmoid(differences).sum(dim=1)


FLAT = 1e-6  # values whose spread is below this share of their size are one value


def _pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson's r; 0, with no gradient, where x or y is one value (a collapsed head, or
    bf16 rounding every prediction to one number): r is undefined there, and its gradient,
    which grows as 1 / spread, would be ~1e15 and poison Adam's moments for thousands of
    steps."""
    dx, dy = x - x.mean(), y - y.mean()
    spread_x, spread_y = dx.norm(), dy.norm()
    flat = (spread_x <= FLAT * x.abs().max()) | (spread_y <= FLAT * y.abs().max())
    r = (dx * dy).sum() / (spread_x * spread_y).clamp_min(1e-12)
    return torch.where(flat, torch.zeros_like(r), r)


SOFT_RANK_TEMPERATURE = 0.05  # of the predictions' standard deviation
# the soft SROCC's form, kept in a run's settings: checkpoints from before it (the temperature
# then in the predictions' own units) are not resumed under the same temperature's new meaning
SOFT_RANK_TEMPERATURE_UNIT = "standard deviations of the predictions"


def standardised(values: torch.Tensor) -> torch.Tensor:
    """(values - their mean) / their standard deviation, the deviation taken as a constant (no
    gradient through it); all zeros where the values are one value."""
    spread = values.detach().std().clamp_min(torch.finfo(values.dtype).tiny)
    return (values - values.detach().mean()) / spread


def soft_srocc(predicted: torch.Tensor, target: torch.Tensor,
               temperature: float = SOFT_RANK_TEMPERATURE) -> torch.Tensor:
    """Pearson correlation of the predictions' soft ranks with the targets' ranks, both ranked
    once standardised: the temperature is a share of the predictions' standard deviation, so
    the term has SROCC's indifference to the predictions' scale (a fixed one would leave
    predictions spread over 0-150, a raw MAD target's, sigmoids saturated and no gradient)."""
    target_ranks = soft_rank(standardised(target.detach()), 1e-9)
    return _pearson(soft_rank(standardised(predicted), temperature), target_ranks)


def plcc_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 1 - _pearson(predicted, target)


@dataclass(frozen=True)
class QualityLoss:
    """A sum of terms among mse, mae, srocc (1 - soft SROCC), plcc (1 - PLCC). Under DDP
    `gather` (distributed.gather_with_gradients) gives the correlations every rank's batch:
    a correlation of each rank's few samples is not the global batch's (of two it is always
    +-1, with no gradient), while MSE and MAE average over ranks as they are."""

    terms: tuple[str, ...] = ("mse", "mae", "srocc")
    temperature: float = SOFT_RANK_TEMPERATURE
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self):
        unknown = [term for term in self.terms if term not in TERMS]
        if unknown or not self.terms:
            raise ValueError(f"loss terms must be among {TERMS}, got {self.terms}")
        if len(set(self.terms)) < len(self.terms):  # a term twice would weigh it double
            raise ValueError(f"each loss term once, got {'+'.join(self.terms)}")
        if not 0 < self.temperature < math.inf:  # NaN too; a negative one inverts the ranks
            raise ValueError(f"the soft rank's temperature must be a positive number, got "
                             f"{self.temperature}")

    @classmethod
    def parse(cls, text: str, temperature: float = SOFT_RANK_TEMPERATURE,
              gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> "QualityLoss":
        return cls(tuple(term.strip() for term in text.split("+") if term.strip()), temperature,
                   gather)

    def __call__(self, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        predicted, target = predicted.reshape(-1), target.reshape(-1).to(predicted.dtype)
        total = predicted.new_zeros(())
        for term in self.terms:
            if term in ("mse", "mae"):
                total = total + (F.mse_loss if term == "mse" else F.l1_loss)(predicted, target)
        correlated = [term for term in self.terms if term in ("srocc", "plcc")]
        if correlated:
            whole, wanted = ((self.gather(predicted), self.gather(target)) if self.gather
                             else (predicted, target))
            if len(whole) >= 2:  # a correlation of one sample is undefined
                for term in correlated:
                    total = total + (1 - soft_srocc(whole, wanted, self.temperature)
                                     if term == "srocc" else plcc_loss(whole, wanted))
        return total


@dataclass(frozen=True)
class Head:
    """One target of a multi-head model: its columns among the outputs and the targets."""

    name: str
    kind: str       # regression | class | multihot
    outputs: int    # model outputs (1, the classes, or the multihot bits)
    width: int      # target columns (1, or the multihot bits)
    weight: float = 1.0


def head_slices(heads: tuple[Head, ...]) -> list[tuple[Head, slice, slice]]:
    """Each head with its output and target columns."""
    out = target = 0
    slices = []
    for head in heads:
        slices.append((head, slice(out, out + head.outputs), slice(target, target + head.width)))
        out, target = out + head.outputs, target + head.width
    return slices


@dataclass(frozen=True)
class MultiTargetLoss:
    """The weighted sum of each head's loss: `quality` for regression heads, cross-entropy
    for classes, binary cross-entropy on logits for multihot bits."""

    heads: tuple[Head, ...]
    quality: QualityLoss

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.reshape(len(outputs), -1).to(outputs.dtype)
        total = outputs.new_zeros(())
        for head, columns, wanted in head_slices(self.heads):
            predicted, target = outputs[:, columns], targets[:, wanted]
            if head.kind == "class":
                loss = F.cross_entropy(predicted, target[:, 0].long())
            elif head.kind == "multihot":
                loss = F.binary_cross_entropy_with_logits(predicted, target)
            else:
                loss = self.quality(predicted[:, 0], target[:, 0])
            total = total + head.weight * loss
        return total
