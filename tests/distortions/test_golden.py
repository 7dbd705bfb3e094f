import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import distortions
from shards.provenance import library_versions
from tests.distortions.golden import GOLDEN_FILE, output_hashes

ROOT = Path(__file__).resolve().parents[2]


def test_every_non_network_output_matches_its_golden_hash(small_image):
    golden = json.loads(GOLDEN_FILE.read_text())
    assert len(golden) == 5 * sum(not d.learned for d in distortions.registered()) == 190
    changed = {key for key, digest in output_hashes(small_image).items() if golden[key] != digest}
    assert not changed, (
        f"pixels changed for {sorted(changed)}: a library upgrade or a code change altered "
        "these outputs; if deliberate, run `make golden` and say why in the commit"
    )


# numpy's AVX-512 kernels and OpenBLAS's per-CPU kernels round float32 differently; outputs
# must not depend on them (a cluster mixes CPUs, and a dataset must be the same bytes)
OPENCV_AVX512 = ",".join(feature.strip("*?") for feature in cv2.getCPUFeaturesLine().split()
                         if feature.strip("*?").startswith("AVX512"))
WITHOUT_AVX512 = {"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
                  "OPENBLAS_CORETYPE": "Haswell", "OPENCV_CPU_DISABLE": OPENCV_AVX512}
CHILD = ("import json, numpy as np; from PIL import Image; "
         "from shards.provenance import library_versions; "
         "from tests.distortions.golden import IMAGE_FILE, output_hashes; "
         "image = np.asarray(Image.open(IMAGE_FILE).convert('RGB')); "
         "print(json.dumps([output_hashes(image), library_versions()]))")


def _in_a_child(environment: dict[str, str]) -> tuple[dict[str, str], dict]:
    """(output hashes, library versions) in a process run with these variables."""
    child = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                           env={**os.environ, **environment}, cwd=ROOT, check=True)
    hashes, versions = json.loads(child.stdout)
    return hashes, versions


@pytest.mark.slow
@pytest.mark.skipif(not np._core._multiarray_umath.__cpu_features__.get("AVX512F"),
                    reason="this CPU has no AVX-512: both runs would take the same kernels")
def test_outputs_are_the_same_bytes_without_avx512(small_image):
    here = output_hashes(small_image)
    there, versions = _in_a_child(WITHOUT_AVX512)
    assert sorted(k for k in here if here[k] != there[k]) == []
    assert versions == library_versions()  # so the record leaves AVX-512 out


@pytest.mark.slow
@pytest.mark.skipif("AVX2" not in library_versions()["opencv_dispatch"].split(),
                    reason="OpenCV does not dispatch to AVX2 here: nothing to switch off")
def test_outputs_that_change_without_opencvs_avx2_are_recorded_as_made_elsewhere(small_image):
    """OpenCV's float filters round otherwise without AVX2 (an older or another processor):
    the shards' library record names the dispatch, so such a replay is named, not silent."""
    here = output_hashes(small_image)
    there, versions = _in_a_child({"OPENCV_CPU_DISABLE": ",".join(["AVX2", OPENCV_AVX512])})
    changed = sorted(k for k in here if here[k] != there[k])  # 10 of 190 with OpenCV 5.0.0
    differing = {key for key, version in versions.items() if version != library_versions()[key]}
    assert differing == {"opencv_dispatch"}, changed
