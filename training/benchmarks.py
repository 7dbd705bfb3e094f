"""Human-rated IQA datasets in their native layouts, as lists of labelled images with scores
rescaled to [0, 1] (higher is better) and the reference each image belongs to:

- kadid10k: ROOT/dmos.csv (dist_img, ref_img, dmos in 1-5), images in ROOT/images/
- tid2013: ROOT/mos_with_names.txt ("mos name" lines, MOS in 0-9), images in
  ROOT/distorted_images/ (file names matched without regard to case)
- koniq10k: ROOT/koniq10k_scores_and_distributions.csv (image_name, MOS in 1-5), images in
  ROOT/1024x768/ (or ROOT/512x384/)
- biq2021: ROOT/Train.csv and ROOT/Test.csv ("Image Name", MOS in 0-1; the published split),
  images in ROOT/Images/
- csv: a CSV file with columns path and score (optional: group), paths relative to the file;
  scores rescaled by their minimum and maximum
- shards: a dataset of this project; its samples' ensemble Q stand in for opinion scores
"""

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shards.dataset import open_dataset
from training.transforms import decode


class DatasetLayoutError(ValueError):
    """A dataset folder does not have the layout its kind expects."""


@dataclass(frozen=True)
class LabelledImage:
    name: str
    score: float                     # in [0, 1], higher is better
    group: str                       # its reference: the unit of --split-by reference
    path: str | None = None          # a file, or
    data: bytes | None = None        # the encoded image in memory
    published_split: str | None = None  # train | test where the dataset fixes a split

    def pixels(self) -> np.ndarray:
        if self.data is not None:
            return decode(self.data)
        with open(self.path, "rb") as handle:
            return decode(handle.read())


def _rows(path: Path, delimiter: str = ",") -> list[dict]:
    if not path.is_file():
        raise DatasetLayoutError(f"{path} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


def _column(row: dict, name: str, source: Path) -> str:
    if name not in row:
        raise DatasetLayoutError(f"{source} has no column {name!r} (columns: {list(row)})")
    return row[name]


def _folder(root: Path, candidates: tuple[str, ...]) -> Path:
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    raise DatasetLayoutError(f"{root} holds none of the image folders {list(candidates)}")


def _check_files(images: list[LabelledImage], root: Path) -> list[LabelledImage]:
    missing = [image.path for image in images if not Path(image.path).is_file()]
    if missing:
        raise DatasetLayoutError(f"{len(missing)} of {len(images)} images listed in {root} are "
                                 f"missing, e.g. {missing[:3]}")
    if not images:
        raise DatasetLayoutError(f"{root} lists no image")
    return images


def kadid10k(root: Path, **_) -> list[LabelledImage]:
    table = root / "dmos.csv"
    folder = _folder(root, ("images", "."))
    return _check_files([
        LabelledImage(row["dist_img"], (float(_column(row, "dmos", table)) - 1) / 4,
                      _column(row, "ref_img", table), str(folder / row["dist_img"]))
        for row in _rows(table)], root)


def tid2013(root: Path, **_) -> list[LabelledImage]:
    table = root / "mos_with_names.txt"
    folder = _folder(root, ("distorted_images", "."))
    by_lower = {path.name.lower(): path for path in folder.iterdir()}
    if not table.is_file():
        raise DatasetLayoutError(f"{table} does not exist")
    images = []
    for line in table.read_text().splitlines():
        if line.strip():
            mos, name = line.split()
            path = by_lower.get(name.lower(), folder / name)
            images.append(LabelledImage(name, float(mos) / 9, name[:3].lower(), str(path)))
    return _check_files(images, root)


def koniq10k(root: Path, **_) -> list[LabelledImage]:
    table = root / "koniq10k_scores_and_distributions.csv"
    folder = _folder(root, ("1024x768", "512x384", "."))
    return _check_files([
        LabelledImage(row["image_name"], (float(_column(row, "MOS", table)) - 1) / 4,
                      row["image_name"], str(folder / row["image_name"]))
        for row in _rows(table)], root)


def _biq_table(root: Path, part: str) -> Path:
    for name in (f"{part}.csv", f"{part} (Images and MOS).csv"):
        if (root / name).is_file():
            return root / name
    raise DatasetLayoutError(f"{root} has no {part}.csv (BIQ2021's published {part} list)")


def biq2021(root: Path, **_) -> list[LabelledImage]:
    folder = _folder(root, ("Images", "."))
    images = []
    for part in ("Train", "Test"):
        table = _biq_table(root, part)
        for row in _rows(table):
            name = _column(row, "Image Name", table)
            images.append(LabelledImage(name, float(_column(row, "MOS", table)), name,
                                        str(folder / name), published_split=part.lower()))
    return _check_files(images, root)


def generic_csv(root: Path, **_) -> list[LabelledImage]:
    rows = _rows(root)
    if not rows:
        raise DatasetLayoutError(f"{root} lists no image")
    raw = np.array([float(_column(row, "score", root)) for row in rows])
    low, high = raw.min(), raw.max()
    if high <= low:
        raise DatasetLayoutError(f"every score in {root} is {low}: nothing to learn")
    return _check_files([
        LabelledImage(row["path"], float((score - low) / (high - low)),
                      row.get("group") or row["path"], str(root.parent / row["path"]))
        for row, score in zip(rows, raw, strict=True)], root)


def shard_samples(root: Path, refs: tuple[str, ...] = (), **_) -> list[LabelledImage]:
    """The distorted samples of the given references (their images held in memory, encoded),
    read from the complete shards that hold them."""
    if not refs:
        raise DatasetLayoutError("the shards dataset needs --refs: the references to use")
    wanted = set(refs)
    samples = list(open_dataset(str(root)).samples(refs=wanted, decode=False))
    if any(item["meta"]["quality"] is None for item in samples):
        raise DatasetLayoutError(f"{root} has no quality labels (generated label-free with "
                                 "--metrics none): nothing to fine-tune on")
    images = [LabelledImage(item["key"], float(item["meta"]["quality"]), item["ref_id"],
                            data=item["encoded"]) for item in samples]
    found = {image.group for image in images}
    if found != wanted:
        raise DatasetLayoutError(f"references {sorted(wanted - found)} have no sample in {root}")
    return images


LOADERS: dict[str, Callable[..., list[LabelledImage]]] = {
    "kadid10k": kadid10k, "tid2013": tid2013, "koniq10k": koniq10k, "biq2021": biq2021,
    "csv": generic_csv, "shards": shard_samples}


def load(kind: str, root: str, refs: tuple[str, ...] = ()) -> list[LabelledImage]:
    if kind not in LOADERS:
        raise ValueError(f"dataset must be one of {', '.join(LOADERS)}; got {kind!r}")
    path = Path(root)
    if not path.exists():
        raise DatasetLayoutError(f"{root} does not exist")
    return LOADERS[kind](path, refs=refs)
