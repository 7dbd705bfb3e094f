"""Features of a frozen encoder: the backbone of a checkpoint of `iqa-factory train` (any
objective's), or a random or ImageNet start as the baseline, its pooled features per image (the
mean over the evaluation crops), computed once, without gradients, split across the DDP ranks,
and kept in a file that a later run with the same settings reuses."""

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from labelers.weights import file_sha256
from shards.storage import atomic_file
from training import distributed
from training.distributed import Context
from training.finetune import eval_loader, in_dataset_order
from training.loop import with_progress
from training.model import (
    ModelConfig,
    ModelInitError,
    backbone_input,
    build_model,
    check_all_loaded,
    pooled_width,
)
from training.precision import Inputs, Precision
from training.rated_datasets import LabelledImage
from training.trained import TrainedRun
from training.transforms import Augment

BASELINE_INITS = ("random", "imagenet")


@dataclass(frozen=True)
class EncoderConfig:
    """A checkpoint (its backbone and input read from it), or a baseline start of a backbone."""

    checkpoint: str | None = None
    init: str | None = None        # without a checkpoint: random | imagenet
    backbone: str | None = None    # with a checkpoint: checked against its own
    crop: int | None = None        # default: the checkpoint's training crop, else the backbone's

    def __post_init__(self):
        if (self.checkpoint is None) == (self.init is None):
            raise ValueError("give a checkpoint (--checkpoint) or a baseline start (--init "
                             "random|imagenet with --backbone), one of the two")
        if self.init is not None and self.init not in BASELINE_INITS:
            raise ValueError(f"--init must be one of {BASELINE_INITS}, got {self.init!r}")
        if self.init is not None and self.backbone is None:
            raise ValueError(f"--init {self.init} needs --backbone (a timm model name)")


@dataclass(frozen=True)
class Encoder:
    model: nn.Module           # eval mode, no gradients, on the device
    backbone: str
    start: str                 # the checkpoint file, random or imagenet
    augment: Augment           # the crop and normalisation it sees
    precision: Precision
    fingerprint: str           # the checkpoint's sha256, or the start: part of the cache key
    notices: tuple[str, ...]


def _from_checkpoint(config: EncoderConfig, device: torch.device) -> Encoder:
    trained = TrainedRun.read(config.checkpoint)
    backbone = trained.backbone
    if config.backbone is not None and config.backbone != backbone:
        raise ValueError(f"{config.checkpoint} holds a {backbone} backbone, not "
                         f"--backbone {config.backbone}")
    built = build_model(ModelConfig(backbone, init="random",
                                    pretrained_file=config.checkpoint), outputs=0)
    check_all_loaded(built.model, config.checkpoint, backbone)
    precision = Precision.resolve(trained.precision, device)
    return Encoder(_frozen(built.model, precision, device), backbone, built.start,
                   trained.augment(config.crop), precision,
                   file_sha256(Path(config.checkpoint)), tuple(built.notices))


def _baseline(config: EncoderConfig, device: torch.device, seed: int) -> Encoder:
    torch.manual_seed(seed)  # the random start is the seed's
    try:
        built = build_model(ModelConfig(config.backbone, init=config.init), outputs=0)
    except ModelInitError as error:  # its advice (--pretrained-file) is finetune's
        raise ModelInitError(f"--init imagenet: {error} (a probe takes --checkpoint or "
                             "--init random instead)") from error
    expected = backbone_input(config.backbone)
    crop = config.crop or expected.size
    expected.check_crop(config.backbone, crop)
    precision = Precision.resolve("auto", device)
    return Encoder(_frozen(built.model, precision, device), config.backbone, built.start,
                   Augment(crop=crop, mean=expected.mean, std=expected.std), precision,
                   f"{built.start}:{config.backbone}:seed {seed}", tuple(built.notices))


def _frozen(model: nn.Module, precision: Precision, device: torch.device) -> nn.Module:
    return precision.prepare(model.to(device)).eval().requires_grad_(False)


def frozen_encoder(config: EncoderConfig, device: torch.device, seed: int = 0) -> Encoder:
    """The encoder without its head (timm's pooled features), frozen, on `device`; `seed`
    draws a random start."""
    if config.checkpoint is not None:
        return _from_checkpoint(config, device)
    return _baseline(config, device, seed)


def encoder_features(context: Context, encoder: Encoder, images: list[LabelledImage],
                     crops: int, batch: int, workers: int, seed: int,
                     half_scale: bool = False) -> np.ndarray | None:
    """(images, features) float32 on rank 0, in the order of `images` (None on other ranks):
    each image's pooled features averaged over its `crops` seeded random crops (one crop:
    the centre); with `half_scale`, followed by those of the same crops at half size (bicubic,
    antialiased: Re-IQA's read-out joins an image's features with its half-size copy's)."""
    loader = eval_loader(context, images, encoder.augment, crops, workers, batch, seed)
    width = pooled_width(encoder.model) * (2 if half_scale else 1)
    rows = [torch.zeros((0, width), device=context.device)]
    inputs = Inputs.of(encoder.augment, context.device,
                    encoder.precision)
    with torch.inference_mode():
        for views, _ in with_progress(loader, context, "features"):
            stacked = views if views.ndim == 5 else views[:, None]
            flat = inputs(stacked.flatten(0, 1))
            scales = [flat, half_size(flat)] if half_scale else [flat]
            with inputs.autocast():
                pooled = torch.cat([encoder.model(views).float() for views in scales], dim=1)
            rows.append(pooled.view(len(stacked), stacked.shape[1], -1).mean(dim=1))
    gathered = distributed.gather_rows(context, torch.cat(rows)).cpu().numpy()
    if not context.is_main:
        return None
    features = in_dataset_order(gathered, context.world_size)
    if not np.isfinite(features).all():
        raise ValueError(f"the encoder ({encoder.start}) gives features that are not finite")
    return features


@dataclass(frozen=True)
class FeatureFile:
    """Where features are kept and what made them: a file whose `source` differs, or whose
    names or contents (LabelledImage.content_id) are not the images', is computed afresh."""

    path: Path
    source: dict   # encoder fingerprint, input, dataset, crops, seed

    def load(self, names: list[str], contents: list[str]) -> np.ndarray | None:
        """The kept features, or None: no file, another source, other images, or a file it
        cannot read (one written before contents were kept, too)."""
        if not self.path.is_file():
            return None
        try:
            with np.load(self.path) as saved:
                if (str(saved["source"]) != json.dumps(self.source, sort_keys=True)
                        or saved["names"].tolist() != names
                        or saved["contents"].tolist() != contents):
                    return None
                return saved["features"]
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            return None

    def save(self, names: list[str], contents: list[str], features: np.ndarray) -> None:
        """Written whole or not at all (shards.storage.atomic_file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.path) as handle:
            np.savez(handle, features=features, names=np.array(names),
                     contents=np.array(contents),
                     source=np.array(json.dumps(self.source, sort_keys=True)))


def half_size(views: torch.Tensor) -> torch.Tensor:
    """N x C x h x w views at half their size: bicubic, antialiased (as PIL's resize)."""
    return F.interpolate(views, size=(views.shape[-2] // 2, views.shape[-1] // 2),
                         mode="bicubic", antialias=True, align_corners=False)


def cached_features(context: Context, encoder: Encoder, images: list[LabelledImage],
                    cache: FeatureFile, crops: int, batch: int, workers: int,
                    seed: int, half_scale: bool = False) -> np.ndarray | None:
    """The features of `images` (rank 0; None elsewhere): from `cache` when it matches, else
    computed on every rank and saved. Rank 0 decides, so the ranks agree."""
    names = [image.name for image in images]
    contents = [image.content_id() for image in images] if context.is_main else []
    kept = cache.load(names, contents) if context.is_main else None
    if distributed.broadcast_flag(context, kept is not None):
        if context.is_main:
            print(f"features of {len(names)} images read from {cache.path}", flush=True)
        return kept
    features = encoder_features(context, encoder, images, crops, batch, workers, seed,
                                half_scale)
    if context.is_main:
        cache.save(names, contents, features)
    return features
