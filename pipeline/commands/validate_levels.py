"""`validate-levels`: mean label Q by distortion and level, checking the spec's level order
(one-sided types fall from level 1 to 5; two-sided ones rise from level 1 to 2, fall from 4
to 5 and are best at level 3 or 4;
pixelate, whose KADID levels 1-4 are not in order, is worst at level 5).
The eight level tables marked NEW in the spec, and the types added after the paper's 33
(ids 34 and up, marked NEW too), are validated here; any that fail are reported for a spec
change."""

import itertools
import json
from pathlib import Path

import distortions
from distortions.registry import is_integer
from pipeline.report_check import report_form_problems
from pipeline.scenario_quality import scenario
from shards.layout import REPORT_FILE, RunFileError, run_file
from shards.reader import DamagedShardError, damage_message, shard_states
from shards.storage import Location, redact

NEW_TYPES = (5, 9, 10, 11, 12, 21, 32, 33)
PLOT_COLUMNS = 7


def level_order_holds(distortion, quality: list[float]) -> bool | None:
    """One-sided: strictly falling (an identity level may tie at 1.0). Two-sided: levels 2 and
    4 above their outer neighbours, and level 3 or 4 the best (contrast_change's centre lies
    between them). Worst-level-only (pixelate): level 5 below every other level. None (not
    checked) where the order follows a draw per version (denoise_blur's blur)."""
    if distortion.order_follows_draw:
        return None
    if distortion.worst_level_only:
        return quality[4] < min(quality[:4])
    if distortion.two_sided:
        return (quality[1] > quality[0] and quality[3] > quality[4]
                and max(quality[2], quality[3]) >= max(quality[1], quality[4]))
    return all(a > b or (a == b == 1.0) for a, b in itertools.pairwise(quality))


def table(mean_quality: dict[str, float]) -> list[dict]:
    rows = []
    paper = distortions.all()
    for d in distortions.registered():
        quality = [mean_quality.get(scenario(d.id, level)) for level in distortions.LEVELS]
        if any(q is None for q in quality):
            continue
        rows.append({"id": d.id, "name": d.name, "new": d.id in NEW_TYPES or d not in paper,
                     "two_sided": d.two_sided, "quality": quality,
                     "order_holds": level_order_holds(d, quality)})
    return rows


def failing(rows: list[dict]) -> list[str]:
    """The types whose level order fails (those not checked aside)."""
    return [row["name"] for row in rows if row["order_holds"] is False]


def not_checked(rows: list[dict]) -> list[str]:
    """The types whose level order is not checked (it follows a draw per version)."""
    return [row["name"] for row in rows if row["order_holds"] is None]


ORDER_MARKS = {True: "ok", False: "**FAILS**", None: "not checked"}


def markdown(rows: list[dict], source: str) -> str:
    failed = failing(rows)
    lines = ["# Label monotonicity by distortion and level", "",
             f"Mean quality label Q over {source}. One-sided types must fall from level 1 to 5;",
             "two-sided ones (mean_shift, contrast_change) must rise from level 1 to 2, fall",
             "from 4 to 5 and be best at level 3 or 4;",
             "pixelate, whose KADID levels 1-4 are not in order (its MATLAB round trip drifts",
             "the content by up to a pixel), must be worst at level 5; denoise_blur, whose",
             "blur is drawn per version (Gaussian or box, 50/50), is not checked: its level",
             "means follow the draws (its order holds with the blur held fixed: the",
             "distortion tests). NEW marks the level tables the spec marks new",
             f"({', '.join(map(str, NEW_TYPES))}) and the types added after the paper's 33",
             "(ids 34 and up): this table is what validates their levels.", "",
             "| id | name | L1 | L2 | L3 | L4 | L5 | order |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        marks = ("NEW " if r["new"] else "") + ORDER_MARKS[r["order_holds"]]
        lines.append(f"| {r['id']} | {r['name']} | " + " | ".join(f"{q:.3f}" for q in r["quality"])
                     + f" | {marks} |")
    unchecked = not_checked(rows)
    lines += ["", ("All level orders checked hold." if not failed else
                   f"Level order fails for: {', '.join(failed)} (reported for a spec change).")
              + (f" Not checked: {', '.join(unchecked)}." if unchecked else "")]
    return "\n".join(lines) + "\n"


def figure_of(rows: list[dict]):
    """The levels figure: a panel per type (blue: order holds, red: fails, gray: not
    checked), level numbers under every column's lowest panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid_rows = -(-len(rows) // PLOT_COLUMNS)  # as many rows of panels as the types need
    figure, axes = plt.subplots(grid_rows, PLOT_COLUMNS, figsize=(17, 2.4 * grid_rows + 0.8),
                                sharex=True, sharey=True, squeeze=False, layout="constrained")
    for index, (axis, row) in enumerate(zip(axes.flat, rows, strict=False)):
        axis.plot(distortions.LEVELS, row["quality"], marker="o",
                  color={True: "tab:blue", False: "tab:red", None: "tab:gray"}[
                      row["order_holds"]])
        axis.set_title(f"{row['id']} {row['name']}" + (" (NEW)" if row["new"] else ""),
                       fontsize=8)
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
        if index + PLOT_COLUMNS >= len(rows):  # no panel below: its levels are named here
            axis.tick_params(labelbottom=True)
    for axis in list(axes.flat)[len(rows):]:
        axis.axis("off")
    figure.supxlabel("level")
    figure.supylabel("mean Q")
    figure.suptitle("Mean label Q by distortion and level (red: level order fails, gray: "
                    "not checked)")
    return figure


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    figure = figure_of(rows)
    figure.savefig(path, dpi=80)
    plt.close(figure)


def validate_levels(out: str, target: Path) -> list[dict]:
    """Write validate-levels.{md,json,png} into `target` from the run report in `out`."""
    location, shown = Location.parse(out), redact(out)  # credentials never in a message or file
    if not location.exists(location.root):
        raise ValueError(f"{shown} does not exist")
    if not location.exists(location.path(REPORT_FILE)):
        raise ValueError(f"{shown} has no report.json: not a dataset, or its generate run has "
                         "not finished (the same command resumes it)")
    damaged = shard_states(location)[1]
    if damaged:  # the report's means would speak for samples no reader reads
        raise DamagedShardError(damage_message(location, damaged))
    report = run_file(location, REPORT_FILE)
    if form := report_form_problems(report, only=("modes",)):  # (its Q checked below)
        raise RunFileError(f"{shown}: {'; '.join(form)}")
    if report.get("modes", {}).get("compose"):
        raise ValueError(f"{shown} was made with --compose: a chain of types has no level of "
                         "its own to validate")
    mean_quality = _mean_quality(report, shown)
    if not mean_quality:
        raise ValueError(f"{shown} has no labels (a label-free run, --metrics none): nothing "
                         "to validate")
    rows = table(mean_quality)
    if not rows:
        raise ValueError(f"no type of {shown} has labels at all five levels (made with --levels "
                         "or --versions-per-ref): nothing to validate")
    if len(not_checked(rows)) == len(rows):
        raise ValueError(f"no type of {shown} with labels at all five levels has a level order "
                         f"to check ({', '.join(not_checked(rows))}: it follows a draw per "
                         "version): nothing to validate")
    references = report.get("sources_ok")
    source = f"{references} references of {shown}" if is_integer(references) else shown
    try:
        target.mkdir(parents=True, exist_ok=True)
        (target / "validate-levels.md").write_text(markdown(rows, source))
        (target / "validate-levels.json").write_text(json.dumps(rows, indent=1) + "\n")
        plot(rows, target / "validate-levels.png")
    except (FileExistsError, NotADirectoryError):
        raise  # (the command names the file in the way)
    except OSError as error:
        raise ValueError(f"--target {target} cannot be written to "
                         f"({error.strerror or error})") from None
    return rows


def _mean_quality(report: dict, shown: str) -> dict[str, float]:
    """The report's mean Q by scenario, each a number in 0..1 (Q's range: spec/labels.md); a
    RunFileError naming what a damaged or edited report.json holds instead."""
    means = report.get("mean_quality_by_scenario")
    if not isinstance(means, dict):
        raise RunFileError(f"{shown}/{REPORT_FILE} has no mean_quality_by_scenario object "
                           f"(it holds {type(means).__name__}): damaged; rerun generate on "
                           "the dataset to make it again")
    bad = {key: value for key, value in means.items()
           if isinstance(value, bool) or not isinstance(value, int | float)
           or not 0 <= value <= 1}  # (NaN too)
    if bad:
        key, value = next(iter(bad.items()))
        raise RunFileError(f"{shown}/{REPORT_FILE}: mean_quality_by_scenario holds "
                           f"{len(bad)} value(s) that are not numbers in 0..1, e.g. {key}: "
                           f"{value!r}: damaged; rerun generate on the dataset to make it "
                           "again")
    known = {scenario(d.id, level) for d in distortions.registered()
             for level in distortions.LEVELS}
    if unknown := sorted(set(means) - known):
        raise RunFileError(f"{shown}/{REPORT_FILE}: mean_quality_by_scenario names "
                           f"{len(unknown)} scenario(s) of no type of this bank, e.g. "
                           f"{unknown[0]!r}: made by another version of iqa-factory, or "
                           "edited")
    return means
