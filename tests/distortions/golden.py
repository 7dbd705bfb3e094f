"""Golden hashes: SHA-256 of every non-network output on the committed 192 x 176 image.

A library upgrade that changes pixels (libjpeg, OpenJPEG, Pillow's quantizer and resampling,
OpenCV's remap) shows up as a test failure. After a deliberate change, rewrite them with
`make golden`; a new type's entries are added the same way (existing entries keep their bytes).
"""

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

import distortions

HERE = Path(__file__).parent
GOLDEN_FILE = HERE.parent / "data" / "golden_hashes.json"
IMAGE_FILE = HERE.parent / "data" / "astronaut_192x176.png"
RUN_SEED = 20261122


def output_hashes(img: np.ndarray) -> dict[str, str]:
    """'<id>-<level>' -> sha256 of the output pixels, for every non-learned scenario."""
    hashes = {}
    for d in distortions.registered():
        if d.learned:
            continue
        for level in distortions.LEVELS:
            seed = distortions.derive_seed(RUN_SEED, "golden", d.id, level)
            out, _ = distortions.apply(img, d.id, level, seed)
            hashes[f"{d.id:02d}-{level}"] = hashlib.sha256(out.tobytes()).hexdigest()
    return hashes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite the golden file")
    args = parser.parse_args()
    with Image.open(IMAGE_FILE) as image:
        hashes = output_hashes(np.asarray(image.convert("RGB")))
    if args.write:
        GOLDEN_FILE.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
        print(f"wrote {len(hashes)} hashes to {GOLDEN_FILE}")
    else:
        print(json.dumps(hashes, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
