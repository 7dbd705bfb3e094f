"""What an objective gives the shared loop (training.loop): its model (the timm backbone under
`backbone.`, its other parts under other prefixes), the groups it reads, the loss of a batch,
and what follows an optimiser step (a momentum update, a queue)."""

from dataclasses import dataclass

import torch
from torch import nn

from training.optim import HALF, PRETRAIN

OBJECTIVES = ("regression", "contrastive", "reconstruction", "restoration")
# each objective's optimiser where the command line names none: the reference setup's Adam
# with halving for regression; MoCo-v2's SGD (lr 0.03 for a batch of 256, weight decay 1e-4)
# with a cosine schedule for contrastive; Adam at 1e-3 for the encoder-decoders, MT-IRN's
# weight decay 5e-4 and learning rate x 0.9 every 10 epochs for restoration
@dataclass(frozen=True)
class OptimDefaults:
    """An objective's optimiser where the command line names none."""

    lr: float
    optimizer: str = "adam"
    schedule: str = "halving"
    weight_decay: float = 0.0
    halve_every: int = PRETRAIN.halve_every  # epochs between the step schedule's steps
    decay: float = HALF                       # its factor


OPTIM_DEFAULTS = {
    "regression": OptimDefaults(PRETRAIN.lr),
    "contrastive": OptimDefaults(0.03, "sgd", "cosine", 1e-4),
    "reconstruction": OptimDefaults(1e-3),
    "restoration": OptimDefaults(1e-3, weight_decay=5e-4, halve_every=10, decay=0.9),
}


@dataclass(frozen=True)
class ObjectiveConfig:
    """The objective and its settings (those of another objective are ignored)."""

    name: str = "regression"
    versions: int | None = None   # versions drawn per reference and epoch (None: all)
    temperature: float = 0.2      # contrastive: InfoNCE's (MoCo-v2's 0.2)
    queue_size: int = 65536       # contrastive: negatives kept (MoCo's 65536)
    moco_momentum: float = 0.999  # contrastive: the key encoder's (MoCo's 0.999)
    projection_dim: int = 128     # contrastive: the projection's output (MoCo-v2's 128)
    half_scale: bool = True       # contrastive: also the x1/2 views (Re-IQA's second scale)
    key_splits: int = 1           # contrastive: shuffling-BN parts per rank (MoCo: 1 per GPU)

    def __post_init__(self):
        if self.name not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}; "
                             f"got {self.name!r}")
        if self.versions is not None and self.versions < 1:
            raise ValueError(f"--versions must be at least 1; got {self.versions}")
        if self.temperature <= 0 or self.queue_size < 1 or self.projection_dim < 1 or (
                self.key_splits < 1):
            raise ValueError("--temperature must be > 0, --queue-size, --key-splits and the "
                             "projection size at least 1")
        if not 0 <= self.moco_momentum < 1:
            raise ValueError(f"--moco-momentum must be in [0, 1); got {self.moco_momentum}")

    @property
    def label_free(self) -> bool:
        return self.name != "regression"


@dataclass(frozen=True)
class GroupRequest:
    """The groups an objective reads (shards.Dataset.groups' arguments)."""

    kind: str
    crop: int
    versions: int | None = None
    views: int = 1
    half_scale: bool = False
    distinct_types: bool = False  # the drawn versions of a reference: of distinct types

    def arguments(self) -> dict:
        return {"crop": self.crop, "versions": self.versions, "views": self.views,
                "half_scale": self.half_scale, "distinct_types": self.distinct_types}


class Objective:
    """A label-free objective over groups: `model` is trained on `loss(network, batch)` (the
    network: the model, or its DDP wrapper; one forward through it per step)."""

    name: str
    model: nn.Module
    request: GroupRequest
    notices: tuple[str, ...] = ()
    rank_batch_norm = False  # True: its batch norm must see each rank's own batch

    def loss(self, network: nn.Module, batch: dict) -> torch.Tensor:
        """The batch's mean loss (a scalar with a graph to the trainable weights)."""
        raise NotImplementedError

    def after_step(self) -> None:
        """Runs after every optimiser step taken (every rank together): nothing by default."""

    def summary(self) -> dict:
        """What summary.json records of the objective."""
        return {"objective": self.name}


def flatten_members(batch: dict, suffix: str = "") -> torch.Tensor:
    """A batch's references and versions as one stack: (B * (1 + n), ...) uint8."""
    reference, distorted = batch[f"reference{suffix}"], batch[f"distorted{suffix}"]
    return torch.cat([reference[:, None], distorted], dim=1).flatten(0, 1)
