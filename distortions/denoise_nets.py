"""The learned denoisers' networks: colour FFDNet (Zhang et al. 2018) and DnCNN (Zhang et al.
2017), in the layer layout of their published weight files (convolutions `model.<i>` with
ReLUs between them; batch norms already folded into the convolutions)."""

import torch
import torch.nn.functional as F
from torch import nn


def _conv_stack(state: dict[str, torch.Tensor]) -> nn.Sequential:
    """Rebuild `model.<i>` 3x3 convolutions with ReLU between them from a state dict."""
    indices = sorted({int(key.split(".")[1]) for key in state if key.startswith("model.")})
    layers: list[nn.Module] = []
    for position, index in enumerate(indices):
        weight = state[f"model.{index}.weight"]
        if weight.ndim != 4:
            raise ValueError(f"model.{index} is not a convolution (shape {tuple(weight.shape)})")
        out_channels, in_channels, kernel, _ = weight.shape
        conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2,
                         bias=f"model.{index}.bias" in state)
        conv.weight.data.copy_(weight)
        if conv.bias is not None:
            conv.bias.data.copy_(state[f"model.{index}.bias"])
        layers.append(conv)
        if position < len(indices) - 1:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class FFDNet(nn.Module):
    """FFDNet: a non-blind denoiser working on a 2x pixel-unshuffled image plus a noise map."""

    def __init__(self, state: dict[str, torch.Tensor]):
        super().__init__()
        self.body = _conv_stack(state)
        self.channels = self.body[-1].out_channels // 4
        shape = (self.body[0].in_channels, self.body[-1].out_channels)
        if self.channels not in (1, 3) or shape != (4 * self.channels + 1, 4 * self.channels):
            raise ValueError(f"its convolutions take {shape[0]} channels in and give "
                             f"{shape[1]}: FFDNet's take 4 C + 1 (the noise map) and give 4 C "
                             "for C = 1 or 3")

    def forward(self, noisy: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """noisy: N x C x H x W in [0, 1]; sigma: N noise standard deviations on that scale."""
        height, width = noisy.shape[-2:]
        padded = F.pad(noisy, (0, width % 2, 0, height % 2), mode="replicate")
        packed = F.pixel_unshuffle(padded, 2)
        noise_map = sigma.view(-1, 1, 1, 1).expand(-1, 1, *packed.shape[-2:])
        clean = F.pixel_shuffle(self.body(torch.cat([packed, noise_map], dim=1)), 2)
        return clean[..., :height, :width]


class DnCNN(nn.Module):
    """DnCNN: a blind residual denoiser; the network predicts the noise, which is subtracted."""

    def __init__(self, state: dict[str, torch.Tensor]):
        super().__init__()
        self.body = _conv_stack(state)
        self.channels = self.body[0].in_channels
        shape = (self.channels, self.body[-1].out_channels)
        if self.channels not in (1, 3) or shape[1] != self.channels:
            raise ValueError(f"its convolutions take {shape[0]} channels in and give "
                             f"{shape[1]}: DnCNN's take and give C = 1 or 3 (the noise it "
                             "predicts)")

    def forward(self, noisy: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """noisy: N x C x H x W in [0, 1]; sigma is ignored (the network is blind)."""
        return noisy - self.body(noisy)
