"""MT-IRN-style restoration: from a distorted crop, an encoder-decoder predicts its pristine
reference (L1, in [0, 1]) and a second head its dense SSIM map against it (L1), on triplets
(distorted, reference, SSIM map; one shared box). The loss is their sum."""

import torch
from torch import nn

from training.objectives.base import GroupRequest, Objective, ObjectiveConfig
from training.objectives.decoder import EncoderDecoder
from training.precision import Inputs


class Restoration(Objective):
    name = "restoration"

    def __init__(self, backbone: nn.Module, config: ObjectiveConfig, crop: int, inputs: Inputs):
        self.inputs = inputs
        self.model = EncoderDecoder(backbone, crop, {"reference": 3, "ssim": 1})
        self.request = GroupRequest("triplet", crop, config.versions)

    def loss(self, network: nn.Module, batch: dict) -> torch.Tensor:
        versions = batch["distorted"].shape[1]
        with self.inputs.autocast():
            restored, ssim = network(self.inputs(batch["distorted"].flatten(0, 1)))
        reference = self.inputs.unit(batch["reference"]).repeat_interleave(versions, dim=0)
        ssim_map = batch["ssim_map"].flatten(0, 1).to(self.inputs.device).float()
        return ((restored.float() - reference).abs().mean()
                + (ssim[:, 0].float() - ssim_map).abs().mean())

    def summary(self) -> dict:
        return {"objective": self.name, "loss": "l1(reference)+l1(ssim_map)"}
