"""LPIPS v0.1 with the AlexNet trunk (Zhang et al. 2018), through the official `lpips` package:
RGB in [-1, 1], its scaling layer, AlexNet features at five layers, unit-normalised along
channels, squared differences weighted by the package's linear layers, spatially averaged and
summed. The AlexNet weights come from the torch hub cache (labelers.weights), never random in
labels. The reference's features are computed once."""

import warnings

import lpips
import torch

from labelers import weights
from labelers.base import Metric, network_on
from labelers.inputs import unit_rgb

# torchvision's AlexNet `features` index -> lpips trunk slice (conv/relu layers 0-11)
_SLICE_OF_LAYER = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}


def load_alexnet_trunk(network: lpips.LPIPS, state: dict[str, torch.Tensor]) -> None:
    """Load torchvision AlexNet weights (features.*) into an lpips network's trunk slices."""
    trunk = {}
    for name, tensor in state.items():
        parts = name.split(".")
        if parts[0] == "features" and int(parts[1]) in _SLICE_OF_LAYER:
            trunk[f"slice{_SLICE_OF_LAYER[int(parts[1])]}.{parts[1]}.{parts[2]}"] = tensor
    weights.load_into("lpips", network.net, trunk)


def official_network() -> lpips.LPIPS:
    """The package's LPIPS (alex, v0.1, its linear weights) with ImageNet AlexNet weights."""
    state = weights.load_state("lpips")
    with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        network = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
    load_alexnet_trunk(network, state)
    return network


class LPIPS(Metric):
    key = "lpips"
    higher_is_better = False
    best = 0.0
    min_size = 31  # AlexNet: conv1 (11, stride 4) and two 3 x 3 stride-2 pools leave 1 x 1 at 31

    def __init__(self, device: torch.device | str = "cpu", network: lpips.LPIPS | None = None):
        super().__init__(device)
        self.network = network_on(network or official_network(), self.device)

    def _features(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        signed = unit_rgb(rgb) * 2 - 1
        outputs = self.network.net(self.network.scaling_layer(signed))
        return [lpips.normalize_tensor(layer) for layer in outputs]

    def prepare(self, ref: torch.Tensor) -> list[torch.Tensor]:
        return self._features(ref)

    def compare(self, prepared: list[torch.Tensor], dist: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(dist.shape[0], device=self.device)
        for ref_layer, dist_layer, linear in zip(prepared, self._features(dist),
                                                 self.network.lins, strict=True):
            total = total + linear((ref_layer - dist_layer) ** 2).mean(dim=[1, 2, 3])
        return total.to(torch.float64)
