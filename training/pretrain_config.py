"""The settings of `train pretrain`, checked as they are made, and what a checkpoint records of
them."""

import math
import os
from dataclasses import asdict, dataclass, field

from shards.storage import redact
from training.model import ModelConfig
from training.objectives import ObjectiveConfig
from training.objectives.contrastive import check_queue
from training.optim import HALF, PRETRAIN, OptimConfig
from training.settings import check_count, check_names, check_shared
from training.shard_data import Target
from training.trained import resolved_root
from training.transforms import Augment


@dataclass(frozen=True)
class PretrainConfig:
    dataset: str
    out: str
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = PRETRAIN
    targets: tuple[Target, ...] = (Target(),)  # the first decides early stopping
    augment: Augment = field(default_factory=Augment)
    val_refs: tuple[str, ...] = ()      # references moved to the validation split
    exclude_refs: tuple[str, ...] = ()  # references never read (held out for fine-tuning)
    steps_per_epoch: int | None = None  # default: one pass over the train split in expectation
    val_limit: int | None = 20_000      # validation samples per epoch (None: the whole split)
    workers: int = 2                    # data loader processes per rank
    seed: int = 0
    device: str = "auto"
    loss_weights: tuple[float, ...] = ()  # one per target (default all 1)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    ensemble: str | None = None  # Q from the raw scores under this ensemble (name or file)
    also: tuple[str, ...] = ()   # label-free: more datasets, their groups mixed in

    def __post_init__(self):
        check_shared(self.workers, self.seed, self.device)
        check_count("steps_per_epoch", self.steps_per_epoch, 1, optional=True)
        check_count("val_limit", self.val_limit, 1, optional=True)
        for name in ("val_refs", "exclude_refs", "also"):
            check_names(name, getattr(self, name))
        if self.also and not self.objective.label_free:
            raise ValueError("several datasets are read by the label-free objectives (their "
                             "groups mixed); regression learns one dataset's labels: give one")
        roots = [resolved_root(name) for name in self.datasets]
        if len(set(roots)) != len(roots):
            raise ValueError(f"a dataset is given twice: {', '.join(map(redact, self.datasets))}")
        self._check_targets()
        if self.objective.name == "contrastive":
            check_queue(self.objective, self.optim.batch_size)

    def _check_targets(self) -> None:
        """Distinct targets; --ensemble with quality among them; none of them, nor weights,
        for a label-free objective; one finite non-negative weight per target, not all 0."""
        names = [target.name for target in self.targets]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"targets must be one or more distinct names, got {names}")
        if self.ensemble is not None and "quality" not in names:
            raise ValueError(f"--ensemble sets the Q of the quality target; the targets are "
                             f"{','.join(names)}: add quality to --target")
        if self.objective.label_free and (self.targets != (Target(),) or self.loss_weights
                                          or self.ensemble is not None):
            raise ValueError(f"--target, --loss-weights and --ensemble are labels to regress: "
                             f"they do not apply to --objective {self.objective.name}")
        weights = self.loss_weights
        if weights and len(names) == 1:
            raise ValueError(f"--loss-weights weighs the losses of several targets; with one "
                             f"({names[0]}) it changes nothing: leave it out")
        if weights and (len(weights) != len(names) or not all(
                math.isfinite(w) and w >= 0 for w in weights) or not any(weights)):
            raise ValueError(f"--loss-weights must be {len(names)} finite non-negative "
                             f"number(s), not all 0, one per target ({','.join(names)}); "
                             f"got {list(weights)}")

    @property
    def datasets(self) -> tuple[str, ...]:
        """Every dataset it reads: `dataset`, then `also`'s."""
        return (self.dataset, *self.also)

    def steps_for(self, items: int) -> int:
        """Steps an epoch takes: steps_per_epoch, else one pass over the `items` (samples,
        or groups) in expectation, at least 1."""
        return self.steps_per_epoch or max(1, math.ceil(items / self.optim.batch_size))

    @property
    def weights(self) -> tuple[float, ...]:
        return self.loss_weights or (1.0,) * len(self.targets)

    def to_json(self) -> dict:
        """The settings; `target` the comma-joined names (one name as before), the weights
        only with several targets, the objective only when label-free, the optimiser's kind,
        schedule and weight decay only when not the reference setup's, the step schedule's
        factor only when not one half, the soft rank's temperature unit only where a soft
        SROCC is trained (so checkpoints of earlier runs resume as they were, and those of
        the soft SROCC before its temperature was of the standard deviation do not)."""
        data = asdict(self)
        del data["targets"], data["loss_weights"]
        if self.also:
            data["also"] = list(self.also)
            data["also_resolved"] = [resolved_root(name) for name in self.also]
        else:  # (as every run was before several datasets could be read)
            del data["also"]
        if self.ensemble is None:
            del data["ensemble"]
        elif os.path.isfile(self.ensemble):  # found by evaluate from any folder
            data["ensemble"] = os.path.abspath(self.ensemble)
        data["dataset_resolved"] = resolved_root(self.dataset)  # what evaluate and probe know
        if not self.objective.label_free:
            del data["objective"]
        else:  # groups flip since 2026-12-02: a label-free checkpoint without it did not
            data["group_flips"] = self.augment.flip  # (its resume is refused, not changed)
        if self.optim.reference_setup:
            for name in ("optimizer", "schedule", "weight_decay"):
                del data["optim"][name]
        if self.optim.decay == HALF:  # as every run was before the factor could be chosen
            del data["optim"]["decay"]
        if self.objective.label_free or not self.optim.ranks_softly:  # it means nothing
            del data["optim"]["temperature_unit"]
        data["target"] = ",".join(target.name for target in self.targets)
        if len(self.targets) > 1:
            data["loss_weights"] = list(self.weights)
        ensembles = [target.ensemble.hash for target in self.targets if target.ensemble]
        if ensembles:  # the Q learnt: a resumed run whose file now says otherwise is refused
            data["ensemble_hash"] = ensembles[0]
        grid = next((target.grid for target in self.targets if target.grid), ())
        if grid:  # what the class indices and multihot bits stand for
            data["grid"] = [list(pair) for pair in grid]
        return data
