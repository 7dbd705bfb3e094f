"""Pretraining objectives, one module each, sharing training.loop: regression (labels),
contrastive (Re-IQA / MoCo-v2), reconstruction (CoAE), restoration (MT-IRN)."""

from torch import nn

from training.distributed import Context
from training.objectives.base import OBJECTIVES, Objective, ObjectiveConfig
from training.objectives.contrastive import Contrastive
from training.objectives.reconstruction import Reconstruction
from training.objectives.restoration import Restoration
from training.precision import Inputs

__all__ = ["OBJECTIVES", "Objective", "ObjectiveConfig", "build_objective"]


def build_objective(config: ObjectiveConfig, backbone: nn.Module, crop: int, inputs: Inputs,
                    context: Context) -> Objective:
    """The label-free objective `config.name` around a timm backbone built with num_classes=0."""
    if config.name == "contrastive":
        return Contrastive(backbone, config, crop, inputs, context)
    if config.name == "reconstruction":
        return Reconstruction(backbone, config, crop, inputs)
    if config.name == "restoration":
        return Restoration(backbone, config, crop, inputs)
    raise ValueError(f"{config.name!r} is not a label-free objective (one of "
                     f"{', '.join(OBJECTIVES[1:])})")
