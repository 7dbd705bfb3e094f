"""Colour conversions with MATLAB's conventions, on float32 images in [0, 1].

- gray: rgb2gray weights (0.298936, 0.587043, 0.114021);
- YCbCr: BT.601 studio swing as MATLAB's rgb2ycbcr (Y in [16, 235]/255, Cb/Cr in [16, 240]/255);
- Lab: sRGB with D65 white, L* in [0, 100] (OpenCV's float conversion, which applies the sRGB
  transfer curve; it matches skimage/MATLAB rgb2lab to about 1e-2 in L*).
"""

import cv2
import numpy as np

GRAY_WEIGHTS = np.array([0.298936021293776, 0.587043074451121, 0.114020904255103])

_YCBCR_MATRIX = np.array(
    [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]
) / 255.0
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0]) / 255.0
_RGB_FROM_YCBCR = np.linalg.inv(_YCBCR_MATRIX)


def to_float(img: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1]."""
    return img.astype(np.float32) * np.float32(1.0 / 255.0)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """float in [0, 1] -> uint8: clip, then round half to even (as numpy's rint)."""
    return np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def rgb_to_gray(img: np.ndarray) -> np.ndarray:
    """MATLAB rgb2gray on a float image (no rounding)."""
    return img @ GRAY_WEIGHTS.astype(img.dtype)


def rgb_to_ycbcr(img: np.ndarray) -> np.ndarray:
    """MATLAB rgb2ycbcr (studio swing) on a float RGB image in [0, 1]."""
    matrix = _YCBCR_MATRIX.T.astype(img.dtype)
    return img @ matrix + _YCBCR_OFFSET.astype(img.dtype)


def ycbcr_to_rgb(img: np.ndarray) -> np.ndarray:
    """MATLAB ycbcr2rgb (studio swing), the exact inverse of rgb_to_ycbcr; not clipped."""
    matrix = _RGB_FROM_YCBCR.T.astype(img.dtype)
    return (img - _YCBCR_OFFSET.astype(img.dtype)) @ matrix


def rgb_to_lab(img: np.ndarray) -> np.ndarray:
    """sRGB (float32, [0, 1]) -> CIE Lab, D65."""
    return cv2.cvtColor(np.ascontiguousarray(img, dtype=np.float32), cv2.COLOR_RGB2Lab)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIE Lab, D65 -> sRGB float32 (not clipped by us; OpenCV clips to [0, 1])."""
    return cv2.cvtColor(np.ascontiguousarray(lab, dtype=np.float32), cv2.COLOR_Lab2RGB)
