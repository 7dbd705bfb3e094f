"""The ImageNet backbones LPIPS and DISTS need, in the torch hub cache.

Files live in `$TORCH_HOME/hub/checkpoints/` (default `~/.cache/torch/hub/checkpoints/`) under
their torchvision names; the 8 hex digits in each name are the start of its SHA-256, and the
whole SHA-256 of each published file is pinned here: a file is imported or kept from a download
only when all of it matches. A machine without them fails with one message naming the files,
the directory and the two commands that provide them; labels are never computed with random
weights.
"""

import hashlib
import os
import shutil
import urllib.error
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from labelers.errors import LabelerError

DOWNLOAD_ROOT = "https://download.pytorch.org/models/"


@dataclass(frozen=True)
class Backbone:
    metric: str
    filename: str
    mebibytes: int  # the file's size, as torch's download shows it
    sha256: str  # of the whole published file (its name holds the first 8 hex digits)


BACKBONES = {
    "lpips": Backbone("lpips", "alexnet-owt-7be5be79.pth", 233,
                      "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02"),
    "dists": Backbone("dists", "vgg16-397923af.pth", 528,
                      "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0"),
}


class WeightsMissingError(LabelerError):
    """Pretrained backbone weights are not in the torch hub cache."""


class WeightsHashError(LabelerError):
    """A weight file's SHA-256 is not the published file's."""


class WeightsUnreadableError(LabelerError):
    """A cached weight file is there but torch cannot read it (truncated, or another file)."""


def checkpoint_dir() -> Path:
    """$TORCH_HOME/hub/checkpoints (torch.hub's own rule for the directory)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def weight_path(metric: str) -> Path:
    return checkpoint_dir() / BACKBONES[metric].filename


def missing(metrics: list[str] | tuple[str, ...]) -> list[str]:
    """The metrics among `metrics` whose backbone file is absent."""
    return [m for m in metrics if m in BACKBONES and not weight_path(m).is_file()]


def missing_message(metrics: list[str]) -> str:
    files = ", ".join(f"{BACKBONES[m].filename} ({BACKBONES[m].mebibytes} MiB, for {m})"
                      for m in metrics)
    return (
        f"pretrained weights missing: {files} in {checkpoint_dir()}. "
        "Run `iqa-factory weights fetch` where a network is available, or "
        "`iqa-factory weights import DIR` to copy them from a folder "
        "(TORCH_HOME selects the cache directory)."
    )


def check_present(metrics: Sequence[str], allow_missing: bool) -> tuple[str, ...]:
    """The metrics of `metrics` whose weights are missing, where a run may go on without
    them (--allow-missing-metrics); a WeightsMissingError saying how to get them otherwise,
    or where no other metric is asked for."""
    absent = tuple(missing(metrics))
    if absent and len(absent) == len(metrics):
        raise WeightsMissingError(missing_message(list(absent)) +
                                  " No other metric was asked for (--metrics).")
    if absent and not allow_missing:
        raise WeightsMissingError(missing_message(list(absent)) +
                                  " Or pass --allow-missing-metrics.")
    return absent


def require(metric: str) -> Path:
    """The backbone file of `metric`, or WeightsMissingError with the full explanation."""
    path = weight_path(metric)
    if not path.is_file():
        raise WeightsMissingError(missing_message([metric]))
    return path


def load_state(metric: str) -> dict[str, torch.Tensor]:
    """The state dict in the backbone file of `metric`; WeightsMissingError without the file,
    WeightsUnreadableError (naming the file, its SHA-256 against the published one, and the
    commands that replace it) when torch cannot read it."""
    path = require(metric)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch's zip, pickle, EOF and index errors on a bad file
        said = (str(error).splitlines() or [""])[0][:200]
        raise WeightsUnreadableError(_unreadable(path, metric, f"{type(error).__name__}"
                                                 + (f": {said}" if said else ""))) from error
    if not isinstance(state, dict):
        raise WeightsUnreadableError(_unreadable(path, metric, f"it holds a "
                                                 f"{type(state).__name__}, not a state dict"))
    return state


def load_into(metric: str, network: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """`network` given `state`, read from the backbone file of `metric`; WeightsUnreadableError
    naming the file where the state is not that network's (another network's file under its
    name: torch read it, its tensors do not fit)."""
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        said = (str(error).splitlines() or [""])[0][:200]
        raise WeightsUnreadableError(_unreadable(weight_path(metric), metric,
                                                 f"not its network's weights: {said}")) from error


def _unreadable(path: Path, metric: str, why: str) -> str:
    backbone = BACKBONES[metric]
    found = file_sha256(path)
    hashes = ("its SHA-256 is the published file's" if found == backbone.sha256 else
              f"its SHA-256 {found[:16]}... is not the published {backbone.sha256[:16]}...")
    return (f"{path} cannot be read as {metric}'s backbone ({why}; {hashes}). Delete it, then "
            "run `iqa-factory weights fetch` or `iqa-factory weights import DIR`.")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_hash(path: Path, backbone: Backbone) -> None:
    """WeightsHashError unless the file at `path` is the published one, byte for byte."""
    found = file_sha256(path)
    if found != backbone.sha256:
        raise WeightsHashError(f"{path}: SHA-256 {found} is not {backbone.sha256}, the "
                               f"published {backbone.filename}")


def import_from(folder: Path) -> list[Path]:
    """Copy the backbone files found in `folder` into the cache, each checked against its
    published hash as copied and renamed into place whole (an import cut short leaves no
    partial file under the published name)."""
    if Path(folder).is_file():
        raise WeightsMissingError(f"{folder} is a file: name the folder that holds the files")
    if not Path(folder).is_dir():
        raise WeightsMissingError(f"{folder}: no such folder")
    copied = []
    for backbone in BACKBONES.values():
        source = Path(folder) / backbone.filename
        if not source.is_file():
            continue
        check_hash(source, backbone)
        copied.append(_placed(backbone, lambda staged, source=source: shutil.copyfile(
            source, staged)))
    if not copied:
        names = ", ".join(b.filename for b in BACKBONES.values())
        raise WeightsMissingError(f"none of {names} is in {folder}")
    return copied


def _placed(backbone: Backbone, write) -> Path:
    """`write(staged path)`, its hash checked, then renamed to the cache's published name;
    nothing left behind where either fails."""
    checkpoint_dir().mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir() / backbone.filename
    staged = final.with_name(f"{final.name}.{os.getpid()}.partial")
    try:
        write(staged)
        check_hash(staged, backbone)
        staged.replace(final)
    finally:
        staged.unlink(missing_ok=True)
    return final


def unpublished() -> list[str]:
    """The metrics whose cached backbone file is there but not the published one (cut
    short, or another file under its name); hashes every cached file."""
    return [metric for metric, backbone in BACKBONES.items()
            if weight_path(metric).is_file() and
            file_sha256(weight_path(metric)) != backbone.sha256]


def fetch() -> list[Path]:
    """Download the backbone files the cache lacks or holds other bytes of (where a network
    exists), each checked against its published hash before it takes the published name."""
    fetched = []
    for metric in [*missing(list(BACKBONES)), *unpublished()]:
        backbone = BACKBONES[metric]

        def download(staged: Path, backbone=backbone) -> None:
            try:
                torch.hub.download_url_to_file(DOWNLOAD_ROOT + backbone.filename, str(staged))
            except (urllib.error.URLError, OSError) as error:
                raise WeightsMissingError(
                    f"could not download {backbone.filename}: {error}. Copy the files from a "
                    "machine that has them with `iqa-factory weights import DIR`.") from error
        fetched.append(_placed(backbone, download))
    return fetched
