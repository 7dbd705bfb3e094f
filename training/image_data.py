"""Fine-tuning and evaluation data: seeded splits of a labelled-image list (by reference or by
image) and the torch dataset of its views."""

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from labelers.fitting import split_by_reference
from training.rated_datasets import LabelledImage
from training.transforms import Augment, centre_view, eval_views, train_view

SPLIT_BY = ("reference", "image")


@dataclass(frozen=True)
class Split:
    train: list[LabelledImage]
    val: list[LabelledImage]     # for early stopping, carved out of the training part
    test: list[LabelledImage]


def _groups(images: list[LabelledImage], split_by: str) -> np.ndarray:
    if split_by not in SPLIT_BY:
        raise ValueError(f"--split-by must be one of {SPLIT_BY}, got {split_by!r}")
    return np.array([image.group if split_by == "reference" else image.name
                     for image in images])


def _pick(images: list[LabelledImage], mask: np.ndarray) -> list[LabelledImage]:
    return [image for image, keep in zip(images, mask, strict=True) if keep]


def held_out_groups(groups: np.ndarray, seed: int, repeat: int,
                    test_fraction: float = 0.2) -> set:
    """The test groups of split `repeat`. Where the share is 1/k (a fifth by default), the
    groups in a seeded order cut into k folds of near-equal size (at most one group apart; k
    is at most the number of groups): repeat r tests on fold r, so the first k repeats are a
    k-fold (every group tested once), and later rounds reshuffle with the next seed. Any other
    share: each repeat draws round(share x groups) of them (at least one, and one fewer than
    all), seeded by (seed, repeat)."""
    unique = np.unique(groups)
    if len(unique) < 2:
        raise ValueError(f"a train/test split needs two groups (references) at least; "
                         f"got {len(unique)}")
    folds = round(1 / test_fraction)
    if folds >= 2 and math.isclose(folds * test_fraction, 1.0, rel_tol=1e-6):
        folds = min(len(unique), folds)
        round_, fold = divmod(repeat, folds)
        order = np.random.default_rng([seed, round_]).permutation(unique)
        return set(np.array_split(order, folds)[fold])
    count = min(len(unique) - 1, max(1, round(test_fraction * len(unique))))
    return set(np.random.default_rng([seed, repeat]).permutation(unique)[:count])


def published_split_notice(images: list[LabelledImage], kind: str, repeats: int) -> str | None:
    """What repeats mean on a dataset with a published train/test split (None elsewhere)."""
    if repeats > 1 and images and all(image.published_split for image in images):
        return (f"{kind} has a published train/test split: every repeat tests on its test set "
                "(only the validation part changes)")
    return None


def split(images: list[LabelledImage], split_by: str, seed: int, repeat: int = 0,
          val_fraction: float = 0.125, test_fraction: float = 0.2) -> Split:
    """Split `repeat` of a seeded train/test scheme, 80/20 by default (see `held_out_groups`);
    `val_fraction` of the training groups hold out for validation (so 70/10/20 by default).
    A dataset with a published split keeps it (train/test) whatever the repeat."""
    if all(image.published_split for image in images):
        pool = [image for image in images if image.published_split == "train"]
        test = [image for image in images if image.published_split == "test"]
    else:
        groups = _groups(images, split_by)
        held_out = held_out_groups(groups, seed, repeat, test_fraction)
        in_test = np.array([group in held_out for group in groups])
        pool, test = _pick(images, ~in_test), _pick(images, in_test)
    groups = _groups(pool, split_by)
    if len(set(groups)) < 2:  # too few references to hold out a validation part
        return Split(pool, pool, test)
    in_fit = split_by_reference(groups, seed + 1 + repeat, 1 - val_fraction)
    return Split(_pick(pool, in_fit), _pick(pool, ~in_fit), test)


class ImageViews(Dataset):
    """(view, score): a random augmented crop when training; a centre crop, or the stack of
    `crops` random crops, when evaluating. Crops are seeded by (seed, epoch, index)."""

    def __init__(self, images: list[LabelledImage], augment: Augment, train: bool,
                 seed: int = 0, crops: int = 1):
        self.images, self.augment, self.train = images, augment, train
        self.seed, self.crops, self.epoch = seed, crops, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        pixels = image.pixels()
        rng = np.random.default_rng([self.seed, self.epoch, index])
        try:
            if self.train:
                view = train_view(pixels, self.augment, rng)
            elif self.crops > 1:
                view = eval_views(pixels, self.augment, rng, self.crops)
            else:
                view = centre_view(pixels, self.augment)
        except ValueError as error:  # an image smaller than the crop, say
            raise ValueError(f"{image.path or image.name}: {error}") from None
        return view, torch.tensor(image.score, dtype=torch.float32)
