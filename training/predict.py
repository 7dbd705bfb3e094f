"""`train predict`: a quality model's scores of images that have no opinion scores (files, and
folders of them), each the mean over evaluate's random crops; the crops are drawn from the
image's own pixels, so an image scores the same in any list and any run. Writes the scores as a
CSV (an image that could not be scored keeps its row, with why), a JSON summary and a picture
of the lowest and highest scored."""

import csv
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from shards.decode import IMAGE_EXTENSIONS
from shards.words import a_few
from training import distributed
from training.evaluate import quality_model
from training.finetune import rank_share_loader
from training.loop import predict
from training.output_lease import sole_writer
from training.plots import extremes
from training.precision import Inputs
from training.rated_datasets import DatasetLayoutError, LabelledImage, header_size
from training.results_files import write_json
from training.settings import check_count, check_shared
from training.trained import TrainedRun
from training.transforms import EVAL_CROPS, Augment, eval_views

SCORES_FILE = "predictions.csv"
SUMMARY_FILE = "prediction.json"
EXTREMES_FILE = "extremes.png"


@dataclass(frozen=True)
class PredictConfig:
    checkpoint: str
    inputs: tuple[str, ...]      # image files and folders (searched below for image files)
    out: str
    crop: int | None = None      # default: the checkpoint's training crop
    eval_crops: int = EVAL_CROPS
    batch_size: int = 16
    workers: int = 2
    device: str = "auto"

    def __post_init__(self):
        check_shared(self.workers, None, self.device)
        check_count("crop", self.crop, 16, optional=True)
        check_count("eval_crops", self.eval_crops, 1)
        check_count("batch_size", self.batch_size, 1)


def image_files(inputs: tuple[str, ...], out: str | None = None
                ) -> tuple[list[Path], dict[str, str], list[str]]:
    """(each input named, and each folder's files with an image extension below it, sorted;
    each file once, however named: links and other spellings resolved; in that order), why
    each of them that is no file cannot be scored (nothing behind the name, a link to
    nothing: each keeps its row), and the folders below that could not be listed. The
    pictures predict writes (in `out`, and beside an earlier run's summary) are left out: a
    rerun must not score them. A DatasetLayoutError where that leaves no name at all (only
    folders without image files)."""
    own = _real(Path(out) / EXTREMES_FILE) if out else None
    found: dict[Path, Path] = {}  # resolved -> as first named
    unlisted: list[str] = []
    for name in inputs:
        path = Path(name)
        for item in _below(path, unlisted) if path.is_dir() else [path]:
            real = _real(item)
            if real != own and not _predicts_picture(item):
                found.setdefault(real, item)
    if not found:
        raise DatasetLayoutError(f"no image file in {', '.join(inputs)} (names ending in "
                                 f"{', '.join(sorted(IMAGE_EXTENSIONS))}, any case)")
    files = list(found.values())
    missing = {str(file): _why_no_file(file) for file in files if not file.is_file()}
    return files, missing, unlisted


def _why_no_file(path: Path) -> str:
    """Why a name predict lists holds no image file (is_file is false: links followed)."""
    if path.exists():
        return "no regular file behind the name (a pipe, socket or device: never opened)"
    return "no file behind the name (nothing there, a link to nothing, or links in a loop)"


def _predicts_picture(path: Path) -> bool:
    """The picture of an earlier predict run: its extremes.png beside its summary."""
    return path.name == EXTREMES_FILE and (path.parent / SUMMARY_FILE).is_file()


def _real(path: Path) -> Path:
    """The path with its links resolved (a loop of links is left as far as it resolves)."""
    return Path(os.path.realpath(path))


def _below(folder: Path, unlisted: list[str]) -> list[Path]:
    """The names with an image extension below `folder` (links to folders not followed),
    sorted; a folder that cannot be listed is added to `unlisted`."""
    listed = []
    for root, _, names in os.walk(folder, onerror=lambda error: unlisted.append(
            str(error.filename))):
        listed += [Path(root) / name for name in names
                   if Path(name).suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(listed)


def content_rng(pixels: np.ndarray) -> np.random.Generator:
    """The crops' generator, seeded by the pixels themselves."""
    digest = hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


class CropViews(Dataset):
    """(an image's crops, its index); where its pixels cannot be read (a file truncated after
    its header), blank crops and -1 - index, so the run goes on and the image is named."""

    def __init__(self, images: list[LabelledImage], augment: Augment, crops: int):
        self.images, self.augment, self.crops = images, augment, crops

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            pixels = self.images[index].pixels()
            views = eval_views(pixels, self.augment, content_rng(pixels), self.crops)
            return views, torch.tensor(float(index))
        except (ValueError, OSError):  # DatasetLayoutError, a crop larger than the decoded
                                       # image, or a file no longer readable
            blank = torch.zeros((self.crops, 3, self.augment.crop, self.augment.crop),
                                dtype=torch.uint8)
            return blank, torch.tensor(float(-1 - index))


def _why_not(image: LabelledImage, augment: Augment) -> str:
    """Why an image the loader could not crop failed (read again here, for its message)."""
    try:
        eval_views(image.pixels(), augment, np.random.default_rng(0), 1)
    except (ValueError, OSError) as error:
        return str(error)
    return "could not be read"


def _checked(files: list[Path], crop: int) -> tuple[list[LabelledImage], dict[str, str]]:
    """The files whose headers name an image of at least the crop, and why each other one is
    left out (by path)."""
    images, failed = [], {}
    for path in files:
        image = LabelledImage(str(path), math.nan, str(path), str(path))
        try:
            size = header_size(image)
        except OSError as error:  # (a file without read permission, say)
            failed[str(path)] = f"unreadable: {error.strerror or error}"
            continue
        if isinstance(size, str):
            failed[str(path)] = f"not an image: {size}"
        elif min(size) < crop:
            failed[str(path)] = (f"{size[0]}x{size[1]} is smaller than the {crop}-pixel crop "
                                 "(pass a smaller --crop)")
        else:
            images.append(image)
    return images, failed


def _write_scores(path: Path, files: list[Path], scores: dict[str, float],
                  failed: dict[str, str]) -> None:
    # a file name that is not UTF-8 (bytes the file system took as they came) is written as
    # those bytes, so that the row names that file (read it back with surrogateescape)
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "score", "error"])
        for file in map(str, files):
            score = scores.get(file)
            writer.writerow([file, "" if score is None else repr(score), failed.get(file, "")])


def predict_images(config: PredictConfig) -> dict:
    with distributed.started(config.device) as context, \
            sole_writer(config.out, "predict", context):
        scorer = quality_model(config.checkpoint, config.crop, context.device)
        files, missing, unlisted = image_files(config.inputs, config.out)
        images, failed = _checked([file for file in files if str(file) not in missing],
                                  scorer.augment.crop)
        failed.update(missing)
        views = CropViews(images, scorer.augment, config.eval_crops)
        loader = rank_share_loader(context, views, config.workers,
                                   max(1, config.batch_size // context.world_size))
        inputs = Inputs.of(scorer.augment, context.device,
                        scorer.precision)
        predicted, index = predict(context, scorer.model, loader, inputs)
        if not context.is_main:
            return {}
        scores = {}
        for value, position in zip(predicted, index.astype(int), strict=True):
            image = images[position if position >= 0 else -1 - position]
            if position >= 0:
                scores[image.path] = float(value)
            else:
                failed[image.path] = _why_not(image, scorer.augment)
        return _report(config, scorer.trained, files, scores, failed, unlisted)


def _report(config: PredictConfig, trained: TrainedRun, files: list[Path],
            scores: dict[str, float], failed: dict[str, str], unlisted: list[str]) -> dict:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    _write_scores(out / SCORES_FILE, files, scores, failed)
    values = np.array(list(scores.values()))
    summary = {"checkpoint": config.checkpoint, "inputs": list(config.inputs),
               "meaning": f"{trained.score_meaning()}; the model's outputs as they are, "
                          "not clipped to that range",
               "crops": config.eval_crops, "images": len(files), "scored": len(scores),
               "failed": len(failed), "unlisted_folders": unlisted,
               "mean": float(values.mean()) if len(values) else None,
               "min": float(values.min()) if len(values) else None,
               "max": float(values.max()) if len(values) else None}
    write_json(out / SUMMARY_FILE, summary)
    if scores:
        extremes(scores, out / EXTREMES_FILE)
    spread = (f": mean {summary['mean']:.4f}, from {summary['min']:.4f} to "
              f"{summary['max']:.4f}" if scores else "")
    first = min(failed, default=None)
    left = (f" ({len(failed)} could not be, e.g. {first}: {failed[first]}; each one's error "
            "is in its row)" if failed else "")
    print(f"scored {len(scores)} of {len(files)} images{left}{spread}; scores are "
          f"{summary['meaning']}; {out / SCORES_FILE}")
    if unlisted:
        print(f"warning: {len(unlisted)} folder(s) could not be listed, their images left out: "
              f"{a_few(unlisted)} ({SUMMARY_FILE} names them all)")
    return summary
