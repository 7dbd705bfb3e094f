"""What a checkpoint of `iqa-factory train` says of the run that made it, typed: the settings
evaluate, predict and the probe's features read back. Checkpoints of earlier versions lack
some of them; the defaults are what those runs did."""

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from labelers.registry import metric_class
from shards.dataset import open_dataset
from shards.storage import canonical_uri, redact
from shards.words import a_few
from training import checkpoint
from training.model import backbone_input
from training.rated_datasets import LabelledImage, image_id
from training.shard_data import agreed_splits, held_out
from training.transforms import Augment


@dataclass(frozen=True)
class TrainedRun:
    backbone: str
    precision: str = "auto"                  # the model's --precision
    targets: tuple[str, ...] = ("quality",)  # what its heads learnt
    objective: str | None = None             # a label-free objective's name (None: labels)
    dataset: str | None = None               # what it was trained on (finetune: the kind)
    root: str | None = None                  # finetune: where that dataset was read from,
    root_resolved: str | None = None         # as typed, and resolved (resolved_root)
    dataset_resolved: str | None = None      # pretrain: its dataset resolved where it ran
    also_resolved: tuple[str, ...] = ()      # pretrain: the other datasets it read, resolved
    crop: int | None = None                  # its training crop
    # the normalisation it saw (runs older than the per-backbone normalisation saw ImageNet's)
    mean: tuple[float, ...] = IMAGENET_DEFAULT_MEAN
    std: tuple[float, ...] = IMAGENET_DEFAULT_STD
    # where it was fine-tuned on a human-rated dataset: which seeded split it trained on
    repeat: int | None = None
    split_by: str = "reference"
    seed: int = 0
    refs: tuple[str, ...] = ()
    ensemble: str | None = None              # shards: the ensemble whose Q it learnt
    images: str | None = None                # rated_datasets.fingerprint of the images it split
    trained_images: frozenset[str] = frozenset()  # rated_datasets.image_id of its train, val parts
    # pretrain: references moved to validation, and those never read
    val_refs: tuple[str, ...] = ()
    exclude_refs: tuple[str, ...] = ()

    @classmethod
    def read(cls, path: str | Path) -> "TrainedRun":
        """The run of the checkpoint at `path` (checkpoint.trained's errors where it is not
        one of `iqa-factory train`)."""
        return cls.of(checkpoint.trained(Path(path))["config"])

    @classmethod
    def of(cls, config: dict) -> "TrainedRun":
        """From a checkpoint's saved config (the run config's to_json)."""
        model, augment = config["model"], config.get("augment") or {}
        objective = config.get("objective")
        return cls(backbone=model["backbone"], precision=model.get("precision") or "auto",
                   targets=tuple(config.get("target", "quality").split(",")),
                   objective=objective["name"] if objective else None,
                   dataset=config.get("dataset"), root=config.get("root"),
                   root_resolved=config.get("root_resolved"),
                   dataset_resolved=config.get("dataset_resolved"),
                   also_resolved=tuple(config.get("also_resolved") or ()),
                   crop=augment.get("crop"),
                   mean=tuple(augment.get("mean", IMAGENET_DEFAULT_MEAN)),
                   std=tuple(augment.get("std", IMAGENET_DEFAULT_STD)),
                   repeat=config.get("repeat"),
                   split_by=config.get("split_by", cls.split_by),
                   seed=config.get("seed", cls.seed), refs=tuple(config.get("refs") or ()),
                   ensemble=config.get("ensemble"), images=config.get("images_fingerprint"),
                   trained_images=frozenset(config.get("trained_images") or ()),
                   val_refs=tuple(config.get("val_refs") or ()),
                   exclude_refs=tuple(config.get("exclude_refs") or ()))

    @property
    def fine_tuned(self) -> bool:
        """Whether it learnt a human-rated dataset's scores (a split of it recorded)."""
        return self.repeat is not None

    def fine_tuned_on(self, dataset: str, root: str, images: str | None = None) -> bool:
        """Whether it was fine-tuned on this dataset: read from this root, however spelled, or
        holding the same images (`images`: their rated_datasets.fingerprint, where they were
        copied or moved). A checkpoint that recorded its root only as typed (a relative path
        resolves where it ran, unknown here) matches a root of the same name; one that
        recorded none, any: never is its own dataset taken for another, whose test part would
        be its training."""
        if not (self.fine_tuned and self.dataset == dataset):
            return False
        if images is not None and images == self.images:
            return True
        if self.root_resolved is not None:
            return _recorded(self.root_resolved) == resolved_root(root)
        return self.root is None or _name(self.root) == _name(root)

    def trained_on(self, images: list[LabelledImage]) -> list[LabelledImage]:
        """Those of `images` it was fine-tuned on (its split's train or validation part: the
        same reference and name, wherever they are read from now; none where it recorded no
        images, as runs before 2026-12-05) and, where it split by reference, every other
        image of a reference among them (a version added since shows it content it trained
        on; a reference is known by one of its images, never by its label alone, which
        another dataset may give another photo)."""
        seen = [image_id(image) in self.trained_images for image in images]
        if self.split_by == "reference":
            groups = {image.group for image, known in zip(images, seen, strict=True) if known}
            seen = [known or image.group in groups
                    for image, known in zip(images, seen, strict=True)]
        return [image for image, known in zip(images, seen, strict=True) if known]

    def pretrained_on(self, root: str) -> bool:
        """Whether it was pretrained (not fine-tuned) on the shards dataset at `root` (or read
        it beside another: a label-free run's), however spelled."""
        if self.fine_tuned or self.dataset is None:
            return False
        return resolved_root(root) in map(_recorded, self._roots())

    def trained_references(self, root: str) -> frozenset[str]:
        """The references of the shards at `root` whose samples it pretrained on: those of
        their train split it did not move to val or leave out, nor found in a held-out split
        of another dataset it read beside them (agreed_splits by id; where one of those cannot
        be read now, `root`'s own splits: more references called seen, never fewer; a copy a
        run reads held out for its pixels is called seen, as runs before 2026-12-07 trained
        on it). None where
        it was not pretrained on them, or where their splits cannot be read: a notice, never a
        reason to refuse."""
        if not self.pretrained_on(root):
            return frozenset()
        try:
            splits = held_out(open_dataset(root).splits, self.val_refs, self.exclude_refs)
        except (OSError, ValueError):  # no complete shard, damaged, unreadable
            return frozenset()
        others = [_recorded(other) for other in self._roots()
                  if _recorded(other) != resolved_root(root)]
        try:
            read_beside = [held_out(open_dataset(other).splits, self.val_refs,
                                    self.exclude_refs) for other in others]
            splits = agreed_splits([splits, *read_beside])[0][0]
        except (OSError, ValueError):
            pass  # its own splits: conservative
        return frozenset(ref for ref, split in splits.items() if split == "train")

    def _roots(self) -> tuple[str, ...]:
        """The roots of the shards datasets it pretrained on, as recorded."""
        return (self.dataset_resolved or resolved_root(self.dataset), *self.also_resolved)

    def seen_notice(self, checkpoint: str, root: str, refs: set[str], command: str
                    ) -> str | None:
        """The notice of `command` (evaluate, probe) run on references `refs` of the shards
        at `root` of which it pretrained on some (None: on none of them)."""
        seen = sorted(self.trained_references(root) & refs)
        if not seen:
            return None
        return (f"{checkpoint} was pretrained on the samples of {len(seen)} of the references "
                f"given ({a_few(seen)}): optimistic "
                f"figures; {command} it on references it never read (its val split, "
                "--exclude-refs)")

    def augment(self, crop: int | None = None) -> Augment:
        """The input it was trained on: its crop (unless `crop`; else its backbone's own) and
        its normalisation."""
        crop = crop or self.crop or backbone_input(self.backbone).size
        backbone_input(self.backbone).check_crop(self.backbone, crop)
        return Augment(crop=crop, mean=self.mean, std=self.std)

    def score_meaning(self) -> str:
        """What a quality model's scores stand for."""
        if self.fine_tuned and self.dataset == "shards":  # a dataset of ours: Q stand in
            return (f"the ensemble label Q of the shards dataset {redact(str(self.root))} "
                    "(0 to 1, higher is better)")
        if self.fine_tuned:
            return (f"the opinion scores of {redact(str(self.dataset))}, rescaled to [0, 1] "
                    "(higher is better)")
        if "quality" in self.targets:
            under = f" under ensemble {self.ensemble}" if self.ensemble else ""
            return (f"the ensemble label Q{under} of {redact(str(self.dataset))} (0 to 1, "
                    "higher is better)")
        better = "higher" if metric_class(self.targets[0]).higher_is_better else "lower"
        return (f"the raw {self.targets[0]} scores of {redact(str(self.dataset))} ({better} "
                "is better)")



def resolved_root(root: str) -> str:
    """A dataset root as one string however it is spelled: a local path (or file:// URI)
    absolute with its links resolved, another URI in one spelling without its credentials
    (shards.storage.canonical_uri)."""
    path = root.removeprefix("file://")
    if "://" in path:
        return canonical_uri(path)
    return os.path.realpath(path)


def _recorded(resolved: str) -> str:
    """A root a checkpoint recorded resolved, in today's spelling: checkpoints written before
    session 25 kept a URI as typed (its credentials and options' order)."""
    return resolved_root(resolved) if "://" in resolved else resolved


def _name(root: str) -> str:
    return PurePosixPath(root.removeprefix("file://").rstrip("/")).name
