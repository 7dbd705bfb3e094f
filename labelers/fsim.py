"""FSIMc (Zhang et al. 2011), the chromatic FSIM of FeatureSIM.m, in float64: RGB 0..255 to
FeatureSIM.m's YIQ (its own I and Q weights), F x F 'same' averaging kept at every F-th pixel,
F = max(1, round(min(H, W) / 256)) rounded half away from zero, phase congruency of Y as its
phasecong2 computes it (labelers.phase_congruency), Scharr gradient magnitude ('same', zero
beyond the image), similarities with T1..T4 = 0.85, 160, 200, 200 and the chromatic term
real((S_I S_Q) ^ 0.03) (a negative product: its complex power's real part, as MATLAB takes
it). The reference's planes, phase congruency and gradient, and the filters of its size, are
computed once."""

import torch
from piq.functional import gradient_map, scharr_filter, similarity_map

from labelers.base import Metric
from labelers.fixed_bits import fixed_sum
from labelers.inputs import box_downsample, pooling_factor
from labelers.phase_congruency import filters, phase_congruency

T1, T2, T3, T4, LAMBDA = 0.85, 160.0, 200.0, 200.0, 0.03
YIQ = ((0.299, 0.587, 0.114),     # FeatureSIM.m's rows (piq's rgb2yiq weighs I and Q
       (0.596, -0.274, -0.322),   # otherwise: 0.5959, -0.2746, -0.3213 ...)
       (0.211, -0.523, 0.312))


def pooled(rgb: torch.Tensor) -> torch.Tensor:
    """FeatureSIM.m's Y, I and Q planes (N x 3 x H x W, float64), each then conv2(P,
    fspecial('average', F), 'same') kept at P(1:F:end, 1:F:end), F rounded as MATLAB
    rounds."""
    weights = torch.tensor(YIQ, dtype=torch.float64, device=rgb.device)
    planes = torch.einsum("pc,nchw->nphw", weights, rgb.to(torch.float64))
    return box_downsample(planes, pooling_factor(*planes.shape[-2:]))


class FSIM(Metric):
    key = "fsim"
    higher_is_better = True
    best = 1.0
    min_size = 8

    def _features(self, rgb: torch.Tensor, bank=None) -> dict:
        yiq = pooled(rgb)
        luma = yiq[:, :1]
        if bank is None:
            bank = filters(*luma.shape[-2:], device=luma.device)
        scharr = scharr_filter(device=luma.device, dtype=luma.dtype)
        return {"bank": bank, "pc": phase_congruency(luma[:, 0], bank)[:, None],
                "gradient": gradient_map(luma, torch.stack([scharr, scharr.transpose(-1, -2)])),
                "i": yiq[:, 1:2], "q": yiq[:, 2:]}

    def prepare(self, ref: torch.Tensor) -> dict:
        return self._features(ref)

    def compare(self, prepared: dict, dist: torch.Tensor) -> torch.Tensor:
        d = self._features(dist, prepared["bank"])
        pc_max = torch.maximum(prepared["pc"], d["pc"])
        score = (similarity_map(prepared["pc"], d["pc"], T1)
                 * similarity_map(prepared["gradient"], d["gradient"], T2) * pc_max)
        chroma = (similarity_map(prepared["i"], d["i"], T3)
                  * similarity_map(prepared["q"], d["q"], T4))
        score = score * (chroma.to(torch.complex128) ** LAMBDA).real
        return fixed_sum(score, (1, 2, 3)) / fixed_sum(pc_max, (1, 2, 3))
