"""How the shipped pseudo-MOS ensemble file was made, and how to remake it:

    python -m pipeline.commands.pmos_ensemble

The multi-task method's label (shared/design/seed-methods.md, method 3): pseudo-MOS = the mean
of SSIM, MS-SSIM, MDSI, VSI, FSIM and GMSD, equal weights (1/6). The method states neither
polarity nor scaling; as in the default ensemble, each score is mapped linearly to [0, 1],
higher is better: best = the metric's value for identical images (1; 0 for MDSI and GMSD),
worst = the 99th percentile, in the worse direction, of its scores over the 165-version bank on
the embedded photos at 512 x 384, rounded outward to three significant digits
(docs/labels-spec-notes.md gives the figures).
"""

import argparse

import numpy as np

from labelers.ensemble import PMOS_ENSEMBLE_FILE, Ensemble, Mapping01
from labelers.labeler import Labeler
from labelers.registry import metric_class
from pipeline.commands.default_ensemble import PERCENTILE, bank_scores, worst_bound
from pipeline.embedded import EMBEDDED_PHOTOS

PMOS_METRICS = ("ssim", "ms_ssim", "mdsi", "vsi", "fsim", "gmsd")


def build(photos: list[str]) -> tuple[Ensemble, dict[str, np.ndarray]]:
    """The ensemble, and the bank scores its bounds come from."""
    scores = bank_scores(photos, Labeler(PMOS_METRICS))
    mappings = {key: Mapping01("linear", best=metric_class(key).best,
                               worst=worst_bound(key, scores[key]))
                for key in PMOS_METRICS}
    source = f"bank: {len(photos)} embedded photos x 165, {PERCENTILE:g}th pct"
    ensemble = Ensemble("pmos-v1", dict.fromkeys(PMOS_METRICS, 1 / len(PMOS_METRICS)), mappings,
                        notes={"label": "pseudo-MOS of the multi-task method: mean of six",
                               "photos": photos, "worst_source": dict.fromkeys(mappings, source)})
    return ensemble, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=len(EMBEDDED_PHOTOS))
    args = parser.parse_args()
    ensemble, scores = build(list(EMBEDDED_PHOTOS)[: args.photos])
    ensemble.save(PMOS_ENSEMBLE_FILE)
    for key in PMOS_METRICS:
        low, median, high = np.percentile(scores[key], [1, 50, 99])
        print(f"{key:8s} 1% {low:.4f} median {median:.4f} 99% {high:.4f} -> "
              f"{ensemble.mappings[key].to_json()}")
    quality, _ = ensemble.quality(scores)
    print(f"Q over the bank: 1% {np.percentile(quality, 1):.3f} median {np.median(quality):.3f} "
          f"99% {np.percentile(quality, 99):.3f}")
    print(f"wrote {PMOS_ENSEMBLE_FILE} (hash {ensemble.hash})")


if __name__ == "__main__":
    main()
