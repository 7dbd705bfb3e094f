import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import distortions
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
WITHOUT_AVX512 = {"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
                  "OPENBLAS_CORETYPE": "Haswell"}


@pytest.mark.slow
@pytest.mark.skipif(not np._core._multiarray_umath.__cpu_features__.get("AVX512F"),
                    reason="this CPU has no AVX-512: both runs would take the same kernels")
def test_outputs_are_the_same_bytes_without_avx512(small_image):
    script = ("import json, numpy as np; from PIL import Image; "
              "from tests.distortions.golden import IMAGE_FILE, output_hashes; "
              "print(json.dumps(output_hashes(np.asarray(Image.open(IMAGE_FILE).convert('RGB')))))")
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env={**os.environ, **WITHOUT_AVX512}, cwd=ROOT, check=True)
    here = output_hashes(small_image)
    there = json.loads(child.stdout)
    assert sorted(k for k in here if here[k] != there[k]) == []
