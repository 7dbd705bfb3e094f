"""`train compare`: test figures of several runs side by side, one row each: fine-tuning and
probe runs (their results.json: the median over their splits) and evaluations (evaluation.json
of `train evaluate`, one test: a checkpoint on another dataset is the cross-dataset figure)."""

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath

from labelers.correlation import figure_text
from training.correlation import CORE_FIGURES
from training.finetune import FIGURES


class UnknownResultsError(ValueError):
    """A file that is neither a results.json of finetune or probe nor an evaluation.json."""


@dataclass(frozen=True)
class Row:
    kind: str         # finetune | probe | evaluate
    start: str        # the weights it started from (or the checkpoint evaluated)
    datasets: str     # trained on -> tested on
    figures: dict     # the median figures (one evaluation's own)
    repeats: int
    undefined: dict[str, int] = field(default_factory=dict)  # splits out of a figure's median


RESULTS_FILES = ("results.json", "evaluation.json")  # finetune and probe; evaluate
NOT_RECORDED = "-"  # a figure a results file does not hold (one of a run of before it was made)


def _finetune(summary: dict, figures: dict, repeats: int) -> Row:
    dataset = summary.get("dataset", "?")
    return Row("finetune", str(summary.get("start", "?")), f"{dataset} -> {dataset}", figures,
               repeats)


def _probe(summary: dict, figures: dict, repeats: int) -> Row:
    return Row("probe", str(summary.get("start", "?")),
               f"{summary.get('dataset', '?')} -> {summary.get('test_dataset', '?')}",
               figures, repeats)


def _evaluation(summary: dict, figures: dict, _repeats: int) -> Row:
    tested = str(summary.get("dataset", "?")) + (" (test)" if summary.get("subset") == "test"
                                                 else "")
    return Row("evaluate", str(summary["checkpoint"]),
               f"{summary.get('trained_on') or '?'} -> {tested}", figures, 1)


def _is_figure(value) -> bool:
    """A finite number, or None: a figure the run left undefined (never a bool, a text, or
    the NaN or Infinity a hand-edited file may hold: runs write null)."""
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool)
                             and math.isfinite(value))


def _figures(summary: dict, key: str) -> dict | None:
    """The run's figures under `key` (a results.json's median, an evaluation.json's
    figures): every core figure there and every figure a number or None; None where not."""
    figures = summary.get(key)
    if not isinstance(figures, dict) or not all(name in figures for name in CORE_FIGURES):
        return None
    return figures if all(_is_figure(figures.get(name)) for name in FIGURES) else None


def _repeats(summary: dict) -> int | None:
    """How many splits the median is over: 1 where the file does not say; None where what it
    says is not a count."""
    repeats = summary.get("repeats", 1)
    return repeats if type(repeats) is int and repeats >= 1 else None


def _kind(summary: dict):
    """The row maker for the file's kind; None where it is none of them."""
    if summary.get("kind") == "probe":
        return _probe
    if "median" in summary:
        return _finetune
    # (a pretraining's summary.json names its checkpoint too, but holds no test figures)
    return _evaluation if "checkpoint" in summary and "figures" in summary else None


def results_files(path: Path) -> list[Path]:
    """The results files `path` names: itself, or where it is a run's folder, the
    results.json or evaluation.json in it."""
    if path.is_dir():
        inside = [path / name for name in RESULTS_FILES if (path / name).is_file()]
        if not inside:
            raise FileNotFoundError(f"{path} is a folder without a results.json or "
                                    "evaluation.json: name a finished finetune, probe or "
                                    "evaluate run's folder or file")
        return inside
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `train finetune`, `train probe` "
                                "or `train evaluate` first")
    if not path.is_file():
        raise ValueError(f"{path} is no results file (a device or a pipe): name a finished "
                         "finetune, probe or evaluate run's folder or file")
    return [path]


def read_row(path: Path) -> Row:
    """The row of a results.json (finetune, probe) or an evaluation.json (evaluate)."""
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UnknownResultsError(f"{path} is not JSON ({error})") from None
    make = _kind(summary) if isinstance(summary, dict) else None
    if make is None:
        pretraining = isinstance(summary, dict) and "best_score" in summary
        raise UnknownResultsError(f"{path} is neither a results.json of `train finetune` or "
                                  "`train probe` nor an evaluation.json of `train evaluate`"
                                  + ("; it is a pretraining's summary (validation only): "
                                     "`train evaluate` its checkpoint" if pretraining else ""))
    key = "figures" if make is _evaluation else "median"
    figures, repeats = _figures(summary, key), _repeats(summary)
    if figures is None:
        extra = [name for name in FIGURES if name not in CORE_FIGURES]
        raise UnknownResultsError(
            f"{path}: its {key} {'do' if key == 'figures' else 'does'} not hold "
            f"{', '.join(CORE_FIGURES)} (and {', '.join(extra)} where it has them), each a "
            "number or null")
    if repeats is None:
        raise UnknownResultsError(f"{path}: repeats is {summary['repeats']!r}, not a count of "
                                  "1 or more")
    return replace(make(summary, figures, repeats), undefined=_undefined(summary, repeats))


def _undefined(summary: dict, repeats: int) -> dict[str, int]:
    """{figure: the splits that left it undefined, so out of its median} where the file
    counts any (a median over fewer splits than the run's: finetune's `undefined`)."""
    counts = summary.get("undefined")
    if not isinstance(counts, dict):
        return {}
    return {name: count for name, count in counts.items() if name in FIGURES
            and type(count) is int and 0 < count <= repeats}


def _left_out(row: Row) -> str:
    """'PLCC 9, SROCC 9 of 10': the splits out of each figure's median; '' where none."""
    if not row.undefined:
        return ""
    return (", ".join(f"{name.upper()} {count}" for name, count in row.undefined.items())
            + f" of {row.repeats}")


def _cell(figures: dict, name: str) -> str:
    """The figure in a column 10 wide: labelers.correlation.UNDEFINED where the run left it
    undefined (null), NOT_RECORDED where the file does not hold it."""
    return figure_text(figures[name], 10) if name in figures else f"{NOT_RECORDED:>10}"


def run_labels(results: list[Path]) -> list[str]:
    """Each result's folder, with as many of the folders above it as tell the results apart
    (runs/a/probe and runs/b/probe: a/probe and b/probe)."""
    folders = [path.parent.parts for path in results]
    distinct = set(folders)  # (results of one folder share its label)
    for depth in range(1, max(map(len, folders), default=0) + 1):
        if len({parts[-depth:] for parts in distinct}) == len(distinct):
            return [str(PurePath(*parts[-depth:])) for parts in folders]
    return ["."] * len(folders)  # every result in the working folder


def _once_each(paths: list[Path]) -> list[Path]:
    """The files in the order named, each once however it was named (a run's folder and its
    results.json; a path and a link to it)."""
    seen: set[Path] = set()
    kept = []
    for path in paths:
        if path.resolve() not in seen:
            seen.add(path.resolve())
            kept.append(path)
    return kept


def table(results: list[Path]) -> str:
    """A text table, one row per results.json or evaluation.json, labelled by its folder (and
    those above it where two share a name: run_labels); each text column as wide as its
    longest entry (names and paths whole)."""
    results = _once_each([each for path in results for each in results_files(path)])
    read = [(label, read_row(path)) for label, path in zip(run_labels(results), results,
                                                            strict=True)]
    texts = [("run", [label for label, _ in read]), ("kind", [row.kind for _, row in read]),
             ("start", [row.start for _, row in read]),
             ("train -> test", [row.datasets for _, row in read])]
    widths = [max([len(name), *map(len, column)]) + 2 for name, column in texts]
    left_out = [_left_out(row) for _, row in read]
    note = "  undefined in (splits)" if any(left_out) else ""
    header = ("".join(f"{name:<{width}}" for (name, _), width in zip(texts, widths, strict=True))
              + "".join(f"{name.upper():>10}" for name in FIGURES) + f"{'repeats':>9}" + note)
    rows = [header, "-" * len(header)]
    for index, (_, row) in enumerate(read):
        rows.append(("".join(f"{column[index]:<{width}}"
                             for (_, column), width in zip(texts, widths, strict=True))
                     + "".join(_cell(row.figures, name) for name in FIGURES)
                     + f"{row.repeats:>9}" + (f"  {left_out[index]}" if note else "")).rstrip())
    return "\n".join(rows)
