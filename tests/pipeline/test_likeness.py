"""The perceptual hash of references and the look-alikes it finds (pipeline.likeness)."""

import itertools
import math

import cv2
import numpy as np
import pytest
from skimage import data

from pipeline.likeness import NEAR_BITS, LookAlikes, perceptual_hash
from tests.labelers.conftest import CALIBRATION, load_calibration

CALIBRATION_NAMES = ("I03", "I04", "I06", "I08", "I19")  # TID2013 pairs: a reference, a version

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
          "camera", "coins", "moon", "brick", "grass", "gravel", "page", "retina")


def _photo(name: str) -> np.ndarray:
    image = getattr(data, name)()
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]


def _bits(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix, from its formula."""
    k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    matrix = np.sqrt(2 / n) * np.cos(math.pi * (2 * i + 1) * k / (2 * n))
    matrix[0] /= math.sqrt(2)
    return matrix


def test_the_hash_is_zauners_dct_hash_of_the_gray_image_averaged_to_32_by_32():
    photo = _photo("astronaut")[:384, :512]  # sides 16 and 12 times 32: plain block means
    gray = photo.astype(np.float64) @ np.array([0.298936021293776, 0.587043074451121,
                                                 0.114020904255103])
    small = gray.reshape(32, 12, 32, 16).mean(axis=(1, 3))
    dct = _dct_matrix(32)
    low = (dct @ small @ dct.T)[:8, :8].ravel()
    expected = "".join("1" if value > np.median(low) else "0" for value in low)
    assert perceptual_hash(photo) == f"{int(expected, 2):016x}"


def test_a_photo_and_its_copies_look_alike():
    photo = _photo("coffee")
    ok, jpeg = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 50])
    assert ok
    height, width = photo.shape[:2]
    small = cv2.resize(photo, (width * 3 // 8, height * 3 // 8), interpolation=cv2.INTER_AREA)
    copies = [cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED),
              cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)]
    for copy in copies:
        assert _bits(perceptual_hash(photo), perceptual_hash(copy)) <= NEAR_BITS
    # scikit-image's cat is chelsea
    assert _bits(perceptual_hash(_photo("cat")), perceptual_hash(_photo("chelsea"))) == 0


@pytest.mark.parametrize("name", CALIBRATION_NAMES)
def test_a_reference_and_its_calibration_distortion_look_alike(name):
    pair = [load_calibration(CALIBRATION / "pairs" / kind / f"{name}.bmp")
            for kind in ("ref", "dist")]
    assert _bits(*map(perceptual_hash, pair)) <= NEAR_BITS


def test_different_photos_do_not_look_alike():
    hashes = {name: perceptual_hash(_photo(name)) for name in PHOTOS}
    for a, b in itertools.combinations(PHOTOS, 2):
        assert _bits(hashes[a], hashes[b]) > NEAR_BITS, (a, b)


def test_a_flat_image_has_no_hash_and_the_faintest_texture_has_one():
    """A flat image's low frequencies are rounding noise (at odd sizes), and every flat image
    would look like every other: none is hashed; a ramp of 4 gray levels is."""
    for height, width, gray in ((48, 64, 128), (37, 100, 1), (37, 100, 255), (383, 511, 0)):
        assert perceptual_hash(np.full((height, width, 3), gray, dtype=np.uint8)) is None
    ramp = np.repeat(np.linspace(100, 104, 64).round().astype(np.uint8)[None, :, None], 48, 0)
    assert perceptual_hash(np.repeat(ramp, 3, axis=2)) is not None


@pytest.mark.parametrize("seed", range(3))
def test_look_alikes_find_the_closest_earlier_hash_as_a_brute_force_does(seed):
    rng = np.random.default_rng(seed)
    bases = [int(value) for value in rng.integers(0, 2**63, 40, dtype=np.int64)]
    hashes = []
    for _ in range(800):  # copies of a few bases with a few bits flipped, and new hashes
        value = int(bases[rng.integers(len(bases))]) if rng.random() < 0.7 \
            else int(rng.integers(0, 2**63, dtype=np.int64))
        for bit in rng.choice(64, size=rng.integers(0, 9), replace=False):
            value ^= 1 << int(bit)
        hashes.append(f"{value:016x}")
    alikes = LookAlikes()
    for number, phash in enumerate(hashes):
        bits = [_bits(earlier, phash) for earlier in hashes[:number]]
        closest = min(range(number), key=lambda i: (bits[i], i), default=None)
        expected = (closest, bits[closest]) if closest is not None \
            and bits[closest] <= NEAR_BITS else None
        assert alikes.add(number, phash) == expected
