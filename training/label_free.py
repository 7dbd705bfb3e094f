"""`train pretrain --objective contrastive|reconstruction|restoration`: a label-free objective
(training.objectives) on the groups of the shards' train references (chunks, pairs or
triplets through shards.Dataset.groups), through the same loop as regression (DDP,
checkpoints, exact resume, TensorBoard, seeding), early stopping on the mean validation loss
(score = -loss) over the val references' groups."""

from collections import Counter
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader

from labelers.correlation import figure_text
from shards.dataset import Dataset, open_dataset
from shards.group_spec import GroupSpec
from shards.order import ONE_PASS, Order, share_to_spread
from shards.words import a_few
from training import checkpoint
from training.distributed import Context, all_sum, computed_on_main, print_notices
from training.group_data import (
    MixedStream,
    collate_groups,
    group_dataset,
)
from training.loop import Run, fit, with_progress
from training.model import build_to_resume
from training.objectives import Objective, build_objective
from training.objectives.base import GroupRequest
from training.precision import Inputs, Precision
from training.pretrain_config import PretrainConfig
from training.results_files import publish_summary
from training.shard_data import (
    INTERLEAVED_SHARDS,
    datasets_splits,
    distorted_index,
    reference_sizes,
    references_up_to,
)

SHUFFLE_GROUPS = 16  # groups in the shuffle buffer (a chunk holds many crops already)


def training_reading(kind: str, length: int) -> Order:
    """How a training rank reads groups: shards resampled, a shuffle buffer, and pairs and
    triplets from INTERLEAVED_SHARDS shards at once (a shard yields each reference's pairs
    together: read one after another, a batch of 16 held one reference). A chunk is a
    reference's versions already; its shards are read one at a time (a chunk shard holds its
    incomplete chunks' crops)."""
    return Order(shuffle=SHUFFLE_GROUPS, resampled=True, length=length,
                 interleave=1 if kind == "chunk" else INTERLEAVED_SHARDS)


@dataclass(frozen=True)
class Part:
    """One dataset's share of a run: its train and val references that give groups, and the
    groups of one pass over each."""

    name: str  # as given
    dataset: Dataset
    train: frozenset[str]
    val: frozenset[str]
    train_groups: int
    val_groups: Counter


def _parts(config: PretrainConfig, request: GroupRequest, context: Context
           ) -> tuple[list[Part], list[str]]:
    """The run's datasets (config.datasets), each with its own splits (a
    --val-refs or --exclude-refs id moves in each that holds it), and the notices of the
    references left out for want of a whole chunk."""
    names = config.datasets
    datasets = tuple(open_dataset(name) for name in names)
    every_splits, notices = datasets_splits(datasets, config.val_refs, config.exclude_refs)
    unfinished = [dataset.unfinished for dataset in datasets if dataset.unfinished]
    notices += unfinished
    for split in ("train", "val"):
        if not any(split in splits.values() for splits in every_splits):
            hint = ": name some with --val-refs" if split == "val" else ""
            raise ValueError(f"{' and '.join(names)} has no `{split}` reference{hint}"
                             + "".join(f"; {why}" for why in unfinished))
    parts = []
    short: dict[str, list[str]] = {"train": [], "val": []}  # datasets with no whole chunk
    for name, dataset, splits in zip(names, datasets, every_splits, strict=True):
        drawn, sizes = computed_on_main(context, partial(_drawn_and_sizes, dataset))
        refs = {}
        for split in ("train", "val"):
            refs[split], found, error = _whole_refs(name, drawn, sizes, splits, split, request)
            notices += found
            short[split] += [error] if error else []
        parts.append(Part(name, dataset, refs["train"], refs["val"],
                          group_count(drawn, refs["train"], request),
                          groups_per_reference(drawn, refs["val"], request)))
    for split, errors in short.items():
        if errors and not any(getattr(part, split) for part in parts):
            raise ValueError("; ".join(errors))
    if len(parts) > 1:  # one dataset without train references stops the run below
        notices += [f"{part.name} gives no train {request.kind}s (none of its train "
                    f"references has one): it adds {'validation only' if part.val else 'nothing'}"
                    for part in parts if not part.train_groups]
    return parts, notices


def _whole_refs(name: str, drawn: dict, sizes: dict, splits: dict[str, str], split: str,
                request: GroupRequest) -> tuple[frozenset[str], list[str], str | None]:
    """The references of `split` in the dataset `name` that give whole groups at the crop's
    size, the notices of those left out, and the error where none does (another dataset of
    the run may have whole groups)."""
    named = frozenset(ref for ref, its in splits.items() if its == split) & frozenset(drawn)
    try:
        whole, chunk_notice = full_chunks(drawn, named, request, split, name)
        refs, size_notice = fitting(sizes, whole, request, split, name)
    except ValueError as error:
        return frozenset(), [f"{error}; left out"], str(error)
    return refs, [notice for notice in (chunk_notice, size_notice) if notice], None


def _drawn_and_sizes(dataset: Dataset) -> tuple[dict[str, tuple[int, int]],
                                                dict[str, tuple[int, int]]]:
    """The dataset's drawn versions (drawn_versions) and reference sizes (reference_sizes),
    from its indexes (on rank 0 alone under torchrun: computed_on_main)."""
    index = distorted_index(dataset.location, dataset.shards, ("ref_id", "distortion_id"))
    return drawn_versions(index), reference_sizes(dataset.location, dataset.shards)


def fitting(sizes: dict[str, tuple[int, int]], refs: frozenset[str], request: GroupRequest,
            name: str, dataset_name: str) -> tuple[frozenset[str], str | None]:
    """The references of `refs` on whose images (`sizes`: reference_sizes) the request's
    box(es) can be drawn at every scale, and a notice naming the others (a --size native
    dataset's small photos, a --crop too large), so that none stops the run when its group
    is cut; a ValueError where none can be."""
    spec = GroupSpec(request.kind, (request.crop, request.crop), views=request.views,
                     half_scale=request.half_scale)
    small = {ref: why for ref in refs if ref in sizes and (why := spec.misfit(sizes[ref]))}
    if not small:
        return refs, None
    first = next(iter(sorted(small)))
    if not refs - set(small):
        raise ValueError(f"{dataset_name}: no {name} reference is large enough for the "
                         f"groups' crops (e.g. {first} {small[first]}): lower --crop")
    return refs - set(small), (
        f"{len(small)} {name} reference(s) of {dataset_name} are too small for the groups' "
        f"crops, left out (e.g. {first} {small[first]})")


def drawn_versions(index: pa.Table) -> dict[str, tuple[int, int]]:
    """ref_id -> (its versions, their distinct distortion types) in a distorted index (its
    ref_id and distortion_id), counted by Arrow: Python lists of 23.1M ids are gigabytes."""
    counted = index.group_by("ref_id").aggregate([
        ([], "count_all"),
        ("distortion_id", "count_distinct", pc.CountOptions(mode="all"))])
    return dict(zip(counted["ref_id"].to_pylist(), zip(
        counted["count_all"].to_pylist(),
        counted["distortion_id_count_distinct"].to_pylist(), strict=True), strict=True))


def groups_per_reference(drawn: dict[str, tuple[int, int]], refs: frozenset[str],
                         request: GroupRequest) -> Counter:
    """Groups of one pass over each of `refs` (`drawn`: drawn_versions): a chunk per
    reference with versions, a pair or triplet per drawn version (all, or
    `request.versions`)."""
    counts = {ref: drawn[ref][0] for ref in sorted(refs) if ref in drawn}
    if request.kind == "chunk":
        return Counter(dict.fromkeys(counts, 1))
    return Counter({ref: min(count, request.versions or count) for ref, count in counts.items()})


def group_count(drawn: dict[str, tuple[int, int]], refs: frozenset[str],
                request: GroupRequest) -> int:
    """Groups of one pass over `refs` (groups_per_reference, summed)."""
    return sum(groups_per_reference(drawn, refs, request).values())


def full_chunks(drawn: dict[str, tuple[int, int]], refs: frozenset[str], request: GroupRequest,
                name: str, dataset: str) -> tuple[frozenset[str], str | None]:
    """The references of `refs` that give a whole chunk of `request.versions` versions (of as
    many types, where they must differ), and a notice naming the others: failed versions left
    them fewer, and chunks of unequal size do not stack into a batch."""
    if request.kind != "chunk" or request.versions is None:
        return refs, None
    sizes = {ref: drawn[ref][1] if request.distinct_types else drawn[ref][0]
             for ref in sorted(refs) if ref in drawn}
    short = sorted(ref for ref, size in sizes.items() if size < request.versions)
    whole = refs - set(short)
    what = "types" if request.distinct_types else "versions"
    if short and not whole & set(sizes):
        raise ValueError(f"{dataset}: no {name} reference has {request.versions} {what} for a "
                         f"chunk (the most: {max(sizes.values())}): lower --versions")
    notice = (f"{len(short)} {name} reference(s) have fewer than {request.versions} {what} "
              f"among their versions (some failed, or composed ones share a first type), so "
              f"no whole chunk: left out ({a_few(short)})") if short else None
    return whole, notice


def _loader(config: PretrainConfig, objective: Objective, parts: list[Part],
            refs: dict[str, frozenset[str]], reading: Order, context: Context,
            flip: bool = False) -> DataLoader:
    """The groups of `refs` (by part name) of each part, mixed in proportion to their train
    groups (one part: its stream alone); with `flip` half of them mirrored."""
    streams = [group_dataset(part.dataset, objective.request.kind, None,
                             _spread(reading, part, refs[part.name], parts, config.workers),
                             context.rank, context.world_size, seed=config.seed,
                             refs=refs[part.name], flip=flip, **objective.request.arguments())
               for part in parts]
    stream = streams[0] if len(streams) == 1 else MixedStream(
        streams, [part.train_groups for part in parts], config.seed)
    return DataLoader(stream, batch_size=config.optim.local_batch(context.world_size),
                      collate_fn=collate_groups, num_workers=config.workers,
                      pin_memory=context.device.type == "cuda")


def _spread(reading: Order, part: Part, refs: frozenset[str], parts: list[Part],
            workers: int) -> Order:
    """A resampled `reading` of `part` with the share of each shard that spreads one
    DataLoader worker's epoch over the whole of the shards it reads at once (its groups in
    proportion to the part's: MixedStream); a pass as it is."""
    if not reading.resampled or not reading.length:
        return reading
    mine = reading.length * part.train_groups / sum(other.train_groups for other in parts)
    shards = len(part.dataset.where(None, refs)[0])
    return replace(reading, share=share_to_spread(mine / max(1, workers), reading.interleave,
                                                  part.train_groups, shards))


def validation_loss(context: Context, objective: Objective, loader,
                    groups: int | None = None) -> dict:
    """The mean loss over every rank's validation groups (`groups` of them, for the
    progress); score = -loss, so that higher is better as early stopping wants."""
    objective.model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in with_progress(loader, context, "validate", groups, unit="group"):
            size = len(batch["ref_id"])
            total += float(objective.loss(objective.model, batch)) * size
            count += size
    total, count = all_sum(context, total), all_sum(context, count)
    if not count:
        raise ValueError("no validation group was read (do the val references have "
                         "distorted versions?)")
    return {"score": -total / count, "loss": total / count, "count": int(count)}


def _check_counts(parts: list[Part], counts: dict[str, int], kind: str) -> None:
    """A ValueError naming the datasets where the train or val split holds no group."""
    for name, count in counts.items():
        if not count:
            raise ValueError(f"{' and '.join(part.name for part in parts)}: no {name} "
                             "reference has a distorted version in a complete shard, so there "
                             f"is no {kind} to {'train' if name == 'train' else 'validate'} on")


def pretrain_label_free(config: PretrainConfig, context: Context, resume: bool) -> dict:
    precision = Precision.resolve(config.model.precision, context.device)
    torch.manual_seed(config.seed)  # the same initial weights on every run of this seed
    built = build_to_resume(config.model, resume, outputs=0)
    inputs = Inputs.of(config.augment, context.device, precision)
    objective = build_objective(config.objective, built.model, config.augment.crop, inputs,
                                context)
    parts, notices = _parts(config, objective.request, context)
    groups = sum(part.train_groups for part in parts)
    val_groups = Counter({(number, ref): count for number, part in enumerate(parts)
                          for ref, count in part.val_groups.items()})  # (however typed)
    _check_counts(parts, {"train": groups, "val": sum(val_groups.values())},
                  objective.request.kind)
    validated = references_up_to(val_groups, config.val_limit, config.seed)
    validated_groups = sum(val_groups[key] for key in validated)
    train = {part.name: part.train for part in parts}
    val = {part.name: frozenset(ref for number, ref in validated if parts[number] is part)
           for part in parts}
    train_refs, val_refs = (sum(map(len, refs.values())) for refs in (train, val))
    steps = config.steps_for(groups)
    local = config.optim.local_batch(context.world_size)
    print_notices(context, (*checkpoint.replaced_run_notices(config.out, resume),
                            *built.notices, *objective.notices, *notices))
    if context.is_main:
        mixed = (f" of {len(parts)} datasets ("
                 + ", ".join(f"{part.name}: {len(train[part.name])}" for part in parts)
                 + ")") if len(parts) > 1 else ""
        print(f"pretraining {config.model.backbone} ({objective.name}, "
              f"{objective.request.kind}s of {config.augment.crop} px crops) on "
              f"{train_refs} references{mixed}, validating on {val_refs}; "
              f"{context.world_size} rank(s) on {context.device}, {steps} batches of "
              f"{config.optim.batch_size} per epoch", flush=True)
    train_loader = _loader(config, objective, parts, train,
                           training_reading(objective.request.kind, steps * local), context,
                           flip=config.augment.flip)  # validation groups: never mirrored
    val_loader = _loader(config, objective, parts, val, ONE_PASS, context)

    def batches(epoch: int) -> DataLoader:
        train_loader.dataset.set_epoch(epoch)
        return train_loader

    def validate(model) -> dict:
        return validation_loss(context, objective, val_loader, validated_groups)

    out = Path(config.out)
    run = Run(context, objective.model, config.optim, 0, out, config.to_json(), config.seed,
              precision, objective=objective, augment=config.augment,
              data={"train groups": groups,
                    "val groups": validated_groups,
                    "plans": [part.dataset.plan_digest for part in parts]},
              start=built.start)
    summary = fit(run, batches, steps, validate, resume)
    if context.is_main:
        summary = publish_summary(out, {
            **summary, **objective.summary(), "dataset": config.dataset,
            **({"also": list(config.also)} if config.also else {}),
            "train_refs": train_refs, "val_refs": val_refs},
            f"loss {figure_text(-summary['best_score'])}")
    return summary
