"""VSI, visual saliency-induced index (Zhang, Shen and Li 2014), as the authors' VSI.m computes
it, from piq's building blocks where they agree with it. RGB 0..255 in float64.
- Saliency, SDSP.m (sigma_f = 1.34, omega_0 = 0.021, sigma_d = 145, sigma_c = 0.001): each
  channel resized to 256 x 256 by MATLAB imresize 'bilinear' (antialiased when shrinking),
  CIELAB (sRGB, white 0.9642, 1, 0.8251), a log-Gabor band-pass of L, a, b in the Fourier domain
  times a centre prior and a warm-colour prior, resized back to H x W the same way and scaled to
  [0, 1] (mat2gray).
- LMN = RGB x (0.06, 0.63, 0.27), (0.30, 0.04, -0.35), (0.34, -0.60, 0.17); LMN and saliency
  averaged over f x f blocks keeping every f-th pixel (f = max(1, round(min(H, W) / 256))).
- Scharr gradient magnitude of L; similarities of saliency, gradient and M, N with C1, C2, C3 =
  1.27, 386, 130; VSI = sum(S_VS S_G^0.4 Re[(S_M S_N)^0.02] w) / sum(w), w = max(VS_ref, VS_dist).
Higher is better: 1 for identical images.

piq.vsi departs from VSI.m in three places, fixed here: its resizes are torch bilinear without
antialiasing (down) and with align_corners=True (up), not imresize; its f x f average is shifted
by one pixel with a replicated border; its Lab white is (0.96421, 1, 0.82519). Its test value
(0.96405 on TID2013 I01) was computed by VSI.m in Octave, whose imresize interpolates on
linspace(1, n, m) without antialiasing: with that resize, this code gives 0.964049; with
MATLAB's, 0.963951 (docs/labels-spec-notes.md)."""

import math

import torch
from piq.functional import (
    get_meshgrid,
    gradient_map,
    rgb2lmn,
    rgb2xyz,
    scharr_filter,
    similarity_map,
)
from piq.vsi import _log_gabor

from labelers.base import Metric
from labelers.fixed_bits import fixed_sum
from labelers.inputs import box_downsample, pooling_factor

C1, C2, C3, ALPHA, LAMBDA = 1.27, 386.0, 130.0, 0.4, 0.02
SIGMA_F, OMEGA_0, SIGMA_D, SIGMA_C = 1.34, 0.021, 145.0, 0.001
SALIENCY_SIZE = 256
LAB_WHITE = (0.9642, 1.0, 0.8251)  # SDSP.m's RGB2Lab

Prepared = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # saliency, LMN, gradient of L


def imresize_taps(n_in: int, n_out: int, device: torch.device,
                  scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MATLAB imresize(..., 'bilinear') along one axis as each output's input indices and
    weights (n_out x taps each; imresize.m's contributions): a triangle kernel, widened by
    1 / scale when shrinking (antialiasing), weights summing to 1, indices beyond the edges
    clamped, as MATLAB R2012b's output quoted in Octave's tests shows (later imresize.m
    releases mirror them instead, `aux = [1:n, n:-1:1]`, which differs where an index falls
    below 1 or reaches n + 2: the first and last outputs of a shrink from more than 3 x n_out,
    VSI 1.5e-7 apart at 750 x 1000). `scale` defaults to n_out / n_in, as when imresize is
    given the output size."""
    scale = scale or n_out / n_in
    shrink = min(scale, 1.0)
    u = torch.arange(1, n_out + 1, dtype=torch.float64, device=device) / scale \
        + 0.5 * (1 - 1 / scale)
    taps = torch.arange(math.ceil(2 / shrink) + 2, device=device)
    indices = torch.floor(u - 1 / shrink)[:, None] + taps
    weights = (1 - (u[:, None] - indices).abs() * shrink).clamp(min=0)
    columns = (indices.long() - 1).clamp(0, n_in - 1)
    return columns, weights / weights.sum(dim=1, keepdim=True)


def resize_rows(x: torch.Tensor, n_out: int, scale: float | None = None) -> torch.Tensor:
    """imresize(..., 'bilinear') of float64 `x` along its rows (dim -2) to n_out: each output
    row its taps' weighted sum, added in tap order, elementwise (a matrix product's bits moved
    with the CPU's thread count, VSI's by an ulp)."""
    columns, weights = imresize_taps(x.shape[-2], n_out, x.device, scale)
    weights = weights[:, :, None]
    total = x.index_select(-2, columns[:, 0]) * weights[:, 0]
    gathered = torch.empty_like(total)
    for tap in range(1, columns.shape[1]):
        total.addcmul_(torch.index_select(x, -2, columns[:, tap], out=gathered), weights[:, tap])
    return total


def _transposed(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(-1, -2).contiguous()  # (whole rows gathered: faster than columns)


def imresize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """imresize(x, [height, width], 'bilinear') of each plane of a float64 N x C x H x W, rows
    first."""
    return _transposed(resize_rows(_transposed(resize_rows(x, height)), width))


def _lab(rgb: torch.Tensor) -> torch.Tensor:
    """SDSP.m's RGB2Lab of RGB 0..255."""
    white = torch.tensor(LAB_WHITE, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    t = rgb2xyz(rgb / 255) / white
    f = torch.where(t > 0.008856, t ** (1 / 3), (903.3 * t + 16) / 116)
    return torch.cat([116 * f[:, 1:2] - 16, 500 * (f[:, :1] - f[:, 1:2]),
                      200 * (f[:, 1:2] - f[:, 2:])], dim=1)


ROUNDING_SPAN = 1e-9  # a plane spanning less, relative to max(1, its largest |value|), is flat


def _unit_range(x: torch.Tensor) -> torch.Tensor:
    """mat2gray of each plane: (x - min) / (max - min), a constant plane clipped to [0, 1]. A
    plane constant but for rounding (a flat image's a* after imresize, its saliency: FFT
    noise near 1e-14) is constant: stretched, the rounding would decide the saliency map."""
    low, high = x.amin(dim=(-2, -1), keepdim=True), x.amax(dim=(-2, -1), keepdim=True)
    scale = torch.maximum(low.abs(), high.abs()).clamp(min=1.0)
    flat = high - low <= ROUNDING_SPAN * scale
    stretched = (x - low) / torch.where(flat, 1.0, high - low)
    return torch.where(flat, x.clamp(0.0, 1.0), stretched)


def saliency(rgb: torch.Tensor) -> torch.Tensor:
    """SDSP.m's visual saliency map of float64 RGB 0..255, N x 3 x H x W -> N x 1 x H x W."""
    size = SALIENCY_SIZE
    lab = _lab(imresize(rgb, size, size))
    xx, yy = get_meshgrid((size, size), device=rgb.device, dtype=rgb.dtype)
    log_gabor = _log_gabor(xx, yy, OMEGA_0, SIGMA_F)
    band = torch.fft.ifft2(torch.fft.fft2(lab) * log_gabor).real
    frequency_prior = band.pow(2).sum(dim=1, keepdim=True).sqrt()
    offsets = torch.arange(1, size + 1, dtype=rgb.dtype, device=rgb.device) - size / 2
    centre_prior = torch.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / SIGMA_D**2)
    warm = _unit_range(lab[:, 1:]).pow(2).sum(dim=1, keepdim=True)
    colour_prior = 1 - torch.exp(-warm / SIGMA_C**2)
    vs = imresize(frequency_prior * centre_prior * colour_prior, *rgb.shape[-2:])
    return _unit_range(vs)


def _features(rgb: torch.Tensor) -> Prepared:
    x = rgb.to(torch.float64)
    f = pooling_factor(*x.shape[-2:])
    vs, lmn = box_downsample(saliency(x), f), box_downsample(rgb2lmn(x), f)
    scharr = scharr_filter(device=x.device, dtype=x.dtype)
    return vs, lmn, gradient_map(lmn[:, :1], torch.stack([scharr, scharr.transpose(1, 2)]))


class VSI(Metric):
    key = "vsi"
    higher_is_better = True
    best = 1.0
    min_size = 3  # the 3 x 3 Scharr window

    def prepare(self, ref: torch.Tensor) -> Prepared:
        return _features(ref)

    def compare(self, prepared: Prepared, dist: torch.Tensor) -> torch.Tensor:
        vs1, lmn1, g1 = prepared
        vs2, lmn2, g2 = _features(dist)
        chroma = (similarity_map(lmn1[:, 1:2], lmn2[:, 1:2], C3)
                  * similarity_map(lmn1[:, 2:], lmn2[:, 2:], C3))
        weight = torch.maximum(vs1, vs2)
        score = (similarity_map(vs1, vs2, C1) * similarity_map(g1, g2, C2) ** ALPHA
                 * (chroma.to(torch.complex128) ** LAMBDA).real * weight)
        eps = torch.finfo(torch.float64).eps  # piq's guard: two flat images score 1, not 0/0
        return (fixed_sum(score, (1, 2, 3)) + eps) / (fixed_sum(weight, (1, 2, 3)) + eps)
