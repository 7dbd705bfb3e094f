"""`train pretrain --objective contrastive|reconstruction|restoration`: a label-free objective
(training.objectives) on the groups of the shards' train references (chunks, pairs or
triplets through shards.Dataset.groups), through the same loop as regression (DDP,
checkpoints, exact resume, TensorBoard, seeding), early stopping on the mean validation loss
(score = -loss) over the val references' groups."""

import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader

from shards.dataset import open_dataset
from training.distributed import Context, all_sum
from training.group_data import ONE_PASS, Reading, collate_groups, group_dataset
from training.loop import Run, fit
from training.model import build_model
from training.objectives import Objective, build_objective
from training.objectives.base import GroupRequest
from training.precision import Inputs, Precision
from training.results_files import figure_text, write_json
from training.shard_data import (
    INTERLEAVED_SHARDS,
    distorted_index,
    reference_splits,
    references_up_to,
)

if TYPE_CHECKING:
    from training.pretrain import PretrainConfig

SHUFFLE_GROUPS = 16  # groups in the shuffle buffer (a chunk holds many crops already)


def training_reading(kind: str, length: int) -> Reading:
    """How a training rank reads groups: shards resampled, a shuffle buffer, and pairs and
    triplets from INTERLEAVED_SHARDS shards at once (a shard yields each reference's pairs
    together: read one after another, a batch of 16 held one reference). A chunk is a
    reference's versions already; its shards are read one at a time (a chunk shard holds its
    incomplete chunks' crops)."""
    return Reading(SHUFFLE_GROUPS, True, length, 1 if kind == "chunk" else INTERLEAVED_SHARDS)


def _refs(splits: dict[str, str], name: str, dataset: str, index) -> frozenset[str]:
    """The split's references that have a version in a complete shard (the distorted_index):
    those of a shard still being written, or whose versions all failed, give no group."""
    refs = frozenset(ref for ref, split in splits.items() if split == name)
    if not refs:
        hint = ": name some with --val-refs" if name == "val" else ""
        raise ValueError(f"{dataset} has no `{name}` reference{hint}")
    return refs & frozenset(index["ref_id"].to_pylist())


def groups_per_reference(index, refs: frozenset[str], request: GroupRequest) -> Counter:
    """Groups of one pass over each of `refs` (the distorted_index): a chunk per reference
    with versions, a pair or triplet per drawn version (all, or `request.versions`)."""
    counts = Counter(ref for ref in index["ref_id"].to_pylist() if ref in refs)
    if request.kind == "chunk":
        return Counter(dict.fromkeys(counts, 1))
    return Counter({ref: min(count, request.versions or count) for ref, count in counts.items()})


def group_count(index, refs: frozenset[str], request: GroupRequest) -> int:
    """Groups of one pass over `refs` (groups_per_reference, summed)."""
    return sum(groups_per_reference(index, refs, request).values())


def full_chunks(index, refs: frozenset[str], request: GroupRequest, name: str,
                dataset: str) -> tuple[frozenset[str], str | None]:
    """The references of `refs` that give a whole chunk of `request.versions` versions (of as
    many types, where they must differ), and a notice naming the others: failed versions left
    them fewer, and chunks of unequal size do not stack into a batch."""
    if request.kind != "chunk" or request.versions is None:
        return refs, None
    drawn: dict[str, list[int]] = {}  # ref -> the distortion id of each of its versions
    for ref, distortion in zip(index["ref_id"].to_pylist(), index["distortion_id"].to_pylist(),
                               strict=True):
        if ref in refs:
            drawn.setdefault(ref, []).append(distortion)
    sizes = {ref: len(set(ids)) if request.distinct_types else len(ids)
             for ref, ids in drawn.items()}
    short = sorted(ref for ref, size in sizes.items() if size < request.versions)
    whole = refs - set(short)
    what = "types" if request.distinct_types else "versions"
    if short and not whole & set(sizes):
        raise ValueError(f"{dataset}: no {name} reference has {request.versions} {what} for a "
                         f"chunk (the most: {max(sizes.values())}): lower --versions")
    notice = (f"{len(short)} {name} reference(s) have fewer than {request.versions} {what} "
              f"among their versions (some failed, or composed ones share a first type), so "
              f"no whole chunk: left out ({', '.join(short[:3])}"
              f"{', ...' if len(short) > 3 else ''})") if short else None
    return whole, notice


def _loader(config: "PretrainConfig", objective: Objective, refs: frozenset[str],
            reading: Reading, context: Context, dataset) -> DataLoader:
    stream = group_dataset(dataset, objective.request.kind, None, reading, context.rank,
                           context.world_size, seed=config.seed, refs=refs,
                           **objective.request.arguments())
    return DataLoader(stream, batch_size=config.optim.local_batch(context.world_size),
                      collate_fn=collate_groups, num_workers=config.workers,
                      pin_memory=context.device.type == "cuda")


def validation_loss(context: Context, objective: Objective, loader) -> dict:
    """The mean loss over every rank's validation groups; score = -loss, so that higher is
    better as early stopping wants."""
    objective.model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            size = len(batch["ref_id"])
            total += float(objective.loss(objective.model, batch)) * size
            count += size
    total, count = all_sum(context, total), all_sum(context, count)
    if not count:
        raise ValueError("no validation group was read (do the val references have "
                         "distorted versions?)")
    return {"score": -total / count, "loss": total / count, "count": int(count)}


def pretrain_label_free(config: "PretrainConfig", context: Context, resume: bool) -> dict:
    dataset = open_dataset(config.dataset)
    location = dataset.location
    splits = reference_splits(dataset, config.val_refs, config.exclude_refs)
    index = distorted_index(location, dataset.shards)  # (each shard's stats read once)
    train, val = (_refs(splits, name, config.dataset, index) for name in ("train", "val"))
    precision = Precision.resolve(config.model.precision, context.device)
    torch.manual_seed(config.seed)  # the same initial weights on every run of this seed
    built = build_model(config.model, outputs=0)
    inputs = Inputs(config.augment.mean, config.augment.std, context.device, precision)
    objective = build_objective(config.objective, built.model, config.augment.crop, inputs,
                                context)
    train, train_notice = full_chunks(index, train, objective.request, "train", config.dataset)
    val, val_notice = full_chunks(index, val, objective.request, "val", config.dataset)
    notices = [*objective.notices, *filter(None, (train_notice, val_notice))]
    groups = group_count(index, train, objective.request)
    val_groups = groups_per_reference(index, val, objective.request)
    for name, count in (("train", groups), ("val", sum(val_groups.values()))):
        if not count:
            raise ValueError(f"{config.dataset}: no {name} reference has a distorted version "
                             f"in a complete shard, so there is no {objective.request.kind} "
                             f"to {'train' if name == 'train' else 'validate'} on")
    val = references_up_to(val_groups, config.val_limit, config.seed)
    steps = config.steps_per_epoch or max(1, math.ceil(groups / config.optim.batch_size))
    local = config.optim.local_batch(context.world_size)
    if context.is_main:
        for notice in (*built.notices, *notices):
            print(f"NOTICE: {notice}")
        print(f"pretraining {config.model.backbone} ({objective.name}, "
              f"{objective.request.kind}s of {config.augment.crop} px crops) on "
              f"{len(train)} references, validating on {len(val)}; {context.world_size} "
              f"rank(s) on {context.device}, {steps} batches of {config.optim.batch_size} "
              "per epoch", flush=True)
    train_loader = _loader(config, objective, train, training_reading(objective.request.kind,
                                                                      steps * local),
                           context, dataset)
    val_loader = _loader(config, objective, val, ONE_PASS, context, dataset)

    def batches(epoch: int) -> DataLoader:
        train_loader.dataset.set_epoch(epoch)
        return train_loader

    def validate(model) -> dict:
        return validation_loss(context, objective, val_loader)

    out = Path(config.out)
    run = Run(context, objective.model, config.optim, 0, out, config.to_json(), config.seed,
              precision, objective=objective, augment=config.augment,
              data={"train groups": groups,
                    "val groups": sum(val_groups[ref] for ref in val)})
    summary = fit(run, batches, steps, validate, resume)
    if context.is_main:
        summary = {**summary, **objective.summary(), "dataset": config.dataset,
                   "train_refs": len(train), "val_refs": len(val),
                   "checkpoint": str(out / "best.pt"), "start": built.start}
        write_json(out / "summary.json", summary)
        print(f"best validation loss {figure_text(-summary['best_score'])} at epoch "
              f"{summary['best_epoch']}; weights in {out / 'best.pt'}")
    return summary
