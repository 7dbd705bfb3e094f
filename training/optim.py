"""Optimiser, schedule and stopping rule: the reference setup's Adam with a learning rate
halved (or multiplied by another factor) every N epochs, or SGD with momentum and a cosine
schedule (MoCo-v2, Re-IQA); the batch given globally across ranks, early stopping on
validation."""

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from training.losses import SOFT_RANK_TEMPERATURE, SOFT_RANK_TEMPERATURE_UNIT, QualityLoss

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("halving", "cosine")
SGD_MOMENTUM = 0.9  # MoCo-v2's
HALF = 0.5          # the reference setup's step: the learning rate halved


@dataclass(frozen=True)
class OptimConfig:
    lr: float
    halve_every: int
    epochs: int
    batch_size: int = 16       # global: split evenly across the ranks
    patience: int = 3          # epochs without validation improvement before stopping
    loss: str = "mse+mae+srocc"
    temperature: float = SOFT_RANK_TEMPERATURE  # of the soft rank in the SROCC term
    checkpoint_every: int = 0  # steps (batches) between mid-epoch checkpoints; 0: epoch ends
    optimizer: str = "adam"    # adam | sgd (momentum 0.9)
    schedule: str = "halving"  # halving (x `decay` every `halve_every` epochs) | cosine (to 0)
    weight_decay: float = 0.0
    decay: float = HALF        # the step schedule's factor (MT-IRN's 0.9 every 10 epochs)
    # what `temperature` is measured in (recorded, never set)
    temperature_unit: str = field(default=SOFT_RANK_TEMPERATURE_UNIT, init=False)

    def __post_init__(self):
        if not (0 < self.lr < math.inf and 0 <= self.weight_decay < math.inf):  # NaN too
            raise ValueError(f"the learning rate must be a positive number and the weight "
                             f"decay a number of at least 0; got {self.lr}, {self.weight_decay}")
        if (self.halve_every < 1 or self.epochs < 1 or self.batch_size < 1
                or self.checkpoint_every < 0):
            raise ValueError(f"invalid optimisation settings {self}")
        if not 0 < self.decay <= 1:
            raise ValueError(f"the learning-rate decay must be in (0, 1]; got {self.decay}")
        QualityLoss.parse(self.loss, self.temperature)  # its terms and temperature, at once
        if self.optimizer not in OPTIMIZERS or self.schedule not in SCHEDULES:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS} and schedule one of "
                             f"{SCHEDULES}; got {self.optimizer!r}, {self.schedule!r}")

    @property
    def ranks_softly(self) -> bool:
        """Whether its loss holds the soft SROCC term (the one `temperature` is of)."""
        return "srocc" in QualityLoss.parse(self.loss, self.temperature).terms

    @property
    def reference_setup(self) -> bool:
        """Adam, halving, no weight decay: the settings runs had before these options."""
        return (self.optimizer, self.schedule, self.weight_decay, self.decay) == (
            "adam", "halving", 0.0, HALF)

    def local_batch(self, world_size: int) -> int:
        if self.batch_size % world_size:
            raise ValueError(f"--batch-size {self.batch_size} is the global batch and must "
                             f"divide evenly across {world_size} ranks")
        return self.batch_size // world_size


PRETRAIN = OptimConfig(lr=5e-3, halve_every=20, epochs=60)
FINETUNE = OptimConfig(lr=3e-4, halve_every=10, epochs=30)


def optimiser(model: nn.Module, config: OptimConfig):
    """The optimiser over the trainable parameters (a momentum encoder's are not) and its
    per-epoch schedule."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        chosen = torch.optim.SGD(trainable, lr=config.lr, momentum=SGD_MOMENTUM,
                                 weight_decay=config.weight_decay)
    else:
        chosen = torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.weight_decay)
    if config.schedule == "cosine":
        return chosen, torch.optim.lr_scheduler.CosineAnnealingLR(chosen, T_max=config.epochs)
    return chosen, torch.optim.lr_scheduler.StepLR(chosen, step_size=config.halve_every,
                                                   gamma=config.decay)


@dataclass
class EarlyStopping:
    """Tracks the best validation score (higher is better); decided on rank 0 only."""

    patience: int
    best: float = float("-inf")
    best_epoch: int = -1
    bad_epochs: int = 0

    def update(self, score: float, epoch: int) -> bool:
        """Record an epoch's score; True when it is the best so far. An undefined score (NaN:
        the model predicted one value for every validation image) ranks below every number,
        but the first epoch is the best until one beats it: a run always keeps weights."""
        value = score if math.isfinite(score) else float("-inf")
        if value > self.best or self.best_epoch < 0:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}
