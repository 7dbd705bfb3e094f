"""`train pretrain`: a no-reference model learns the ensemble quality Q (or a raw metric, or
the distortion class), or several targets at once (one head each on a shared backbone, the
loss a weighted sum), of the shards' `train` split, with early stopping on `val` (on the first
target's figure); or, with a label-free objective (contrastive, reconstruction, restoration),
its backbone learns from groups of the shards (training.label_free)."""

from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader

import distortions
from labelers.correlation import MIN_PAIRS, figure_text
from labelers.ensemble import EnsembleError
from labelers.ensemble import load as load_ensemble
from labelers.ensemble import parsed as parse_ensemble
from shards.boxes import misfit
from shards.dataset import Dataset, open_dataset
from shards.layout import ENSEMBLE_FILE, MANIFEST_FILE, RunFileError, run_file
from shards.schema import finite_counts, score_arrays
from shards.storage import Location, redact
from training import checkpoint, distributed
from training.label_free import pretrain_label_free
from training.loop import Run, fit, head_figures, predict, validation_figures
from training.model import build_to_resume
from training.output_lease import sole_writer
from training.precision import Inputs, Precision
from training.pretrain_config import PretrainConfig
from training.results_files import publish_summary
from training.shard_data import (
    CLASS_TARGETS,
    EXCLUDED,
    GRID_TARGETS,
    LABEL_COLUMNS,
    SCORED_COLUMNS,
    ShardStream,
    SplitShards,
    StreamConfig,
    Target,
    datasets_splits,
    distorted_index,
    limited_split,
    multi_head,
    reference_sizes,
    run_grid,
    split_shards,
)


def check_labels(location: Location, index: pa.Table, target: Target) -> str | None:
    """For a quality target the dataset's ensemble hash (every sample's Q must have been made
    under it). A regression target the dataset has no value of (a label-free run, or a metric
    it was not scored with) is refused with what to do instead."""
    if target.kind != "regression":
        return None
    values = (index["quality"] if target.name == "quality"
              else pc.struct_field(index["scores"], target.name))
    if values.null_count == len(values):
        raise ValueError(
            f"{location.root} has no {target.name} values (generated label-free with "
            f"--metrics none, or without that metric): train a class target "
            f"({', '.join((*CLASS_TARGETS, *GRID_TARGETS))}) on it, or generate it with labels")
    if values.null_count:  # a run would stop at the first such sample, mid-epoch
        shards = sorted(set(index.filter(pc.is_null(values))["shard"].to_pylist()))
        raise ValueError(
            f"{location.root}: {values.null_count} of {len(values)} distorted samples have no "
            f"{target.name} value (in shard(s) {', '.join(map(str, shards[:5]))}"
            f"{', ...' if len(shards) > 5 else ''}: made without that metric, its weights "
            "absent where they ran?); choose another --target, or generate those shards again")
    if target.name != "quality":
        return None
    if target.ensemble is not None:  # Q made here from the raw scores (ensemble_target)
        return target.ensemble.hash
    path = location.path(ENSEMBLE_FILE)  # read through the dataset's filesystem (s3://: no
    ensemble = parse_ensemble(location.read_bytes(path), path)  # local file of that name)
    hashes = set(pc.unique(index["ensemble_hash"].drop_null()).to_pylist())  # (23M at scale)
    if hashes - {ensemble.hash}:
        raise ValueError(f"{location.root}: samples carry Q under ensembles {sorted(hashes)} "
                         f"but ensemble.json is {ensemble.hash}")
    return ensemble.hash


def check_classes(location: Location, target: Target) -> None:
    """A class target the dataset's selection cannot give, refused at the start rather than at
    its first such sample, mid-epoch: composed samples (--compose, --compose-share) have no
    single class, and `distortion` and `level` classes are the paper's 33 types and 5 levels
    (manifest.json's config; a dataset without one is checked as its samples are read)."""
    if target.kind != "class" or not location.exists(location.path(MANIFEST_FILE)):
        return
    config = run_file(location, MANIFEST_FILE).get("config")
    if not isinstance(config, dict):
        raise RunFileError(f"{redact(location.path(MANIFEST_FILE))} holds no config object: "
                           "damaged")
    compose = config.get("compose") or (1, 1)  # (K, M): chains of K to M links
    if not (isinstance(compose, list | tuple) and len(compose) == 2
            and all(type(links) is int for links in compose)):
        raise RunFileError(f"{redact(location.path(MANIFEST_FILE))}: compose {compose!r} is "
                           "not (K, M): damaged")
    if compose[-1] > 1 or config.get("compose_share"):
        raise ValueError(f"{location.root} was made with --compose or --compose-share: a "
                         f"composed sample has no single class for the {target.name} target; "
                         "train multihot on mixtures")
    if target.name in CLASS_TARGETS:
        field, count = CLASS_TARGETS[target.name]
        chosen = config.get("distortion_ids" if field == "distortion_id" else "levels") or ()
        beyond = sorted(value for value in chosen if not 1 <= value <= count)
        if beyond:
            raise ValueError(f"{location.root} holds {field} {beyond}, beyond the {count} "
                             f"classes of the {target.name} target (the paper's bank): train "
                             "the `class` target (the run's own grid)")


def ensemble_target(location: Location, index: pa.Table, target: Target,
                    ensemble: str) -> Target:
    """The quality target with Q under `ensemble` (a name or file) from each sample's raw
    scores, over the ensemble's metrics that every sample has (as `relabel` computes it; a
    metric only some samples have is refused)."""
    chosen = load_ensemble(ensemble)
    try:
        used = chosen.metrics_every_sample_has(finite_counts(score_arrays(index["scores"])),
                                               len(index))
    except EnsembleError as error:
        raise ValueError(f"{location.root}: {error}") from error
    return replace(target, ensemble=chosen, ensemble_metrics=used)


def identity_notices(targets: tuple[Target, ...]) -> list[str]:
    """The grid's (type, level) pairs a class or multihot target learns that leave a photo as
    it is (their type's identity level, gaussian_blur's sigma 0.1 say): their samples are
    undistorted copies under a distortion's name (the dbcnn banks make none)."""
    notices = []
    for target in targets:
        if target.name not in GRID_TARGETS:  # (the run's grid is given to each of its targets)
            continue
        same = [f"{distortions.get(d).name} level {level}" for d, level in target.grid
                if distortions.get(d).identity_level == level]
        holding = "those classes hold" if target.kind == "class" else "those bits name"
        if same:
            notices.append(f"the {target.name} target's {', '.join(same)} leave"
                           f"{'s' if len(same) == 1 else ''} a photo as it is (identity "
                           f"levels): {holding} undistorted copies")
    return notices


def ensemble_notices(targets: tuple[Target, ...]) -> list[str]:
    """What a run learning Q under another ensemble should be told: which Q, over what."""
    notices = []
    for target in targets:
        if target.ensemble is None:
            continue
        notice = (f"Q under ensemble {target.ensemble.name} ({target.ensemble.hash}) from the "
                  f"raw scores of {', '.join(target.ensemble_metrics)}")
        left_out = [key for key in target.ensemble.weights if key not in target.ensemble_metrics]
        if left_out:
            notice += f"; the dataset has no {', '.join(left_out)} scores (Q renormalised)"
        notices.append(notice)
    return notices


def _stream(config: PretrainConfig, dataset: Dataset, shards: SplitShards, train: bool,
            context, steps: int = 0) -> tuple[ShardStream, DataLoader]:
    """The stream of one split of `dataset` (its shards of the plan it was opened under) and
    its loader; training's `steps` batches an epoch."""
    targets = config.targets if multi_head(config.targets) else config.targets[0]
    local = config.optim.local_batch(context.world_size)
    stream = ShardStream(StreamConfig(config.dataset, shards, targets, config.augment,
                                      config.seed, train=train,
                                      per_worker=steps * local // max(1, config.workers)
                                      if train else None, plan=dataset.plan_digest),
                         context.rank, context.world_size)
    return stream, DataLoader(stream, batch_size=config.optim.local_batch(context.world_size),
                              pin_memory=context.device.type == "cuda",
                              num_workers=config.workers)


def pretrain(config: PretrainConfig, resume: bool = False) -> dict:
    with distributed.started(config.device) as context, \
            sole_writer(config.out, "pretrain", context):
        distributed.same_on_every_rank(context, "--resume", resume)
        config.optim.local_batch(context.world_size)  # an uneven one: before the data is read
        earlier = Path(config.out) / checkpoint.LAST
        if resume and not earlier.is_file():  # said before the dataset is read and announced
            raise FileNotFoundError(f"{earlier} does not exist: nothing to resume (drop "
                                    "--resume to start afresh)")
        return _pretrain(config, context, resume)


def _bound(config: PretrainConfig, dataset: Dataset
           ) -> tuple[PretrainConfig, str | None, tuple[SplitShards, ...]]:
    """The config bound to the dataset's labels, their ensemble's hash, and the splits
    (_splits), from its distorted index: read here (each shard's stats once), with the scores
    only where a target needs them, and let go before training (0.8 GB at 23.1M rows,
    3.2 GB with the scores: tests/training/test_shard_data.py)."""
    scores = config.ensemble is not None or any(
        target.kind == "regression" and target.name != "quality" for target in config.targets)
    index = distorted_index(dataset.location, dataset.shards,
                            SCORED_COLUMNS if scores else LABEL_COLUMNS)
    if len(index) == 0:
        raise ValueError(f"{config.dataset} has no distorted sample: every source or version "
                         "failed (its report.json and failures.jsonl say why)")
    config, labels = _with_labels(config, dataset.location, index)
    return config, labels, _splits(config, dataset, index)


def _with_labels(config: PretrainConfig, location: Location, index: pa.Table
                 ) -> tuple[PretrainConfig, str | None]:
    """The config with its targets bound to the dataset (an --ensemble's quality, the run's
    grid for class/multihot), and the hash of the ensemble that made the labels read."""
    if config.ensemble is not None:
        config = replace(config, targets=tuple(
            ensemble_target(location, index, target, config.ensemble)
            if target.name == "quality" else target for target in config.targets))
    for target in config.targets:
        check_classes(location, target)
    hashes = [check_labels(location, index, target) for target in config.targets]
    labels = next((value for value in hashes if value), None)
    if any(target.name in GRID_TARGETS for target in config.targets):
        grid = run_grid(location)
        config = replace(config, targets=tuple(replace(target, grid=grid)
                                               for target in config.targets))
    return config, labels


def _splits(config: PretrainConfig, dataset: Dataset, index: pa.Table
            ) -> tuple[SplitShards, SplitShards, SplitShards, list[str]]:
    """The train and val splits' shards, the part of val validated on (--val-limit), and
    notices: of the references left out as smaller than the crop (a --size native dataset's
    small photos, which would stop the run when read), and of a dataset whose run has not
    finished; a ValueError where val or train is empty, or val too small for the correlations
    that choose the best epoch (found before an epoch)."""
    location = dataset.location
    (splits,), notices = datasets_splits((dataset,), config.val_refs, config.exclude_refs)
    crop = (config.augment.crop, config.augment.crop)
    small = {ref: why for ref, size in reference_sizes(location, dataset.shards).items()
             if splits.get(ref) in ("train", "val") and (why := misfit(size, crop))}
    notices += [f"{len(small)} reference(s) are smaller than the {config.augment.crop}-pixel "
                f"crop, left out (e.g. {min(small)}: {small[min(small)]})"] if small else []
    notices += [dataset.unfinished] if dataset.unfinished else []  # (it reads what there is)
    taken = Counter(splits[ref] for ref in small)  # split -> references the crop took out
    splits = {ref: EXCLUDED if ref in small else split for ref, split in splits.items()}
    train, val = (split_shards(location, index, splits, name) for name in ("train", "val"))

    def too_small(name: str) -> str:
        return (f" ({taken[name]} {name} reference(s) are smaller than the "
                f"{config.augment.crop}-pixel crop: lower --crop)") if taken[name] else ""
    for split in (train, val):
        if not split.samples and too_small(split.name):
            raise ValueError(f"{config.dataset}: no {split.name} sample to read"
                             + too_small(split.name))
    unfinished = f"; {dataset.unfinished}" if dataset.unfinished else ""
    if not val.samples:
        raise ValueError(f"{config.dataset} has no `val` reference for early stopping: name "
                         "some with --val-refs" + unfinished)
    if not train.samples:
        raise ValueError(f"{config.dataset} has no `train` sample to pretrain on: every "
                         "reference is in val or left out (--val-refs, --exclude-refs)"
                         + unfinished)
    validated = limited_split(location, index, val, config.val_limit, config.seed)
    if (any(target.kind == "regression" for target in config.targets)
            and validated.samples < MIN_PAIRS):
        raise ValueError(f"{config.dataset}: validating on {validated.samples} sample(s) of "
                         f"{len(validated.refs)} reference(s); the correlations that choose "
                         f"the best epoch need at least {MIN_PAIRS}: name more --val-refs"
                         + (" or a larger --val-limit" if validated is not val else "")
                         + too_small("val"))
    return train, val, validated, notices


def _what_trains(config: PretrainConfig, context, splits: tuple, heads: tuple, labels,
                 steps: int) -> str:
    """The line a pretraining starts with: backbone, samples and references of the train and
    validation splits (`splits`: train, val and the part of val validated on), targets,
    ranks and batches."""
    train, val, validated = splits
    return (f"pretraining {config.model.backbone} on {train.samples} samples of "
            f"{len(train.refs)} references ({len(train.urls)} shards), validating on "
            f"{val.samples} of {len(val.refs)}"
            + (f" ({validated.samples} of {len(validated.refs)} of them: --val-limit)"
               if validated is not val else "")
            + f"; target {', '.join(f'{h.name} (x{h.weight:g})' for h in heads)}"
            + (f" (ensemble {labels})" if labels else "")
            + f"; {context.world_size} rank(s) on {context.device}, {steps} batches of "
            f"{config.optim.batch_size} per epoch")


def _pretrain(config: PretrainConfig, context, resume: bool) -> dict:
    if config.objective.label_free:
        return pretrain_label_free(config, context, resume)
    dataset = open_dataset(config.dataset)
    config, labels, (train, val, validated, split_notices) = distributed.computed_on_main(
        context, lambda: _bound(config, dataset))  # the index read once, not by every rank
    heads = tuple(target.head(weight) for target, weight in zip(config.targets,
                                                                  config.weights, strict=True))
    multi = multi_head(config.targets)
    steps = config.steps_for(train.samples)
    torch.manual_seed(config.seed)  # the same initial weights on every run of this seed
    built = build_to_resume(config.model, resume, config.targets[0].outputs,
                            {head.name: head.outputs for head in heads} if multi else None)
    distributed.print_notices(context, (
        *checkpoint.replaced_run_notices(config.out, resume), *built.notices,
        *ensemble_notices(config.targets), *identity_notices(config.targets), *split_notices))
    if context.is_main:
        print(_what_trains(config, context, (train, val, validated), heads, labels, steps),
              flush=True)
    train_stream, train_loader = _stream(config, dataset, train, True, context, steps)
    _, val_loader = _stream(config, dataset, validated, False, context)

    def batches(epoch: int) -> DataLoader:
        train_stream.set_epoch(epoch)
        return train_loader

    precision = Precision.resolve(config.model.precision, context.device)
    classes = config.targets[0].classes
    inputs = Inputs.of(config.augment, context.device, precision)

    def validate(network) -> dict:
        if multi:
            return head_figures(*predict(context, network, val_loader, inputs, heads=heads,
                                         items=validated.samples), heads)
        return validation_figures(*predict(context, network, val_loader, inputs, classes,
                                           items=validated.samples), classes)

    out = Path(config.out)
    run = Run(context, built.model, config.optim, 0 if multi else classes, out,
              config.to_json(), config.seed, precision, heads if multi else (),
              data={"train samples": train.samples, "val samples": validated.samples,
                    "plan": dataset.plan_digest},
              augment=config.augment, start=built.start)
    summary = fit(run, batches, steps, validate, resume)
    if context.is_main:
        summary = publish_summary(out, {
            **summary, "dataset": config.dataset, "ensemble": labels,
            "train_samples": train.samples, "val_samples": validated.samples,
            "val_split_samples": val.samples,  # (--val-limit reads validated)
            "heads": [asdict(head) for head in heads],
            "objective": "regression"}, f"score {figure_text(summary['best_score'])}")
    return summary
