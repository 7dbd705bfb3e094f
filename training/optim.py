"""Optimiser, schedule and stopping rule of the reference setup: Adam with a learning rate
halved every N epochs, the batch given globally across ranks, early stopping on validation."""

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class OptimConfig:
    lr: float
    halve_every: int
    epochs: int
    batch_size: int = 16       # global: split evenly across the ranks
    patience: int = 3          # epochs without validation improvement before stopping
    loss: str = "mse+mae+srocc"
    temperature: float = 1e-2  # of the soft rank in the SROCC term
    checkpoint_every: int = 0  # steps (batches) between mid-epoch checkpoints; 0: epoch ends

    def __post_init__(self):
        if (self.lr <= 0 or self.halve_every < 1 or self.epochs < 1 or self.batch_size < 1
                or self.checkpoint_every < 0):
            raise ValueError(f"invalid optimisation settings {self}")

    def local_batch(self, world_size: int) -> int:
        if self.batch_size % world_size:
            raise ValueError(f"--batch-size {self.batch_size} is the global batch and must "
                             f"divide evenly across {world_size} ranks")
        return self.batch_size // world_size


PRETRAIN = OptimConfig(lr=5e-3, halve_every=20, epochs=60)
FINETUNE = OptimConfig(lr=3e-4, halve_every=10, epochs=30)


def optimiser(model: nn.Module, config: OptimConfig):
    adam = torch.optim.Adam(model.parameters(), lr=config.lr)
    return adam, torch.optim.lr_scheduler.StepLR(adam, step_size=config.halve_every, gamma=0.5)


@dataclass
class EarlyStopping:
    """Tracks the best validation score (higher is better); decided on rank 0 only."""

    patience: int
    best: float = float("-inf")
    best_epoch: int = -1
    bad_epochs: int = 0

    def update(self, score: float, epoch: int) -> bool:
        """Record an epoch's score; True when it is the best so far."""
        if score > self.best:
            self.best, self.best_epoch, self.bad_epochs = score, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}
