"""Human-rated IQA datasets in their native layouts, as lists of labelled images with scores
rescaled to [0, 1] (higher is better) and the reference each image belongs to:

- kadid10k: ROOT/dmos.csv (dist_img, ref_img, dmos in 1-5), images in ROOT/images/
- tid2013: ROOT/mos_with_names.txt ("mos name" lines, MOS in 0-9), images in
  ROOT/distorted_images/ (file names matched without regard to case)
- koniq10k: ROOT/koniq10k_scores_and_distributions.csv (image_name, MOS in 1-5), images in
  ROOT/1024x768/ (or ROOT/512x384/)
- biq2021: ROOT/Train (Images and MOS).csv and ROOT/Test (Images and MOS).csv, images in
  ROOT/Images/ (the first release: ROOT/Train.csv and ROOT/Test.csv, images in
  ROOT/Subset_01..03/); "Image Name", MOS in 0-1; the published split
- live: LIVE release 2: ROOT/dmos.mat (dmos, orgs) and ROOT/refnames_all.mat (refnames_all),
  982 entries in the order jp2k (227), jpeg (233), wn, gblur, fastfading (174 each), images
  ROOT/<folder>/img<k>.bmp (k from 1 in each folder); the 203 entries with orgs = 1 (copies of
  the references, DMOS 0) are left out; DMOS in 0-100, lower is better: score 1 - DMOS/100;
  group: the reference (refimgs/ is not read)
- csiq: ROOT/csiq.DMOS.csv (the all_by_image sheet of csiq.DMOS.xlsx saved as CSV: columns
  image, dst_type, dst_lev, dmos; others ignored), images
  ROOT/dst_imgs/<folder>/<image>.<FOLDER>.<dst_lev>.png (folder awgn, jpeg, jpeg2000, fnoise,
  blur or contrast, for dst_type noise, jpeg, jpeg 2000, fnoise, blur, contrast; names matched
  without regard to case); DMOS in 0-1, lower is better: score 1 - DMOS; group: image (the
  reference; src_imgs/ is not read)
- clive: LIVE In the Wild Challenge: ROOT/Data/AllImages_release.mat and
  ROOT/Data/AllMOS_release.mat (MOS in 0-100), images in ROOT/Images/; the 7 instruction
  images t1-t7.bmp (Images/trainingImages/) are left out, as in the literature (1162 images)
- spaq: ROOT/MOS and Image attribute scores.csv (or under ROOT/Annotations/; the .xlsx saved as
  CSV: columns "Image name", MOS in 0-100), images in ROOT/TestImage/
- flive: the PaQ-2-PiQ database folder: ROOT/labels_image.csv (name, mos in 0-100; names are
  paths under ROOT, e.g. voc_emotic_ava/AVA__149.jpg) and ROOT/labels640.csv (name_image: the
  published test set of 1.8k large images); every other image is published_split train (the
  published validation part, is_valid in labels=640_padded.csv, is not read: fine-tuning
  carves its own validation part out of train)
- csv: a CSV file with columns path and score (optional: group, without surrounding spaces;
  blank: the image), paths relative to the file;
  scores rescaled by their minimum and maximum
- shards: a dataset of this project; its samples' ensemble Q stand in for opinion scores

Scores are rescaled by each dataset's nominal scale (LIVE, CSIQ, CLIVE, SPAQ and FLIVE's
clipped to [0, 1]); the datasets without references use each image as its own group.
"""

import csv
import hashlib
import itertools
import json
import math
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.io import loadmat

from labelers.correlation import MIN_PAIRS
from labelers.ensemble import EnsembleError
from labelers.ensemble import load as load_ensemble
from shards.dataset import open_dataset
from shards.decode import DecodeError
from shards.decode import decode as decode_source
from shards.decode import header_size as decode_header_size
from shards.records import decode as decode_stored
from shards.replay import Pending
from shards.schema import finite_counts, record_score
from shards.storage import redact


class DatasetLayoutError(ValueError):
    """A dataset folder does not have the layout its kind expects."""


@dataclass(frozen=True)
class LabelledImage:
    name: str
    score: float                     # in [0, 1], higher is better
    group: str                       # its reference: the unit of --split-by reference
    path: str | None = None          # a file, or
    data: bytes | Pending | None = None  # or a shard's stored image (a recipe's Pending)
    published_split: str | None = None  # train | test where the dataset fixes a split
    size: tuple[int, int] | None = None  # a file's (width, height), from its header at load

    def content_id(self) -> str:
        """What changes when the image does: a file's size and modification time (as make and
        rsync's quick check), a shard's image's recorded or computed SHA-256."""
        if isinstance(self.data, Pending):
            return self.data.meta["sha256"]
        if self.data is not None:
            return hashlib.sha256(self.data).hexdigest()
        try:
            status = os.stat(self.path)
        except OSError:
            return "absent"
        return f"{status.st_size}:{status.st_mtime_ns}"

    def pixels(self) -> np.ndarray:
        """Its 8-bit RGB pixels; a DatasetLayoutError naming it where they cannot be read."""
        try:
            if self.data is not None:
                return decode_stored(self.data, self.name)
            with open(self.path, "rb") as handle:
                return decode_source(handle.read()).pixels
        except (OSError, ValueError) as error:
            raise DatasetLayoutError(f"{self.path or self.name} cannot be read as an image "
                                     f"({type(error).__name__}: {error})") from error


def _rows(path: Path, delimiter: str = ",") -> list[dict]:
    if path.is_dir():
        raise DatasetLayoutError(f"{path} is a folder, not a table (the csv dataset's --root "
                                 "is its CSV file)")
    if not path.is_file():
        raise DatasetLayoutError(f"{path} does not exist")
    rows = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            lines, skipped = _from_header(handle, delimiter)
            reader = csv.DictReader(lines, delimiter=delimiter)
            for row in reader:
                if None in row:  # DictReader's key for the fields past the header's
                    raise DatasetLayoutError(
                        f"{path}: line {skipped + reader.line_num} has "
                        f"{len(reader.fieldnames) + len(row[None])} fields, the header "
                        f"{len(reader.fieldnames)} (a decimal comma? quote a value that holds "
                        "the delimiter)")
                if not any((value or "").strip() for value in row.values()):  # ",,," rows
                    continue
                if None in row.values():  # DictReader's value for fields the line lacks
                    raise DatasetLayoutError(
                        f"{path}: line {skipped + reader.line_num} has "
                        f"{sum(value is not None for value in row.values())} fields, the "
                        f"header {len(reader.fieldnames)}")
                rows.append(row)
    except (UnicodeDecodeError, csv.Error) as error:
        raise DatasetLayoutError(f"{path} is not a UTF-8 table ({type(error).__name__}: "
                                 f"{error})") from None
    return rows


def _from_header(handle: Iterable[str], delimiter: str) -> tuple[Iterator[str], int]:
    """The lines from the first that holds a value (the header) on, and how many came before:
    a sheet saved as CSV from a table that starts lower down (CSIQ's all_by_image sheet, its
    header in row 4) opens with rows of empty cells."""
    lines, skipped = iter(handle), 0
    for line in lines:
        if line.strip(delimiter + " \t\r\n"):
            return itertools.chain([line], lines), skipped
        skipped += 1
    return iter(()), skipped


def _column(row: dict, name: str, source: Path) -> str:
    if name not in row:
        raise DatasetLayoutError(f"{source} has no column {name!r} (columns: {list(row)})")
    return row[name]


def _score(row: dict, name: str, source: Path) -> float:
    """Column `name` of a row as a finite number, or a DatasetLayoutError naming the row."""
    text = _column(row, name, source)
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        shown = ", ".join(f"{k}={v!r}" for k, v in list(row.items())[:3])
        raise DatasetLayoutError(f"{source}: the row {shown} has {name} {text!r}, not a "
                                 "finite number")
    return value


def _on_scale(row: dict, name: str, source: Path, lowest: float, highest: float) -> float:
    """Column `name` of a row as a number on its dataset's scale lowest..highest (a mean of
    ratings on it), rescaled to 0..1; a DatasetLayoutError naming the row where it lies
    outside (another scale or column: its scores would leave 0..1 and train so)."""
    value = _score(row, name, source)
    if not lowest <= value <= highest:
        shown = ", ".join(f"{k}={v!r}" for k, v in list(row.items())[:3])
        raise DatasetLayoutError(f"{source}: the row {shown} has {name} {value:g}, outside "
                                 f"the dataset's scale {lowest:g}..{highest:g} (another scale "
                                 "or column?)")
    return (value - lowest) / (highest - lowest)


def _whole(row: dict, name: str, source: Path) -> int:
    """Column `name` of a row as a whole number (a level), or a DatasetLayoutError."""
    value = _score(row, name, source)
    if value != int(value):
        raise DatasetLayoutError(f"{source}: the row has {name} {row[name]!r}, not a whole "
                                 "number")
    return int(value)


def _folder(root: Path, candidates: tuple[str, ...]) -> Path:
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    raise DatasetLayoutError(f"{root} holds none of the image folders {list(candidates)}")


def _check_files(images: list[LabelledImage], root: Path) -> list[LabelledImage]:
    """The images, each a file whose header names an image format (a truncated file shows at
    its first decode: only a whole decode finds it); a DatasetLayoutError naming those missing
    or unreadable otherwise, before any training."""
    images = _in_any_normal_form(images)
    missing = [image.path for image in images if not Path(image.path).is_file()]
    if missing:
        raise DatasetLayoutError(f"{len(missing)} of {len(images)} images listed in {root} are "
                                 f"missing, e.g. {missing[:3]}")
    if not images:
        raise DatasetLayoutError(f"{root} lists no image")
    sizes = [header_size(image) for image in images]
    unreadable = [why for why in sizes if isinstance(why, str)]
    if unreadable:
        raise DatasetLayoutError(f"{len(unreadable)} of {len(images)} images listed in {root} "
                                 f"are not images: {'; '.join(unreadable[:3])}")
    return [replace(image, size=size) for image, size in zip(images, sizes, strict=True)]


def _in_any_normal_form(images: list[LabelledImage]) -> list[LabelledImage]:
    """The images, each not found as listed found under the same name in another Unicode
    normal form where its folder holds one (a list written on one system, files copied from
    macOS, which names them decomposed: the same text, other bytes)."""
    on_disk: dict[Path, dict[str, Path]] = {}

    def found(path: Path) -> Path:
        if path.is_file() or not path.parent.is_dir():
            return path
        if path.parent not in on_disk:
            on_disk[path.parent] = {unicodedata.normalize("NFC", other.name): other
                                    for other in path.parent.iterdir()}
        return on_disk[path.parent].get(unicodedata.normalize("NFC", path.name), path)
    return [image if image.path is None else replace(image, path=str(found(Path(image.path))))
            for image in images]


def check_testable(images: list[LabelledImage], what: str) -> None:
    """A DatasetLayoutError, before anything is scored, where `what` (a split's test part, a
    dataset tested whole) cannot be tested: fewer than MIN_PAIRS images, or all of one score
    (no correlation is defined, and a curve fitted to one score has an RMSE of 0 whatever the
    model predicts)."""
    if len(images) < MIN_PAIRS:
        raise DatasetLayoutError(f"{what} holds {len(images)} image(s); its correlations need "
                                 f"at least {MIN_PAIRS} (a larger dataset, or a larger test "
                                 "part)")
    if len({image.score for image in images}) == 1:
        raise DatasetLayoutError(f"{what}: its {len(images)} images all score "
                                 f"{images[0].score:g} (rescaled to 0-1): no figure of a model "
                                 "can be measured on them; test on images whose scores vary")


def check_crop(images: list[LabelledImage], crop: int) -> None:
    """A DatasetLayoutError naming the image files smaller than the crop (their sizes read
    from their headers at load), before any training; a shard's stored images meet the
    generated size."""
    small = [f"{image.name} ({image.size[0]}x{image.size[1]})" for image in images
             if image.size is not None and min(image.size) < crop]
    if small:
        raise DatasetLayoutError(f"{len(small)} of {len(images)} images are smaller than the "
                                 f"{crop}-pixel crop, e.g. {', '.join(small[:3])}: pass a "
                                 "smaller --crop")


def header_size(image: LabelledImage) -> tuple[int, int] | str:
    """The file's (width, height) upright, from its header, or why the decoder would refuse
    that header (shards.decode.header_size): Pillow's formats that are no images here (PCX,
    ICO), more pixels than it decodes. Only the header is read."""
    try:
        return decode_header_size(image.path)
    except DecodeError as error:
        return f"{image.path} ({error})"


def kadid10k(root: Path, **_) -> list[LabelledImage]:
    table = root / "dmos.csv"
    folder = _folder(root, ("images", "."))
    return _check_files([
        LabelledImage(_column(row, "dist_img", table), _on_scale(row, "dmos", table, 1, 5),
                      _column(row, "ref_img", table), str(folder / row["dist_img"]))
        for row in _rows(table)], root)


def tid2013(root: Path, **_) -> list[LabelledImage]:
    table = root / "mos_with_names.txt"
    folder = _folder(root, ("distorted_images", "."))
    by_lower = _by_lower_name([folder])
    if not table.is_file():
        raise DatasetLayoutError(f"{table} does not exist")
    images = []
    try:
        text = table.read_text(encoding="utf-8-sig")  # a BOM, as Windows editors write
    except UnicodeDecodeError as error:
        raise DatasetLayoutError(f"{table} is not UTF-8 text ({error})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            fields = line.split()
            if len(fields) != 2:
                raise DatasetLayoutError(f"{table}, line {number}: {line!r} is not 'MOS name'")
            row = {"name": fields[1], "mos": fields[0]}
            path = by_lower.get(row["name"].lower(), folder / row["name"])
            images.append(LabelledImage(row["name"], _on_scale(row, "mos", table, 0, 9),
                                        row["name"][:3].lower(), str(path)))
    return _check_files(images, root)


def koniq10k(root: Path, **_) -> list[LabelledImage]:
    table = root / "koniq10k_scores_and_distributions.csv"
    folder = _folder(root, ("1024x768", "512x384", "."))
    return _check_files([
        LabelledImage(_column(row, "image_name", table), _on_scale(row, "MOS", table, 1, 5),
                      row["image_name"], str(folder / row["image_name"]))
        for row in _rows(table)], root)


def _biq_table(root: Path, part: str) -> Path:
    """The current release's list, else the first release's (whose scores it revised: both
    present, as after copying one release over the other, the current one's are read)."""
    for name in (f"{part} (Images and MOS).csv", f"{part}.csv"):
        if (root / name).is_file():
            return root / name
    raise DatasetLayoutError(f"{root} has no {part}.csv (BIQ2021's published {part} list)")


def biq2021(root: Path, **_) -> list[LabelledImage]:
    """BIQ2021 as its repository publishes it: Images/ (Subset_01..03/ in its first release)
    and the Train and Test lists; names found whatever their letter case (the list writes
    `ss02 (1014).jpg`, the file is `.JPG`), MOS clipped to [0, 1] (the first release's list
    holds a few values below 0)."""
    folders = ([root / "Images"] if (root / "Images").is_dir() else
               [root, *sorted(root.glob("Subset_*"))])
    by_lower = _by_lower_name(folders)
    images = []
    for part in ("Train", "Test"):
        table = _biq_table(root, part)
        for row in _rows(table):
            name = _column(row, "Image Name", table)
            path = by_lower.get(name.lower(), folders[0] / name)
            images.append(LabelledImage(name, _unit(_score(row, "MOS", table), 0, 1), name,
                                        str(path), published_split=part.lower()))
    return _check_files(images, root)


def _by_lower_name(folders: list[Path]) -> dict[str, Path]:
    """The files of `folders` by their lower-case name (a list and its files may disagree on
    letter case, which a case-sensitive file system does not forgive)."""
    return {path.name.lower(): path for folder in folders if folder.is_dir()
            for path in folder.iterdir() if path.is_file()}


def _first_file(root: Path, candidates: tuple[str, ...]) -> Path:
    for name in candidates:
        if (root / name).is_file():
            return root / name
    others = "".join(f" (nor {root / name})" for name in candidates[1:])
    raise DatasetLayoutError(f"{root / candidates[0]} does not exist{others}")


def _mat(path: Path, *keys: str) -> list[np.ndarray]:
    """MATLAB variables as flat arrays (a cell array of strings as str objects)."""
    if not path.is_file():
        raise DatasetLayoutError(f"{path} does not exist")
    try:
        variables = loadmat(path, squeeze_me=True)
    except Exception as error:  # loadmat's parsers raise many kinds on a damaged file
        raise DatasetLayoutError(f"{path} is not a MATLAB file scipy reads ("
                                 f"{type(error).__name__}: {error}; a v7.3 file reads once "
                                 "saved with -v7)") from None
    missing = [key for key in keys if key not in variables]
    if missing:
        raise DatasetLayoutError(f"{path} has no variable {missing[0]!r}")
    return [np.atleast_1d(variables[key]) for key in keys]


def _unit(value, worst: float, best: float) -> float:
    """A score on the scale worst..best (best < worst for DMOS) in [0, 1], higher is better."""
    return float(np.clip((float(value) - worst) / (best - worst), 0.0, 1.0))


LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))


def live(root: Path, **_) -> list[LabelledImage]:
    dmos, originals = _mat(root / "dmos.mat", "dmos", "orgs")
    (references,) = _mat(root / "refnames_all.mat", "refnames_all")
    names = [f"{folder}/img{k}.bmp" for folder, count in LIVE_FOLDERS for k in range(1, count + 1)]
    if not len(dmos) == len(originals) == len(references) == len(names):
        raise DatasetLayoutError(
            f"{root}: dmos.mat has {len(dmos)} dmos and {len(originals)} orgs entries, "
            f"refnames_all.mat {len(references)}; LIVE release 2 has {len(names)}")
    return _check_files([
        LabelledImage(name, _unit(score, 100, 0), str(reference), str(root / name))
        for name, score, original, reference in zip(names, dmos, originals, references,
                                                    strict=True) if not original], root)


CSIQ_FOLDERS = {"noise": "awgn", "awgn": "awgn", "jpeg": "jpeg", "jpeg 2000": "jpeg2000",
                "jpeg2000": "jpeg2000", "fnoise": "fnoise", "blur": "blur",
                "contrast": "contrast"}


def csiq(root: Path, **_) -> list[LabelledImage]:
    table = root / "csiq.DMOS.csv"
    rows = _rows(table)
    folder = _folder(root, ("dst_imgs",))
    by_lower = {path.relative_to(folder).as_posix().lower(): path
                for path in folder.glob("*/*")}
    images = []
    for row in rows:
        image = _column(row, "image", table).strip()
        kind = CSIQ_FOLDERS.get(_column(row, "dst_type", table).strip().lower())
        if kind is None:
            raise DatasetLayoutError(f"{table}: unknown dst_type {row['dst_type']!r} (CSIQ's: "
                                     f"{sorted(CSIQ_FOLDERS)})")
        level = _whole(row, "dst_lev", table)
        name = f"{kind}/{image}.{kind}.{level}.png"
        path = by_lower.get(name.lower(), folder / name)
        images.append(LabelledImage(path.name, _unit(_score(row, "dmos", table), 1, 0), image,
                                    str(path)))
    return _check_files(images, root)


CLIVE_INSTRUCTION = re.compile(r"t\d+\.bmp", re.IGNORECASE)


def clive(root: Path, **_) -> list[LabelledImage]:
    (names,) = _mat(root / "Data" / "AllImages_release.mat", "AllImages_release")
    (mos,) = _mat(root / "Data" / "AllMOS_release.mat", "AllMOS_release")
    if len(names) != len(mos):
        raise DatasetLayoutError(f"{root / 'Data'} lists {len(names)} images and {len(mos)} MOS")
    names = [str(name) for name in names]
    return _check_files([
        LabelledImage(name, _unit(score, 0, 100), name, str(root / "Images" / name))
        for name, score in zip(names, mos, strict=True)
        if not CLIVE_INSTRUCTION.fullmatch(name)], root)


def spaq(root: Path, **_) -> list[LabelledImage]:
    table = _first_file(root, ("MOS and Image attribute scores.csv",
                               "Annotations/MOS and Image attribute scores.csv"))
    folder = _folder(root, ("TestImage", "."))
    return _check_files([
        LabelledImage(name, _unit(_score(row, "MOS", table), 0, 100), name, str(folder / name))
        for row in _rows(table) for name in [_column(row, "Image name", table)]], root)


def flive(root: Path, **_) -> list[LabelledImage]:
    labels, test_table = root / "labels_image.csv", root / "labels640.csv"
    rows = _rows(labels)
    test = {_column(row, "name_image", test_table) for row in _rows(test_table)}
    names = [_column(row, "name", labels) for row in rows]
    if not test & set(names):
        raise DatasetLayoutError(f"no image of {test_table} (the published test set) is in "
                                 f"{labels}")
    return _check_files([
        LabelledImage(name, _unit(_score(row, "mos", labels), 0, 100), name, str(root / name),
                      published_split="test" if name in test else "train")
        for row, name in zip(rows, names, strict=True)], root)


def generic_csv(root: Path, **_) -> list[LabelledImage]:
    rows = _rows(root)
    if not rows:
        raise DatasetLayoutError(f"{root} lists no image")
    raw = np.array([_score(row, "score", root) for row in rows])
    low, high = raw.min(), raw.max()
    if high <= low:
        raise DatasetLayoutError(f"every score in {root} is {low:g}: its min-max rescaling "
                                 "is undefined, and nothing can be learnt or tested on it")
    return _check_files([
        LabelledImage(_column(row, "path", root), float((score - low) / (high - low)),
                      (row.get("group") or "").strip() or row["path"],
                      str(root.parent / row["path"]))
        for row, score in zip(rows, raw, strict=True)], root)


def shard_samples(root: str | Path, refs: tuple[str, ...] = (), ensemble: str | None = None,
                  **_) -> list[LabelledImage]:
    """The distorted samples of the given references (their images held in memory, encoded),
    read from the complete shards that hold them; scored by their stored Q, or by Q under
    `ensemble` (a name or file) made from their raw scores."""
    if not refs:
        raise DatasetLayoutError("the shards dataset needs --refs: the references to use")
    wanted, dataset = set(refs), open_dataset(str(root))
    try:
        dataset.where(refs=wanted)
    except ValueError as error:  # a reference the dataset does not hold
        raise DatasetLayoutError(str(error)) from None
    samples = list(dataset.samples(refs=wanted, decode=False))
    qualities = (_stored_quality(root, samples) if ensemble is None
                 else _ensemble_quality(root, samples, ensemble))
    images = [LabelledImage(item["key"], quality, item["ref_id"], data=item["encoded"])
              for item, quality in zip(samples, qualities, strict=True)]
    found = {image.group for image in images}
    if found != wanted:
        raise DatasetLayoutError(f"references {sorted(wanted - found)} have no sample in "
                                 f"{redact(str(root))}")
    return images


def _stored_quality(root: str | Path, samples: list[dict]) -> list[float]:
    if any(item["meta"]["quality"] is None for item in samples):
        raise DatasetLayoutError(f"{redact(str(root))} has no quality labels (generated "
                                 "label-free with "
                                 "--metrics none): nothing to fine-tune on")
    return [float(item["meta"]["quality"]) for item in samples]


def _ensemble_quality(root: str | Path, samples: list[dict], ensemble: str) -> list[float]:
    """Q under `ensemble` from each sample's raw scores, over the ensemble's metrics that every
    sample has (as `iqa-factory relabel` makes it; a metric only some have is refused)."""
    chosen = load_ensemble(ensemble)
    scores = {key: np.array([record_score(item["meta"], key) for item in samples])
              for key in chosen.weights}
    try:
        used = chosen.metrics_every_sample_has(finite_counts(scores), len(samples))
    except EnsembleError as error:
        raise DatasetLayoutError(f"{redact(str(root))}: {error}") from None
    return chosen.quality({key: scores[key] for key in used})[0].tolist()


def fingerprint(images: list[LabelledImage]) -> str:
    """What names a dataset's images wherever they lie: their names and references (not the
    root they are read from, nor the scores an ensemble gives them). The same images copied
    or moved elsewhere keep it."""
    names = sorted((image.group, image.name) for image in images)
    return hashlib.sha256(json.dumps(names).encode()).hexdigest()[:16]


def image_id(image: LabelledImage) -> str:
    """One image's reference and name, wherever it lies, in 12 hex digits: what a fine-tuned
    checkpoint records of each image it trained on (copies of them keep it)."""
    return hashlib.sha256(json.dumps([image.group, image.name]).encode()).hexdigest()[:12]


LOADERS: dict[str, Callable[..., list[LabelledImage]]] = {
    "kadid10k": kadid10k, "tid2013": tid2013, "koniq10k": koniq10k, "biq2021": biq2021,
    "live": live, "csiq": csiq, "clive": clive, "spaq": spaq, "flive": flive,
    "csv": generic_csv, "shards": shard_samples}


def load(kind: str, root: str, refs: tuple[str, ...] = (),
         ensemble: str | None = None) -> list[LabelledImage]:
    if kind not in LOADERS:
        raise ValueError(f"dataset must be one of {', '.join(LOADERS)}; got {kind!r}")
    if ensemble is not None and kind != "shards":
        raise ValueError(f"--ensemble makes Q from a generated dataset's raw scores: it "
                         f"applies to --dataset shards, not {kind} (opinion scores)")
    if refs and kind != "shards":
        raise ValueError(f"--refs chooses references of a generated dataset: it applies to "
                         f"--dataset shards, not {kind} (all of its images are used)")
    if kind == "shards":  # a folder or a URI (file://, s3://, gs://): the reader resolves it
        return shard_samples(root, refs=refs, ensemble=ensemble)
    path = Path(root)
    if not path.exists():
        raise DatasetLayoutError(f"{root} does not exist")
    images = LOADERS[kind](path, refs=refs)
    unscored = [image.name for image in images if not math.isfinite(image.score)]
    if unscored:  # (a MATLAB table's NaN: the text tables are checked row by row)
        raise DatasetLayoutError(f"{root}: {len(unscored)} images have no finite score, "
                                 f"e.g. {unscored[:3]}")
    counts = Counter(os.path.realpath(image.path) for image in images)
    repeated = sorted(path for path, count in counts.items() if count > 1)
    if repeated:  # it would be trained on, or scored, twice: a split and a correlation off
        raise DatasetLayoutError(f"{root} lists images more than once ({len(repeated)}), e.g. "
                                 f"{repeated[:3]}")
    return images
