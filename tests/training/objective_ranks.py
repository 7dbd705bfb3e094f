"""`torchrun --nproc_per_node=2 -m tests.training.objective_ranks DATASET OUT`: for each
label-free objective, the shared loop's steps (training.loop.train_epoch) under DDP, each rank
on its half of the same global batches, then, on rank 0 alone, the same steps in one process
on the whole global batches. Writes OUT/rank-R.pt: {objective: {"ddp": state, "single":
state}} ("single" on rank 0 only). The backbone has no batch statistics (GroupNorm), so one
rank and two must agree. Also, under "shuffling_bn": a batch-norm encoder's keys through
shuffled_keys, each rank's rows with 1 split ("ddp") and, on rank 0, the whole batch on one
rank with 2 splits ("single"), from the same generator state."""

import sys
from itertools import islice
from pathlib import Path

import timm
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from training import distributed
from training.distributed import Context
from training.group_data import collate_groups, group_dataset
from training.loop import Run, train_epoch
from training.objectives import ObjectiveConfig, build_objective
from training.objectives.base import OPTIM_DEFAULTS
from training.objectives.contrastive import shuffled_keys
from training.optim import OptimConfig, optimiser
from training.precision import FP32, Inputs

BACKBONE = "test_efficientnet_gn"
CROPS = {"contrastive": 16, "reconstruction": 32, "restoration": 32}
GLOBAL_BATCH, STEPS = 2, 3


def build(name: str, context: Context):
    torch.manual_seed(0)
    config = ObjectiveConfig(name, versions=2, queue_size=64, moco_momentum=0.9)
    return build_objective(config, timm.create_model(BACKBONE, num_classes=0), CROPS[name],
                           Inputs((0.5,) * 3, (0.25,) * 3, context.device, FP32), context)


def global_batches(dataset: str, objective) -> list[dict]:
    """STEPS batches of GLOBAL_BATCH groups of the train references, the same on every rank."""
    batches = []
    for epoch in range(STEPS):
        stream = group_dataset(dataset, objective.request.kind, "train", rank=0, world_size=1,
                               **objective.request.arguments())
        stream.set_epoch(epoch)
        batches += list(DataLoader(stream, batch_size=GLOBAL_BATCH, collate_fn=collate_groups))
    return batches[:STEPS]


def share(batch: dict, context: Context) -> dict:
    """This rank's contiguous part of a global batch (rank 0 first, as gather_rows orders)."""
    size = GLOBAL_BATCH // context.world_size
    part = slice(context.rank * size, (context.rank + 1) * size)
    return {name: value[part] for name, value in batch.items()}


def steps(name: str, context: Context, batches: list[dict], out: Path) -> dict:
    objective = build(name, context)
    defaults = OPTIM_DEFAULTS[name]
    optim = OptimConfig(defaults.lr, 10, 1, GLOBAL_BATCH, optimizer=defaults.optimizer,
                        schedule=defaults.schedule, weight_decay=defaults.weight_decay)
    network = (DistributedDataParallel(objective.model) if context.distributed
               else objective.model)
    optimizer, _ = optimiser(objective.model, optim)
    run = Run(context, objective.model, optim, 0, out, {}, objective=objective)
    train_epoch(run, network, islice((share(b, context) for b in batches), STEPS), STEPS,
                objective.loss, optimizer)
    return {key: value.clone() for key, value in objective.model.state_dict().items()}


def shuffling_bn(context: Context) -> dict:
    """A batch-norm encoder's keys of 8 rows through shuffled_keys: this rank's 4 under DDP,
    and on rank 0 all 8 on one rank with 2 splits."""
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)).train()
    views = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(11)
    keys = {"ddp": shuffled_keys(encoder, views[context.rank * 4:(context.rank + 1) * 4],
                                 context, 1)}
    if context.is_main:
        torch.manual_seed(11)
        keys["single"] = shuffled_keys(encoder, views, Context(0, 1, 0, context.device), 2)
        keys["unshuffled"] = encoder(views)
    return keys


def main(dataset: str, out: Path) -> None:
    context = distributed.start("cpu")
    results: dict = {"shuffling_bn": shuffling_bn(context)}
    for name in CROPS:
        batches = global_batches(dataset, build(name, Context(0, 1, 0, context.device)))
        results[name] = {"ddp": steps(name, context, batches, out)}
        if context.is_main:
            alone = Context(0, 1, 0, context.device)
            results[name]["single"] = steps(name, alone, batches, out)
    torch.save(results, out / f"rank-{context.rank}.pt")
    distributed.stop(context)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
