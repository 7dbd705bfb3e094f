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

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import json, sys
import numpy as np, torch
import distortions
from labelers import Labeler
from tests.conftest import MINIMUM_IMAGE
from PIL import Image
torch.set_num_threads(int(sys.argv[1]))
ref = np.asarray(Image.open(MINIMUM_IMAGE).convert("RGB")).copy()
versions = np.stack([distortions.apply(ref, d, 3, 5)[0] for d in (1, 3, 13, 16)])
scores = Labeler(metrics=("gmsd", "mae"), device="cpu").score(ref, versions)
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


def _scores(threads: int, **environment) -> dict[str, list[str]]:
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(threads)], cwd=ROOT,
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
