"""Lossy codecs, encoded and decoded in memory: JPEG (libjpeg, IJG quality, 4:2:0) and
JPEG 2000 (OpenJPEG through Pillow, irreversible 9/7 wavelet, rate given as a compression ratio).
"""

import io
import math

import cv2
import numpy as np
from PIL import Image

from distortions.errors import CodecRateError

_RATIO_TOLERANCE = 0.02  # good enough: stop correcting the rate
_RATIO_BOUND = 0.05  # the spec's: an achieved ratio further off is refused
_MAX_ENCODINGS = 6
RATE_CONTROL = 2  # the rate search of jpeg2000_at_ratio; recipes without one mean 1
_JPEG_420 = [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode uint8 RGB as JPEG at IJG `quality` with 4:2:0 chroma, decode, return uint8 RGB."""
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality), *_JPEG_420])
    if not ok:
        raise RuntimeError("OpenCV failed to encode JPEG")
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _resolutions(height: int, width: int) -> int:
    """Wavelet resolutions for the image: OpenJPEG's default 6, fewer for small sides."""
    return max(1, min(6, int(math.log2(min(height, width) / 8)) + 1))


def jpeg2000_encode(img: np.ndarray, rate: float) -> bytes:
    """Encode uint8 RGB as a JPEG 2000 codestream targeting compression ratio `rate`."""
    buffer = io.BytesIO()
    Image.fromarray(img).save(
        buffer,
        format="JPEG2000",
        no_jp2=True,
        irreversible=True,
        mct=1,
        quality_mode="rates",
        quality_layers=[float(rate)],
        num_resolutions=_resolutions(*img.shape[:2]),
    )
    return buffer.getvalue()


def jpeg2000_at_ratio(img: np.ndarray, ratio: float, rate_control: int = RATE_CONTROL) -> bytes:
    """A codestream whose achieved ratio is within 5% of `ratio` (the spec's bound).

    OpenJPEG's rate control undershoots on small images, where headers weigh more, and moves
    in steps: the requested rate is corrected by the observed error, then, once one rate
    fell short and another overshot, bisected between them, until the ratio is within 2%
    (at most six encodings); the closest codestream is kept. A CodecRateError where even it
    is more than 5% off. `rate_control` 1 is the search recipes made before this one used
    (one correction, no bound), kept so that they replay.
    """
    if rate_control == 1:
        return _one_correction(img, ratio)
    if rate_control != RATE_CONTROL:
        raise CodecRateError(f"JPEG 2000 rate control {rate_control!r} is none this bank knows "
                             f"(1 or {RATE_CONTROL})")
    rate, best, best_error = float(ratio), b"", math.inf
    short, over = 0.0, math.inf  # the highest rate that fell short, the lowest that overshot
    for _ in range(_MAX_ENCODINGS):
        data = jpeg2000_encode(img, rate)
        achieved = img.size / len(data)
        if abs(achieved / ratio - 1) < best_error:
            best, best_error = data, abs(achieved / ratio - 1)
        if best_error <= _RATIO_TOLERANCE:
            break
        if achieved < ratio:
            short = max(short, rate)
        else:
            over = min(over, rate)
        rate = math.sqrt(short * over) if short and over < math.inf else rate * ratio / achieved
    if best_error > _RATIO_BOUND:
        raise CodecRateError(f"JPEG 2000 rate control reaches ratio {img.size / len(best):.4g} "
                             f"at best, not within {_RATIO_BOUND:.0%} of {ratio:g}")
    return best


def _one_correction(img: np.ndarray, ratio: float) -> bytes:
    """Rate control 1: the requested rate, then, more than 2% off, one correction by the
    observed error; the closer of the two."""
    data = jpeg2000_encode(img, ratio)
    achieved = img.size / len(data)
    if abs(achieved / ratio - 1) > _RATIO_TOLERANCE:
        retry = jpeg2000_encode(img, ratio * ratio / achieved)
        if abs(img.size / len(retry) / ratio - 1) < abs(achieved / ratio - 1):
            data = retry
    return data


def jpeg2000_roundtrip(img: np.ndarray, ratio: float, rate_control: int = RATE_CONTROL
                       ) -> np.ndarray:
    """Encode at compression ratio `ratio` (raw bytes / coded bytes), decode, return uint8 RGB."""
    data = jpeg2000_at_ratio(img, ratio, rate_control)
    with Image.open(io.BytesIO(data)) as decoded:
        return np.asarray(decoded.convert("RGB"))
