"""The process group: DDP over NCCL on GPUs and gloo on CPUs when launched by torchrun, one
plain process otherwise; gathering predictions of unequal length, broadcasting decisions and
what rank 0 alone works out."""

import os
import pickle
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
import torch.distributed.nn

from training.settings import check_device

TIMEOUT_VARIABLE = "IQA_FACTORY_NCCL_TIMEOUT_MIN"
T = TypeVar("T")


def collective_timeout() -> timedelta:
    """How long a rank waits on a collective (a dead peer, a hung loader) before it fails with
    NCCL's or gloo's timeout error instead of hanging the job: 30 minutes, or the whole
    minutes of IQA_FACTORY_NCCL_TIMEOUT_MIN; validation over 20000 samples fits well inside."""
    value = os.environ.get(TIMEOUT_VARIABLE, "30")
    try:
        minutes = int(value)
    except ValueError:
        minutes = 0
    if minutes < 1:
        raise ValueError(f"{TIMEOUT_VARIABLE} must be a whole number of minutes, at least 1; "
                         f"got {value!r}")
    return timedelta(minutes=minutes)


@dataclass(frozen=True)
class Context:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def print_notices(context: Context, notices: Iterable[str]) -> None:
    """Each of `notices` as a "NOTICE: ..." line, printed by rank 0 alone (every rank would
    repeat it)."""
    if context.is_main:
        for notice in notices:
            print(f"NOTICE: {notice}")


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def start(device: str = "auto") -> Context:
    """Join the torchrun process group (NCCL with GPUs, gloo otherwise), or run alone."""
    timeout = collective_timeout()  # a bad value is refused even when running alone
    check_device(device)  # "cuda:0", "gpu" or "mps" would have run on the CPU
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device (use "
                         "--device cpu, or auto)")
    if not launched_by_torchrun():
        return Context(0, 1, 0, torch.device("cuda" if use_cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timeout)
    return Context(dist.get_rank(), dist.get_world_size(), local_rank,
                   torch.device(f"cuda:{local_rank}" if use_cuda else "cpu"))


def stop(context: Context) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


class CollectiveError(Exception):
    """A collective that failed: another rank stopped (its own output says why), hung past the
    collective timeout, or the network between them failed."""


@contextmanager
def started(device: str = "auto") -> Iterator[Context]:
    """The process group for the length of a run (start, then stop however it ends); a
    collective's failure (gloo's RuntimeError, NCCL's DistError) raised as a CollectiveError
    that names this rank."""
    context = start(device)
    try:
        yield context
    except RuntimeError as error:
        if not (context.distributed and _of_a_collective(error)):
            raise
        raise CollectiveError(
            f"rank {context.rank} of {context.world_size} stops: a collective failed "
            f"({_first_words(error)}): another rank stopped (its own output says why), hung "
            f"past the collective timeout ({TIMEOUT_VARIABLE}), or the network between them "
            "failed") from error
    finally:
        stop(context)


def _of_a_collective(error: RuntimeError) -> bool:
    return isinstance(error, dist.DistError) or "/gloo/" in str(error)


def _first_words(error: RuntimeError) -> str:
    """The first sentence of torch's message, without gloo's source location."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(error).strip()).partition("\n")[0]
    return text.split(". ")[0]


def same_on_every_rank(context: Context, option: str, value) -> None:
    """A ValueError on every rank where `value`, an option's, is not the same on every rank
    (each rank runs its own command line: a node's could lack --resume, say)."""
    values = gather_objects(context, value)
    if any(other != values[0] for other in values):
        ranks = ", ".join(f"rank {rank}: {other}" for rank, other in enumerate(values))
        raise ValueError(f"{option} differs between the ranks ({ranks}): give every rank "
                         "the same command")


def barrier(context: Context) -> None:
    if context.distributed:
        dist.barrier()


def gather_rows(context: Context, rows: torch.Tensor) -> torch.Tensor:
    """Every rank's rows (unequal counts allowed), concatenated in rank order; each rank pads
    to the longest and the padding is dropped after the gather."""
    if not context.distributed:
        return rows
    count = torch.tensor([rows.shape[0]], device=context.device)
    counts = [torch.zeros_like(count) for _ in range(context.world_size)]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    padded = torch.zeros((longest, *rows.shape[1:]), dtype=rows.dtype, device=context.device)
    padded[: rows.shape[0]] = rows.to(context.device)
    gathered = [torch.zeros_like(padded) for _ in range(context.world_size)]
    dist.all_gather(gathered, padded)
    return torch.cat([part[: int(c.item())] for part, c in zip(gathered, counts, strict=True)])


def gather_with_gradients(context: Context, values: torch.Tensor) -> torch.Tensor:
    """Every rank's 1-D `values` (unequal counts allowed), concatenated in rank order, through
    which gradients flow back to each rank's own: a figure of the global batch (a correlation)
    computed on every rank trains as one process on that batch would."""
    if not context.distributed:
        return values
    count = torch.tensor([len(values)], device=values.device)
    counts = [torch.zeros_like(count) for _ in range(context.world_size)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    padded = torch.nn.functional.pad(values, (0, max(sizes) - len(values)))
    parts = torch.distributed.nn.functional.all_gather(padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])


def broadcast_flag(context: Context, flag: bool) -> bool:
    """Rank 0's decision, on every rank (so every rank stops at the same epoch)."""
    if not context.distributed:
        return flag
    value = torch.tensor([1 if flag else 0], device=context.device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def broadcast_buffers(context: Context, module: torch.nn.Module) -> None:
    """Rank 0's buffers (batch-norm running statistics, ...) on every rank: each rank's forward
    passes moved its own, and rank 0's are what its checkpoints hold."""
    if not context.distributed:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def all_sum(context: Context, value: float) -> float:
    if not context.distributed:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=context.device)
    dist.all_reduce(total)
    return float(total.item())


def all_true(context: Context, flag: bool) -> bool:
    """True on every rank when `flag` is true on every rank (a collective: all ranks call it)."""
    if not context.distributed:
        return flag
    value = torch.tensor([1 if flag else 0], device=context.device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def gather_objects(context: Context, value) -> list:
    """Every rank's `value` (any picklable object), in rank order, on every rank."""
    if not context.distributed:
        return [value]
    values = [None] * context.world_size
    dist.all_gather_object(values, value)
    return values


def computed_on_main(context: Context, compute: Callable[[], T]) -> T:
    """`compute()` run on rank 0 alone and its value sent to every rank: what each rank would
    otherwise work out alike from the same files (a dataset's index: 0.8 GB at 23.1M rows,
    read by each rank). An Exception it raises is raised on every rank (rank 0's own; the others
    a copy, or a RuntimeError quoting it where it does not travel)."""
    if not context.distributed:
        return compute()
    outcome: list = [None]
    if context.is_main:
        try:
            outcome[0] = (True, compute())
        except Exception as error:
            outcome[0] = (False, _portable(error))
            dist.broadcast_object_list(outcome, src=0)
            raise
    dist.broadcast_object_list(outcome, src=0)
    done, value = outcome[0]
    if not done:
        raise value
    return value


def _portable(error: Exception) -> Exception:
    """`error` where it survives pickling (as broadcast_object_list sends it), else a
    RuntimeError quoting it."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error
