"""No-reference IQA models: a timm backbone with a head of one output (or of classes), its
initialisation (ImageNet through timm, a local checkpoint, or random with a notice), and the
ScheduledDropPath schedule."""

import socket
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from timm.layers import DropPath
from torch import nn

HUB_HOST = "huggingface.co"
INIT_MODES = ("auto", "imagenet", "random")


class ModelInitError(RuntimeError):
    """The requested initial weights cannot be loaded."""


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "resnet50"
    init: str = "auto"                 # auto | imagenet | random
    pretrained_file: str | None = None  # a local checkpoint; wins over `init`
    drop_path: float = 0.0             # the final rate of ScheduledDropPath (0: off)

    def __post_init__(self):
        if self.init not in INIT_MODES:
            raise ValueError(f"init must be one of {INIT_MODES}, got {self.init!r}")
        if self.backbone not in timm.list_models():
            raise ValueError(f"unknown timm backbone {self.backbone!r} (timm.list_models() "
                             "lists the names)")


def _hub_reachable() -> bool:
    try:
        socket.getaddrinfo(HUB_HOST, 443)
    except OSError:
        return False
    return True


def _imagenet(config: ModelConfig, outputs: int, notices: list[str]) -> nn.Module | None:
    """The backbone with timm's ImageNet weights, or None (with a notice) when `auto` cannot
    get them."""
    if not _hub_reachable():
        if config.init == "imagenet":
            raise ModelInitError(f"cannot download ImageNet weights for {config.backbone}: "
                                 f"{HUB_HOST} does not resolve; pass --pretrained-file")
        notices.append(f"ImageNet weights for {config.backbone} are out of reach ({HUB_HOST} "
                       "does not resolve): starting from RANDOM weights; pass "
                       "--pretrained-file to start from a local checkpoint")
        return None
    try:
        return timm.create_model(config.backbone, pretrained=True, num_classes=outputs,
                                 drop_path_rate=config.drop_path)
    except (OSError, RuntimeError) as error:
        if config.init == "imagenet":
            raise ModelInitError(f"cannot load ImageNet weights for {config.backbone}: {error}"
                                 ) from error
        notices.append(f"ImageNet weights for {config.backbone} failed to load ({error}): "
                       "starting from RANDOM weights")
        return None


def checkpoint_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint file: this project's (a dict with `model`) or a plain
    state dict; DDP's `module.` prefix removed. Loaded with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise ModelInitError(f"pretrained file {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not state:
        raise ModelInitError(f"{path} holds no state dict of weights")
    return {key.removeprefix("module."): value for key, value in state.items()}


def _load_file(model: nn.Module, path: str, notices: list[str]) -> None:
    """Load the matching tensors; a head of another shape (another task) is left new."""
    state = checkpoint_state(path)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(state) - set(usable))
    if not usable:
        raise ModelInitError(f"no tensor of {path} fits {type(model).__name__}: another "
                             "backbone?")
    model.load_state_dict(usable, strict=False)
    missing = sorted(set(own) - set(usable))
    notices.append(f"initialised from {path}: {len(usable)} tensors loaded"
                   + (f", {len(skipped)} skipped (shape or name differs: "
                      f"{', '.join(skipped[:4])}...)" if skipped else "")
                   + (f", {len(missing)} left new ({', '.join(missing[:4])})" if missing else ""))


@dataclass
class Built:
    model: nn.Module
    start: str            # imagenet | random | the checkpoint file it was initialised from
    notices: list[str]    # what a user must see (a random start, skipped tensors)


def build_model(config: ModelConfig, outputs: int = 1) -> Built:
    notices: list[str] = []
    if config.pretrained_file is None and config.init != "random":
        model = _imagenet(config, outputs, notices)
        if model is not None:
            return Built(model, "imagenet", notices)
    model = timm.create_model(config.backbone, pretrained=False, num_classes=outputs,
                              drop_path_rate=config.drop_path)
    if config.pretrained_file is not None:
        _load_file(model, config.pretrained_file, notices)
        return Built(model, config.pretrained_file, notices)
    if config.init == "random":
        notices.append(f"{config.backbone} starts from random weights (--init random)")
    return Built(model, "random", notices)


class ScheduledDropPath:
    """Drop-path probabilities rising linearly from 0 to the configured rate over training
    (NASNet's ScheduledDropPath), on every timm DropPath module of the model."""

    def __init__(self, model: nn.Module):
        self.modules = [m for m in model.modules() if isinstance(m, DropPath)]
        self.final = [m.drop_prob for m in self.modules]

    @property
    def active(self) -> bool:
        return any(rate > 0 for rate in self.final)

    def set_progress(self, fraction: float) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        for module, rate in zip(self.modules, self.final, strict=True):
            module.drop_prob = rate * fraction
