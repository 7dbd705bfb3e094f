"""MDSI, mean deviation similarity index (Nafchi, Shahkolaei, Hedjam and Cheriet 2016), as the
authors' MDSI.m computes it with its default 'sum' combination, from piq's building blocks:
RGB 0..255 in float64, f x f box average keeping every f-th pixel (f = max(1, round(min(H, W) /
256)), MATLAB rounding); L, H, M = RGB x (0.2989, 0.587, 0.114), (0.30, 0.04, -0.35),
(0.34, -0.60, 0.17), not rounded; Prewitt gradient magnitudes (zero padding) of the reference's
L, the distorted L and their mean (the fusion); GS = GS(ref, dist; C1) + GS(dist, fusion; C2) -
GS(ref, fusion; C2), CS = chromaticity similarity of (H, M) with C3; GCS = 0.6 GS + 0.4 CS; the
score is mean|GCS^(1/4) - mean(GCS^(1/4))|^(1/4), with complex powers where GCS < 0 (MATLAB's
mad((GCS.^0.5).^0.5)^0.25). Lower is better: 0 for identical images.

piq.mdsi (defaults, data_range=255) computes the same, in the input's dtype and with Python's
round for f; here the reference's pooled planes and gradient are computed once."""

import torch
from piq.functional import gradient_map, prewitt_filter, rgb2lhm, similarity_map

from labelers.base import Metric
from labelers.fixed_bits import fixed_mean
from labelers.inputs import box_downsample, pooling_factor

C1, C2, C3, ALPHA = 140.0, 55.0, 550.0, 0.6

Prepared = tuple[torch.Tensor, torch.Tensor]  # LHM planes, gradient magnitude of L


def _lhm(rgb: torch.Tensor) -> torch.Tensor:
    x = rgb.to(torch.float64)
    return rgb2lhm(box_downsample(x, pooling_factor(*x.shape[-2:])))


def _gradient(luminance: torch.Tensor) -> torch.Tensor:
    prewitt = prewitt_filter(device=luminance.device, dtype=luminance.dtype)
    return gradient_map(luminance, torch.stack([prewitt, prewitt.transpose(1, 2)]))


def deviation_pooling(gcs: torch.Tensor) -> torch.Tensor:
    """mad((GCS.^0.5).^0.5)^0.25 of each map (N x 1 x H x W -> N), with complex roots; one
    fourth power, not two square roots, so the GCS values one ulp below 1 that MDSI.m's own
    sums leave for identical images round to 1 and score the definition's 0 (MATLAB: 3.6e-5,
    docs/labels-spec-notes.md)."""
    z = gcs.flatten(1).to(torch.complex128) ** 0.25
    # the real and imaginary parts' means: torch's complex mean (a complex division) of n
    # ones can be one ulp below 1, which the outer fourth root turns into 1e-4 for identical
    # images (MATLAB's mean gives exactly 1)
    mean = torch.complex(fixed_mean(z.real, (1,), keepdim=True),
                         fixed_mean(z.imag, (1,), keepdim=True))
    return fixed_mean((z - mean).abs(), (1,)) ** 0.25


class MDSI(Metric):
    key = "mdsi"
    higher_is_better = False
    best = 0.0
    min_size = 3  # the 3 x 3 Prewitt window

    def prepare(self, ref: torch.Tensor) -> Prepared:
        lhm = _lhm(ref)
        return lhm, _gradient(lhm[:, :1])

    def compare(self, prepared: Prepared, dist: torch.Tensor) -> torch.Tensor:
        ref, g_ref = prepared
        lhm = _lhm(dist)
        g_dist = _gradient(lhm[:, :1])
        g_fused = _gradient((ref[:, :1] + lhm[:, :1]) / 2)
        gs = (similarity_map(g_ref, g_dist, C1) + similarity_map(g_dist, g_fused, C2)
              - similarity_map(g_ref, g_fused, C2))
        h1, m1, h2, m2 = ref[:, 1:2], ref[:, 2:], lhm[:, 1:2], lhm[:, 2:]
        cs = (2 * (h1 * h2 + m1 * m2) + C3) / (h1**2 + h2**2 + m1**2 + m2**2 + C3)
        return deviation_pooling(ALPHA * gs + (1 - ALPHA) * cs)
