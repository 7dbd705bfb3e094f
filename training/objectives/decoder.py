"""An encoder-decoder on a timm backbone: the backbone's last feature map (timm's
`forward_features`) upsampled x2 per stage (bilinear, 3x3 conv, ReLU; channels halved down to
16) back to the input size, and one 3x3 output convolution per named head (reconstruction:
an image; restoration: the reference and the SSIM map). No batch statistics in the decoder."""

import math

import torch
import torch.nn.functional as F
from torch import nn

SMALLEST_WIDTH = 16


def feature_map_shape(backbone: nn.Module, crop: int) -> tuple[int, int]:
    """(channels, reduction) of the backbone's feature map on a crop x crop input; a clear
    error for backbones whose features are not a (B, C, H, W) map (ViTs give tokens). The
    weights the map does not depend on (timm's head: a final norm in some models) are frozen,
    so DDP finds no unused parameter."""
    was_training = backbone.training
    backbone.eval()
    features = backbone.forward_features(torch.zeros(1, 3, crop, crop))
    features.sum().backward()
    for weight in backbone.parameters():
        if weight.grad is None:
            weight.requires_grad_(False)
        weight.grad = None
    backbone.train(was_training)
    if features.ndim != 4:
        raise ValueError(f"an encoder-decoder needs a convolutional backbone whose features "
                         f"are a (B, C, H, W) map; this one gives shape {tuple(features.shape)}")
    return features.shape[1], max(1, round(crop / features.shape[-1]))


class Decoder(nn.Module):
    def __init__(self, channels: int, reduction: int, heads: dict[str, int]):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(math.ceil(math.log2(reduction))):
            narrower = max(channels // 2, SMALLEST_WIDTH)
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                       nn.Conv2d(channels, narrower, 3, padding=1), nn.ReLU(inplace=True)]
            channels = narrower
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({name: nn.Conv2d(channels, outputs, 3, padding=1)
                                    for name, outputs in heads.items()})

    def forward(self, features: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        shared = self.trunk(features)
        if shared.shape[-2:] != size:  # sizes that are no power-of-two multiple of the map
            shared = F.interpolate(shared, size=size, mode="bilinear", align_corners=False)
        return tuple(head(shared) for head in self.heads.values())


class EncoderDecoder(nn.Module):
    """backbone (timm, num_classes=0) and decoder; forward gives the heads' maps, in order, at
    the input's size."""

    def __init__(self, backbone: nn.Module, crop: int, heads: dict[str, int]):
        super().__init__()
        channels, reduction = feature_map_shape(backbone, crop)
        self.backbone = backbone
        self.decoder = Decoder(channels, reduction, heads)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.decoder(self.backbone.forward_features(images), tuple(images.shape[-2:]))
