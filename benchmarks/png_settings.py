"""The PNG settings a shard could be written with, compared on the same images: each
candidate's encoding and decoding time and its bytes against the shards' own settings
(`shards.png.PNG_SETTINGS`). Part of `make bench-distortions`."""

import time

import cv2
import numpy as np

import distortions
from shards.png import PNG_SETTINGS

_C, _S, _F = cv2.IMWRITE_PNG_COMPRESSION, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_FILTER
PNG_CANDIDATES = {  # name -> OpenCV imwrite parameters
    "level 1 (the shards' before)": [_C, 1],
    "OpenCV's default (level 1, RLE, sub filter)": [],
    "level 1, RLE, fast filters (the shards')": PNG_SETTINGS,
    "level 1, RLE, up filter": [_C, 1, _S, cv2.IMWRITE_PNG_STRATEGY_RLE, _F,
                                cv2.IMWRITE_PNG_FILTER_UP],
    "level 1, RLE, Paeth filter": [_C, 1, _S, cv2.IMWRITE_PNG_STRATEGY_RLE, _F,
                                   cv2.IMWRITE_PNG_FILTER_PAETH],
    "level 6": [_C, 6],
}


def png_settings(outputs: list[np.ndarray]) -> list[dict]:
    """Each candidate's mean encode and decode ms and its bytes against the shards' settings,
    over `outputs` (BGR, as OpenCV encodes them)."""
    rows = []
    for name, parameters in PNG_CANDIDATES.items():
        started, encoded = time.perf_counter(), []
        for image in outputs:
            encoded.append(cv2.imencode(".png", image, parameters)[1])
        encode_ms = (time.perf_counter() - started) * 1000 / len(outputs)
        started = time.perf_counter()
        for data in encoded:
            cv2.imdecode(data, cv2.IMREAD_COLOR)
        rows.append({"settings": name, "encode_ms": round(encode_ms, 2),
                     "decode_ms": round((time.perf_counter() - started) * 1000 / len(outputs), 2),
                     "bytes": sum(len(data) for data in encoded)})
    ours = next(row["bytes"] for row in rows if row["settings"].endswith("(the shards')"))
    for row in rows:
        row["size_vs_shards"] = round(row["bytes"] / ours, 4)
    return rows


def bank_outputs(img: np.ndarray) -> list[np.ndarray]:
    """Every non-learned scenario's output of `img` (BGR)."""
    return [cv2.cvtColor(distortions.apply(img, d.id, level, level)[0], cv2.COLOR_RGB2BGR)
            for d in distortions.registered() if not d.learned for level in distortions.LEVELS]
