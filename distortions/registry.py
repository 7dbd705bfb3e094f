"""The registry: the paper's bank (ids 1-33, `BANK`) and the types added after it (ids 34 and
up, `ADDED`, for the other methods' banks), 5 levels each, with stable public ids and names.

Each entry holds its level table (one parameter dict per level), the random draws it needs and
its pure apply function. Ids and names are public identifiers: never renumber.
"""

import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from distortions import blur, color, compression, denoised, noise, samplers, spatial, tone
from distortions.canonical import plain
from distortions.codecs import RATE_CONTROL
from distortions.errors import InvalidLevelError, InvalidRecipeError
from distortions.validation import check_image

LEVELS = (1, 2, 3, 4, 5)


def is_integer(value) -> bool:
    """An int or numpy integer, not a bool (True is not level or id 1)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


Apply = Callable[[np.ndarray, dict], np.ndarray]


@dataclass(frozen=True)
class Distortion:
    """One distortion type: identity, level table, sampler and pure apply."""

    id: int
    name: str
    category: str
    levels: tuple[dict, ...]
    apply_fn: Apply = field(repr=False)
    draw: samplers.Draw = field(default=samplers.no_draw, repr=False)
    fixed: dict = field(default_factory=dict)
    identity_level: int | None = None
    two_sided: bool = False  # severity grows with the distance from level 3
    # KADID's own levels 1-4 are not in order (pixelate's MATLAB round trip drifts the content
    # by each side's rounding residue); only level 5 is clearly the worst
    worst_level_only: bool = False
    # its severity also follows a draw per version (denoise_blur's Gaussian or box blur, 50/50):
    # level means over few images follow the draws; only with the draw held are levels ordered
    order_follows_draw: bool = False
    learned: bool = False
    kadid_id: int | None = None

    def check_level(self, level: int) -> int:
        """`level` as a plain int (numpy integers too); InvalidLevelError unless 1..5."""
        if not is_integer(level) or int(level) not in LEVELS:
            raise InvalidLevelError(f"{self.name}: level must be one of 1..5, got {level!r}")
        return int(level)

    def sample_params(self, level: int, rng: np.random.Generator) -> dict:
        """The level's parameters plus everything random, drawn from `rng`."""
        table = self.levels[self.check_level(level) - 1]
        return {**self.fixed, **table, **self.draw(table, rng)}

    def apply(self, img: np.ndarray, params: dict) -> np.ndarray:
        """Apply with recorded parameters: pure, uint8 RGB in, same shape uint8 RGB out (a
        writable array). Numpy numbers among them are taken as the Python numbers a recipe's
        JSON gives (the same bytes as the recipe replayed from its text)."""
        check_image(img)
        check_params(self, params)
        params = plain(params)
        try:
            out = self.apply_fn(img, params)
        except KeyError as missing:
            known = isinstance(params, dict) and missing.args[0] in params.values()
            raise InvalidRecipeError(f"{self.name}: parameter value {missing} is not one it "
                                     "knows" if known else f"{self.name}: parameter {missing} "
                                     "is missing") from None
        return np.require(out, requirements=["C_CONTIGUOUS", "WRITEABLE"])

    def describe(self, level: int) -> str:
        """The level's parameters as text, e.g. 'quality=43'."""
        table = self.levels[self.check_level(level) - 1]
        return ", ".join(f"{key.removesuffix('_count')}={value}" for key, value in table.items())


def check_params(distortion: Distortion, params: object) -> None:
    """An InvalidRecipeError unless `params` is a dict of parameter names to values."""
    if not isinstance(params, dict):
        raise InvalidRecipeError(f"{distortion.name}: its parameters must be a dict of "
                                 f"name -> value, not a {type(params).__name__}")


def _levels(**columns: tuple) -> tuple[dict, ...]:
    """Per-level dicts from parameter columns: _levels(q=(1, 2, 3, 4, 5))."""
    rows = zip(*columns.values(), strict=True)
    return tuple(dict(zip(columns, row, strict=True)) for row in rows)


_WHITE = {"noise": "white"}
_J2K = {"rate_control": RATE_CONTROL}  # the JPEG 2000 rate search a recipe was made with
_NOISE = samplers.noise_seed
_DENOISER = samplers.denoiser_run

BANK: tuple[Distortion, ...] = (
    Distortion(1, "jpeg", "compression", _levels(quality=(43, 36, 24, 7, 4)),
               compression.apply_jpeg, kadid_id=10),
    Distortion(2, "jpeg2000", "compression", _levels(ratio=(16, 32, 45, 120, 400)),
               compression.apply_jpeg2000, fixed=_J2K, kadid_id=9),
    Distortion(3, "white_noise", "noise", _levels(variance=(0.001, 0.002, 0.003, 0.005, 0.01)),
               noise.apply_noise, _NOISE, _WHITE, kadid_id=11),
    Distortion(4, "chroma_noise", "noise",
               _levels(variance=(0.0001, 0.0005, 0.001, 0.002, 0.003)),
               noise.apply_noise, _NOISE, {"noise": "chroma"}, kadid_id=12),
    Distortion(5, "mono_noise", "noise", _levels(variance=(0.001, 0.002, 0.003, 0.005, 0.01)),
               noise.apply_noise, _NOISE, {"noise": "mono"}),
    Distortion(6, "impulse_noise", "noise", _levels(density=(0.001, 0.005, 0.01, 0.02, 0.03)),
               noise.apply_noise, _NOISE, {"noise": "impulse"}, kadid_id=13),
    Distortion(7, "speckle_noise", "noise", _levels(variance=(0.001, 0.005, 0.01, 0.02, 0.05)),
               noise.apply_noise, _NOISE, {"noise": "speckle"}, kadid_id=14),
    Distortion(8, "denoise_white", "noise", _levels(variance=(0.01, 0.03, 0.05, 0.1, 0.15)),
               denoised.apply_denoised, _DENOISER, _WHITE, learned=True, kadid_id=15),
    Distortion(9, "denoise_chroma", "noise",
               _levels(variance=(0.001, 0.003, 0.005, 0.01, 0.015)),
               denoised.apply_denoised, _DENOISER, {"noise": "chroma"}, learned=True),
    Distortion(10, "denoise_mono", "noise", _levels(variance=(0.002, 0.005, 0.01, 0.02, 0.03)),
               denoised.apply_denoised, _DENOISER, {"noise": "mono"}, learned=True),
    Distortion(11, "denoise_impulse", "noise",
               _levels(density=(0.005, 0.01, 0.02, 0.04, 0.08)),
               denoised.apply_denoised, _DENOISER, {"noise": "impulse"}, learned=True),
    Distortion(12, "denoise_speckle", "noise",
               _levels(variance=(0.01, 0.03, 0.05, 0.1, 0.15)),
               denoised.apply_denoised, _DENOISER, {"noise": "speckle"}, learned=True),
    Distortion(13, "gaussian_blur", "blur", _levels(sigma=(0.1, 0.5, 1, 2, 5)),
               blur.apply_gaussian_blur, identity_level=1, kadid_id=1),
    Distortion(14, "lens_blur", "blur", _levels(radius=(1, 2, 4, 6, 8)),
               blur.apply_lens_blur, kadid_id=2),
    Distortion(15, "motion_blur", "blur", _levels(length=(1, 2, 4, 6, 10)),
               blur.apply_motion_blur, samplers.motion_angle, identity_level=1, kadid_id=3),
    Distortion(16, "brighten", "brightness", _levels(amount=(0.1, 0.2, 0.4, 0.7, 1.1)),
               tone.apply_brighten, kadid_id=16),
    Distortion(17, "darken", "brightness", _levels(amount=(0.05, 0.1, 0.2, 0.4, 0.8)),
               tone.apply_darken, kadid_id=17),
    Distortion(18, "mean_shift", "brightness", _levels(shift=(0.15, 0.08, 0, -0.08, -0.15)),
               tone.apply_mean_shift, identity_level=3, two_sided=True, kadid_id=18),
    Distortion(19, "unsharp_mask", "sharpness", _levels(amount=(1, 2, 3, 6, 12)),
               tone.apply_unsharp_mask, kadid_id=24),
    Distortion(20, "contrast_change", "contrast", _levels(amount=(0.3, 0.15, 0, -0.4, -0.6)),
               tone.apply_contrast_change, two_sided=True, kadid_id=25),
    Distortion(21, "contrast_stretch", "contrast",
               _levels(fraction=(0.005, 0.01, 0.025, 0.05, 0.1)), tone.apply_contrast_stretch),
    Distortion(22, "jitter", "spatial", _levels(amount=(0.05, 0.1, 0.2, 0.5, 1)),
               spatial.apply_jitter, _NOISE, kadid_id=19),
    Distortion(23, "non_eccentricity", "spatial", _levels(patches_count=(20, 40, 60, 80, 100)),
               spatial.apply_non_eccentricity, samplers.patch_moves, kadid_id=20),
    Distortion(24, "pixelate", "spatial", _levels(strength=(0.01, 0.05, 0.1, 0.2, 0.5)),
               spatial.apply_pixelate, worst_level_only=True, kadid_id=21),
    Distortion(25, "quantization", "spatial", _levels(thresholds=(20, 16, 13, 10, 7)),
               spatial.apply_quantization, kadid_id=22),
    Distortion(26, "color_block", "spatial", _levels(blocks_count=(2, 4, 6, 8, 10)),
               spatial.apply_color_block, samplers.colour_blocks, kadid_id=23),
    Distortion(27, "color_diffusion", "color", _levels(amount=(1, 3, 6, 8, 12)),
               color.apply_color_diffusion, kadid_id=4),
    Distortion(28, "color_shift", "color", _levels(amount=(1, 3, 6, 8, 12)),
               color.apply_color_shift, samplers.shift_direction, kadid_id=5),
    Distortion(29, "color_quantization", "color", _levels(colors=(64, 48, 32, 16, 8)),
               color.apply_color_quantization, kadid_id=6),
    Distortion(30, "saturation_hsv", "color", _levels(factor=(0.4, 0.2, 0.1, 0, -0.4)),
               color.apply_saturation_hsv, kadid_id=7),
    Distortion(31, "saturation_lab", "color", _levels(factor=(1, 2, 3, 6, 9)),
               color.apply_saturation_lab, identity_level=1, kadid_id=8),
    Distortion(32, "jpeg_noisy", "multiple",
               _levels(variance=(0.0005, 0.001, 0.002, 0.003, 0.005), quality=(60, 43, 36, 24, 15)),
               compression.apply_jpeg_noisy, _NOISE, _WHITE),
    Distortion(33, "jpeg2000_noisy", "multiple",
               _levels(variance=(0.0005, 0.001, 0.002, 0.003, 0.005), ratio=(16, 24, 32, 45, 80)),
               compression.apply_jpeg2000_noisy, _NOISE, {**_WHITE, **_J2K}),
)


_RESIZE_FACTORS = (2, 3, 4, 8, 16)  # Re-IQA's bicubic, bilinear and Lanczos factors
_STOPS = (0.5, 1, 1.5, 2, 3)

# Added for Re-IQA (34-38) and the multi-task method (39-43); levels and rationale in
# docs/distortions-spec-notes.md
ADDED: tuple[Distortion, ...] = (
    Distortion(34, "resize_bicubic", "spatial", _levels(factor=_RESIZE_FACTORS),
               spatial.apply_resize, fixed={"filter": "bicubic"}),
    Distortion(35, "resize_bilinear", "spatial", _levels(factor=_RESIZE_FACTORS),
               spatial.apply_resize, fixed={"filter": "bilinear"}),
    Distortion(36, "resize_lanczos", "spatial", _levels(factor=_RESIZE_FACTORS),
               spatial.apply_resize, fixed={"filter": "lanczos"}),
    Distortion(37, "resize_nearest", "spatial", _levels(factor=(2, 3, 4, 5, 6)),
               spatial.apply_resize, fixed={"filter": "nearest"}),
    Distortion(38, "denoise_blur", "noise", _levels(variance=(0.001, 0.002, 0.003, 0.005, 0.01)),
               blur.apply_denoise_blur, samplers.denoise_filter, _WHITE,
               order_follows_draw=True),
    Distortion(39, "pink_noise", "noise", _levels(variance=(0.0005, 0.001, 0.002, 0.005, 0.01)),
               noise.apply_noise, _NOISE, {"noise": "pink"}),
    Distortion(40, "overexposure", "brightness", _levels(ev=_STOPS), tone.apply_exposure),
    Distortion(41, "underexposure", "brightness", _levels(ev=tuple(-s for s in _STOPS)),
               tone.apply_exposure),
    Distortion(42, "rgb_shift", "color", _levels(amount=(1, 2, 3, 5, 8)),
               color.apply_rgb_shift, samplers.channel_offsets),
    Distortion(43, "contrast_reduction", "contrast",
               _levels(amount=(0.1, 0.2, 0.35, 0.5, 0.7)), tone.apply_contrast_reduction),
)

REGISTERED: tuple[Distortion, ...] = BANK + ADDED
