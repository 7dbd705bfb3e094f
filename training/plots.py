"""The scatter plot of predicted quality against opinion scores."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from labelers.ensemble import logistic
from training.correlation import fit_logistic


def scatter(predicted: np.ndarray, opinion: np.ndarray, figures: dict, title: str,
            path: Path) -> None:
    """Points, the fitted logistic, and the figures in the title."""
    figure, axes = plt.subplots(figsize=(5.5, 5), dpi=120)
    axes.scatter(predicted, opinion, s=8, alpha=0.5, edgecolors="none")
    line = np.linspace(predicted.min(), predicted.max(), 200)
    axes.plot(line, logistic(line, *fit_logistic(predicted, opinion)), color="crimson",
              linewidth=1.5, label="4-parameter logistic")
    axes.set_xlabel("predicted quality")
    axes.set_ylabel("opinion score (rescaled to [0, 1])")
    axes.set_title(f"{title}\nSROCC {figures['srocc']:.3f}  PLCC {figures['plcc']:.3f}  "
                   f"KRCC {figures['krcc']:.3f}  RMSE {figures['rmse']:.3f}  "
                   f"n={figures['count']}", fontsize=9)
    axes.legend(loc="lower right", fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
