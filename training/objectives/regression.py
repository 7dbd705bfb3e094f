"""The supervised objective (today's `train pretrain`): a batch of (images, targets), the
model's outputs against the targets under a quality, class or multi-target loss."""

from collections.abc import Callable

import torch
from torch import nn

from training.precision import Precision


class SupervisedLoss:
    """loss(network, (images, targets)); `whole_outputs` for classes and multi-head models,
    else the first output column (one quality score) is compared."""

    def __init__(self, criterion: Callable, precision: Precision, device: torch.device,
                 whole_outputs: bool):
        self.criterion, self.precision, self.device = criterion, precision, device
        self.whole_outputs = whole_outputs

    def __call__(self, network: nn.Module, batch) -> torch.Tensor:
        images, targets = batch
        with self.precision.context(self.device):
            outputs = network(self.precision.inputs(images, self.device)).float()
        return self.criterion(outputs if self.whole_outputs else outputs[:, 0],
                              targets.to(self.device, non_blocking=True))
