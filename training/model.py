"""No-reference IQA models: a timm backbone with a head of one output (or of classes), or with
one head per target (MultiHead), its initialisation (ImageNet through timm, a local
checkpoint, or random with a notice), and the ScheduledDropPath schedule."""

import os
import re
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath
from torch import nn

from training import checkpoint

HUB_ENDPOINT = "https://huggingface.co"  # huggingface_hub's, unless HF_ENDPOINT names another
INIT_MODES = ("auto", "imagenet", "random")
PRECISIONS = ("auto", "bf16", "fp32")


class ModelInitError(RuntimeError):
    """The requested initial weights cannot be loaded."""


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "resnet50"
    init: str = "auto"                 # auto | imagenet | random
    pretrained_file: str | None = None  # a local checkpoint; wins over `init`
    drop_path: float = 0.0             # the final rate of ScheduledDropPath (0: off)
    precision: str = "auto"            # auto (bf16 + channels_last on CUDA) | bf16 | fp32

    def __post_init__(self):
        if self.init not in INIT_MODES:
            raise ValueError(f"init must be one of {INIT_MODES}, got {self.init!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 0 <= self.drop_path < 1:  # NaN too
            raise ValueError(f"drop_path is a rate in [0, 1), got {self.drop_path}")
        if self.backbone not in timm.list_models():
            raise ValueError(f"unknown timm backbone {self.backbone!r} (timm.list_models() "
                             "lists the names)")


@dataclass(frozen=True)
class BackboneInput:
    """What a backbone was trained to see, from timm's pretrained config: its input size and
    normalisation (nasnetalarge: 331 and mean = std = 0.5; resnet50: 224 and ImageNet's)."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    fixed_size: bool  # the model only takes `size` (ViTs with fixed position embeddings)

    def check_crop(self, backbone: str, crop: int) -> None:
        if self.fixed_size and crop != self.size:
            raise ValueError(f"{backbone} only takes {self.size} x {self.size} inputs; "
                             f"--crop {crop} cannot be used with it")


def backbone_input(backbone: str) -> BackboneInput:
    config = timm.get_pretrained_cfg(backbone)
    if config is None:  # a model without a pretrained config: timm's defaults
        return BackboneInput(224, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, False)
    return BackboneInput(int(config.input_size[-1]), tuple(config.mean), tuple(config.std),
                         bool(config.fixed_input_size))


def _hub_host() -> str:
    """The host timm downloads weights from: huggingface_hub's endpoint (HF_ENDPOINT)."""
    return urlparse(os.environ.get("HF_ENDPOINT", HUB_ENDPOINT)).hostname or ""


def _hub_reachable(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 443)
    except (OSError, UnicodeError):
        return False
    return True


def _imagenet(config: ModelConfig, outputs: int, notices: list[str]) -> nn.Module | None:
    """The backbone with timm's ImageNet weights, or None (with a notice) when `auto` cannot
    get them."""
    host = _hub_host()
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if not offline and not _hub_reachable(host):  # offline: timm reads its local cache
        if config.init == "imagenet":
            raise ModelInitError(f"cannot download ImageNet weights for {config.backbone}: "
                                 f"{host} does not resolve; pass --pretrained-file, or set "
                                 "HF_HUB_OFFLINE=1 where timm's cache holds them")
        notices.append(f"ImageNet weights for {config.backbone} are out of reach ({host} "
                       "does not resolve): starting from RANDOM weights; pass "
                       "--pretrained-file to start from a local checkpoint, or set "
                       "HF_HUB_OFFLINE=1 where timm's cache holds them")
        return None
    try:
        return _create(config, outputs, notices, pretrained=True)
    except (OSError, RuntimeError) as error:
        if config.init == "imagenet":
            raise ModelInitError(f"cannot load ImageNet weights for {config.backbone}: {error}"
                                 ) from error
        notices.append(f"ImageNet weights for {config.backbone} failed to load ({error}): "
                       "starting from RANDOM weights")
        return None


def _create(config: ModelConfig, outputs: int, notices: list[str], pretrained: bool
            ) -> nn.Module:
    """timm's model; drop-path goes to backbones whose constructor takes it, and to NASNet's
    cell operations here; any other backbone runs without it, with a notice."""
    drop = {"drop_path_rate": config.drop_path} if config.drop_path else {}
    try:
        return timm.create_model(config.backbone, pretrained=pretrained, num_classes=outputs,
                                 **drop)
    except TypeError as error:
        if not drop or "drop_path_rate" not in str(error):
            raise
    model = timm.create_model(config.backbone, pretrained=pretrained, num_classes=outputs)
    if not add_cell_drop_path(model, config.drop_path):
        notices.append(f"{config.backbone} takes no drop-path in timm: --drop-path "
                       f"{config.drop_path} is NOT applied")
    return model


CELL_NAME = re.compile(r"(reduction_)?cell_\d+$")


def _drop_output(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
    return module.drop_path(output)


def add_cell_drop_path(model: nn.Module, rate: float) -> int:
    """NASNet's drop-path (Zoph et al. 2018): every operation of every normal and reduction
    cell (the `comb_iter_*` branches; identities have none) drops its output per sample, at a
    rate growing with the cell's depth, rate * (k + 1) / cells for the k-th cell in order
    (the stem cells have none). ScheduledDropPath then ramps each rate over training. The
    DropPath modules hold no tensors, so checkpoints keep timm's keys. Returns the count."""
    cells = [module for name, module in model.named_children() if CELL_NAME.fullmatch(name)]
    count = 0
    for depth, cell in enumerate(cells):
        for name, operation in cell.named_children():
            if name.startswith("comb_iter_"):
                operation.drop_path = DropPath(rate * (depth + 1) / len(cells))
                operation.register_forward_hook(_drop_output)
                count += 1
    return count


def checkpoint_state(path: str | Path, backbone: str | None = None) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint file: this project's (a dict with `model`) or a plain
    state dict; DDP's `module.` prefix removed. Loaded with weights_only=True. With `backbone`,
    a checkpoint of this project that names another backbone is refused."""
    path = Path(path)
    if not path.is_file():
        raise ModelInitError(f"pretrained file {path} does not exist")
    state = checkpoint.read(path)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        saved = (state.get("config") or {}).get("model", {}).get("backbone")
        if backbone is not None and saved not in (None, backbone):
            raise ModelInitError(f"{path} holds a {saved} backbone, not --backbone {backbone}")
        state = state["model"]
    if not isinstance(state, dict) or not state:
        raise ModelInitError(f"{path} holds no state dict of weights")
    return {key.removeprefix("module."): value for key, value in state.items()}


def pooled_width(backbone: nn.Module) -> int:
    """The width of a timm backbone's pooled output (built with num_classes=0): its
    head_hidden_size where timm has one (MobileNetV3, GhostNet: a hidden layer after the
    pooling, 1024 after mobilenetv3_small_050's 288 features), else its num_features."""
    return getattr(backbone, "head_hidden_size", None) or backbone.num_features


class MultiHead(nn.Module):
    """A timm backbone without its classifier and one linear head per target, named by the
    target; the outputs are the heads' side by side, in order."""

    def __init__(self, backbone: nn.Module, heads: dict[str, int]):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict({name: nn.Linear(pooled_width(backbone), outputs)
                                    for name, outputs in heads.items()})

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images)
        return torch.cat([head(features) for head in self.heads.values()], dim=1)


def _classifier_names(model: nn.Module) -> list[str]:
    """The names of timm's classifier: two for a distilled model (head, head_dist), whose
    outputs it averages when it evaluates."""
    heads = model.get_classifier()
    heads = heads if isinstance(heads, tuple) else (heads,)
    return [name for name, module in model.named_modules()
            if any(module is head for head in heads)]


def fit_layout(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors named for `model`: a multi-head checkpoint for a one-head model
    gives its backbone and its `quality` head (as timm's classifier, both of a distilled
    model's, whose average is then the quality head's output); a one-head checkpoint
    for a multi-head model gives its backbone (its classifier fits no head). A label-free
    objective's checkpoint (`backbone.` and other parts: projection, decoder, momentum
    encoder, queue) gives its backbone; the other parts are left out."""
    wrapped = any(key.startswith("backbone.") for key in state)
    if isinstance(model, MultiHead):
        if not wrapped:
            return {f"backbone.{key}": value for key, value in state.items()}
        return {key: value for key, value in state.items()
                if key.startswith(("backbone.", "heads."))}
    if not wrapped:
        return state
    renamed = {}
    for key, value in state.items():
        if key.startswith("backbone."):
            renamed[key.removeprefix("backbone.")] = value
        elif key.startswith("heads.quality."):  # each of a distilled model's two classifiers
            for name in _classifier_names(model):
                renamed[name + key.removeprefix("heads.quality")] = value
        elif key.startswith("heads."):
            renamed[key] = value  # another target's head: fits nothing, reported skipped
    return renamed


def check_all_loaded(model: nn.Module, path: str, backbone: str) -> None:
    """Every tensor of `model` must come from the checkpoint at `path`: a tensor left at its
    random start (a backbone or head of another shape) would score or probe nothing in
    particular. A ModelInitError names what is missing."""
    state = fit_layout(checkpoint_state(path), model)
    missing = [key for key, value in model.state_dict().items()
               if key not in state or state[key].shape != value.shape]
    if missing:
        raise ModelInitError(f"{path} does not hold the {backbone} model its config names: "
                             f"{len(missing)} of {len(model.state_dict())} tensors are missing "
                             f"or of another shape ({', '.join(missing[:4])}...)")


def _load_file(model: nn.Module, path: str, backbone: str, notices: list[str]) -> None:
    """Load the matching tensors; a head of another shape (another task) is left new."""
    saved = checkpoint_state(path, backbone)
    state = fit_layout(saved, model)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(state) - set(usable))
    if not usable:
        raise ModelInitError(f"no tensor of {path} fits {type(model).__name__}: another "
                             "backbone?")
    model.load_state_dict(usable, strict=False)
    missing = sorted(set(own) - set(usable))
    other_parts = len(saved) - len(state)
    notices.append(f"initialised from {path}: {len(usable)} tensors loaded"
                   + (f", {len(skipped)} skipped (shape or name differs: "
                      f"{', '.join(skipped[:4])}...)" if skipped else "")
                   + (f", {len(missing)} left new ({', '.join(missing[:4])})" if missing else "")
                   + (f", {other_parts} of the pretraining objective's other parts "
                      "(projection, decoder, momentum encoder, queue) not used"
                      if other_parts else ""))


@dataclass
class Built:
    model: nn.Module
    start: str | None     # imagenet | random | the checkpoint file it was initialised from;
                          # None: a resume's (last.pt records it)
    notices: list[str]    # what a user must see (a random start, skipped tensors)


FLOAT32_HEAD_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)  # (stateless: safe to compute again)


def _float32_output(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
    """A head layer's output computed again in float32 where autocast gave a lower precision
    (a linear or convolution layer: stateless, small): bf16's 8-bit mantissa leaves 128
    scores in [0.5, 1), ties that would decide a validation SROCC and every figure after it."""
    if not isinstance(output, torch.Tensor) or output.dtype == torch.float32:
        return None
    with torch.autocast(output.device.type, enabled=False):
        return module.forward(*(arg.float() if arg.is_floating_point() else arg for arg in args))


def keep_heads_float32(model: nn.Module) -> nn.Module:
    """Make the heads of `model` (a MultiHead's, or timm's classifier: both of a distilled
    model's) give float32 outputs under autocast: their linear and convolution layers are
    computed again in float32 (a head's batch norm runs once, its running statistics updated
    once); the backbone stays in its precision. A headless backbone's Identity has none."""
    heads = (model.heads.values() if isinstance(model, MultiHead)
             else [module for name, module in model.named_modules()
                   if name in _classifier_names(model)])
    for head in heads:
        for layer in head.modules():
            if isinstance(layer, FLOAT32_HEAD_LAYERS):
                layer.register_forward_hook(_float32_output)
    return model


def build_model(config: ModelConfig, outputs: int = 1,
                heads: dict[str, int] | None = None) -> Built:
    """The backbone with one head of `outputs`, or a MultiHead of `heads` (name -> outputs),
    its heads' outputs in float32 (keep_heads_float32)."""
    notices: list[str] = []

    def wrap(model: nn.Module) -> nn.Module:
        return keep_heads_float32(MultiHead(model, heads) if heads else model)

    if config.pretrained_file is None and config.init != "random":
        model = _imagenet(config, 0 if heads else outputs, notices)
        if model is not None:
            return Built(wrap(model), "imagenet", notices)
    model = wrap(_create(config, 0 if heads else outputs, notices, pretrained=False))
    if config.pretrained_file is not None:
        _load_file(model, config.pretrained_file, config.backbone, notices)
        return Built(model, config.pretrained_file, notices)
    if config.init == "random":
        notices.append(_random_start(config.backbone))
    return Built(model, "random", notices)


def build_to_resume(config: ModelConfig, resume: bool, outputs: int = 1,
                    heads: dict[str, int] | None = None) -> Built:
    """build_model; for a resume, the model alone, its weights random (no download, no start
    file read, no notice of a start: the weights are last.pt's, which records where they
    began, loop.Run.start). Its start is None there. A start file named but gone is said."""
    if not resume:
        return build_model(config, outputs, heads)
    built = build_model(replace(config, pretrained_file=None, init="random"), outputs, heads)
    notices = [notice for notice in built.notices if notice != _random_start(config.backbone)]
    start = config.pretrained_file
    if start is not None and not Path(start).is_file():
        notices.append(f"{start} is not there now: the resumed weights are those of the "
                       "run's last.pt")
    return Built(built.model, None, notices)


def _random_start(backbone: str) -> str:
    return f"{backbone} starts from random weights (--init random)"


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
