"""`train probe`: how much quality a frozen encoder's features hold, read out linearly (as
Re-IQA's evaluation, on crops; `half_scale` joins their half-size copies'): ridge on the pooled
features of a checkpoint (any objective's) or of a baseline start, on repeated seeded 70/10/20
splits of a human-rated dataset (by reference), the penalty chosen on the validation part,
the median test figures reported as fine-tuning reports them. With a test dataset, each
split's read-out is tested on all of that one instead (cross-dataset)."""

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from labelers.correlation import MIN_PAIRS, figure_text
from shards.words import a_few
from training import distributed, rated_datasets
from training.correlation import report
from training.distributed import Context
from training.features import (
    Encoder,
    EncoderConfig,
    FeatureFile,
    cached_features,
    frozen_encoder,
)
from training.finetune import median_figures, median_line, undefined_figures
from training.image_data import published_split_notice, split
from training.output_lease import sole_writer
from training.plots import scatter
from training.rated_datasets import LabelledImage, check_testable
from training.results_files import write_json, write_predictions
from training.ridge import ALPHA_GRID, select_ridge
from training.settings import check_count, check_shared
from training.trained import TrainedRun, resolved_root
from training.transforms import EVAL_CROPS

KIND = "probe"  # results.json's `kind`, for `train compare`


@dataclass(frozen=True)
class Fractions:
    """Train / validation / test shares of the references (or images), in any unit."""

    train: float = 70
    val: float = 10
    test: float = 20

    def __post_init__(self):
        if not all(0 < share < math.inf for share in (self.train, self.val, self.test)):
            raise ValueError(f"the train, validation and test fractions must all be positive "
                             f"numbers, got {self.train}/{self.val}/{self.test}")

    @classmethod
    def parse(cls, text: str) -> "Fractions":
        parts = text.split("/")
        try:
            if len(parts) != 3:
                raise ValueError(f"{len(parts)} parts")
            return cls(*(float(part) for part in parts))
        except ValueError:
            raise ValueError(f"--fractions takes three positive numbers as TRAIN/VAL/TEST "
                             f"(70/10/20), got {text!r}") from None

    @property
    def test_share(self) -> float:
        return self.test / (self.train + self.val + self.test)

    @property
    def val_share(self) -> float:
        """The validation part's share of what is not test."""
        return self.val / (self.train + self.val)


@dataclass(frozen=True)
class Benchmark:
    kind: str                       # a kind of training.rated_datasets.LOADERS
    root: str
    refs: tuple[str, ...] = ()      # shards only: the references to use
    ensemble: str | None = None     # shards only: Q under this ensemble, not the stored one

    def load(self) -> list[LabelledImage]:
        """Its images; their names key the features, so they must not repeat."""
        images = rated_datasets.load(self.kind, self.root, self.refs, self.ensemble)
        names = [image.name for image in images]
        if len(set(names)) != len(names):
            repeated = sorted({name for name in names if names.count(name) > 1})
            raise rated_datasets.DatasetLayoutError(
                f"{self.root} lists images more than once ({', '.join(repeated[:3])}): a "
                "probe keys features by image name")
        return images


@dataclass(frozen=True)
class ProbeConfig:
    dataset: Benchmark
    out: str
    encoder: EncoderConfig
    test_dataset: Benchmark | None = None   # cross-dataset: test on all of this one
    split_by: str = "reference"             # reference | image
    repeats: int = 10
    fractions: Fractions = field(default_factory=Fractions)
    eval_crops: int = EVAL_CROPS
    batch_size: int = 32
    workers: int = 2
    seed: int = 0
    device: str = "auto"
    half_scale: bool = False  # also the crops at half size, their features joined (Re-IQA)

    def __post_init__(self):
        check_shared(self.workers, self.seed, self.device)
        for name in ("repeats", "eval_crops", "batch_size"):
            check_count(name, getattr(self, name), 1)


@dataclass(frozen=True)
class Table:
    """A dataset's images and their features, row by row."""

    images: list[LabelledImage]
    features: np.ndarray

    @property
    def scores(self) -> np.ndarray:
        return np.array([image.score for image in self.images])

    def rows(self, part: list[LabelledImage]) -> tuple[np.ndarray, np.ndarray]:
        """The features and scores of `part` (a subset of the images)."""
        position = {image.name: row for row, image in enumerate(self.images)}
        rows = [position[image.name] for image in part]
        return self.features[rows], self.scores[rows]


def one_split(config: ProbeConfig, table: Table, test_table: Table | None,
              repeat: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """Split `repeat`: the read-out fitted on its train part (penalty by its validation part),
    tested on its test part or, cross-dataset, on all of `test_table`; also the test
    predictions and opinion scores."""
    parts = split(table.images, config.split_by, config.seed, repeat,
                  val_fraction=config.fractions.val_share,
                  test_fraction=config.fractions.test_share)
    no_val = parts.val is parts.train  # too few references to hold some out
    chosen = select_ridge(table.rows(parts.train),
                          None if no_val else table.rows(parts.val)).ridge
    held_out = table.rows(parts.test)
    result = {"repeat": repeat, "seed": config.seed, "alpha": chosen.alpha,
              "train_images": len(parts.train), "val_images": 0 if no_val else len(parts.val),
              "val_is_train": no_val, "test_images": len(parts.test),
              "test_groups": sorted({image.group for image in parts.test})}
    if test_table is None:  # (what is tested was checked before: _check_parts)
        features, opinion = held_out
    else:
        features, opinion = test_table.features, test_table.scores
        if len(parts.test) >= MIN_PAIRS:  # the first dataset's own test part, for reference
            result["held_out"] = report(chosen.predict(held_out[0]), held_out[1])
    predicted = chosen.predict(features)
    result["test"] = report(predicted, opinion)
    return result, predicted, opinion


def _median_split(results: list[dict]) -> int:
    """The split whose test SROCC is nearest the median of those that are numbers: the middle
    split, or of an even count (whose median, median_figures', is the two middles' mean) the
    lower middle; the first split where none is a number."""
    numbers = [i for i, result in enumerate(results) if math.isfinite(result["test"]["srocc"])]
    if not numbers:
        return 0
    numbers.sort(key=lambda i: results[i]["test"]["srocc"])  # (stable: ties by split)
    return numbers[(len(numbers) - 1) // 2]


def split_line(result: dict) -> str:
    """A split's line on screen: its parts' sizes, the ridge's alpha and the test SROCC."""
    return (f"split {result['repeat']}: {result['train_images']} train, "
            f"{result['val_images']} val, {result['test']['count']} test images; alpha "
            f"{result['alpha']:.3g}; test SROCC {figure_text(result['test']['srocc'])}")


def _notices(config: ProbeConfig, table: Table, results: list[dict],
             test_images: list[LabelledImage]) -> list[str]:
    notices = list(filter(None, [published_split_notice(table.images, config.dataset.kind,
                                                        config.repeats)]))
    if any(result["val_is_train"] for result in results):
        notices.append("too few references to hold a validation part out: the penalty was "
                       "chosen by leave-one-out on the training images (by image: optimistic "
                       "where images share a reference)")
    if config.dataset.kind == "shards":
        notices.append("the shards' ensemble labels Q stand in for opinion scores here")
    if config.test_dataset is not None:
        notices.extend(filter(None, [shared_images_notice(table.images, test_images)]))
    checkpoint = config.encoder.checkpoint
    tested = config.test_dataset or config.dataset
    trained = TrainedRun.read(checkpoint) if checkpoint is not None else None
    if trained is not None and trained.fine_tuned_on(tested.kind, tested.root,
                                                     rated_datasets.fingerprint(test_images)):
        notices.append(f"{checkpoint} was fine-tuned on {tested.root}: its features learnt "
                       "the scores of images tested here (optimistic figures); probe a "
                       "pretrained checkpoint, or test on a dataset it never saw")
    elif trained is not None and (seen := trained.trained_on(test_images)):
        notices.append(f"{checkpoint} was fine-tuned on {len(seen)} of the {len(test_images)} "
                       f"images tested here ({a_few([image.name for image in seen])}: the "
                       "same reference and name, or, split by reference, another image of "
                       "one of its references): its features learnt them (optimistic "
                       "figures)")
    if trained is not None and tested.kind == "shards":
        seen = trained.seen_notice(checkpoint, tested.root,
                                   {image.group for image in test_images}, "probe")
        notices.extend([seen] if seen else [])
    return notices


def shared_images_notice(fitted: list[LabelledImage], tested: list[LabelledImage]
                         ) -> str | None:
    """The notice of a cross-dataset test that holds some of the images the ridge is fitted
    on (the same reference and name in both; none where it holds none)."""
    shared = sorted({(image.group, image.name) for image in fitted}
                    & {(image.group, image.name) for image in tested})
    if not shared:
        return None
    return (f"{len(shared)} of the {len(tested)} test images are also in --dataset "
            f"({a_few([name for _, name in shared])})"
            ": a split whose train part holds them is tested on images its ridge was fitted "
            "on (optimistic figures); test on images --dataset does not hold")


def check_cross_dataset(images: list[LabelledImage], test_images: list[LabelledImage]) -> None:
    """A cross-dataset test on the images the ridge trains on is no cross-dataset test."""
    if rated_datasets.fingerprint(images) == rated_datasets.fingerprint(test_images):
        raise ValueError("--test-dataset holds the images of --dataset, on which the ridge "
                         "is fitted: it would be tested on its training images; leave "
                         "--test-dataset out to test on each split's held-out part")


def _summary(config: ProbeConfig, encoder: Encoder, table: Table, test_table: Table | None,
             results: list[dict]) -> dict:
    tested = config.test_dataset or config.dataset
    return {"kind": KIND, "start": encoder.start, "backbone": encoder.backbone,
            "crop": encoder.augment.crop, "eval_crops": config.eval_crops,
            "half_scale": config.half_scale,
            "dataset": config.dataset.kind, "root": config.dataset.root,
            "test_dataset": tested.kind, "test_root": tested.root,
            "cross_dataset": config.test_dataset is not None, "split_by": config.split_by,
            "fractions": asdict(config.fractions), "repeats": config.repeats,
            "images": len(table.images), "features": int(table.features.shape[1]),
            "test_images": len(test_table.images) if test_table else None,
            "selection": "the least validation RMSE over alpha_grid (a per-sample penalty "
                         "on standardised features; leave-one-out RMSE on the train part "
                         "where val_is_train); weights fitted on the train part only",
            "alpha_grid": list(ALPHA_GRID), "median": median_figures(results),
            "undefined": undefined_figures(results),
            "median_split": _median_split(results), "splits": results}


def _check_parts(config: ProbeConfig, images: list[LabelledImage],
                 test_images: list[LabelledImage] | None) -> None:
    """A ValueError, before any feature is computed, where a split's train part is too small
    for the ridge (2 images), or what is tested (its test part, or the test dataset) for the
    correlations."""
    if test_images is not None:
        check_testable(test_images, f"the test dataset {config.test_dataset.root}")
    for repeat in range(config.repeats):
        parts = split(images, config.split_by, config.seed, repeat,
                      val_fraction=config.fractions.val_share,
                      test_fraction=config.fractions.test_share)
        if len(parts.train) < 2:
            raise ValueError(f"the train part of split {repeat} has {len(parts.train)} "
                             "image(s); the ridge needs 2 at least (a larger dataset, or "
                             "smaller --fractions for validation and test)")
        if test_images is None:
            check_testable(parts.test, f"the test part of split {repeat}")


def _features(context: Context, config: ProbeConfig, encoder: Encoder, benchmark: Benchmark,
              images: list[LabelledImage], file_name: str) -> Table | None:
    rated_datasets.check_crop(images, encoder.augment.crop)
    source = {"encoder": encoder.fingerprint, "backbone": encoder.backbone,
              "augment": asdict(encoder.augment), "precision": encoder.precision.name,
              "dataset": benchmark.kind, "root": resolved_root(benchmark.root),
              "refs": list(benchmark.refs), "eval_crops": config.eval_crops,
              "seed": config.seed, **({"half_scale": True} if config.half_scale else {})}
    features = cached_features(context, encoder, images,
                               FeatureFile(Path(config.out) / file_name, source),
                               config.eval_crops,
                               max(1, config.batch_size // context.world_size),
                               config.workers, config.seed, config.half_scale)
    return Table(images, features) if context.is_main else None


def _write(config: ProbeConfig, summary: dict, predicted: np.ndarray,
           opinion: np.ndarray) -> None:
    out = Path(config.out)
    write_json(out / "results.json", summary)
    write_predictions(out / "test_predictions.npz", predicted, opinion)
    median = summary["splits"][summary["median_split"]]
    scatter(predicted, opinion, median["test"],
            f"probe {summary['dataset']} -> {summary['test_dataset']}, split "
            f"{median['repeat']} (nearest the median SROCC)", out / "scatter.png")
    print(median_line(summary, config.repeats))
    print(f"results in {out / 'results.json'}, scatter plot of the median split in "
          f"{out / 'scatter.png'}")


def probe(config: ProbeConfig) -> dict:
    with distributed.started(config.device) as context, \
            sole_writer(config.out, "probe", context):
        encoder = frozen_encoder(config.encoder, context.device, config.seed)
        distributed.print_notices(context, encoder.notices)
        images = config.dataset.load()
        test_images = config.test_dataset.load() if config.test_dataset else None
        if test_images is not None:
            check_cross_dataset(images, test_images)
        _check_parts(config, images, test_images)
        table = _features(context, config, encoder, config.dataset, images, "features.npz")
        test_table = (_features(context, config, encoder, config.test_dataset, test_images,
                                "test_features.npz") if test_images is not None else None)
        if not context.is_main:
            return {}
        runs = [one_split(config, table, test_table, r) for r in range(config.repeats)]
        results = [result for result, _, _ in runs]
        distributed.print_notices(context, _notices(config, table, results,
                                                    (test_table or table).images))
        for result in results:
            print(split_line(result))
        summary = _summary(config, encoder, table, test_table, results)
        _, predicted, opinion = runs[summary["median_split"]]
        _write(config, summary, predicted, opinion)
        return summary
