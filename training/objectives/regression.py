"""The supervised objective (today's `train pretrain`): a batch of (images, targets), the
model's outputs against the targets under a quality, class or multi-target loss."""

from collections.abc import Callable

import torch
from torch import nn

from training.precision import Inputs


class SupervisedLoss:
    """loss(network, (uint8 images, targets)); `whole_outputs` for classes and multi-head
    models, else the first output column (one quality score) is compared."""

    def __init__(self, criterion: Callable, inputs: Inputs, whole_outputs: bool):
        self.criterion, self.inputs, self.whole_outputs = criterion, inputs, whole_outputs

    def __call__(self, network: nn.Module, batch) -> torch.Tensor:
        images, targets = batch
        with self.inputs.autocast():
            outputs = network(self.inputs(images)).float()
        return self.criterion(outputs if self.whole_outputs else outputs[:, 0],
                              targets.to(self.inputs.device, non_blocking=True))
