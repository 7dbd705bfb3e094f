"""Checkpoints: written by rank 0 after every epoch, and every N batches when asked
(atomically: a temporary file renamed), read back with torch.load(weights_only=True); the
random state a mid-epoch checkpoint keeps to continue exactly."""

import pickle
from pathlib import Path
from typing import BinaryIO

import torch

from shards.stopping import interrupt_kept
from shards.storage import atomic_file

LAST = "last.pt"
BEST = "best.pt"
ZIP_MAGIC = b"PK"          # torch.save's format since torch 1.6
PICKLE_PROTOCOL = b"\x80"  # a legacy torch.save file opens with a pickle's protocol byte


def replaced_run_notices(out: str | Path, resume: bool) -> list[str]:
    """The notice that a new pretraining run into `out` replaces the earlier one's files
    there (none for a resume, or a new folder): said once the run's data is checked, before
    it writes anything, never ahead of an error that leaves the folder as it was."""
    earlier = Path(out) / LAST
    if resume or not earlier.is_file():
        return []
    return [f"{out} holds an earlier pretraining run ({earlier.name}): this one removes its "
            "checkpoints, summary and TensorBoard logs before it writes its own (--resume "
            "continues it instead)"]


def save(state: dict, path: Path) -> None:
    """Write `state` to `path` whole or not at all (a node that loses power never leaves an
    empty checkpoint in place of the last one: shards.storage.atomic_file)."""
    with atomic_file(path) as handle:
        write(state, handle)


def write(state: dict, handle: BinaryIO) -> None:
    """torch.save(state, handle). A Ctrl-C (or a SIGTERM, raised as one) while it writes is
    raised as the KeyboardInterrupt it is: torch's zip writer, closed in the middle of a
    record, raises a RuntimeError in its place ("unexpected pos"), which the command line
    would show as a crash where it says how to resume."""
    with interrupt_kept():
        torch.save(state, _WhileOpen(handle))


class _WhileOpen:
    """`handle` as torch.save writes to it: written while it is open, written past once it is
    closed. torch's zip writer writes the archive's end when it is freed if it has not yet;
    where an interrupt stopped torch.save before then, it is freed only once the interrupt is
    handled, after atomic_file closed the staged file, and a write that raises inside its C++
    destructor aborts the process (SIGABRT: "write to closed file")."""

    def __init__(self, handle: BinaryIO):
        self._handle = handle

    def write(self, data: bytes) -> int | None:
        return None if self._handle.closed else self._handle.write(data)

    def flush(self) -> None:
        if not self._handle.closed:
            self._handle.flush()


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint (truncated, corrupted, not torch's)."""


def read(path: Path) -> object:
    """What torch saved in `path` (tensors and plain data only: weights_only); a
    CheckpointError where the file is truncated or not torch's."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, AttributeError,
            KeyError, OSError) as error:  # OSError: a zip cut inside its tensors' data
        if isinstance(error, FileNotFoundError | PermissionError):
            raise
        raise CheckpointError(f"{path} is not a readable checkpoint: {_why(path, error)}"
                              ) from None


def _why(path: Path, error: Exception) -> str:
    """Why torch could not load a file, in words that fit it (torch's own message for a
    weights-only refusal suggests loading arbitrary code, which is never done here)."""
    with open(path, "rb") as handle:
        head = handle.read(2)
    if head != ZIP_MAGIC and head[:1] != PICKLE_PROTOCOL:
        return "not a file torch writes (neither its zip format nor a pickle)"
    if isinstance(error, pickle.UnpicklingError):
        return ("it holds objects other than tensors and plain data, which are never loaded "
                "here (weights_only): not a checkpoint of iqa-factory train")
    return f"truncated or damaged ({type(error).__name__}: {str(error).splitlines()[0]})"


def load(path: Path) -> dict:
    """The checkpoint at `path`: FileNotFoundError where there is none, CheckpointError where
    the file cannot be read as one."""
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = read(path)
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} holds no model state: not a checkpoint of iqa-factory "
                              "train")
    return state


def trained(path: Path) -> dict:
    """The checkpoint of an `iqa-factory train` run at `path`: FileNotFoundError where there is
    none, CheckpointError where it cannot be read or does not name its backbone in its saved
    config (a plain state dict, another tool's file)."""
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = read(path)
    config = state.get("config") if isinstance(state, dict) else None
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict) or model.get("backbone") is None or "model" not in state:
        raise CheckpointError(f"{path} does not name its backbone (config.model.backbone): "
                              "not a checkpoint of `iqa-factory train`")
    return state


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The torch generators this process draws from (dropout, drop-path): the CPU one, and
    the device's when it is a GPU. The data streams seed their own (seed, epoch, rank)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    """The generators rng_state saved; a GPU's is left out on a CPU (a run made on a GPU
    resumed on a CPU: not bit-exact there in any case)."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
