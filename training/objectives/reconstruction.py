"""CoAE-style reconstruction: an encoder-decoder (training.objectives.decoder) learns to give
back its input, pristine and distorted crops of a pair alike (one shared box), with an L1 loss
in [0, 1] plus LPIPS (Zhang et al. 2018) when its weights can be loaded (labelers.lpips_metric);
without them the loss is L1 alone, and the run says so."""

import torch
from torch import nn

from labelers.lpips_metric import official_network
from labelers.weights import WeightsMissingError
from training.objectives.base import GroupRequest, Objective, ObjectiveConfig
from training.objectives.decoder import EncoderDecoder
from training.precision import Inputs

L1_ONLY = "L1 only: LPIPS weights unavailable"


def frozen_lpips(device: torch.device) -> nn.Module | None:
    """The official LPIPS network, frozen, or None where its weights are missing."""
    try:
        network = official_network()
    except WeightsMissingError:
        return None
    return network.to(device).eval().requires_grad_(False)


class Reconstruction(Objective):
    name = "reconstruction"

    def __init__(self, backbone: nn.Module, config: ObjectiveConfig, crop: int, inputs: Inputs):
        self.inputs = inputs
        self.model = EncoderDecoder(backbone, crop, {"image": 3})
        self.request = GroupRequest("pair", crop, config.versions)
        self.lpips = frozen_lpips(inputs.device)
        self.notices = () if self.lpips is not None else (L1_ONLY,)

    def loss(self, network: nn.Module, batch: dict) -> torch.Tensor:
        images = torch.cat([batch["reference"], batch["distorted"].flatten(0, 1)])
        target = self.inputs.unit(images)  # on the device once: input and target
        with self.inputs.autocast():
            (rebuilt,) = network(self.inputs.normalise(target))
        loss = (rebuilt.float() - target).abs().mean()
        if self.lpips is not None:
            loss = loss + self.lpips(rebuilt.float() * 2 - 1, target * 2 - 1).mean()
        return loss

    def summary(self) -> dict:
        return {"objective": self.name, "loss": "l1+lpips" if self.lpips else "l1",
                "notice": None if self.lpips else L1_ONLY}
