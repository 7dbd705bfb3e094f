"""`train compare`: test figures of several runs side by side, one row each: fine-tuning and
probe runs (their results.json: the median over their splits) and evaluations (evaluation.json
of `train evaluate`, one test: a checkpoint on another dataset is the cross-dataset figure)."""

import json
from dataclasses import dataclass
from pathlib import Path, PurePath

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


def _finetune(summary: dict) -> Row:
    dataset = summary.get("dataset", "?")
    return Row("finetune", str(summary.get("start", "?")), f"{dataset} -> {dataset}",
               summary["median"], summary.get("repeats", 1))


def _probe(summary: dict) -> Row:
    return Row("probe", str(summary.get("start", "?")),
               f"{summary.get('dataset', '?')} -> {summary.get('test_dataset', '?')}",
               summary["median"], summary.get("repeats", 1))


def _evaluation(summary: dict) -> Row:
    tested = str(summary.get("dataset", "?")) + (" (test)" if summary.get("subset") == "test"
                                                 else "")
    return Row("evaluate", str(summary["checkpoint"]),
               f"{summary.get('trained_on') or '?'} -> {tested}", summary["figures"], 1)


def read_row(path: Path) -> Row:
    """The row of a results.json (finetune, probe) or an evaluation.json (evaluate)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `train finetune`, `train probe` "
                                "or `train evaluate` first")
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UnknownResultsError(f"{path} is not JSON ({error})") from None
    if isinstance(summary, dict):
        figures = summary.get("median") or summary.get("figures") or {}
        if isinstance(figures, dict) and all(  # None: a figure the run left undefined
                name in figures and (figures[name] is None
                                     or isinstance(figures[name], int | float))
                for name in CORE_FIGURES):
            if summary.get("kind") == "probe":
                return _probe(summary)
            if "median" in summary:
                return _finetune(summary)
            if "checkpoint" in summary:
                return _evaluation(summary)
    raise UnknownResultsError(f"{path} is neither a results.json of `train finetune` or `train "
                              "probe` nor an evaluation.json of `train evaluate`")


def _cell(value: float | None) -> str:
    return f"{'-':>10}" if value is None else f"{value:>10.4f}"


def run_labels(results: list[Path]) -> list[str]:
    """Each result's folder, with as many of the folders above it as tell the results apart
    (runs/a/probe and runs/b/probe: a/probe and b/probe)."""
    folders = [path.parent.parts for path in results]
    distinct = set(folders)  # (results of one folder share its label)
    for depth in range(1, max(map(len, folders), default=0) + 1):
        if len({parts[-depth:] for parts in distinct}) == len(distinct):
            return [str(PurePath(*parts[-depth:])) for parts in folders]
    return ["."] * len(folders)  # every result in the working folder


def table(results: list[Path]) -> str:
    """A text table, one row per results.json or evaluation.json, labelled by its folder (and
    those above it where two share a name: run_labels); each text column as wide as its
    longest entry (names and paths whole)."""
    read = [(label, read_row(path)) for label, path in zip(run_labels(results), results,
                                                            strict=True)]
    texts = [("run", [label for label, _ in read]), ("kind", [row.kind for _, row in read]),
             ("start", [row.start for _, row in read]),
             ("train -> test", [row.datasets for _, row in read])]
    widths = [max([len(name), *map(len, column)]) + 2 for name, column in texts]
    header = ("".join(f"{name:<{width}}" for (name, _), width in zip(texts, widths, strict=True))
              + "".join(f"{name.upper():>10}" for name in FIGURES) + f"{'repeats':>9}")
    rows = [header, "-" * len(header)]
    for index, (_, row) in enumerate(read):
        rows.append("".join(f"{column[index]:<{width}}"
                            for (_, column), width in zip(texts, widths, strict=True))
                    + "".join(_cell(row.figures.get(name)) for name in FIGURES)
                    + f"{row.repeats:>9}")
    return "\n".join(rows)
