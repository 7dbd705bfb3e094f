"""`train evaluate`: a checkpoint's PLCC, SROCC, KRCC and RMSE on a human-rated dataset (all
of it, or the test part of a seeded split), with the scatter plot."""

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from labelers.correlation import MIN_PAIRS
from labelers.registry import metric_class
from shards.storage import redact
from shards.words import a_few
from training import distributed, rated_datasets
from training.correlation import CORE_FIGURES, report
from training.finetune import FinetuneConfig, test_figures
from training.image_data import split
from training.model import ModelConfig, build_model, check_all_loaded
from training.output_lease import sole_writer
from training.plots import scatter
from training.precision import Precision
from training.results_files import figures_line, write_json, write_predictions
from training.settings import check_count, check_shared
from training.shard_data import CLASS_TARGETS, GRID_TARGETS, METRIC_KEYS
from training.trained import TrainedRun
from training.transforms import EVAL_CROPS, Augment


@dataclass(frozen=True)
class EvaluateConfig:
    checkpoint: str
    dataset: str
    root: str
    out: str
    subset: str = "all"          # all | test (the test part of the seeded split)
    # the split of --subset test; None: the checkpoint's own where it was fine-tuned on this
    # dataset (reference, seed 0, split 0 otherwise)
    split_by: str | None = None
    seed: int | None = None
    repeat: int | None = None    # which split of the seeded scheme (finetune's split-K)
    crop: int | None = None     # default: the checkpoint's training crop
    eval_crops: int = EVAL_CROPS
    batch_size: int = 16
    refs: tuple[str, ...] = ()
    workers: int = 2
    device: str = "auto"
    ensemble: str | None = None  # shards: Q under this ensemble, not the stored one

    def __post_init__(self):
        check_shared(self.workers, self.seed, self.device)
        check_count("repeat", self.repeat, 0, optional=True)
        check_count("crop", self.crop, 16, optional=True)
        check_count("eval_crops", self.eval_crops, 1)
        check_count("batch_size", self.batch_size, 1)


# the split finetune makes first with its defaults (split-0)
SPLIT_DEFAULTS = {"split_by": FinetuneConfig.split_by, "seed": FinetuneConfig.seed, "repeat": 0}


def _learnt_ensemble(trained: TrainedRun, config: EvaluateConfig, notices: list[str],
                     how: str) -> EvaluateConfig:
    """Q under the ensemble whose Q the checkpoint learnt (`how`: fine-tuned, pretrained),
    where no other is chosen; a notice either way."""
    if config.ensemble is None and trained.ensemble is not None:
        notices.append(f"Q under ensemble {trained.ensemble}, which {config.checkpoint} was "
                       f"{how} on")
        return replace(config, ensemble=trained.ensemble)
    if config.ensemble != trained.ensemble:
        notices.append(f"{config.checkpoint} was {how} on Q under ensemble "
                       f"{trained.ensemble or '(the stored one)'}; it is tested on Q under "
                       f"{config.ensemble}")
    return config


def _own_choices(trained: TrainedRun, config: EvaluateConfig,
                 notices: list[str]) -> EvaluateConfig:
    """On the dataset the checkpoint was fine-tuned on: its references (for its own split's
    test part) and the ensemble whose Q it learnt, where no others are chosen."""
    if config.subset == "test" and not config.refs:
        config = replace(config, refs=trained.refs)
    return _learnt_ensemble(trained, config, notices, "fine-tuned")


def _pretrained_choices(trained: TrainedRun, config: EvaluateConfig,
                        notices: list[str]) -> EvaluateConfig:
    """On the shards the checkpoint was pretrained on: Q under the ensemble it learnt where
    no other is chosen, and a notice naming the references it trained on among those
    evaluated."""
    config = _learnt_ensemble(trained, config, notices, "pretrained")
    seen = trained.seen_notice(config.checkpoint, config.root, set(config.refs), "evaluate")
    notices.extend([seen] if seen else [])
    return config


def _trained_images_notice(trained: TrainedRun, config: EvaluateConfig) -> list[str]:
    """Where all of the dataset a checkpoint was fine-tuned on is evaluated: a notice that
    the images evaluated hold those it trained on, unless it was fine-tuned on some of the
    references (--refs) and none of them is evaluated."""
    if trained.refs and config.refs:
        shared = sorted(set(trained.refs) & set(config.refs))
        if not shared:
            return []
        return [f"{config.checkpoint} was fine-tuned on a split of references that holds "
                f"{a_few(shared)} of those evaluated: their images may be ones it trained on "
                "(optimistic figures); --subset test tests its own split's test part"]
    return [f"{config.checkpoint} was fine-tuned on this dataset: all of it holds the images "
            "it trained on (optimistic figures); --subset test tests its own split's test "
            "part"]


def _without_trained_images(trained: TrainedRun, config: EvaluateConfig, images: list,
                            notices: list[str]) -> list:
    """The images to test on a dataset not known as the checkpoint's own (a copy changed
    since, or another that shares images with it): with --subset test, less those it was
    fine-tuned on (a test part holds none it trained on); with --subset all, all of them and
    a notice of those it trained on."""
    seen = trained.trained_on(images)
    if not seen:
        return images
    part = "of the test part " if config.subset == "test" else ""
    said = (f"{len(seen)} of the {len(images)} images {part}are ones {config.checkpoint} was "
            f"fine-tuned on ({a_few([image.name for image in seen])}: the same reference and "
            "name as in its split's train or validation part, or, split by reference, another "
            "image of one of its references)")
    if config.subset == "all":
        notices.append(f"{said}: optimistic figures; --subset test leaves them out")
        return images
    seen_ids = {id(image) for image in seen}
    kept = [image for image in images if id(image) not in seen_ids]
    if len(kept) < MIN_PAIRS:
        raise ValueError(f"{said}: {len(kept)} left to test, fewer than the {MIN_PAIRS} its "
                         "correlations need; test it on a dataset it never saw")
    notices.append(f"{said}: left out, {len(kept)} tested")
    return kept


def _load(trained: TrainedRun, config: EvaluateConfig, notices: list[str]
          ) -> tuple[EvaluateConfig, list, bool]:
    """(the config with the checkpoint's own choices where the dataset is its own, the
    images, whether it is its own: read from the root it was fine-tuned on, or holding the
    same images elsewhere)."""
    if config.dataset == "shards" and trained.pretrained_on(config.root):
        config = _pretrained_choices(trained, config, notices)
    own = trained.fine_tuned_on(config.dataset, config.root)
    if own:
        config = _own_choices(trained, config, notices)
    images = rated_datasets.load(config.dataset, config.root, config.refs, config.ensemble)
    if own or not (trained.fine_tuned and trained.dataset == config.dataset):
        return config, images, own
    wanted = set(trained.refs)  # the references it was fine-tuned on, among those read
    chosen_images = [image for image in images if image.group in wanted] if wanted else images
    fingerprint = rated_datasets.fingerprint(chosen_images)
    if trained.fine_tuned_on(config.dataset, config.root, fingerprint):
        notices.append(f"{redact(str(config.root))} holds the images {config.checkpoint} was "
                       f"fine-tuned on (read from {redact(str(trained.root))} then): tested as its "
                       "own dataset")
        chosen = _own_choices(trained, config, notices)
        if chosen != config:
            images = rated_datasets.load(chosen.dataset, chosen.root, chosen.refs, chosen.ensemble)
        return chosen, images, True
    notices.append(f"{config.checkpoint} was fine-tuned on {config.dataset} read from "
                   f"{redact(str(trained.root))}, and {redact(str(config.root))} is not known "
                   "to hold the same images: it is tested as a dataset the checkpoint never "
                   "saw")
    return config, images, False


def test_split(trained: TrainedRun, config: EvaluateConfig, own: bool,
               images: list[rated_datasets.LabelledImage]) -> dict:
    """{split_by, seed, repeat} of the test part. A checkpoint fine-tuned on this dataset
    (`own`) is tested on its own split's test part: another split's holds images it trained
    on, so a choice that differs from the recorded one is refused (as are other --refs), and
    so is a dataset whose images are no longer those it split (its split is a function of
    them: made again over others, its test part would hold references it trained on)."""
    chosen = {name: getattr(config, name) for name in SPLIT_DEFAULTS}
    if not own:
        return {name: SPLIT_DEFAULTS[name] if value is None else value
                for name, value in chosen.items()}
    recorded = {name: getattr(trained, name) for name in SPLIT_DEFAULTS}
    differ = [f"--{name.replace('_', '-')} {value} (it was {recorded[name]})"
              for name, value in chosen.items() if value is not None and value != recorded[name]]
    if sorted(trained.refs) != sorted(config.refs):
        differ.append(f"--refs {','.join(config.refs) or '(all)'} (it was "
                      f"{','.join(trained.refs) or '(all)'})")
    if differ:
        raise ValueError(f"{config.checkpoint} was fine-tuned on split {recorded['repeat']} of "
                         f"{config.dataset} (seed {recorded['seed']}, by "
                         f"{recorded['split_by']}): with {', '.join(differ)} its test part "
                         "would hold images it trained on; leave them out to test on its own "
                         "split, or use --subset all")
    now = rated_datasets.fingerprint(images)
    if trained.images is not None and now != trained.images:
        raise ValueError(f"{redact(str(config.root))} no longer holds the images "
                         f"{config.checkpoint} was fine-tuned on (fingerprint "
                         f"{trained.images} then, {now} now: images added, removed or "
                         "renamed), so its split's test part cannot be made again; test it "
                         "on a dataset it never saw, or with --subset all (images it trained "
                         "on included)")
    return recorded


@dataclass(frozen=True)
class QualityModel:
    """A checkpoint's quality model on its device, ready to score."""

    model: nn.Module
    precision: Precision
    augment: Augment      # the input it was trained on (crop, normalisation)
    trained: TrainedRun   # the run that made the checkpoint

    @property
    def lower_is_better(self) -> bool:
        """Whether it predicts a metric whose lower scores are better (one head that learnt
        GMSD's, MAE's, ... raw scores): opinion scores rise with quality, so its predictions
        are negated before they are compared with them."""
        target, *others = self.trained.targets
        return not others and target in METRIC_KEYS and not metric_class(target).higher_is_better


def quality_model(path: str, crop: int | None, device: torch.device) -> QualityModel:
    """The quality model (or a multi-head model's quality head) of the checkpoint at `path`,
    at `crop` (default its training crop); a ValueError naming why where the checkpoint has
    none (label-free, or classes only)."""
    trained = TrainedRun.read(path)
    if trained.objective:  # recorded only for the label-free objectives
        raise ValueError(f"{path} was pretrained {trained.objective} (label-free): its "
                         "quality head never learnt; fine-tune it (train finetune "
                         "--pretrained-file) or probe its features (train probe)")
    names = trained.targets
    # one head: any regression target; several: the quality head is read
    usable = ("quality" in names if len(names) > 1
              else names[0] not in (*CLASS_TARGETS, *GRID_TARGETS))
    if not usable:
        raise ValueError(f"{path} learnt {','.join(names)}; a quality model (or head) is "
                         "needed here")
    model_config = ModelConfig(trained.backbone, init="random", pretrained_file=path,
                               precision=trained.precision)
    model = build_model(model_config).model
    check_all_loaded(model, path, trained.backbone)
    precision = Precision.resolve(model_config.precision, device)
    precision.prepare(model.to(device))
    return QualityModel(model, precision, trained.augment(crop), trained)


def evaluate(config: EvaluateConfig) -> dict:
    with distributed.started(config.device) as context, \
            sole_writer(config.out, "evaluate", context):
        scorer = quality_model(config.checkpoint, config.crop, context.device)
        augment = scorer.augment
        notices: list[str] = []
        config, images, own = _load(scorer.trained, config, notices)
        if own and config.subset == "all":
            notices.extend(_trained_images_notice(scorer.trained, config))
        # before a split is refused: what it was taken for
        distributed.print_notices(context, notices)
        rated_datasets.check_crop(images, augment.crop)
        parts = (test_split(scorer.trained, config, own, images) if config.subset == "test"
                 else None)
        if parts is not None:
            images = split(images, parts["split_by"], parts["seed"], parts["repeat"]).test
        elif config.subset != "all":
            raise ValueError(f"--subset must be all or test, got {config.subset!r}")
        if not own:  # its own split's test part holds none by its making
            left: list[str] = []
            images = _without_trained_images(scorer.trained, config, images, left)
            distributed.print_notices(context, left)
        rated_datasets.check_testable(images, f"{config.dataset} ({config.subset})")
        predicted, opinion, figures = test_figures(
            context, scorer.model, images, augment, config.eval_crops,
            config.workers, max(1, config.batch_size // context.world_size), scorer.precision)
        if scorer.lower_is_better:
            predicted = -predicted
            figures = report(predicted, opinion)
        if not context.is_main:
            return {}
        out = Path(config.out)
        out.mkdir(parents=True, exist_ok=True)
        result = {"checkpoint": config.checkpoint, "dataset": config.dataset,
                  "root": config.root, "subset": config.subset, "split": parts,
                  "crop": augment.crop, "eval_crops": config.eval_crops,
                  "figures": figures,
                  "ensemble": config.ensemble,
                  "predictions": (f"-{scorer.trained.targets[0]} (lower is better: negated)"
                                  if scorer.lower_is_better else scorer.trained.targets[0]),
                  "trained_on": scorer.trained.dataset}  # for `train compare`
        write_json(out / "evaluation.json", result)
        write_predictions(out / "predictions.npz", predicted, opinion)
        scatter(predicted, opinion, figures, f"{config.dataset} ({config.subset})",
                out / "scatter.png")
        print(figures_line(figures, CORE_FIGURES)
              + f"  on {figures['count']} images; {out / 'evaluation.json'}")
        return result
