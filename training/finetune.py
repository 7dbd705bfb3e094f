"""`train finetune`: a model (pretrained on the shards, from ImageNet, or random) learns a
human-rated dataset's opinion scores on seeded splits, and is tested on the held-out part
with the mean of 10 random crops per image; the median over repeated splits is reported."""

import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from labelers.correlation import MIN_PAIRS
from labelers.weights import file_sha256
from training import checkpoint, distributed, rated_datasets
from training.correlation import report
from training.distributed import Context
from training.image_data import ImageViews, Split, published_split_notice, split
from training.loop import Run, check_start_kept, fit, predict, validation_figures
from training.model import ModelConfig, ModelInitError, build_to_resume
from training.optim import FINETUNE, OptimConfig
from training.output_lease import sole_writer
from training.plots import scatter
from training.precision import FP32, Inputs, Precision
from training.rated_datasets import DatasetLayoutError, check_testable
from training.results_files import figures_line, write_json, write_predictions
from training.settings import check_count, check_names, check_shared
from training.trained import TrainedRun, resolved_root
from training.transforms import EVAL_CROPS, Augment

FIGURES = ("srocc", "plcc", "plcc_raw", "krcc", "rmse", "rmse_raw")


@dataclass(frozen=True)
class FinetuneConfig:
    dataset: str                        # a kind of training.rated_datasets.LOADERS
    root: str
    out: str
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = FINETUNE
    augment: Augment = field(default_factory=Augment)
    split_by: str = "reference"         # reference | image
    repeats: int = 1                    # seeded splits; the median is reported
    eval_crops: int = EVAL_CROPS
    refs: tuple[str, ...] = ()          # for the shards dataset: the references to use
    workers: int = 2
    seed: int = 0
    device: str = "auto"
    ensemble: str | None = None         # shards: Q under this ensemble, not the stored one

    def __post_init__(self):
        check_shared(self.workers, self.seed, self.device)
        check_count("repeats", self.repeats, 1)  # (0: earlier splits removed, none made)
        check_count("eval_crops", self.eval_crops, 1)
        check_names("refs", self.refs)

    def to_json(self) -> dict:
        return asdict(self)


def eval_loader(context: Context, images, augment: Augment, crops: int, workers: int,
                batch: int, seed: int = 0) -> DataLoader:
    """This rank's share of the images (every world_size-th), each as `crops` views."""
    return rank_share_loader(context, ImageViews(images, augment, train=False, seed=seed,
                                                 crops=crops), workers, batch)


def rank_share_loader(context: Context, dataset, workers: int, batch: int) -> DataLoader:
    """A loader of this rank's share of `dataset`: every world_size-th item, in order."""
    share = Subset(dataset, range(context.rank, len(dataset), context.world_size))
    return DataLoader(share, batch_size=batch, num_workers=workers,
                      pin_memory=context.device.type == "cuda")


def in_dataset_order(gathered: np.ndarray, world_size: int) -> np.ndarray:
    """The rows of rank_share_loader's items as gathered from the ranks (rank 0's share, then
    rank 1's, ...) put back in the dataset's order, which is then the same on any number of
    ranks."""
    positions = np.concatenate([np.arange(rank, len(gathered), world_size)
                                for rank in range(world_size)])
    ordered = np.empty_like(gathered)
    ordered[positions] = gathered
    return ordered


def test_figures(context: Context, model, images, augment: Augment, crops: int, workers: int,
                 batch: int, precision: Precision = FP32) -> tuple[np.ndarray, np.ndarray, dict]:
    """The images' predictions and opinion scores, in their order, and the figures."""
    loader = eval_loader(context, images, augment, crops, workers, batch)
    inputs = Inputs.of(augment, context.device, precision)
    predicted, opinion = (in_dataset_order(values, context.world_size)
                          for values in predict(context, model, loader, inputs))
    return predicted, opinion, report(predicted, opinion)


def _train_batches(context: Context, config: FinetuneConfig, images, seed: int):
    dataset = ImageViews(images, config.augment, train=True, seed=seed)
    sampler = DistributedSampler(dataset, num_replicas=context.world_size, rank=context.rank,
                                 shuffle=True, seed=seed)
    local = config.optim.local_batch(context.world_size)
    # a last batch of one image would give batch norm one value per channel on a small map:
    # that image waits for the next epoch's shuffle instead
    lone = local > 1 and len(sampler) % local == 1
    loader = DataLoader(dataset, batch_size=local, sampler=sampler, num_workers=config.workers,
                        pin_memory=context.device.type == "cuda", drop_last=lone)

    def batches(epoch: int) -> DataLoader:
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        return loader

    return batches, len(loader)


def checked_split(config: FinetuneConfig, images, repeat: int, world_size: int) -> Split:
    """Split `repeat`, refused (DatasetLayoutError) where a part is too small to use: fewer
    than MIN_PAIRS images to validate or test on, validation or test scores all alike, or a training
    part that gives a rank no batch (a lone image is left out of a batch: batch norm)."""
    parts = split(images, config.split_by, config.seed, repeat)
    if len(parts.val) < MIN_PAIRS:
        raise DatasetLayoutError(
            f"split {repeat}: its validation part holds {len(parts.val)} image(s) of "
            f"{len(images)}; its correlations need at least {MIN_PAIRS}: give the dataset "
            "more images (or references, split by reference)")
    if len({image.score for image in parts.val}) == 1:
        raise DatasetLayoutError(
            f"split {repeat}: the {len(parts.val)} images of its validation part all score "
            f"{parts.val[0].score:g} (rescaled to 0-1): no correlation can choose the best "
            "epoch; give the dataset more references, or scores that vary within them")
    check_testable(parts.test, f"split {repeat}: its test part")
    per_rank = -(-len(parts.train) // world_size)  # DistributedSampler's share
    if per_rank < (2 if config.optim.local_batch(world_size) > 1 else 1):
        raise DatasetLayoutError(
            f"split {repeat}: its training part holds {len(parts.train)} image(s) of "
            f"{len(images)}, {per_rank} per rank of {world_size}: too few for one batch (a "
            "lone image is left out of batches of several: batch norm); give the dataset "
            "more images (or references, split by reference)")
    return parts


def _stand_in_notice(config: FinetuneConfig) -> str | None:
    """What stands in for opinion scores in a shards dataset (None for a rated one)."""
    if config.dataset != "shards":
        return None
    which = ("the stored ensemble labels Q" if config.ensemble is None else
             f"Q under ensemble {config.ensemble}, made from the raw scores,")
    return f"{which} stand in for opinion scores here"


def _split_folder(config: FinetuneConfig, repeat: int) -> Path:
    return Path(config.out) / f"split-{repeat}"


def _one_split(context: Context, config: FinetuneConfig, parts: Split, repeat: int,
               recorded: dict, resume: bool, first_of_fresh_run: bool = False) -> dict:
    """Train split `repeat` (continued from its last.pt with `resume`), then test its best."""
    seed = config.seed + repeat  # of the weights' start, crops and batch order
    out = _split_folder(config, repeat)
    torch.manual_seed(seed)
    built = build_to_resume(config.model, resume)
    notices = list(built.notices)
    if first_of_fresh_run and context.is_main:
        notices += _drop_earlier_checkpoints(Path(config.out))
    model = built.model
    if parts.val is parts.train:
        notices.append("validation uses the training images (too few references to hold "
                       "some out)")
    distributed.print_notices(context, notices)
    if context.is_main:
        print(f"split {repeat} (seed {config.seed}, by {config.split_by}): "
              f"{len(parts.train)} train, "
              f"{len(parts.val)} val, {len(parts.test)} test images", flush=True)
    batches, steps = _train_batches(context, config, parts.train, seed)
    local = config.optim.local_batch(context.world_size)
    val_loader = eval_loader(context, parts.val, config.augment, 1, config.workers, local)

    precision = Precision.resolve(config.model.precision, context.device)

    inputs = Inputs.of(config.augment, context.device, precision)

    def validate(network) -> dict:
        return validation_figures(*predict(context, network, val_loader, inputs), classes=0)

    run = Run(context, model, config.optim, 0, out,
              {**config.to_json(), "repeat": repeat, **recorded,
               "trained_images": sorted({rated_datasets.image_id(image)  # evaluate: none tested
                                         for image in (*parts.train, *parts.val)})},
              seed, precision, augment=config.augment, start=built.start)
    summary = fit(run, batches, steps, validate, resume)
    distributed.barrier(context)  # rank 0 has written best.pt
    model.load_state_dict(checkpoint.load(out / checkpoint.BEST)["model"])
    predicted, opinion, figures = test_figures(context, model, parts.test, config.augment,
                                               config.eval_crops, config.workers, local,
                                               precision)
    if context.is_main:
        result = {"repeat": repeat, "seed": config.seed, "start": summary["start"],
                  "epochs_run": summary["epochs_run"],
                  "best_epoch": summary["best_epoch"], "test": figures,
                  "test_images": len(parts.test),
                  "test_groups": sorted({image.group for image in parts.test})}
        write_json(out / "test.json", result)
        write_predictions(out / "test_predictions.npz", predicted, opinion)
        scatter(predicted, opinion, figures, f"{config.dataset} split {repeat}",
                out / "scatter.png")
        return result
    return {}


def median_figures(results: list[dict]) -> dict:
    """Each figure's median over the splits where it is a number (a split whose predictions
    are constant has no PLCC: it does not make the others' median NaN); NaN where none is."""
    medians = {}
    for name in FIGURES:
        values = [r["test"][name] for r in results if math.isfinite(r["test"][name])]
        medians[name] = float(np.median(values)) if values else math.nan
    return medians


def undefined_figures(results: list[dict]) -> dict[str, int]:
    """How many splits left each figure undefined (NaN), where any did."""
    counts = {name: sum(not math.isfinite(r["test"][name]) for r in results) for name in FIGURES}
    return {name: count for name, count in counts.items() if count}


def median_line(summary: dict, repeats: int) -> str:
    """The median test figures on one line, with the splits that left a figure undefined
    (constant predictions) and so out of its median."""
    line = (f"test figures, median of {repeats} split(s): "
            + figures_line(summary["median"], FIGURES))
    if summary["undefined"]:
        line += "; left out as undefined: " + ", ".join(
            f"{name.upper()} in {count} split(s)" for name, count in summary["undefined"].items())
    return line


def _earlier_splits(out: Path, repeats: int) -> list[Path]:
    """The split folders of an earlier run in `out` that a run of `repeats` does not make."""
    numbered = {int(path.name.removeprefix("split-")): path for path in out.glob("split-*")
                if path.is_dir() and path.name.removeprefix("split-").isdigit()}
    return [numbered[number] for number in sorted(numbered) if number >= repeats]


def _earlier_run_notice(out: Path, repeats: int) -> str:
    beyond = _earlier_splits(out, repeats)
    removed = (f" ({', '.join(p.name for p in beyond)} of it removed when this one ends)"
               if beyond else "")
    return (f"{out} holds an earlier fine-tuning run: its files are replaced as this one "
            f"writes its own{removed}")


def _drop_earlier_splits(out: Path, repeats: int) -> None:
    """At a run's end: the earlier run's splits it did not make go (the summary and the
    scatter plots would otherwise mix two runs)."""
    for folder in _earlier_splits(out, repeats):
        shutil.rmtree(folder)


def _drop_earlier_checkpoints(out: Path) -> list[str]:
    """Once a fresh run's first model is built (it can no longer be refused at its start): an
    earlier run's split-*/last.pt go, so a --resume of this run never continues a split from a
    run of other settings it had not reached yet. The notice saying so, if any went."""
    dropped = [folder / checkpoint.LAST for folder in _earlier_splits(out, 0)
               if (folder / checkpoint.LAST).is_file()]
    for path in dropped:
        path.unlink()
    return [f"removed the earlier run's {', '.join(str(p) for p in dropped)} (a --resume of "
            "this run must not continue them)"] if dropped else []


def _resumed_splits(config: FinetuneConfig) -> list[bool]:
    """For --resume: which splits continue from their last.pt (those without one start
    afresh: the run had not reached them). FileNotFoundError where none has one."""
    kept = [(_split_folder(config, repeat) / checkpoint.LAST).is_file()
            for repeat in range(config.repeats)]
    if not any(kept):
        raise FileNotFoundError(f"{config.out} holds no split-*/{checkpoint.LAST} of "
                                f"{config.repeats} split(s): nothing to resume (drop --resume "
                                "to start afresh)")
    return kept


def _check_same_start(config: FinetuneConfig, resumed: list[bool]) -> None:
    """Where a resumed run has splits still to start from --pretrained-file: the file is
    there (a ModelInitError before any split trains, not once the begun ones have run) and
    holds the weights its other splits started from (the SHA-256 their last.pt records), or a
    ValueError: one run's figures would mix splits of two starts."""
    start = config.model.pretrained_file
    if start is None or not any(resumed):
        return
    if not Path(start).is_file():
        waiting = [r for r, begun in enumerate(resumed) if not begun]
        raise ModelInitError(f"pretrained file {start} does not exist, and split(s) "
                             f"{waiting} not begun start from it: put it back before "
                             "resuming (the begun splits go on from their last.pt)")
    continued = _split_folder(config, resumed.index(True)) / checkpoint.LAST
    saved = checkpoint.load(continued)["config"]
    check_start_kept(saved, config.to_json(), continued)
    recorded = saved.get("model", {}).get("pretrained_sha256")
    if recorded is not None and recorded != file_sha256(Path(start)):
        raise ValueError(f"--pretrained-file {start} holds other weights than {continued} "
                         f"started from (SHA-256 {recorded[:16]}...): the splits not begun "
                         "would start from them. Resume with that file, or use another --out")


def _pretrained_on_them(config: FinetuneConfig, images: list) -> str | None:
    """The notice of a fine-tune on shards whose start checkpoint was pretrained on some of
    their references: a split's test part may hold them, whose Q it learnt (None where it
    was not, or the start is another tool's weights, whose training is not known)."""
    start = config.model.pretrained_file
    if config.dataset != "shards" or start is None:
        return None
    try:
        trained = TrainedRun.read(start)
    except (FileNotFoundError, checkpoint.CheckpointError):
        return None
    return trained.seen_notice(start, config.root, {image.group for image in images},
                               "finetune")


def finetune(config: FinetuneConfig, resume: bool = False) -> dict:
    """Fine-tune and test every split; with `resume` an interrupted run of the same settings
    goes on: each split continues from its last.pt (exactly; a finished one trains no more
    and is tested again from its best.pt), those it had not reached start."""
    with distributed.started(config.device) as context, \
            sole_writer(config.out, "finetune", context):
        distributed.same_on_every_rank(context, "--resume", resume)
        config.optim.local_batch(context.world_size)  # an uneven one: before the data is read
        images = rated_datasets.load(config.dataset, config.root, config.refs, config.ensemble)
        rated_datasets.check_crop(images, config.augment.crop)
        distributed.print_notices(context, filter(None, [
            _stand_in_notice(config), published_split_notice(images, config.dataset,
                                                             config.repeats),
            _pretrained_on_them(config, images)]))
        splits = [checked_split(config, images, r, context.world_size)
                  for r in range(config.repeats)]  # every split refused before any is run
        out = Path(config.out)
        resumed = _resumed_splits(config) if resume else [False] * config.repeats
        if not all(resumed):
            _check_same_start(config, resumed)
        if not resume and (out / "results.json").exists():
            distributed.print_notices(context, [_earlier_run_notice(out, config.repeats)])
        recorded = {"root_resolved": resolved_root(config.root),  # what evaluate knows
                    "images_fingerprint": rated_datasets.fingerprint(images)}
        if config.ensemble and os.path.isfile(config.ensemble):  # found from any folder
            recorded["ensemble"] = os.path.abspath(config.ensemble)
        results = [_one_split(context, config, parts, r, recorded, resumed[r],
                              first_of_fresh_run=not resume and r == 0)
                   for r, parts in enumerate(splits)]
        if not context.is_main:
            return {}
        _drop_earlier_splits(out, config.repeats)
        summary = {"dataset": config.dataset, "root": config.root, "ensemble": config.ensemble,
                   "split_by": config.split_by,
                   "repeats": config.repeats, "images": len(images),
                   "median": median_figures(results), "splits": results,
                   "undefined": undefined_figures(results),
                   "start": results[0]["start"]}
        write_json(out / "results.json", summary)
        print(median_line(summary, config.repeats))
        print(f"results in {out / 'results.json'}, scatter plots in {out}/split-*/scatter.png")
        return summary
