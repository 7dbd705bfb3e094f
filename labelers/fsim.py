"""FSIMc (Zhang et al. 2011), the chromatic FSIM of FeatureSIM.m, through piq's building blocks
(piq.fsim(chromatic=True) follows FeatureSIM.m but for its pooling): RGB 0..255, F x F
'same' averaging kept at every F-th pixel, F = max(1, round(min(H, W) / 256)) rounded half
away from zero, YIQ, phase congruency of Y over 4 scales x 4 orientations, Scharr gradient
magnitude, similarities with T1..T4 = 0.85, 160, 200, 200 and lambda = 0.03. The reference's
pooling, YIQ planes, phase congruency and gradients are computed once."""

import torch
from piq.fsim import _construct_filters, _phase_congruency
from piq.functional import gradient_map, rgb2yiq, scharr_filter, similarity_map

from labelers.base import Metric
from labelers.inputs import box_downsample, pooling_factor

T1, T2, T3, T4, LAMBDA = 0.85, 160.0, 200.0, 200.0, 0.03
SCALES = ORIENTATIONS = 4
# piq.fsim's defaults for the log-Gabor bank and the noise model (FeatureSIM.m's values)
FILTER_ARGS = {"min_length": 6, "mult": 2, "sigma_f": 0.55, "delta_theta": 1.2}
NOISE_K = 2.0


def pooled(rgb: torch.Tensor) -> torch.Tensor:
    """FeatureSIM.m's first step: conv2(I, fspecial('average', F), 'same') then I(1:F:end,
    1:F:end) of each plane, F rounded as MATLAB rounds (piq's avg_pool2d with Python's round
    takes F = 2 where MATLAB takes 3, at a short side of 640, and drops an odd last row)."""
    x = rgb.to(torch.float32)
    return box_downsample(x, pooling_factor(*x.shape[-2:]))


class FSIM(Metric):
    key = "fsim"
    higher_is_better = True
    min_size = 8

    def _features(self, rgb: torch.Tensor, filters: torch.Tensor | None = None):
        yiq = rgb2yiq(pooled(rgb))
        luma = yiq[:, :1]
        if filters is None:
            filters = _construct_filters(luma, SCALES, ORIENTATIONS, **FILTER_ARGS)
        pc = _phase_congruency(luma, filters=filters, scales=SCALES, orientations=ORIENTATIONS,
                               k=NOISE_K)
        scharr = scharr_filter(device=luma.device, dtype=luma.dtype)
        gradient = gradient_map(luma, torch.stack([scharr, scharr.transpose(-1, -2)]))
        return {"filters": filters, "pc": pc, "gradient": gradient,
                "i": yiq[:, 1:2], "q": yiq[:, 2:]}

    def prepare(self, ref: torch.Tensor) -> dict:
        return self._features(ref)

    def compare(self, prepared: dict, dist: torch.Tensor) -> torch.Tensor:
        d = self._features(dist, prepared["filters"])
        pc_max = torch.maximum(prepared["pc"], d["pc"])
        score = (similarity_map(prepared["pc"], d["pc"], T1)
                 * similarity_map(prepared["gradient"], d["gradient"], T2) * pc_max)
        chroma = (similarity_map(prepared["i"], d["i"], T3)
                  * similarity_map(prepared["q"], d["q"], T4))
        score = score * chroma.abs() ** LAMBDA
        return (score.sum(dim=[1, 2, 3]) / pc_max.sum(dim=[1, 2, 3])).to(torch.float64)
