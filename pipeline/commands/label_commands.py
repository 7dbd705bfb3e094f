"""Command handlers for the labels: pretrained weights, fitting an ensemble, relabelling."""

import csv
import json
import math
import posixpath
from collections import defaultdict
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

import labelers
from labelers import ensemble as ens
from labelers import weights
from labelers.correlation import UNDEFINED, figure_text
from labelers.errors import LabelerError
from labelers.fitting import check_opinions, fit_ensemble
from pipeline.plan import finished_plan
from pipeline.sources import read_rgb
from shards.decode import DecodeError, header_size
from shards.layout import labels_file, shard_paths
from shards.lease import Lease
from shards.reads import read_ahead
from shards.schema import SIDECAR_SCHEMA, finite_counts, score_arrays
from shards.storage import Location, redact

FIGURE_WIDTH = len(UNDEFINED)  # the fit table's correlation columns: the word fits


def weights_fetch(args) -> int:
    """Download the LPIPS/DISTS backbones into the torch hub cache."""
    fetched = weights.fetch()
    for path in fetched:
        print(f"downloaded {path}")
    if not fetched:
        print(f"all backbone weights are already in {weights.checkpoint_dir()} (each the "
              "published file: hashes checked)")
    return 0


def weights_import(args) -> int:
    """Copy backbone files from a folder into the torch hub cache, checking their hashes."""
    for path in weights.import_from(Path(args.directory)):
        print(f"imported {path}")
    return 0


def read_opinion_table(path: Path) -> list[tuple[str, str, float]]:
    """(distorted image, reference image, opinion score) rows of a KADID-10k dmos.csv
    (columns dist_img, ref_img, dmos[, var]); higher scores are better. Names are normalised
    (`./I01.png` is `I01.png`), so one image spelled two ways is one reference of the split;
    a ValueError names the file's line of a score that is no number and of a distorted image
    listed twice (a fit would count its pair twice)."""
    if Path(path).is_dir():
        raise IsADirectoryError(f"{path} is a folder: name the MOS table (a .csv file)")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        rows, lines = _table_rows(path)
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text (byte {error.object[error.start:][:1]!r}: "
                         f"{error.reason}): save the table as UTF-8") from None
    if not rows:
        raise ValueError(f"{path} has a header but no rows: no opinion scores to fit to")
    repeated = [f"{dist} (lines {', '.join(map(str, at))})" for dist, at in lines.items()
                if len(at) > 1]
    if repeated:
        raise ValueError(f"{path}: {len(repeated)} distorted image(s) listed more than once, "
                         f"e.g. {'; '.join(repeated[:3])}: one row per distorted image")
    return rows


def _table_rows(path: Path) -> tuple[list[tuple[str, str, float]], dict[str, list[int]]]:
    """The table's (dist, ref, dmos) rows and each distorted image's lines (utf-8, or utf-8
    with the byte-order mark spreadsheets write)."""
    with Path(path).open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        needed = {"dist_img", "ref_img", "dmos"}
        if not needed <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: expected columns {sorted(needed)} (KADID-10k dmos.csv), "
                             f"got {reader.fieldnames}")
        rows, lines = [], defaultdict(list)
        for row in reader:  # line_num: the file's line, blank lines counted
            dist = _image_name(row, "dist_img", path, reader.line_num)
            rows.append((dist, _image_name(row, "ref_img", path, reader.line_num),
                         _opinion(row["dmos"], path, reader.line_num)))
            lines[dist].append(reader.line_num)
    return rows, lines


def _image_name(row: dict, column: str, path: Path, line: int) -> str:
    """A row's image name, normalised; a ValueError naming the line where it is empty or the
    row ends before it."""
    name = (row.get(column) or "").strip()
    if not name:
        raise ValueError(f"{path} line {line}: no {column} (a row names its distorted image, "
                         "its reference and its dmos)")
    return posixpath.normpath(name)


def _opinion(text: str | None, path: Path, line: int) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{path} line {line}: dmos {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{path} line {line}: dmos {text!r} is not a finite number")
    return value


def named_images(rows: list[tuple[str, str, float]], ref_dir: Path, dist_dir: Path
                 ) -> set[Path]:
    """The paths of every image the table's rows name, references and distorted ones."""
    return {ref_dir / ref for _, ref, _ in rows} | {dist_dir / dist for dist, _, _ in rows}


def check_table(rows: list[tuple[str, str, float]], ref_dir: Path, dist_dir: Path) -> None:
    """Before any scoring (hours on KADID-10k): opinions a fit can use, every image the table
    names present and readable as one (its header), and each pair of one size; a ValueError
    naming what is not."""
    check_opinions(np.array([row[2] for row in rows]), np.array([row[1] for row in rows]))
    named = named_images(rows, ref_dir, dist_dir)
    absent = sorted(str(path) for path in named if not path.is_file())
    if absent:
        raise ValueError(f"{len(absent)} image(s) the table names are not there, e.g. "
                         f"{', '.join(absent[:3])} (--ref-dir, --dist-dir choose the folders)")
    sizes, unreadable = {}, []
    for path in sorted(named):
        try:
            sizes[path] = header_size(path)
        except DecodeError as error:
            unreadable.append(f"{path} ({error})")
    if unreadable:
        raise ValueError(f"{len(unreadable)} image(s) the table names cannot be read as "
                         f"images, e.g. {'; '.join(unreadable[:3])}")
    unequal = [f"{dist} {sizes[dist_dir / dist]} against {ref} {sizes[ref_dir / ref]}"
               for dist, ref, _ in rows if sizes[dist_dir / dist] != sizes[ref_dir / ref]]
    if unequal:
        raise ValueError(f"{len(unequal)} pair(s) of the table differ in size (width, height), "
                         f"e.g. {'; '.join(unequal[:3])}: a full-reference metric compares "
                         "images of one size")


def score_table(rows, ref_dir: Path, dist_dir: Path, labeler: labelers.Labeler
                ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Raw scores of every row's pair, each reference decoded and prepared once, and why an
    image was not scored: a reference the metrics refused (a LabelerError: a flat image VIF
    cannot rate, say) or whose pixels do not decode (its header did: check_table), a
    distorted image that does not decode. Their rows score NaN and scoring goes on."""
    by_reference = defaultdict(list)
    for index, (dist_name, ref_name, _) in enumerate(rows):
        by_reference[ref_name].append((index, dist_name))
    scores = {key: np.full(len(rows), np.nan) for key in labeler.keys}
    refused = {}
    for ref_name, members in tqdm(by_reference.items(), desc="scoring", unit="reference"):
        try:
            ref = read_rgb(str(ref_dir / ref_name))
        except DecodeError as error:  # its header read; its pixels do not decode
            refused[ref_name] = str(error)
            continue
        readable = []
        for index, name in members:
            try:
                readable.append((index, read_rgb(str(dist_dir / name))))
            except DecodeError as error:
                refused[name] = str(error)
        if not readable:
            continue
        try:
            result = labeler.score(ref, [pixels for _, pixels in readable])
        except LabelerError as error:
            refused[ref_name] = str(error)
            continue
        for key in labeler.keys:
            scores[key][[index for index, _ in readable]] = result[key]
    return scores, refused


def finite_rows(scores: dict[str, np.ndarray], rows: list[tuple[str, str, float]],
                refused: dict[str, str]):
    """The scores and rows of the pairs every metric scored finitely, and what was left out
    and why: each refused image with its reason, each other pair with the metrics that did
    not score it finitely. Hours of scoring go on past one pair no metric could rate."""
    finite = np.logical_and.reduce([np.isfinite(values) for values in scores.values()])
    left_out = [f"{name} ({reason})" for name, reason in refused.items()]
    left_out += [f"{rows[i][0]} (not finite: {', '.join(_not_finite_at(scores, i))})"
                 for i in np.flatnonzero(~finite)
                 if rows[i][0] not in refused and rows[i][1] not in refused]
    if not finite.any():
        raise ValueError(f"no pair was scored by every metric: {'; '.join(left_out[:3])}")
    return ({key: values[finite] for key, values in scores.items()},
            [row for row, keep in zip(rows, finite, strict=True) if keep], left_out)


def _not_finite_at(scores: dict[str, np.ndarray], index: int) -> list[str]:
    return [key for key, values in scores.items() if not np.isfinite(values[index])]


def fit_ensemble_command(args) -> int:
    """Score a MOS table's pairs, fit an ensemble on 80% of its references, report the rest."""
    table = Path(args.table)
    rows = read_opinion_table(table)
    ref_dir = Path(args.ref_dir or table.parent / "images")
    dist_dir = Path(args.dist_dir or ref_dir)
    inputs = [table, *named_images(rows, ref_dir, dist_dir)]
    _check_outputs(Path(args.output), inputs)  # before hours of scoring
    check_table(rows, ref_dir, dist_dir)
    weights.check_present(args.metrics or labelers.METRICS, args.allow_missing_metrics)
    labeler = labelers.Labeler(metrics=args.metrics, allow_missing=args.allow_missing_metrics)
    if labeler.absent:
        print(f"note: fitting without {', '.join(labeler.absent)} (weights missing)")
    scores, refused = score_table(rows, ref_dir, dist_dir, labeler)
    scores, rows, left_out = finite_rows(scores, rows, refused)
    if left_out:
        print(f"note: left out of the fit: {'; '.join(left_out[:5])}"
              f"{f' and {len(left_out) - 5} more' if len(left_out) > 5 else ''}")
    report = fit_ensemble(scores, np.array([r[2] for r in rows]), np.array([r[1] for r in rows]),
                          seed=args.seed, name=args.name)
    output = Path(args.output)
    report.ensemble.save(output)
    report_json = {**report.to_json(), "left_out": left_out}
    output.with_suffix(".report.json").write_text(json.dumps(report_json, indent=1) + "\n")
    print(f"{'metric':10s} {'weight':>7s} {'SROCC':>{FIGURE_WIDTH}s} "
          f"{'PLCC':>{FIGURE_WIDTH}s}   (held-out {report.test_references} references)")
    for key, values in report.per_metric.items():
        print(f"{key:10s} {report.ensemble.weights[key]:7.4f} {_figures(values)}")
    print(f"{'ensemble':10s} {'':7s} {_figures(report.ensemble_test)}")
    print(f"wrote {output} (hash {report.ensemble.hash}) and {output.with_suffix('.report.json')}")
    return 0


def _check_outputs(output: Path, inputs: list[Path]) -> None:
    """The ensemble file and its report beside it can be written: neither is a folder nor one
    of the fit's `inputs` (the table, its images), and their folder is made (a file in its
    way is named by the command line)."""
    read = {path.resolve() for path in inputs}
    for path in (output, output.with_suffix(".report.json")):
        if path.is_dir():
            raise IsADirectoryError(f"-o {output}: {path} is a folder; name the ensemble's "
                                    "file (its report is written beside it)")
        if path.resolve() in read:
            raise ValueError(f"-o {output}: {path} is an input of the fit (the table or an "
                             "image it names) and would be overwritten; name another file")
    output.parent.mkdir(parents=True, exist_ok=True)


def _figures(values: dict) -> str:
    """SROCC and PLCC in the fit's table (UNDEFINED where one side was constant)."""
    return " ".join(figure_text(values[name], FIGURE_WIDTH) for name in ("srocc", "plcc"))


def relabel_command(args) -> int:
    """Q for every sample of a dataset from the raw scores in its parquet index, written as a
    sidecar labels-<hash>.parquet (key, quality, shard; the metrics used in its metadata); the
    shard tars are untouched. A metric of the ensemble that the dataset never scored is left out
    (Q renormalised over the rest, and said); one scored for some samples only is refused.
    It holds OUT's lease as generate does: a generate resumed meanwhile could redo shards under
    a sidecar computed from their earlier scores."""
    ensemble = ens.load(args.ensemble)
    location = Location.parse(args.out)  # a folder or a URI (file://, s3://, gs://)
    finished_plan(location)  # not a finished dataset: refused before the lease makes OUT
    lease = Lease(location, "relabel")
    with lease.taken(args.take_over) as notices:
        for notice in notices:
            print(f"note: {notice}")
        return _relabel(ensemble, location, args.out, lease)


def _relabel(ensemble: ens.Ensemble, location: Location, out: str, lease: Lease) -> int:
    """relabel_command's work, under `lease` (checked before the sidecar is published)."""
    plan = finished_plan(location)  # every shard, or no labels at all
    indexes = [shard_paths(location, index)["parquet"] for index in range(plan.shard_count)]
    used = _relabel_metrics(ensemble, location, indexes, out)
    target = location.path(labels_file(ensemble.hash))
    schema = SIDECAR_SCHEMA.with_metadata({"ensemble_hash": ensemble.hash,
                                           "metrics_used": json.dumps(used),
                                           "plan_digest": plan.digest})
    written = 0
    with location.staged_output(target) as stream, pq.ParquetWriter(stream, schema) as writer:
        read = read_ahead(partial(_distorted_scores, location), indexes)  # a row group each
        for shard, (scores, keys) in enumerate(tqdm(read, total=len(indexes), desc="relabel",
                                                    unit="shard", disable=len(indexes) < 4)):
            quality = ensemble.quality({key: scores[key] for key in used})[0]
            writer.write_table(pa.table({"key": keys, "quality": quality,
                                         "shard": np.full(len(keys), shard, np.int32)},
                                        schema=schema))
            written += len(keys)
        lease.check()  # LeaseLostError: the sidecar is not published
    print(f"wrote {labels_file(ensemble.hash)} in {redact(out)}: {written} labels under "
          f"ensemble {ensemble.name} ({ensemble.hash})")  # (a URI whole, its secrets hidden)
    return 0


def _distorted_scores(location: Location, index: str
                      ) -> tuple[dict[str, np.ndarray], list[str]]:
    """The raw scores (NaN where null) and keys of one parquet index's distorted samples."""
    with location.fs.open_input_file(index) as handle:
        table = pq.read_table(handle, columns=["key", "kind", "scores"])
    distorted = table.filter(pa.compute.equal(table["kind"], "distorted"))
    return score_arrays(distorted["scores"]), distorted["key"].to_pylist()


def _relabel_metrics(ensemble: ens.Ensemble, location: Location, indexes: list[str], out: str
                     ) -> list[str]:
    """The ensemble's metrics that every distorted sample has a score of; an error naming a
    metric that only some have (Q would mean two things in one dataset), or none of them."""
    finite: dict[str, int] = defaultdict(int)
    total = 0
    read = read_ahead(partial(_distorted_scores, location), indexes)
    for scores, keys in tqdm(read, total=len(indexes), desc="scores checked", unit="shard",
                             leave=False, disable=len(indexes) < 4):
        total += len(keys)
        for key, count in finite_counts(scores).items():
            finite[key] += count
    try:
        used = list(ensemble.metrics_every_sample_has(finite, total))
    except ens.EnsembleError as error:
        raise ValueError(f"{redact(out)}: {error}") from error
    left_out = [key for key, weight in ensemble.weights.items()  # (one weighed 0 is no loss)
                if weight > 0 and key not in used]
    if left_out:
        print(f"note: {redact(out)} has no {', '.join(left_out)} scores: Q is renormalised over "
              f"{', '.join(used)}")
    return used
