"""The scatter plot of predicted quality against opinion scores; the lowest and highest scored
images of a prediction."""

from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.font_manager import FontProperties, findfont, get_font

from shards.decode import decode
from training.correlation import CORE_FIGURES, FIT_PAIRS, fit_logistic
from training.results_files import figures_line

COLLAPSED = "one predicted value for every image: no logistic to fit"


def scatter(predicted: np.ndarray, opinion: np.ndarray, figures: dict, title: str,
            path: Path) -> None:
    """Points, the fitted logistic (where the figures have one: FIT_PAIRS), and the figures in
    the title ("undefined" where one is not a number)."""
    figure, axes = plt.subplots(figsize=(5.5, 5), dpi=120)
    axes.scatter(predicted, opinion, s=8, alpha=0.5, edgecolors="none")
    spread = np.ptp(predicted) if len(predicted) >= FIT_PAIRS else np.nan  # NaN: no fit
    if spread > 0:
        line = np.linspace(predicted.min(), predicted.max(), 200)
        axes.plot(line, fit_logistic(predicted, opinion)(line), color="crimson",
                  linewidth=1.5, label="4-parameter logistic")
        axes.legend(loc="lower right", fontsize=8)
    elif spread == 0:  # a collapsed model: a curve over no width
        axes.text(0.5, 0.02, COLLAPSED, transform=axes.transAxes, ha="center", fontsize=8,
                  color="crimson")
    axes.set_xlabel("predicted quality")
    axes.set_ylabel("opinion score (rescaled to [0, 1])")
    axes.set_title(f"{title}\n{figures_line(figures, CORE_FIGURES)}  n={figures['count']}",
                   fontsize=9)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def extremes(scores: dict[str, float], path: Path, count: int = 4) -> None:
    """The `count` lowest and highest scored image files, each with its score and name (one
    row of them all, lowest first, where there are no more than 2 x count)."""
    ranked = sorted(scores, key=scores.__getitem__)
    rows = [("lowest: ", ranked[:count]), ("highest: ", ranked[::-1][:count])]
    if len(ranked) <= 2 * count:
        rows = [("", ranked)]
    columns = max(len(names) for _, names in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(2.6 * columns, 2.5 * len(rows)),
                                dpi=110, squeeze=False)
    for row, (label, names) in enumerate(rows):
        for column in range(columns):
            cell = axes[row][column]
            cell.axis("off")
            if column < len(names):
                name = names[column]
                cell.imshow(_thumbnail(Path(name)))
                cell.set_title(f"{label}{scores[name]:.3f}\n{_short(Path(name).name)}",
                               fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def _thumbnail(path: Path, longest: int = 256) -> np.ndarray:
    pixels = decode(path.read_bytes()).pixels
    scale = longest / max(pixels.shape[:2])
    if scale >= 1:
        return pixels
    size = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def _short(name: str, most: int = 28) -> str:
    """A file name to print: bytes that are not UTF-8 (kept by the file system as surrogates)
    shown as U+FFFD, characters the titles' font has no glyph for (CJK in matplotlib's
    DejaVu Sans: boxes) as \\uXXXX escapes, cut to `most` characters."""
    name = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    font = get_font(findfont(FontProperties()))
    name = "".join(char if font.get_char_index(ord(char)) or not char.isprintable()
                   else char.encode("unicode_escape").decode("ascii") for char in name)
    return name if len(name) <= most else name[: most - 3] + "..."
