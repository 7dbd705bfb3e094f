"""The figures of `make pretrain-demo` runs in one table: for each objective run under DEMO, its
probe against the same backbone's random start (median figures over the splits, and how many
splits the pretrained encoder won on SROCC), and for regression its fine-tuning against the
default start.

    python benchmarks/demo_summary.py --demo out/pretrain-demo --out docs

Writes OUT/pretrain-demo.json and OUT/pretrain-demo.md (what the README's demo table cites),
and OUT/pretrain-demo-scatter.png: the fine-tuned regression start's first split's scatter plot.
"""

import argparse
import json
import shutil
from pathlib import Path

from report_files import write_report

from labelers.correlation import UNDEFINED
from training.correlation import CORE_FIGURES
from training.objectives.base import OBJECTIVES

# the label-free objectives first, then regression
SHOWN = (*OBJECTIVES[1:], OBJECTIVES[0])


def _results(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `make pretrain-demo` first")
    return json.loads(path.read_text())


def _rounded(value: float | None) -> float | None:
    """A figure to 3 decimals; None where it is undefined (null in results.json: a run whose
    predictions were constant has no correlation)."""
    return None if value is None else round(value, 3)


def _row(objective: str, read_out: str, trained: dict, baseline: dict, crop: int) -> dict:
    """The trained run's median figures, the baseline's SROCC, and the splits it won (the
    same seeded splits for both; a split where either SROCC is undefined is not won)."""
    pairs = zip(trained["splits"], baseline["splits"], strict=True)
    won = sum(None not in (ours["test"]["srocc"], theirs["test"]["srocc"])
              and ours["test"]["srocc"] > theirs["test"]["srocc"] for ours, theirs in pairs)
    return {"objective": objective, "read_out": read_out, "crop": crop,
            **{name: _rounded(trained["median"][name]) for name in CORE_FIGURES},
            "baseline_srocc": _rounded(baseline["median"]["srocc"]),
            "splits_won": won, "splits": len(trained["splits"])}


def summary(demo: Path) -> list[dict]:
    """One row per read-out of every objective that has run under `demo`."""
    rows = []
    for objective in SHOWN:
        run = demo / objective
        if not (run / "probe" / "results.json").is_file():
            continue
        probe = _results(run / "probe" / "results.json")
        random_start = _results(demo / f"random-{probe['crop']}" / "probe" / "results.json")
        rows.append(_row(objective, "probe", probe, random_start, probe["crop"]))
        if objective == "regression":
            rows.append(_row(objective, "fine-tune", _results(run / "pretrained" / "results.json"),
                             _results(run / "baseline" / "results.json"), probe["crop"]))
    if not rows:
        raise FileNotFoundError(f"no objective has run under {demo}: run `make pretrain-demo`")
    return rows


def copy_scatter(demo: Path, out: Path) -> Path | None:
    """The regression demo's first fine-tuned split's scatter plot, copied into `out` (None
    where that run has not been made)."""
    scatter = demo / "regression" / "pretrained" / "split-0" / "scatter.png"
    if not scatter.is_file():
        return None
    return Path(shutil.copyfile(scatter, out / "pretrain-demo-scatter.png"))


def markdown(rows: list[dict]) -> str:
    lines = ["# `make pretrain-demo`", "",
             "resnet18 from random weights, pretrained on the embedded dataset's hubble_deep_field "
             "and motorcycle_left (rocket validating), read out on astronaut and coffee, which "
             "it never saw; medians over the splits. Baseline: the same backbone from random "
             "weights, probed or fine-tuned alike. Q of the held-out photos stands in for "
             "opinion scores.", "",
             "| objective | read-out | crop | SROCC | PLCC | KRCC | RMSE | baseline SROCC | "
             "splits won |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    shown = [{name: UNDEFINED if value is None else value for name, value in r.items()}
             for r in rows]
    lines += [f"| {r['objective']} | {r['read_out']} | {r['crop']} | {r['srocc']} | {r['plcc']} "
              f"| {r['krcc']} | {r['rmse']} | {r['baseline_srocc']} | {r['splits_won']} of "
              f"{r['splits']} |" for r in shown]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, default=Path("out/pretrain-demo"))
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    rows = summary(args.demo)
    write_report(args.out, "pretrain-demo", rows, markdown(rows))
    print(markdown(rows))
    if (scatter := copy_scatter(args.demo, args.out)) is not None:
        print(f"scatter plot: {scatter}")


if __name__ == "__main__":
    main()
