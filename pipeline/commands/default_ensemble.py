"""How the shipped default ensemble file was made, and how to remake it:

    python -m pipeline.commands.default_ensemble          # or: make default-ensemble

Weights: the paper's (labels.md). Mappings: linear, best = the metric's value for identical
images, worst = the 99th percentile, in the worse direction, of its scores over the whole
165-version bank on the embedded photos at 512 x 384, rounded outward to three significant
digits. Metrics whose ImageNet weights are absent where this runs keep a provisional worst,
marked as such in the file's notes.
"""

import argparse
import math

import numpy as np
from tqdm import tqdm

import distortions
from labelers import weights
from labelers.ensemble import DEFAULT_ENSEMBLE_FILE, Ensemble, Mapping01
from labelers.labeler import Labeler
from labelers.registry import METRICS, metric_class
from pipeline.embedded import EMBEDDED_PHOTOS, embedded_photo
from pipeline.sizing import TargetSize, cover_and_crop

PAPER_WEIGHTS = {"gmsd": 0.0324, "fsim": 0.0398, "vif": 0.0549, "cw_ssim": 0.0643,
                 "nlpd": 0.0951, "mae": 0.1878, "ms_ssim": 0.1920, "mad": 0.1085,
                 "dists": 0.1097, "lpips": 0.1153}
# Used only where the backbone weights are absent: about 1.1 x the official scores of the
# severe TID2013 calibration pair I03 (LPIPS 0.724, DISTS 0.474).
PROVISIONAL_WORST = {"lpips": 0.8, "dists": 0.52}
PERCENTILE = 99.0


def _round_outward(value: float, towards_worse_up: bool) -> float:
    if value == 0:
        return 0.0
    digits = 2 - math.floor(math.log10(abs(value)))
    scaled = value * 10**digits
    rounded = math.ceil(scaled) if towards_worse_up else math.floor(scaled)
    return rounded / 10**digits


def bank_scores(photos: list[str], labeler: Labeler) -> dict[str, np.ndarray]:
    """Raw scores of all 165 versions of each embedded photo at 512 x 384."""
    collected = {key: [] for key in labeler.keys}
    for name in photos:
        ref = cover_and_crop(embedded_photo(name), TargetSize())
        versions = [distortions.apply(ref, d.id, level,
                                      distortions.derive_seed(0, name, d.id, level))[0]
                    for d in tqdm(distortions.all(), desc=f"distorting {name}")
                    for level in distortions.LEVELS]
        scores = labeler.score(ref, versions)
        for key in labeler.keys:
            collected[key].append(scores[key])
    return {key: np.concatenate(values) for key, values in collected.items()}


def worst_bound(key: str, values: np.ndarray) -> float:
    higher_is_better = metric_class(key).higher_is_better
    worse = np.percentile(values, 100 - PERCENTILE if higher_is_better else PERCENTILE)
    return _round_outward(float(worse), towards_worse_up=not higher_is_better)


def build(photos: list[str]) -> Ensemble:
    labeler = Labeler(allow_missing=True)
    scores = bank_scores(photos, labeler)
    mappings, sources = {}, {}
    for key in METRICS:
        if key in scores:
            worst = worst_bound(key, scores[key])
            sources[key] = f"bank: {len(photos)} embedded photos x 165, {PERCENTILE:g}th pct"
        else:
            worst = PROVISIONAL_WORST[key]
            sources[key] = "provisional: ImageNet weights absent when the file was made"
        mappings[key] = Mapping01("linear", best=metric_class(key).best, worst=worst)
    return Ensemble("default-v1", dict(PAPER_WEIGHTS), mappings,
                    notes={"worst_source": sources, "photos": photos,
                           "absent_when_made": list(labeler.absent)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=len(EMBEDDED_PHOTOS))
    args = parser.parse_args()
    ensemble = build(list(EMBEDDED_PHOTOS)[: args.photos])
    ensemble.save(DEFAULT_ENSEMBLE_FILE)
    missing = weights.missing(list(weights.BACKBONES))
    print(f"wrote {DEFAULT_ENSEMBLE_FILE} (hash {ensemble.hash})"
          + (f"; provisional bounds for {', '.join(missing)}" if missing else ""))


if __name__ == "__main__":
    main()
