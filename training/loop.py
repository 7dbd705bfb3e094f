"""The epoch loop shared by pretraining and fine-tuning: DDP training for a fixed number of
batches per rank, validation on predictions gathered from every rank, early stopping decided
on rank 0 and broadcast, checkpoints (at epoch ends, and every N batches when asked) and
TensorBoard on rank 0, resume (exact, from mid-epoch too)."""

import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from timm.layers import convert_sync_batchnorm
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from labelers.correlation import figure_text
from labelers.weights import file_sha256
from shards.order import stream_seed
from shards.stopping import stop_point
from shards.storage import STAGED_SUFFIX, canonical_uri, without_credentials
from training import checkpoint
from training.correlation import report
from training.distributed import (
    Context,
    all_sum,
    all_true,
    broadcast_buffers,
    broadcast_flag,
    gather_objects,
    gather_rows,
    gather_with_gradients,
)
from training.losses import Head, MultiTargetLoss, QualityLoss, head_slices
from training.model import ScheduledDropPath
from training.objectives.base import Objective
from training.objectives.regression import SupervisedLoss
from training.optim import EarlyStopping, OptimConfig, optimiser
from training.precision import FP32, Inputs, Precision
from training.results_files import SUMMARY_FILE
from training.transforms import Augment

# settings a resumed run may change (`out` is where its last.pt was found, wherever the run
# folder has moved); anything else must match the checkpoint
RESUMABLE_CHANGES = {"epochs", "patience", "resume", "checkpoint_every", "out",
                     "ensemble",  # its file's path; ensemble_hash says what Q it defines
                     "pretrained_file",  # its path; pretrained_sha256 says what weights
                     "dataset_resolved", "also_resolved", "root_resolved",  # (as below)
                     "trained_images"}  # made of the images and split (older runs lack it)
# compared as absolute paths, each as <name>_resolved records it where the run started (from
# any working folder: ds/ and ./ds are one; finetune's dataset is a kind, its root the path)
LOCAL_PATH_SETTINGS = {"dataset", "also", "root"}
RESUME_NEEDS = ("model", "optimizer", "scheduler", "epoch", "stopping", "history", "config")
# (a URI anywhere in the settings is compared in one spelling without its credentials)
# why a setting no option changes differs from a checkpoint's
SETTING_NOTES = {"optim.temperature_unit": "the checkpoint trained the soft SROCC with its "
                 "temperature in the predictions' own units, before it became a share of "
                 "their standard deviation: the same --soft-rank-temperature is another loss"}
MAX_NONFINITE_BATCHES = 20  # per epoch: more means the run has diverged


class BatchTooSmallError(ValueError):
    """A training step whose batch is too small for the network's batch norm layers."""


class NonFiniteError(RuntimeError):
    """Training diverged: too many non-finite losses, or non-finite weights."""


@dataclass
class Run:
    context: Context
    model: nn.Module
    optim: OptimConfig
    classes: int           # 0 for a regression target
    out: Path
    config: dict           # the run's settings, kept in every checkpoint
    seed: int = 0
    precision: Precision = FP32
    heads: tuple[Head, ...] = ()  # a multi-head model: its targets, in output order
    objective: Objective | None = None  # a label-free one (its model is `model`); None:
                                        # batches of (images, targets) under `optim.loss`
    data: dict = field(default_factory=dict)  # what it trains and validates on (counts per
                                              # split): a resume over other data is refused
    augment: Augment = field(default_factory=Augment)  # its normalisation applies on the device
    start: str | None = None  # where its weights began (model.Built.start); a resume takes
                              # last.pt's

    def __post_init__(self):
        self.config = without_credentials(self.config)  # what checkpoints keep of a URI
        model = self.config.get("model")
        if isinstance(model, dict) and model.get("pretrained_file"):  # what a resume compares
            start = Path(model["pretrained_file"])
            self.config = {**self.config, "model": {
                **model, "pretrained_sha256": file_sha256(start) if start.is_file() else None}}

    @property
    def inputs(self) -> Inputs:
        """Its uint8 batches -> the model's normalised input on its device."""
        return Inputs.of(self.augment, self.context.device, self.precision)


def _criterion(run: Run) -> Callable:
    gather = partial(gather_with_gradients, run.context) if run.context.distributed else None
    quality = QualityLoss.parse(run.optim.loss, run.optim.temperature, gather)
    if run.heads:
        return MultiTargetLoss(run.heads, quality)
    if run.classes:
        return nn.CrossEntropyLoss()
    return quality


def _loss_function(run: Run) -> Callable:
    """loss(network, batch): the objective's, or the supervised one of (images, targets)."""
    if run.objective is not None:
        return run.objective.loss
    return SupervisedLoss(_criterion(run), run.inputs, bool(run.classes or run.heads))


@dataclass
class EpochProgress:
    """A rank's place in an epoch: batches consumed (those skipped for a non-finite loss
    too), the loss sum over the batches trained on, their count, and the skipped count."""

    step: int = 0
    total: float = 0.0
    count: int = 0
    skipped: int = 0


def step_checkpoint_due(step: int, steps: int, every: int) -> bool:
    """After batch `step` (1-based) of an epoch of `steps`: every `every` batches (0: never),
    except at the epoch's end, whose own checkpoint follows."""
    return every > 0 and step % every == 0 and step < steps


def running_statistics(model: nn.Module) -> list[torch.Tensor]:
    """The running statistics of the model's normalisation layers and their batch counts:
    what a forward pass in training mode moves (other buffers, a contrastive queue say, it
    leaves alone)."""
    return [buffer for module in model.modules()
            if isinstance(module, nn.modules.batchnorm._NormBase)
            for buffer in module.buffers(recurse=False)]


def _train_step(run: Run, network: nn.Module, batch, loss_fn, optimizer) -> float | None:
    """One optimiser step (then the objective's `after_step`); None, and no step, when the
    loss is not finite on some rank (the batch-norm statistics its forward pass moved are put
    back, its gradients dropped). The host waits on the device once a step (and once more
    under DDP, for the ranks' agreement), after the backward pass is queued: a wait before it
    would leave a GPU idle while the backward pass's kernels are launched, and one after the
    step while the next forward pass's are."""
    statistics = running_statistics(run.model)
    before = [b.detach().clone() for b in statistics]
    try:
        loss = loss_fn(network, batch)
    except ValueError as error:  # torch's words for a 1-value batch-norm input
        if "more than 1 value per channel" not in str(error):
            raise
        raise BatchTooSmallError(
            f"a batch norm layer saw one value per channel ({error}): with {run.optim.batch_size} "
            f"images per step over {run.context.world_size} rank(s), a feature map of 1 x 1 "
            "leaves nothing to normalise; give each rank at least 2 images (--batch-size) or "
            "take a larger --crop") from error
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # (a non-finite loss's gradients too: under DDP every rank reduces them)
    value = float(loss.detach())  # the step's one wait
    if not all_true(run.context, math.isfinite(value)):
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for buffer, kept in zip(statistics, before, strict=True):
                buffer.copy_(kept)
        return None
    optimizer.step()
    if run.objective is not None:
        run.objective.after_step()
    return value


def train_epoch(run: Run, network: nn.Module, batches: Iterable, steps: int, loss_fn,
                optimizer, progress: EpochProgress | None = None,
                save: Callable[[EpochProgress], None] | None = None) -> dict:
    """Exactly `steps` batches on this rank (less those `progress` has consumed already); the
    mean loss over all ranks. A batch whose loss is not finite on any rank is skipped on every
    rank (no step is taken, so no NaN reaches the weights); past MAX_NONFINITE_BATCHES of them
    the epoch stops on every rank together. `save(progress)` runs every
    `optim.checkpoint_every` batches (see `step_checkpoint_due`)."""
    network.train()
    done = progress or EpochProgress()
    iterator = iter(batches)
    bar = tqdm(total=steps, initial=done.step, desc="train", leave=False,
               disable=not run.context.is_main)
    for step in range(done.step + 1, steps + 1):
        try:
            batch = next(iterator)
        except StopIteration:
            raise RuntimeError(f"the training data ran out after {step - 1} of {steps} "
                               f"batches on rank {run.context.rank}") from None
        stop_point()
        loss = _train_step(run, network, batch, loss_fn, optimizer)
        if loss is None:
            done.skipped += 1
            if done.skipped > MAX_NONFINITE_BATCHES:
                raise NonFiniteError(f"more than {MAX_NONFINITE_BATCHES} batches with a "
                                     "non-finite loss in one epoch: the run diverged (lower "
                                     "--lr, or look for broken samples)")
        else:
            done.total, done.count = done.total + loss, done.count + 1
        done.step = step
        bar.update()
        if save is not None and step_checkpoint_due(step, steps, run.optim.checkpoint_every):
            save(done)
    bar.close()
    per_rank = gather_rows(run.context, torch.tensor([[done.step]], device=run.context.device))
    return {"loss": all_sum(run.context, done.total) / max(all_sum(run.context, done.count), 1),
            "rank_batches": per_rank[:, 0].tolist(), "skipped_nonfinite": done.skipped}


def _continue_epoch(batches: Iterable, saved: dict,
                    device: torch.device) -> tuple[Iterator, EpochProgress]:
    """An interrupted epoch's stream past the batches it had consumed (read and dropped
    without a forward pass: each stream is a function of seed, epoch and rank), its loss sums,
    and the random state of that moment put back."""
    iterator = iter(batches)
    for _ in range(saved["step"]):
        next(iterator)
    checkpoint.set_rng_state(saved["rng"], device)
    return iterator, EpochProgress(saved["step"], saved["total"], saved["count"],
                                   saved["skipped"])


def with_progress(loader: Iterable, context: Context, desc: str, items: int | None = None,
                  unit: str = "sample") -> Iterator:
    """The loader's batches behind rank 0's progress bar: counted in batches where the loader
    knows its length, else in `unit`s (samples, groups) against `items`, the count of all
    ranks together, where one rank reads them all (ranks share whole shards, unevenly where
    there are few: under DDP the bar counts without a total)."""
    if items is None or hasattr(getattr(loader, "dataset", None), "__len__"):
        for batch in tqdm(loader, desc=desc, unit="batch", leave=False,
                          disable=not context.is_main):
            stop_point()
            yield batch
        return
    with tqdm(total=None if context.distributed else items, desc=desc, unit=unit,
              leave=False, disable=not context.is_main) as bar:
        for batch in loader:
            stop_point()
            yield batch
            bar.update(len(batch[0]) if isinstance(batch, tuple | list)
                       else len(batch["ref_id"]))


@torch.no_grad()
def predict(context: Context, model: nn.Module, loader: Iterable, inputs: Inputs,
            classes: int = 0, heads: tuple[Head, ...] = (), items: int | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and targets of every rank, gathered (padding dropped). uint8 images of
    shape (batch, views, C, H, W) are scored as the mean over their views. With `heads` (a
    multi-head model's): every output column and every target column, as 2-D arrays.
    `items`: how many all ranks score, for the progress of a loader without a length."""
    model.eval()
    rows = []
    for images, targets in with_progress(loader, context, "score", items):
        views = images.shape[1] if images.ndim == 5 else 0
        flat = inputs(images.flatten(0, 1) if views else images)
        with inputs.autocast():
            outputs = model(flat).float()
        if views:
            outputs = outputs.view(len(images), views, -1).mean(dim=1)
        targets = targets.to(context.device).double().reshape(len(outputs), -1)
        if heads:
            rows.append(torch.cat([outputs.double(), targets], dim=1))
            continue
        predicted = outputs.argmax(dim=1).double() if classes else outputs[:, 0].double()
        rows.append(torch.cat([predicted[:, None], targets], dim=1))
    split = sum(head.outputs for head in heads) or 1
    columns = split + (sum(head.width for head in heads) or 1)
    local = torch.cat(rows) if rows else torch.zeros((0, columns), dtype=torch.float64,
                                                     device=context.device)
    gathered = gather_rows(context, local).cpu().numpy()
    if not heads:
        return gathered[:, 0], gathered[:, 1]
    return gathered[:, :split], gathered[:, split:]


def validation_figures(predicted: np.ndarray, target: np.ndarray, classes: int) -> dict:
    """`score` (higher is better: SROCC, or accuracy for classes) and the other figures."""
    if classes:
        accuracy = float(np.mean(predicted == target)) if len(target) else float("nan")
        return {"score": accuracy, "accuracy": accuracy, "count": len(target)}
    figures = report(predicted, target)
    return {"score": figures["srocc"], **figures}


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """The area under the precision-recall steps, sum over thresholds of (R_n - R_n-1) P_n,
    tied scores one threshold (as sklearn's average_precision_score); nan without a
    positive."""
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # each tie group's end
    hits = np.cumsum(labels)[last]
    if not len(hits) or hits[-1] == 0:
        return float("nan")
    recall = hits / hits[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * hits / (last + 1)))


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """The mean AP over the columns (classes) with a positive; nan if none has."""
    values = [average_precision(scores[:, k], labels[:, k]) for k in range(labels.shape[1])
              if labels[:, k].any()]
    return float(np.mean(values)) if values else float("nan")


def head_figures(outputs: np.ndarray, targets: np.ndarray, heads: tuple[Head, ...]) -> dict:
    """Each head's figures, named `<head>_<figure>` (regression: SROCC and the others,
    class: accuracy, multihot: mAP); `score` is the first head's."""
    figures: dict = {"count": len(targets)}
    for head, columns, wanted in head_slices(heads):
        predicted, target = outputs[:, columns], targets[:, wanted]
        if head.kind == "multihot":
            own = {"map": mean_average_precision(predicted, target > 0.5)}
            own["score"] = own["map"]
        else:
            own = validation_figures(predicted.argmax(axis=1) if head.kind == "class"
                                     else predicted[:, 0], target[:, 0],
                                     head.outputs if head.kind == "class" else 0)
            own.pop("count")
        figures.setdefault("score", own.pop("score"))
        figures.update({f"{head.name}_{name}": value for name, value in own.items()})
    return figures


def _one_spelling(value, local_path: bool):
    """A URI in one spelling without its credentials (they rotate); with `local_path` a
    local path absolute; anything else as it is."""
    if isinstance(value, list | tuple):
        return [_one_spelling(each, local_path) for each in value]
    if not isinstance(value, str):
        return value
    if "://" in value:
        return canonical_uri(value)
    return os.path.abspath(value) if local_path else value


def _settings(config: dict, prefix: str = "") -> dict:
    """The settings as flat dotted names, less those a resumed run may change."""
    flat = {}
    for name, value in config.items():
        if isinstance(value, dict):
            flat.update(_settings(value, f"{prefix}{name}."))
        elif name not in RESUMABLE_CHANGES:
            if name in LOCAL_PATH_SETTINGS:  # resolved where the run started (older: as typed)
                value = config.get(f"{name}_resolved", value)
            flat[prefix + name] = _one_spelling(value, name in LOCAL_PATH_SETTINGS)
    return flat


def _shown(value) -> str:
    """A setting's value in a message: "(none)" where the run has no such setting."""
    return "(none)" if value is None else repr(without_credentials(value))


def _start_file(config: dict) -> str | None:
    """The --pretrained-file a run's settings name (None: it began from --init's weights)."""
    model = config.get("model")
    return model.get("pretrained_file") if isinstance(model, dict) else None


def check_start_kept(saved: dict, asked: dict, last: Path) -> None:
    """A ValueError where a resume names a --pretrained-file for a run that began without
    one: its weights came from --init, and a file now would be recorded as its start (a
    run that began with one is held to it by the file's SHA-256)."""
    if _start_file(saved) is None and _start_file(asked) is not None:
        raise ValueError(f"--resume with --pretrained-file {_start_file(asked)}: {last} began "
                         "from --init's weights, not a file; resume without it, or use another "
                         "--out to start from the file")


def _restore(run: Run, optimizer,
             scheduler) -> tuple[int, EarlyStopping, list, dict | None]:
    """The epoch to start at, the stopping state, the history, and from a mid-epoch
    checkpoint this rank's place in that epoch (None at an epoch's end)."""
    try:
        state = checkpoint.load(run.out / checkpoint.LAST)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{error}: nothing to resume (drop --resume to start "
                                "afresh)") from None
    if lacking := [key for key in RESUME_NEEDS if key not in state]:
        raise checkpoint.CheckpointError(
            f"{run.out / checkpoint.LAST} holds no {', '.join(lacking)}: not the last.pt a "
            "training run writes (a best.pt copied over it?); nothing to resume from")
    check_start_kept(state["config"], run.config, run.out / checkpoint.LAST)
    saved, asked = _settings(state["config"]), _settings(run.config)
    if "model.pretrained_sha256" not in saved:  # a run from before the start file was hashed
        asked.pop("model.pretrained_sha256", None)
    elif asked.get("model.pretrained_sha256", "") is None:  # the file gone: last.pt's weights
        asked["model.pretrained_sha256"] = saved["model.pretrained_sha256"]
        run.config["model"]["pretrained_sha256"] = saved["model.pretrained_sha256"]
    if saved != asked:
        changed = sorted(k for k in saved.keys() | asked.keys() if saved.get(k) != asked.get(k))
        if "objective.name" in changed:  # another objective: its own settings come with it
            changed = [k for k in changed if not k.startswith("objective.")
                       or k == "objective.name"]
        why = "".join(f" ({SETTING_NOTES[name]})" for name in changed
                      if name in SETTING_NOTES and name in asked)
        shown = ", ".join(f"{name} {_shown(saved.get(name))} -> {_shown(asked.get(name))}"
                          for name in changed)
        raise ValueError(f"--resume with other settings than {run.out / checkpoint.LAST} "
                         f"({shown}){why}; use another --out to start a new run")
    if change := _data_change(state.get("data", {}), run.data):
        raise ValueError(f"--resume over other data than {run.out / checkpoint.LAST} was "
                         f"trained on ({change}: shards of the dataset finished, remade or "
                         "lost since, or the dataset made again under another plan); early "
                         "stopping would compare validations of two sets. Use another --out "
                         "to start a new run on the dataset as it is now")
    partial = state.get("partial_epoch")
    if partial is not None and len(partial["ranks"]) != run.context.world_size:
        raise ValueError(f"{run.out / checkpoint.LAST} stopped mid-epoch with "
                         f"{len(partial['ranks'])} rank(s): resume it with as many")
    run.start = state.get("start") or _start_before_it_was_kept(state["config"])
    run.model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    planned = getattr(scheduler, "T_max", run.optim.epochs)  # a cosine schedule's span
    if planned != run.optim.epochs:
        raise ValueError(f"the cosine schedule of {run.out / checkpoint.LAST} spans its "
                         f"{planned} epochs: resume it with --epochs {planned}")
    place = None if partial is None else partial["ranks"][run.context.rank]
    return (state["epoch"] + 1, EarlyStopping(run.optim.patience, **state["stopping"]),
            state["history"], place)


def _start_before_it_was_kept(config: dict) -> str | None:
    """The start of a last.pt written before checkpoints kept it (2026-12-07): its start file,
    or its --init (auto: ImageNet's weights, or random ones where they were out of reach)."""
    model = config.get("model", {})
    return model.get("pretrained_file") or model.get("init")


def _remove_earlier_run(out: Path) -> None:
    """What an earlier run left in OUT (checkpoint.replaced_run_notices says so first): its
    checkpoints and summary, gone before this run writes its own, so that OUT never holds
    one run's best.pt or summary.json beside the other's last.pt (this run stopped before
    its first epoch ended, say)."""
    for name in (checkpoint.LAST, checkpoint.BEST, SUMMARY_FILE):
        (out / name).unlink(missing_ok=True)


def _remove_staged_checkpoints(out: Path) -> None:
    """The checkpoints a killed run left half-written (`last.pt.partial`, or a name of its
    own where one was there already: shards.storage.atomic_file): gone, and said, before
    this run writes its own (a checkpoint of a large model is a gigabyte)."""
    staged = sorted(path for name in (checkpoint.LAST, checkpoint.BEST)
                    for path in out.glob(f"{name}*{STAGED_SUFFIX}"))
    for path in staged:
        path.unlink(missing_ok=True)
    if staged:
        print(f"note: removed {len(staged)} checkpoint(s) a stopped run left half-written "
              f"({', '.join(path.name for path in staged)})")


def _data_change(before: dict, now: dict) -> str:
    """How a run's data differs now, in words ("": as it was), of what both record (a
    checkpoint of an earlier version records less: the plans since 2026-12-02, nothing
    before the counts)."""
    return ", ".join(f"{name} {before[name]} then, {now[name]} now"
                     for name in sorted(before.keys() & now.keys())
                     if before[name] != now[name])


def _check_finite(run: Run, when: str) -> None:
    """Raise before non-finite weights are saved (the same weights on every rank under DDP,
    so every rank stops here together)."""
    if not all(bool(torch.isfinite(t).all()) for t in run.model.state_dict().values()
               if t.is_floating_point()):
        raise NonFiniteError(f"the weights are not finite {when}: not saved (the last good "
                             f"checkpoint stays in {run.out})")


def _last_state(run: Run, epoch: int, optimizer, scheduler, stopping: EarlyStopping,
                history: list) -> dict:
    """What resuming after `epoch` (-1: none yet) needs."""
    return {"model": run.model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "epoch": epoch, "stopping": stopping.state(),
            "history": history, "config": run.config, "data": run.data, "start": run.start}


def _save(run: Run, epoch: int, optimizer, scheduler, stopping: EarlyStopping, history: list,
          improved: bool) -> None:
    state = _last_state(run, epoch, optimizer, scheduler, stopping, history)
    if improved:  # first: last.pt records this epoch as the best, so best.pt must hold it
        checkpoint.save({"model": state["model"], "epoch": epoch, "config": run.config},
                        run.out / checkpoint.BEST)
    checkpoint.save(state, run.out / checkpoint.LAST)


def _save_mid_epoch(run: Run, epoch: int, optimizer, scheduler, stopping: EarlyStopping,
                    history: list, progress: EpochProgress) -> None:
    """last.pt part-way through `epoch`: every rank's progress and random state, gathered
    (a collective: every rank calls it at the same step), written by rank 0."""
    _check_finite(run, f"at batch {progress.step} of epoch {epoch + 1}")
    ranks = gather_objects(run.context, {**asdict(progress),
                                         "rng": checkpoint.rng_state(run.context.device)})
    if run.context.is_main:
        state = _last_state(run, epoch - 1, optimizer, scheduler, stopping, history)
        state["partial_epoch"] = {"epoch": epoch, "step": progress.step, "ranks": ranks}
        checkpoint.save(state, run.out / checkpoint.LAST)


TENSORBOARD = "tensorboard"  # OUT's folder of TensorBoard logs


def _tensorboard(run: Run, resume: bool):
    """Rank 0's TensorBoard writer; a run that does not resume first removes the logs an
    earlier run left in OUT (their curves would read as this run's)."""
    if not run.context.is_main:
        return None
    from torch.utils.tensorboard import SummaryWriter

    folder = run.out / TENSORBOARD
    if not resume:
        shutil.rmtree(folder, ignore_errors=True)
    return SummaryWriter(str(folder))


def _log(writer, record: dict) -> None:
    if writer is None:
        return
    for name, value in record.items():
        if name != "epoch" and isinstance(value, int | float) and np.isfinite(value):
            writer.add_scalar(name.replace("_", "/", 1), value, counted(record)["epoch"])
    writer.flush()


def _describe(record: dict, epochs: int, improved: bool) -> str:
    figures = "  ".join(f"{'val loss' if name == 'val_loss' else name.removeprefix('val_')} "
                        f"{figure_text(record[name])}" for name in record
                        if name.startswith("val_")
                        and name.endswith(("srocc", "plcc", "accuracy", "_map", "_loss")))
    return (f"epoch {counted(record)['epoch']}/{epochs}  loss {record['train_loss']:.4f}  "
            f"{figures}  lr {record['lr']:.2e}  {record['seconds']:.1f} s"
            + ("  (best)" if improved else ""))


def synchronised_batch_norm(run: Run) -> bool:
    """Under DDP on GPUs, make the model's batch norms synchronised (timm's conversion: torch's
    SyncBatchNorm, timm's norm + activation layers kept whole; the same parameters and
    checkpoint keys): each rank's share of a global batch of 16 on 8 GPUs is 2
    images, whose statistics would train otherwise than one GPU's 16. Not for an objective
    whose batch norm must see each rank's own batch (MoCo's shuffling BN), and not on CPU
    ranks (torch's SyncBatchNorm runs on GPUs only). Whether it did."""
    if (not run.context.distributed or run.context.device.type != "cuda"
            or (run.objective is not None and run.objective.rank_batch_norm)
            or not any(isinstance(module, nn.modules.batchnorm._BatchNorm)
                       for module in run.model.modules())):
        return False
    convert_sync_batchnorm(run.model)  # (a model is no batch norm itself: changed in place)
    return True


def _distributed(model: nn.Module, context: Context) -> DistributedDataParallel:
    """The model under DDP. On CPU its gradient buckets keep their first order: DDP
    otherwise reorders them after its first step, and with three ranks or more gloo then
    sums each gradient in another grouping, so a resumed run (a new DDP, whose first step
    is the run's k-th) would round its sums unlike the uninterrupted one. (Finding unused
    parameters, which keeps the order, costs a walk of the graph each step: not on GPUs.)"""
    on_cuda = context.device.type == "cuda"
    return DistributedDataParallel(model, device_ids=[context.device.index] if on_cuda else None,
                                   find_unused_parameters=not on_cuda)


def _resumed(run: Run, optimizer, scheduler) -> tuple[int, EarlyStopping, list, dict | None]:
    """`_restore`'s (first epoch, early stopping, history, interrupted epoch), the first epoch
    moved past the last where the restored run had ended (stopped early, or its epochs run),
    which it says."""
    start, stopping, history, interrupted = _restore(run, optimizer, scheduler)
    is_main = run.context.is_main
    if interrupted is None and stopping.should_stop:  # a requeued run that had ended
        if is_main:
            print(f"resume: {run.out / checkpoint.LAST} stopped early (no validation "
                  f"improvement for {stopping.bad_epochs} epochs): nothing to train; a "
                  "larger --patience trains on")
        start = run.optim.epochs
    elif start >= run.optim.epochs and is_main:  # ran its epochs, or more
        print(f"resume: {run.out / checkpoint.LAST} has {start} epoch(s) done, "
              f"--epochs {run.optim.epochs}: nothing to train; a larger --epochs trains on")
    return start, stopping, history, interrupted


def fit(run: Run, train_batches: Callable[[int], Iterable], steps: int,
        validate: Callable[[nn.Module], dict], resume: bool = False) -> dict:
    """Train for up to `optim.epochs` epochs of `steps` batches per rank; returns the summary.

    train_batches(epoch) gives this rank's batches for an epoch; validate(model) gives the
    figures of `validation_figures` (the same on every rank)."""
    context = run.context
    run.out.mkdir(parents=True, exist_ok=True)
    if context.is_main:
        _remove_staged_checkpoints(run.out)
        if not resume:
            _remove_earlier_run(run.out)
    if synchronised_batch_norm(run) and context.is_main:
        print(f"note: batch norm over the global batch of {context.world_size} GPUs "
              "(SyncBatchNorm)")
    run.precision.prepare(run.model.to(context.device))
    network = _distributed(run.model, context) if context.distributed else run.model
    optimizer, scheduler = optimiser(run.model, run.optim)
    start, stopping, history, interrupted = (_resumed(run, optimizer, scheduler) if resume else
                                             (0, EarlyStopping(run.optim.patience), [], None))
    drop_path, loss_fn, writer = ScheduledDropPath(run.model), _loss_function(run), \
        _tensorboard(run, resume)
    for epoch in range(start, run.optim.epochs):
        began = time.perf_counter()
        torch.manual_seed(stream_seed(run.seed, epoch, context.rank))
        drop_path.set_progress((epoch + 1) / run.optim.epochs)
        lr = optimizer.param_groups[0]["lr"]
        batches, progress = train_batches(epoch), EpochProgress()
        if interrupted is not None:
            batches, progress = _continue_epoch(batches, interrupted, context.device)
            interrupted = None
        save = partial(_save_mid_epoch, run, epoch, optimizer, scheduler, stopping, history)
        trained = train_epoch(run, network, batches, steps, loss_fn, optimizer, progress, save)
        scheduler.step()
        broadcast_buffers(context, run.model)  # every rank validates the model rank 0 saves
        figures = validate(run.model)
        record = {"epoch": epoch, "train_loss": trained["loss"],
                  "rank_batches": trained["rank_batches"],
                  "skipped_nonfinite": trained["skipped_nonfinite"],
                  "lr": lr, **{f"val_{k}": v for k, v in figures.items()},
                  "seconds": time.perf_counter() - began}
        history.append(record)
        _check_finite(run, f"after epoch {epoch + 1}")
        if context.is_main:
            improved = stopping.update(figures["score"], epoch)
            _save(run, epoch, optimizer, scheduler, stopping, history, improved)
            _log(writer, record)
            print(_describe(record, run.optim.epochs, improved), flush=True)
        if broadcast_flag(context, context.is_main and stopping.should_stop):
            if context.is_main:
                print(f"early stop: no validation improvement for {stopping.patience} epochs")
            break
    if writer is not None:
        writer.close()
    return {"epochs_run": len(history), "best_epoch": stopping.best_epoch + 1,
            "best_score": stopping.best, "history": [counted(record) for record in history],
            "start": run.start}


def counted(record: dict) -> dict:
    """An epoch's record as summaries, TensorBoard and the console show it: epochs count
    from 1 (checkpoints keep the 0-based index the loop runs on)."""
    return {**record, "epoch": record["epoch"] + 1}
