"""`iqa-factory train pretrain|finetune|evaluate|predict|probe|compare`, also `torchrun
--nproc_per_node=N -m training pretrain|finetune|evaluate|predict|probe` (DDP; one process
when not launched by torchrun)."""

import argparse
import re
import signal
import sys
import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from shards.arguments import integer_at_least
from shards.lease import LeaseError
from shards.stopping import stops_as_interrupts, terminated
from shards.storage import file_in_the_way, redact
from training import predict as prediction
from training.checkpoint import BEST, LAST
from training.compare import table
from training.distributed import CollectiveError
from training.evaluate import EvaluateConfig, evaluate
from training.features import BASELINE_INITS, EncoderConfig
from training.finetune import FinetuneConfig, finetune
from training.image_data import SPLIT_BY
from training.loop import NonFiniteError
from training.model import INIT_MODES, PRECISIONS, ModelConfig, ModelInitError, backbone_input
from training.objectives import OBJECTIVES, ObjectiveConfig
from training.objectives.base import OPTIM_DEFAULTS
from training.optim import FINETUNE, OPTIMIZERS, PRETRAIN, SCHEDULES, OptimConfig
from training.pretrain import PretrainConfig, pretrain
from training.probe import Benchmark, Fractions, ProbeConfig, probe
from training.rated_datasets import LOADERS, DatasetLayoutError
from training.settings import DEVICES
from training.shard_data import TARGETS, Target
from training.transforms import EVAL_CROPS, Augment

POSITIVE, NON_NEGATIVE = integer_at_least(1), integer_at_least(0)


def _last_line(message: str) -> str:
    """An error's message, less the traceback (and the exception's qualified name before the
    message) a DataLoader worker's error carries with it."""
    if "Original Traceback" not in message:
        return message
    return re.sub(r"^[\w.]+: ", "", message.strip().splitlines()[-1], count=1)


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _targets(text: str) -> tuple[str, ...]:
    names = _names(text)
    unknown = [name for name in names if name not in TARGETS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"targets must be among {', '.join(TARGETS)}; got "
                                         f"{text!r}")
    return names


def _weights(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(value) for value in _names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated numbers, got {text!r}") from None


def _add_model(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--backbone", default="resnet50",
                       help="any timm model name (default resnet50; nasnetalarge as in the "
                            "reference setup)")
    group.add_argument("--init", choices=INIT_MODES, default="auto",
                       help="auto: ImageNet weights through timm when they can be obtained, "
                            "random otherwise (with a notice); default auto")
    group.add_argument("--pretrained-file", default=None,
                       help="start from a local checkpoint (this project's, or a state dict)")
    group.add_argument("--drop-path", type=float, default=0.0,
                       help="final ScheduledDropPath rate (nasnetalarge: on every cell's "
                            "operations, as NASNet; other backbones: where timm has drop-path; "
                            "default 0: none)")
    group.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="auto: bf16 autocast and channels_last on CUDA, float32 on a CPU "
                            "(default auto)")


def _add_optim(parser: argparse.ArgumentParser, defaults: OptimConfig,
               lr_help: str | None = None) -> None:
    group = parser.add_argument_group("optimisation")
    group.add_argument("--lr", type=float, default=defaults.lr,
                       help=lr_help or f"Adam learning rate (default {defaults.lr})")
    by_objective = lr_help is not None  # pretrain: the step schedule is the objective's too
    group.add_argument("--halve-every", type=POSITIVE, default=defaults.halve_every,
                       help="step the learning rate down (x --lr-decay) every N epochs "
                            + ("(default: the objective's, 20; restoration 10, MT-IRN's)"
                               if by_objective else f"(default {defaults.halve_every})"))
    group.add_argument("--lr-decay", type=float, default=defaults.decay, metavar="FACTOR",
                       help="the step schedule's factor, in (0, 1] "
                            + ("(default: the objective's, 0.5; restoration 0.9, MT-IRN's)"
                               if by_objective else f"(default {defaults.decay:g}: halving)"))
    group.add_argument("--epochs", type=POSITIVE, default=defaults.epochs,
                       help=f"at most this many epochs (default {defaults.epochs})")
    group.add_argument("--batch-size", type=POSITIVE, default=defaults.batch_size,
                       help="GLOBAL batch, split across the ranks (default 16)")
    group.add_argument("--patience", type=POSITIVE, default=defaults.patience,
                       help="stop after N epochs without validation improvement (default 3)")
    group.add_argument("--loss", default=defaults.loss,
                       help="'+'-joined terms among mse, mae, srocc, plcc "
                            "(default mse+mae+srocc)")
    group.add_argument("--soft-rank-temperature", type=float, default=defaults.temperature,
                       help="temperature of the soft rank in the srocc loss term, a share "
                            "of the batch predictions' standard deviation (default "
                            f"{defaults.temperature:g})")


def _add_augment(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("augmentation")
    group.add_argument("--crop", type=POSITIVE, default=None,
                       help="network input size (default: the backbone's, from timm: 224 "
                            "for resnet50, 331 for nasnetalarge)")
    group.add_argument("--no-flip", action="store_true", help="no random horizontal flip")
    group.add_argument("--translate", type=float, default=0.0,
                       help="random shift up to this fraction of the size (default 0)")
    group.add_argument("--rotate", type=float, default=0.0,
                       help="random rotation up to this many degrees (default 0)")


def _add_common(parser: argparse.ArgumentParser, seed_help: str = "0 or more (default 0)"
                ) -> None:
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=NON_NEGATIVE, default=0, help=seed_help)
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto: cuda where a GPU is visible, else cpu (default auto)")
    parser.add_argument("--workers", type=NON_NEGATIVE, default=2,
                        help="data loader processes per rank (default 2)")


def _add_training(parser: argparse.ArgumentParser, defaults: OptimConfig, run,
                  lr_help: str | None = None) -> None:
    """The options every training command shares, with its own optimiser defaults."""
    _add_common(parser)
    _add_model(parser)
    _add_optim(parser, defaults, lr_help)
    _add_augment(parser)
    parser.set_defaults(run=run)


def _model(args) -> ModelConfig:
    return ModelConfig(args.backbone, args.init, args.pretrained_file, args.drop_path,
                       args.precision)


def _optim(args) -> OptimConfig:
    """The optimisation settings; pretrain's optimiser, schedule, weight decay and learning
    rate default to the objective's (OPTIM_DEFAULTS)."""
    chosen = OPTIM_DEFAULTS[getattr(args, "objective", "regression")]

    def given(name: str):
        value = getattr(args, name, None)
        return getattr(chosen, name.removeprefix("lr_")) if value is None else value
    return OptimConfig(given("lr"), given("halve_every"), args.epochs, args.batch_size,
                       args.patience, args.loss, args.soft_rank_temperature,
                       getattr(args, "checkpoint_every", 0),  # pretrain's: it resumes mid-epoch
                       given("optimizer"), given("schedule"), given("weight_decay"),
                       given("lr_decay"))


def _objective(args) -> ObjectiveConfig:
    return ObjectiveConfig(args.objective, args.versions, args.temperature, args.queue_size,
                           args.moco_momentum, half_scale=not args.no_half_scale,
                           key_splits=args.key_splits)


def _add_objective(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "objective", "what pretraining learns; the label-free ones read groups of the "
        "shards (chunks, pairs, triplets) and stop early on the validation loss")
    group.add_argument("--objective", choices=OBJECTIVES, default="regression",
                       help="regression: the --target labels (default); contrastive: "
                            "Re-IQA's MoCo-v2 on two overlapping views of each image of a "
                            "chunk, at full and half scale; reconstruction: CoAE's "
                            "encoder-decoder giving back pristine and distorted crops (L1, + "
                            "LPIPS when its weights exist); restoration: MT-IRN's "
                            "encoder-decoder predicting the reference and the SSIM map (L1)")
    group.add_argument("--versions", type=POSITIVE, default=None,
                       help="label-free: versions drawn per reference and epoch (default "
                            "all; contrastive: 11 of different types, Re-IQA's chunk)")
    group.add_argument("--temperature", type=float, default=ObjectiveConfig().temperature,
                       help="contrastive: InfoNCE temperature (default 0.2, MoCo-v2's)")
    group.add_argument("--queue-size", type=POSITIVE, default=ObjectiveConfig().queue_size,
                       help="contrastive: negative keys kept (default 65536, MoCo's)")
    group.add_argument("--moco-momentum", type=float,
                       default=ObjectiveConfig().moco_momentum,
                       help="contrastive: the key encoder's momentum (default 0.999)")
    group.add_argument("--key-splits", type=POSITIVE, default=ObjectiveConfig().key_splits,
                       help="contrastive: shuffling-BN parts per rank: the keys of every "
                            "rank are shuffled and encoded in ranks x this many parts "
                            "(default 1, MoCo's one per GPU; on one GPU 1 leaves batch-norm "
                            "backbones unshuffled, 2-8 emulates that many GPUs)")
    group.add_argument("--no-half-scale", action="store_true",
                       help="contrastive: full-scale views only (Re-IQA uses both scales)")
    group.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                       help="default: the objective's (adam; sgd with momentum 0.9 for "
                            "contrastive)")
    group.add_argument("--schedule", choices=SCHEDULES, default=None,
                       help="learning-rate schedule; default: the objective's (halving; "
                            "cosine for contrastive)")
    group.add_argument("--weight-decay", type=float, default=None,
                       help="default: the objective's (0; 1e-4 for contrastive, 5e-4 for "
                            "restoration)")


def _augment(args) -> Augment:
    """The augmentation, with the backbone's own input size (unless --crop) and normalisation."""
    expected = backbone_input(args.backbone)
    crop = args.crop or expected.size
    expected.check_crop(args.backbone, crop)
    return Augment(crop, not args.no_flip, args.translate, args.rotate, expected.mean,
                   expected.std)


def _given_objective_options(args) -> dict[str, dict[str, bool]]:
    """objective -> its own options -> whether each is given away from its default."""
    unset = ObjectiveConfig()
    return {
        "contrastive": {"--temperature": args.temperature != unset.temperature,
                        "--queue-size": args.queue_size != unset.queue_size,
                        "--moco-momentum": args.moco_momentum != unset.moco_momentum,
                        "--key-splits": args.key_splits != unset.key_splits,
                        "--no-half-scale": args.no_half_scale},
        "regression": {"--loss": args.loss != PRETRAIN.loss,
                       "--soft-rank-temperature": args.soft_rank_temperature
                       != PRETRAIN.temperature}}


def _unread_by_objective(args, given: dict[str, dict[str, bool]]) -> list[str]:
    """The given options of other objectives, the single-view augmentations of a grouped one
    (groups share plain or mirrored crops) and --versions of any but regression."""
    regression = args.objective == "regression"
    names = [name for objective, options in given.items() if objective != args.objective
             for name, set_ in options.items() if set_]
    if not regression:
        names += [name for name, set_ in (("--translate", args.translate != 0),
                                          ("--rotate", args.rotate != 0)) if set_]
    return names + (["--versions"] if regression and args.versions else [])


def _classes_only(args) -> bool:
    """Whether a pretraining run learns classes alone (cross-entropy, no regression loss)."""
    return (args.objective == "regression"
            and all(Target(name).kind != "regression" for name in args.target))


def _unread_by_target(args, given: dict[str, dict[str, bool]]) -> list[str]:
    """The given regression-loss options when every target is a class (cross-entropy)."""
    return [name for name, set_ in given["regression"].items() if set_ and _classes_only(args)]


def _unread_by_loss(args) -> list[str]:
    """--soft-rank-temperature given to a regression loss without the srocc term (the one
    the soft rank is of), in fine-tuning or in a pretraining run with a regression target."""
    pretraining = hasattr(args, "objective")
    if pretraining and (args.objective != "regression" or _classes_only(args)):
        return []  # (named as unread by the objective or the targets)
    given = args.soft_rank_temperature != (PRETRAIN if pretraining else FINETUNE).temperature
    return ["--soft-rank-temperature"] if given and not _optim(args).ranks_softly else []


def _unread_by_schedule(args) -> list[str]:
    """The step options of the halving schedule, given with the cosine one."""
    schedule = args.schedule or OPTIM_DEFAULTS[args.objective].schedule
    return [name for name, value in (("--halve-every", args.halve_every),
                                     ("--lr-decay", args.lr_decay))
            if value is not None and schedule == "cosine"]


def _unread_options(args) -> dict[str, list[str]]:
    """The options given (away from their defaults) that pretrain never reads with its
    --objective, --target and --schedule, by what leaves them unread: they would be recorded
    in its checkpoints, and refuse a resume, for nothing."""
    given = _given_objective_options(args)
    return {why: names for why, names in (
        (f"--objective {args.objective}", _unread_by_objective(args, given)),
        (f"--target {','.join(args.target)} (classes: cross-entropy)",
         _unread_by_target(args, given)),
        (_LOSS_WITHOUT_RANKS.format(args.loss), _unread_by_loss(args)),
        ("the cosine schedule (it takes no steps)", _unread_by_schedule(args))) if names}


_LOSS_WITHOUT_RANKS = "--loss {} (no srocc term, the soft rank's)"


def _refuse_unread(unread: dict[str, list[str]]) -> None:
    """A ValueError naming the options given that the run never reads, by what leaves them
    unread (_unread_options); an empty list of names is none."""
    unread = {why: names for why, names in unread.items() if names}
    if unread:
        count = sum(map(len, unread.values()))
        raise ValueError("; ".join(
            f"{', '.join(names)} {'does' if len(names) == 1 else 'do'} not apply to {why}"
            for why, names in unread.items())
            + f": leave {'it' if count == 1 else 'them'} out")


def _pretrain(args) -> int:
    # (a resume takes its checkpoint's settings, whatever a later version refuses of them:
    # one given that the checkpoint lacks is refused as another setting)
    _refuse_unread({} if args.resume else _unread_options(args))
    pretrain(PretrainConfig(
        args.dataset[0], args.out, _model(args), _optim(args),
        tuple(Target(name) for name in args.target), _augment(args), _names(args.val_refs),
        _names(args.exclude_refs), args.steps_per_epoch, args.val_limit or None, args.workers,
        args.seed, args.device, args.loss_weights, _objective(args), args.ensemble,
        tuple(args.dataset[1:])), resume=args.resume)
    return 0


def _finetune(args) -> int:
    _refuse_unread({} if args.resume else
                   {_LOSS_WITHOUT_RANKS.format(args.loss): _unread_by_loss(args)})
    finetune(FinetuneConfig(
        args.dataset, args.root, args.out, _model(args), _optim(args), _augment(args),
        args.split_by, args.repeats, args.eval_crops, _names(args.refs), args.workers,
        args.seed, args.device, args.ensemble), resume=args.resume)
    return 0


def _evaluate(args) -> int:
    evaluate(EvaluateConfig(args.checkpoint, args.dataset, args.root, args.out, args.subset,
                            args.split_by, args.seed, args.repeat, args.crop, args.eval_crops,
                            args.batch_size, _names(args.refs), args.workers, args.device,
                            args.ensemble))
    return 0


def _predict(args) -> int:
    summary = prediction.predict_images(prediction.PredictConfig(
        args.checkpoint, tuple(args.images), args.out, args.crop, args.eval_crops,
        args.batch_size, args.workers, args.device))
    if summary and not summary["scored"]:  # (other ranks return nothing)
        print(f"iqa-factory train: error: none of the {summary['images']} images could be "
              f"scored (why is in {Path(args.out) / prediction.SCORES_FILE})", file=sys.stderr)
        return 1
    return 0


def _test_dataset(args) -> Benchmark | None:
    if (args.test_dataset is None) != (args.test_root is None):
        raise ValueError("--test-dataset and --test-root go together")
    if args.test_dataset is None:
        if _names(args.test_refs):
            raise ValueError("--test-refs chooses the references of --test-dataset shards: "
                             "give --test-dataset and --test-root too (without them each "
                             "split tests on its own held-out part)")
        return None
    if args.test_dataset == "shards" and not _names(args.test_refs):
        raise ValueError("--test-dataset shards needs --test-refs: the references to test on")
    return Benchmark(args.test_dataset, args.test_root, _names(args.test_refs),
                     _ensemble_of(args, args.test_dataset))


def _ensemble_of(args, kind: str) -> str | None:
    """--ensemble for a probe's dataset of `kind`: each shards one takes it, so the ridge is
    fitted and tested on Q of one definition; given where neither is, each takes it and
    refuses it (opinion scores)."""
    if kind == "shards" or "shards" not in (args.dataset, args.test_dataset):
        return args.ensemble
    return None


def _probe(args) -> int:
    probe(ProbeConfig(
        Benchmark(args.dataset, args.root, _names(args.refs), _ensemble_of(args, args.dataset)),
        args.out,
        EncoderConfig(args.checkpoint, args.init, args.backbone, args.crop),
        _test_dataset(args), args.split_by, args.repeats, Fractions.parse(args.fractions),
        args.eval_crops, args.batch_size, args.workers, args.seed, args.device,
        args.half_scale))
    return 0


def _compare(args) -> int:
    print(table([Path(path) for path in args.results]))
    return 0


def _add_dataset(parser: argparse.ArgumentParser, split_default: str = "reference") -> None:
    parser.add_argument("--dataset", required=True, choices=sorted(LOADERS),
                        help="the dataset's kind (its native layout: see the README)")
    parser.add_argument("--root", required=True,
                        help="its folder (csv: the CSV file; shards: the dataset folder)")
    parser.add_argument("--refs", default="",
                        help="shards only: comma-separated references to use (evaluate "
                             "--subset test: the checkpoint's own by default)")
    parser.add_argument("--ensemble", default=None, metavar="NAME|FILE",
                        help="shards only: Q under this ensemble (default, pmos or a file), "
                             "made from each sample's raw scores as `iqa-factory relabel` "
                             "makes it, instead of the Q stored in the shards")
    parser.add_argument("--split-by", choices=SPLIT_BY, default="reference",
                        help=f"reference (no reference's versions on both sides) or image (as "
                             f"the reference paper did); default {split_default}")
    parser.add_argument("--eval-crops", type=POSITIVE, default=EVAL_CROPS,
                        help=f"random crops averaged per test image (default {EVAL_CROPS})")


def _add_predict(commands) -> None:
    parser = commands.add_parser(
        "predict", help="a quality model's scores of images (files or folders) -> a CSV")
    parser.add_argument("images", nargs="+",
                        help="image files, and folders searched below for image files")
    parser.add_argument("--checkpoint", required=True,
                        help="a checkpoint of train (best.pt) that learnt quality")
    parser.add_argument("--out", required=True,
                        help=f"output folder: {prediction.SCORES_FILE}, {prediction.SUMMARY_FILE}, "
                             f"{prediction.EXTREMES_FILE}")
    parser.add_argument("--crop", type=POSITIVE, default=None,
                        help="network input size (default: the checkpoint's)")
    parser.add_argument("--eval-crops", type=POSITIVE, default=EVAL_CROPS,
                        help=f"random crops averaged per image, drawn from its pixels "
                             f"(default {EVAL_CROPS}, as evaluate)")
    parser.add_argument("--batch-size", type=POSITIVE, default=16,
                        help="images per batch, all ranks together (default 16)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cuda where a GPU is visible, else cpu (default auto)")
    parser.add_argument("--workers", type=NON_NEGATIVE, default=2,
                        help="data loader processes per rank (default 2)")
    parser.set_defaults(run=_predict)


def _add_probe(commands) -> None:
    parser = commands.add_parser(
        "probe", help="ridge regression on a frozen encoder's features, on repeated splits")
    start = parser.add_mutually_exclusive_group(required=True)
    start.add_argument("--checkpoint", help="a checkpoint of train (best.pt, any objective): "
                                            "its backbone is probed")
    start.add_argument("--init", choices=BASELINE_INITS,
                       help="a baseline instead of a checkpoint: the --backbone's random "
                            "(seeded by --seed) or ImageNet weights")
    parser.add_argument("--backbone", default=None,
                        help="with --init: the timm backbone; with --checkpoint: checked "
                             "against the checkpoint's")
    _add_dataset(parser)
    parser.add_argument("--test-dataset", choices=sorted(LOADERS), default=None,
                        help="cross-dataset: test each split's read-out on all of this "
                             "dataset (fitted on the train part of --dataset)")
    parser.add_argument("--test-root", default=None, help="the test dataset's folder")
    parser.add_argument("--test-refs", default="",
                        help="a shards test dataset's references (its Q under --ensemble "
                             "where given, as --dataset's)")
    parser.add_argument("--repeats", type=POSITIVE, default=10,
                        help="seeded splits; the median figures are reported (default 10)")
    parser.add_argument("--fractions", default="70/10/20", metavar="TRAIN/VAL/TEST",
                        help="shares of the references (or images) per split; the test "
                             "shares rotate as folds (default 70/10/20, Re-IQA's)")
    parser.add_argument("--crop", type=POSITIVE, default=None,
                        help="network input size (default: the checkpoint's, else the "
                             "backbone's)")
    parser.add_argument("--batch-size", type=POSITIVE, default=32,
                        help="images per feature batch, all ranks together (default 32)")
    parser.add_argument("--half-scale", action="store_true",
                        help="Re-IQA's read-out: each crop's features joined with those of "
                             "its half-size copy (bicubic)")
    _add_common(parser)
    parser.set_defaults(run=_probe)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iqa-factory train", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_pretrain(commands)
    _add_finetune(commands)
    _add_evaluate(commands)
    _add_predict(commands)
    _add_probe(commands)
    _add_compare(commands)
    return parser


def _add_pretrain(commands) -> None:
    pre = commands.add_parser("pretrain", help="pretrain on a generated dataset's shards")
    pre.add_argument("dataset", nargs="+",
                     help="the dataset folder or URI (OUT of generate); the label-free "
                          "objectives read several, their groups mixed (Re-IQA's synthetic "
                          "and authentic sources), each with its own splits")
    pre.add_argument("--target", type=_targets, default=("quality",),
                     help="quality (Q), a raw metric, distortion/level classes, class (the "
                          "run's type x level grid) or multihot (its bits, for mixtures); "
                          "several comma-separated (quality,class): one head each on a "
                          "shared backbone, early stopping on the first (default quality)")
    pre.add_argument("--ensemble", default=None, metavar="NAME|FILE",
                     help="learn Q under this ensemble (default, pmos or a file), made from "
                          "each sample's raw scores as `iqa-factory relabel` makes it, "
                          "instead of the Q stored in the shards")
    pre.add_argument("--loss-weights", type=_weights, default=(),
                     help="with several targets: the weight of each one's loss, "
                          "comma-separated (default all 1)")
    pre.add_argument("--val-refs", default="", help="references moved to the val split")
    pre.add_argument("--exclude-refs", default="",
                     help="references never read (held out for fine-tuning)")
    pre.add_argument("--steps-per-epoch", type=POSITIVE, default=None,
                     help="batches per rank per epoch (default: the train split once)")
    pre.add_argument("--val-limit", type=NON_NEGATIVE, default=20_000,
                     help="validate on whole val references of a seeded order until they "
                          "hold this many samples (label-free: groups); 0: all; default 20000")
    pre.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    pre.add_argument("--checkpoint-every", type=NON_NEGATIVE, default=0, metavar="N",
                     help="also write last.pt every N batches of an epoch, for --resume to "
                          "continue from exactly there (default 0: at epoch ends only)")
    _add_training(pre, PRETRAIN, _pretrain,
                  "learning rate (default: the objective's, regression 5e-3, contrastive 0.03 "
                  "as MoCo-v2 for a batch of 256, reconstruction and restoration 1e-3)")
    pre.set_defaults(lr=None, halve_every=None, lr_decay=None)  # the objective's (OPTIM_DEFAULTS)
    _add_objective(pre)


def _add_finetune(commands) -> None:
    fine = commands.add_parser("finetune", help="fine-tune and test on a human-rated dataset")
    _add_dataset(fine)
    fine.add_argument("--repeats", type=POSITIVE, default=1,
                      help="seeded splits; the median figures are reported (default 1)")
    fine.add_argument("--resume", action="store_true",
                      help="continue an interrupted run in OUT with the same settings: each "
                           "split from its split-K/last.pt (a finished one is tested again), "
                           "those not reached from the start")
    _add_training(fine, FINETUNE, _finetune)


def _add_evaluate(commands) -> None:
    test = commands.add_parser("evaluate", help="a checkpoint's figures on a dataset")
    test.add_argument("--checkpoint", required=True, help="a checkpoint of train (best.pt)")
    _add_dataset(test, "the checkpoint's own split where it was fine-tuned on this dataset, "
                       "else reference")
    test.add_argument("--subset", choices=("all", "test"), default="all",
                      help="all images, or the test part of a seeded split (default all)")
    test.add_argument("--repeat", type=NON_NEGATIVE, default=None,
                      help="with --subset test: the split (finetune's split-K; default: the "
                           "checkpoint's own where it was fine-tuned on this dataset, else 0)")
    test.add_argument("--crop", type=POSITIVE, default=None,
                      help="network input size (default: the checkpoint's)")
    test.add_argument("--batch-size", type=POSITIVE, default=16,
                      help="test images per batch, all ranks together (default 16)")
    _add_common(test, "with --subset test: the split's seed (default: the checkpoint's own "
                      "where it was fine-tuned on this dataset, else 0)")
    test.set_defaults(run=_evaluate, seed=None, split_by=None)  # the checkpoint's (test_split)


def _add_compare(commands) -> None:
    compare = commands.add_parser("compare", help="test figures of finetune, probe and "
                                                  "evaluate runs side by side")
    compare.add_argument("results", nargs="+",
                         help="results.json files of train finetune or probe (their median "
                              "figures), evaluation.json files of train evaluate")
    compare.set_defaults(run=_compare)


@dataclass(frozen=True)
class Resumable:
    """How a stopped run of a command goes on: what it says, and the checkpoints it needs."""
    says: str
    saved: str  # a glob under --out


RESUMABLE = {
    "pretrain": Resumable(" (the same command with --resume goes on from OUT/last.pt, written "
                          "at each epoch's end and every N batches with --checkpoint-every N)",
                          LAST),
    "finetune": Resumable(" (the same command with --resume goes on: each split from its "
                          "split-K/last.pt, those not reached from the start)", f"split-*/{LAST}"),
}


def _check_start_file(args, out: str) -> None:
    """A ValueError where --pretrained-file is a checkpoint in --out that a run which does not
    resume removes as it starts (OUT/last.pt, OUT/best.pt, a split's): the weights would be
    gone were it stopped early."""
    start = getattr(args, "pretrained_file", None)
    if not start or not out or getattr(args, "resume", False):
        return
    start_path, folder = Path(start).resolve(), Path(out).resolve()
    if not start_path.is_relative_to(folder):
        return
    parts = start_path.relative_to(folder).parts
    if parts[-1] in (LAST, BEST) and (len(parts) == 1 or (
            len(parts) == 2 and parts[0].startswith("split-"))):
        raise ValueError(f"--pretrained-file {start} is a checkpoint of --out {out}, which "
                         "this run removes as it starts: copy it elsewhere first")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = getattr(args, "out", None) or ""
        if "://" in out:  # it would be written as a local folder of that name
            raise ValueError(f"--out {redact(out)}: a run's files go to a local folder; copy "
                             "them to the object store afterwards")
        blocking = file_in_the_way(out) if out else None  # before any data is read
        if blocking is not None:
            raise ValueError(f"--out {out} is a file, not a folder" if blocking == Path(out)
                             else f"--out {out}: {blocking} is a file where a folder is wanted")
        _check_start_file(args, out)
        # each command's run holds its --out (sole_writer)
        with stops_as_interrupts(on_sigterm=_quiet_the_workers_that_died_of_it):
            return args.run(args)
    except (ValueError, OSError, ModelInitError, DatasetLayoutError, NonFiniteError,
            LeaseError) as error:
        print(f"iqa-factory train: error: {_last_line(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _stopped(args)
    except CollectiveError as error:  # under torchrun, as another rank stopped
        if terminated():
            return _stopped(args)
        print(f"iqa-factory train: error: {error}", file=sys.stderr)
        return 1
    except RuntimeError as error:  # a SIGTERM to the process group: DataLoader workers die too
        if not terminated():
            raise
        if not _died_of_the_sigterm(error):  # a failure as the run stopped: said, not hidden
            print(f"iqa-factory train: warning: as it stopped: {_last_line(str(error))}",
                  file=sys.stderr)
        return _stopped(args)


def _stopped(args) -> int:
    """Says how a run was stopped (Ctrl-C, or SIGTERM) and how it goes on; its exit status."""
    if terminated():
        _quiet_the_workers_that_died_of_it()
    how, code = ("terminated (SIGTERM)", 143) if terminated() else ("interrupted", 130)
    resumable = RESUMABLE.get(args.command)
    goes_on = resumable.says if resumable else ""
    if resumable and not any(Path(args.out).glob(resumable.saved)):
        goes_on = (" before its first checkpoint (the same command starts it again; --resume "
                   "has nothing to go on from)")
    print(f"\niqa-factory train: {how}{goes_on}", file=sys.stderr)
    return code


def _quiet_the_workers_that_died_of_it() -> None:
    """From a SIGTERM on (its handler calls this first; `_stopped` again, for the finalizers
    after the block), its DataLoader workers' deaths ("worker ... is killed by signal:
    Terminated") are not reported: torch's SIGCHLD handler would raise them as a RuntimeError
    wherever the run's cleanup is (letting go of --out's lease: the lease was left behind), or
    into the lines that say the run stopped, and the loaders' finalizers after them."""
    hook = sys.unraisablehook
    if getattr(hook, "func", None) is not _unless_a_terminated_worker:
        sys.unraisablehook = partial(_unless_a_terminated_worker, hook)  # for what is left
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def _unless_a_terminated_worker(hook, unraisable) -> None:
    """`hook` (sys.unraisablehook's) but for a DataLoader's finalizer saying that its workers,
    in the process group the SIGTERM reached (torchrun's to each rank's), died of it
    ("DataLoader worker (pid N) is killed by signal: Terminated"): the run said it stopped."""
    if not _died_of_the_sigterm(unraisable.exc_value):
        hook(unraisable)


def _died_of_the_sigterm(error: BaseException) -> bool:
    """Whether `error` is torch's word that DataLoader workers died, as they do of a SIGTERM
    to their process group: "killed by signal: Terminated" (its SIGCHLD check), "exited
    unexpectedly" (a loader that finds them gone)."""
    text = str(error)
    return isinstance(error, RuntimeError) and text.startswith("DataLoader worker") and (
        "is killed by signal: Terminated" in text or "exited unexpectedly" in text)
