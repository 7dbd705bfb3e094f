"""References that look alike: a perceptual hash of each reference's sized pixels, and the
earlier reference whose hash differs from it in few bits (the same photo re-encoded, resized
or lightly edited, which the pixels' SHA-256 does not catch).

The hash is the DCT hash of pHash (Zauner, 2010): the gray image averaged down to 32 x 32, its
8 x 8 lowest-frequency DCT-II coefficients, one bit per coefficient, set where it is above
their median; written as 16 hex digits, the first coefficient the highest bit."""

import cv2
import numpy as np
import scipy.fft

from distortions.colorspace import rgb_to_gray

HASH_SIDE = 32  # the side the gray image is averaged down to
LOW_SIDE = 8  # the lowest frequencies kept on each axis: a 64-bit hash
# the most bits two look-alikes' hashes differ in: re-encoded and resized copies of a photo
# and the calibration pairs' distortions measured 0-4, a crop of 10 pixels 6-10, different
# photos 18 and more (tests/pipeline/test_likeness.py)
NEAR_BITS = 6
# the largest low frequency (DC aside) of an image with no texture to hash: an amplitude of a
# 16th of a gray level (an orthonormal 32 x 32 DCT coefficient is 16 times its pattern's)
FLAT_COEFFICIENT = 1.0


def perceptual_hash(pixels: np.ndarray) -> str | None:
    """The DCT hash of an RGB image (uint8 H x W x 3), as 16 hex digits; None for a flat one
    (its bits would be rounding noise, and every flat image would look like every other)."""
    gray = rgb_to_gray(pixels.astype(np.float64))
    small = cv2.resize(gray, (HASH_SIDE, HASH_SIDE), interpolation=cv2.INTER_AREA)
    low = scipy.fft.dctn(small, norm="ortho")[:LOW_SIDE, :LOW_SIDE].ravel()
    if np.abs(low[1:]).max() < FLAT_COEFFICIENT:
        return None
    return f"{int(np.packbits(low > np.median(low)).view('>u8')[0]):016x}"


class LookAlikes:
    """The hashes of the items added so far; `add` says which earlier item an item looks
    like (the closest, the earliest among equals) within NEAR_BITS."""

    def __init__(self) -> None:
        self._hashes = np.empty(256, dtype=np.uint64)
        self._items: list = []

    def add(self, item, phash: str) -> tuple[object, int] | None:
        """(earlier item, bits apart) of the closest earlier look-alike of `item`, or None;
        `item` is then among those the later ones are compared with."""
        value = np.uint64(int(phash, 16))
        count = len(self._items)
        found = None
        if count:
            bits = np.bitwise_count(self._hashes[:count] ^ value)
            nearest = int(bits.argmin())
            if bits[nearest] <= NEAR_BITS:
                found = self._items[nearest], int(bits[nearest])
        if count == len(self._hashes):
            self._hashes = np.concatenate([self._hashes, np.empty_like(self._hashes)])
        self._hashes[count] = value
        self._items.append(item)
        return found
