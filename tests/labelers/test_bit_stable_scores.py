"""MAE's and GMSD's arithmetic is fixed: the same image pair gives the same bits in any batch,
with any thread count and on any of MKL's instruction paths (GMSD's gradients are sums of
shifted slices, not a BLAS convolution; both reduce each image as numpy's row sums), so a shard
made again labels its samples with the same bytes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import distortions
from labelers import Labeler
from labelers.registry import AVAILABLE_METRICS, DEEP_METRICS

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import json, sys
import numpy as np, skimage.data, torch
import distortions
from labelers import Labeler
from pipeline.sizing import cover_and_crop, parse_size
from tests.conftest import MINIMUM_IMAGE
from PIL import Image
threads, metrics, size, batch = sys.argv[1:]
torch.set_num_threads(int(threads))
if size == "small":
    ref = np.asarray(Image.open(MINIMUM_IMAGE).convert("RGB")).copy()
else:
    ref = cover_and_crop(skimage.data.astronaut(), parse_size(size))
versions = np.stack([distortions.apply(ref, d, 3, 5)[0] for d in (1, 3, 13, 16)])
scores = Labeler(metrics=tuple(metrics.split(",")), device="cpu",
                 batch_size=int(batch) or None).score(ref, versions)
print(json.dumps({key: [float(s).hex() for s in values] for key, values in scores.items()}))
"""


def test_an_identical_version_scores_exactly_zero_in_any_batch(small_image):
    labeler = Labeler(metrics=("gmsd",), device="cpu")
    blurred = distortions.apply(small_image, 13, 3, 1)[0]
    for count in (1, 2, 9, 16):
        versions = np.stack([small_image] * count + [blurred])
        scores = labeler.score(small_image, versions)["gmsd"]
        assert np.all(scores[:count] == 0.0) and scores[count] > 0


def test_a_version_scores_the_same_bits_alone_and_in_any_batch(small_image):
    """Torch's CPU reduction of a batch of one adds in another order than of several (MAE and
    GMSD differed by 1e-16 and 1e-15 there); an odd width puts the rows at odd addresses."""
    image = np.pad(small_image, ((0, 0), (0, 3), (0, 0)), mode="reflect")
    versions = np.stack([distortions.apply(image, d, level, 7)[0]
                         for d in (1, 3, 13, 16, 22, 29) for level in (1, 4)])
    alone = {key: np.concatenate([Labeler(metrics=("gmsd", "mae"), device="cpu")
                                  .score(image, version[None])[key] for version in versions])
             for key in ("gmsd", "mae")}
    for batch in (2, 5, 16):
        scores = Labeler(metrics=("gmsd", "mae"), device="cpu", batch_size=batch).score(
            image, versions)
        for key, expected in alone.items():
            assert scores[key].tobytes() == expected.tobytes(), (key, batch)


def _scores(threads: int, metrics: str = "gmsd,mae", size: str = "small", batch: int = 0,
            **environment) -> dict[str, list[str]]:
    """The hex scores of four versions of the astronaut (the committed crop, or cropped to
    `size`) on `threads` torch threads, in passes of `batch` (0: the metrics' own)."""
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(threads), metrics, size, str(batch)],
                         cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT), **environment},
                         capture_output=True, text=True, check=True, timeout=300)
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_the_scores_do_not_depend_on_threads_or_the_blas_code_path():
    expected = _scores(1)
    assert _scores(2) == expected
    for path in ("SSE4_2", "AVX2"):  # MKL's older instruction paths round differently
        assert _scores(2, MKL_CBWR=path) == expected
    assert _scores(2, ATEN_CPU_CAPABILITY="default") == expected  # torch's own, unvectorised
    assert torch.backends.mkl.is_available()  # so the paths above were MKL's


def test_no_metric_moves_with_the_thread_count():
    """A labeler actor's torch threads follow the node's CPUs and the actor count: a shard
    made again on another cluster must label its samples with the same bits. VIF's covariance,
    a BLAS product whose long sum was split among the threads, moved in its last bits, and
    so did the pooling sums of FSIM, NLPD, SSIM and VSI (and VSI's resize, a matrix product)
    at 512 x 384 in a pass of one version (a reference's last pass often holds one): torch
    splits a long sum among its threads there."""
    metrics = ",".join(key for key in AVAILABLE_METRICS if key not in DEEP_METRICS)
    for size, batch in (("small", 0), ("512x384", 1)):
        expected = _scores(1, metrics, size, batch)
        assert sorted(expected) == sorted(metrics.split(","))
        for threads in (2, 3, 4):
            assert _scores(threads, metrics, size, batch) == expected, (size, threads)


def test_the_other_metrics_move_only_in_their_last_bits_with_the_batch(small_image):
    """The README's bound for the metrics whose torch arithmetic depends on the batch: a score
    alone and in a batch differ by less than 1e-12 (they compute in float64)."""
    metrics = ("fsim", "vif", "cw_ssim", "nlpd", "ms_ssim", "mad")
    versions = np.stack([distortions.apply(small_image, d, level, 7)[0]
                         for d in (1, 3, 13, 22) for level in (1, 4)])
    batched = Labeler(metrics=metrics, device="cpu", batch_size=8).score(small_image, versions)
    alone = Labeler(metrics=metrics, device="cpu")
    single = [alone.score(small_image, version[None]) for version in versions]
    for key in metrics:
        gap = np.max(np.abs(batched[key] - np.concatenate([s[key] for s in single])))
        assert gap < 1e-12, (key, gap)
