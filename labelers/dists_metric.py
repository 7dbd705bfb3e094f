"""DISTS (Ding et al. 2020) as the official DISTS_pytorch computes it: RGB in [0, 1], NO resize,
ImageNet normalisation, VGG16 with L2 pooling (a 3 x 3 Hann window, stride 2) in place of max
pooling, the input and five stages' features compared by global mean (structure) and
covariance (texture) terms weighted by the package's alpha and beta. The VGG16 weights come from
the torch hub cache (labelers.weights); the reference's features and statistics are computed
once."""

import importlib.util
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from labelers import weights
from labelers.base import Metric, network_on
from labelers.errors import LabelerError
from labelers.inputs import unit_rgb

# DISTS's own input normalisation (part of the metric's definition, as its reference code has
# it; training takes each backbone's from timm's pretrained config instead)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHANNELS = (3, 64, 128, 256, 512, 512)
STAGE_ENDS = (4, 9, 16, 23, 30)  # VGG16 `features` indices: each stage ends at a max pool
C1 = C2 = 1e-6


def alpha_beta_path() -> Path:
    """DISTS_pytorch's wheel ships its alpha/beta file as `weights.pt` twice: in sys.prefix and
    in its package folder (the one left when pip installs with --target)."""
    spec = importlib.util.find_spec("DISTS_pytorch")
    folders = [Path(sys.prefix)] + ([Path(p) for p in spec.submodule_search_locations]
                                    if spec and spec.submodule_search_locations else [])
    for folder in folders:
        if (folder / "weights.pt").is_file():
            return folder / "weights.pt"
    raise LabelerError("DISTS alpha/beta (weights.pt) not found in "
                       f"{', '.join(map(str, folders))}: install DISTS_pytorch")


class L2Pool(nn.Module):
    """sqrt(Hann-weighted mean of squares), 3 x 3 window from hanning(5)[1:-1], stride 2."""

    def __init__(self, channels: int):
        super().__init__()
        taps = torch.tensor([0.5, 1.0, 0.5])
        window = torch.outer(taps, taps)
        self.register_buffer("window", (window / window.sum()).expand(channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.conv2d(x * x, self.window, stride=2, padding=1, groups=x.shape[1])
        return (pooled + 1e-12).sqrt()


def vgg_stages(state: dict[str, torch.Tensor]) -> nn.ModuleList:
    """VGG16's five convolutional stages; stages 2-5 open with an L2 pool where VGG16 has a
    max pool. Each stage ends at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""
    vgg = torchvision.models.vgg16(weights=None)
    weights.load_into("dists", vgg, state)
    stages, start = [], 0
    for index, end in enumerate(STAGE_ENDS):
        pool = [L2Pool(CHANNELS[index])] if index else []
        stages.append(nn.Sequential(*pool, *vgg.features[start:end]))
        start = end + 1  # VGG16's max pool at `end` is replaced by the next stage's L2 pool
    return nn.ModuleList(stages)


class DISTS(Metric):
    key = "dists"
    higher_is_better = False
    best = 0.0
    min_size = 1  # VGG16's stages with padded L2 pooling: DISTS_pytorch scores any size

    def __init__(self, device: torch.device | str = "cpu",
                 vgg_state: dict[str, torch.Tensor] | None = None):
        super().__init__(device)
        if vgg_state is None:
            vgg_state = weights.load_state("dists")
        self.stages = network_on(vgg_stages(vgg_state), self.device)
        ab = torch.load(alpha_beta_path(), map_location="cpu", weights_only=True)
        total = ab["alpha"].sum() + ab["beta"].sum()
        self.alpha = torch.split((ab["alpha"] / total).to(self.device).flatten(), CHANNELS)
        self.beta = torch.split((ab["beta"] / total).to(self.device).flatten(), CHANNELS)
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    def _features(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        x = unit_rgb(rgb)
        features, h = [x], (x - self.mean) / self.std
        for stage in self.stages:
            h = stage(h)
            features.append(h)
        return features

    def prepare(self, ref: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        return [(f, f.mean(dim=[2, 3]), f.var(dim=[2, 3], correction=0))
                for f in self._features(ref)]

    def compare(self, prepared: list, dist: torch.Tensor) -> torch.Tensor:
        structure = texture = torch.zeros(dist.shape[0], device=self.device)
        for (ref_f, ref_mean, ref_var), f, alpha, beta in zip(
                prepared, self._features(dist), self.alpha, self.beta, strict=True):
            mean, var = f.mean(dim=[2, 3]), f.var(dim=[2, 3], correction=0)
            cov = (ref_f * f).mean(dim=[2, 3]) - ref_mean * mean
            s1 = (2 * ref_mean * mean + C1) / (ref_mean**2 + mean**2 + C1)
            s2 = (2 * cov + C2) / (ref_var + var + C2)
            structure = structure + (alpha * s1).sum(dim=1)
            texture = texture + (beta * s2).sum(dim=1)
        return (1 - structure - texture).to(torch.float64)
