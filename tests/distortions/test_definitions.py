"""Each bank type against its definition in spec/distortions.md, checked from outside the bank:
the spec's level values as literals, noise statistics against the stated distributions, and
the deterministic types rebuilt with scikit-image's colour conversions and scipy's filters.

Noise is measured on synthetic mid-tone images, where nothing clips, so the measured variance
is the stated one up to sampling error (about 1% here) and uint8 rounding (1/12 of a level).
"""

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.interpolate import CubicSpline
from skimage.color import rgb2lab, rgb2ycbcr, xyz2rgb, xyz_tristimulus_values

import distortions

# The level columns of spec/distortions.md, typed in from the spec.
SPEC_LEVELS = {
    1: {"quality": (43, 36, 24, 7, 4)},
    2: {"ratio": (16, 32, 45, 120, 400)},
    3: {"variance": (0.001, 0.002, 0.003, 0.005, 0.01)},
    4: {"variance": (0.0001, 0.0005, 0.001, 0.002, 0.003)},
    5: {"variance": (0.001, 0.002, 0.003, 0.005, 0.01)},
    6: {"density": (0.001, 0.005, 0.01, 0.02, 0.03)},
    7: {"variance": (0.001, 0.005, 0.01, 0.02, 0.05)},
    8: {"variance": (0.01, 0.03, 0.05, 0.1, 0.15)},
    9: {"variance": (0.001, 0.003, 0.005, 0.01, 0.015)},
    10: {"variance": (0.002, 0.005, 0.01, 0.02, 0.03)},
    11: {"density": (0.005, 0.01, 0.02, 0.04, 0.08)},
    12: {"variance": (0.01, 0.03, 0.05, 0.1, 0.15)},
    13: {"sigma": (0.1, 0.5, 1, 2, 5)},
    14: {"radius": (1, 2, 4, 6, 8)},
    15: {"length": (1, 2, 4, 6, 10)},
    16: {"amount": (0.1, 0.2, 0.4, 0.7, 1.1)},
    17: {"amount": (0.05, 0.1, 0.2, 0.4, 0.8)},
    18: {"shift": (0.15, 0.08, 0, -0.08, -0.15)},
    19: {"amount": (1, 2, 3, 6, 12)},
    20: {"amount": (0.3, 0.15, 0, -0.4, -0.6)},
    21: {"fraction": (0.005, 0.01, 0.025, 0.05, 0.1)},
    22: {"amount": (0.05, 0.1, 0.2, 0.5, 1)},
    23: {"patches_count": (20, 40, 60, 80, 100)},
    24: {"strength": (0.01, 0.05, 0.1, 0.2, 0.5)},
    25: {"thresholds": (20, 16, 13, 10, 7)},
    26: {"blocks_count": (2, 4, 6, 8, 10)},
    27: {"amount": (1, 3, 6, 8, 12)},
    28: {"amount": (1, 3, 6, 8, 12)},
    29: {"colors": (64, 48, 32, 16, 8)},
    30: {"factor": (0.4, 0.2, 0.1, 0, -0.4)},
    31: {"factor": (1, 2, 3, 6, 9)},
    32: {"variance": (0.0005, 0.001, 0.002, 0.003, 0.005), "quality": (60, 43, 36, 24, 15)},
    33: {"variance": (0.0005, 0.001, 0.002, 0.003, 0.005), "ratio": (16, 24, 32, 45, 80)},
}
# The noise each noise type adds (spec: 3 white, 4 all YCbCr planes, 5 Y only, 6 salt and
# pepper, 7 speckle; 8-12 the same kinds before the denoiser; 32-33 white before the codec).
SPEC_NOISE = {3: "white", 4: "chroma", 5: "mono", 6: "impulse", 7: "speckle", 8: "white",
              9: "chroma", 10: "mono", 11: "impulse", 12: "speckle", 32: "white", 33: "white"}
NOISE_TYPES = [3, 4, 5, 6, 7]
LEARNED_TYPES = [8, 9, 10, 11, 12]
SEED = 20261203


@pytest.fixture(scope="module")
def mid_tones() -> np.ndarray:
    """A 256 x 256 image of independent values in 100..155: mid tones, away from the clip."""
    return np.random.default_rng(5).integers(100, 156, size=(256, 256, 3), dtype=np.uint8)


def _level_value(distortion_id: int, level: int) -> dict:
    return {name: values[level - 1] for name, values in SPEC_LEVELS[distortion_id].items()}


def _studio_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """skimage's studio-swing YCbCr of 0..255 (or 0..1 float) RGB, in units of 0..1."""
    return rgb2ycbcr(rgb if rgb.dtype == np.uint8 else np.clip(rgb, 0, 1)) / 255


@pytest.mark.parametrize("distortion", distortions.all(), ids=lambda d: f"{d.id}-{d.name}")
def test_every_level_table_is_the_specs_and_records_its_noise(distortion):
    for level in distortions.LEVELS:
        params = distortion.sample_params(level, np.random.default_rng(0))
        for name, value in _level_value(distortion.id, level).items():
            assert params[name] == value, (distortion.name, level, name)
        assert params.get("noise") == SPEC_NOISE.get(distortion.id), distortion.name


# -- the noise each noise type adds --------------------------------------------------------------

def _check_noise(kind: str, clean: np.ndarray, noisy: np.ndarray, params: dict,
                 rounded: bool) -> None:
    """`noisy` is `clean` (uint8) plus the noise `kind` of the recipe's strength.

    `rounded`: noisy is uint8 too (adds a rounding variance of 1/12 level^2 per value)."""
    rounding = 1 / 12 / 255**2 if rounded else 0.0
    x = clean / 255.0
    y = noisy / 255.0 if rounded else noisy.astype(np.float64)
    match kind:
        case "white":
            assert (y - x).var() - rounding == pytest.approx(params["variance"], rel=0.03)
        case "chroma" | "mono":
            change = _studio_ycbcr(noisy if rounded else y) - _studio_ycbcr(clean)
            planes = [change[..., c].var() for c in range(3)]
            noisy_planes = 3 if kind == "chroma" else 1
            for plane, variance in enumerate(planes):
                if plane < noisy_planes:
                    assert variance == pytest.approx(params["variance"], rel=0.03), plane
                else:  # only rounding reaches the planes left alone
                    assert variance < 0.01 * params["variance"] + 4 * rounding, plane
            # the planes' noises are independent draws
            correlation = np.corrcoef(change[..., :noisy_planes].reshape(-1, noisy_planes).T)
            assert np.abs(correlation - np.eye(noisy_planes)).max() < 0.02
        case "impulse":
            _check_impulse(clean, noisy if rounded else np.rint(y * 255), params["density"])
        case "speckle":
            n = (y - x) / x  # J = I + n I
            bound = math.sqrt(3 * params["variance"])  # uniform of variance v spans +-sqrt(3v)
            assert n.var() - rounding * (1 / x**2).mean() == pytest.approx(params["variance"],
                                                                        rel=0.03)
            assert np.abs(n).max() <= bound + 0.5 / 255 / x.min()
            assert np.abs(n).max() >= 0.98 * bound  # flat to its edge, not a bell
        case _:
            raise AssertionError(kind)


def _check_impulse(clean: np.ndarray, noisy: np.ndarray, density: float) -> None:
    """Salt and pepper per array element: each value is 0 with probability d/2 and 255 with
    d/2 (binomial counts, within 5 standard deviations), the rest untouched."""
    count = clean.size
    tolerance = 5 * math.sqrt(count * density / 2)
    assert (noisy == 0).sum() == pytest.approx(count * density / 2, abs=tolerance)
    assert (noisy == 255).sum() == pytest.approx(count * density / 2, abs=tolerance)
    untouched = (noisy != 0) & (noisy != 255)
    np.testing.assert_array_equal(noisy[untouched], clean[untouched])
    # per element, not per pixel: most hit pixels have one channel hit, not all three
    hits = (~untouched).sum(axis=2)
    one_hit = 3 * density * (1 - density) ** 2 * hits.size
    assert (hits == 1).sum() == pytest.approx(one_hit, abs=5 * math.sqrt(one_hit))


@pytest.mark.parametrize("distortion_id", NOISE_TYPES)
@pytest.mark.parametrize("level", distortions.LEVELS)
def test_noise_types_add_the_specs_noise_at_the_specs_strength(mid_tones, distortion_id,
                                                               level):
    out, recipe = distortions.apply(mid_tones, distortion_id, level, seed=SEED)
    params = {**recipe["params"], **_level_value(distortion_id, level)}
    _check_noise(SPEC_NOISE[distortion_id], mid_tones, out, params, rounded=True)


@pytest.mark.parametrize("distortion_id", LEARNED_TYPES)
@pytest.mark.parametrize("level", [1, 2])
def test_learned_types_denoise_the_specs_noise_at_the_specs_strength(mid_tones, distortion_id,
                                                                     level):
    """The network's input (before it, nothing is learned): levels 1-2, where little clips."""
    prepared = distortions.prepare_learned(mid_tones, distortion_id, level, seed=SEED)
    params = {**prepared.recipe["params"], **_level_value(distortion_id, level)}
    _check_noise(SPEC_NOISE[distortion_id], mid_tones, prepared.noisy, params, rounded=False)


@pytest.mark.parametrize(("distortion_id", "codec_id", "codec_param"),
                         [(32, 1, "quality"), (33, 2, "ratio")])
@pytest.mark.parametrize("level", [1, 5])
def test_noisy_codecs_are_white_noise_then_the_codec(mid_tones, distortion_id, codec_id,
                                                     codec_param, level):
    out, recipe = distortions.apply(mid_tones, distortion_id, level, seed=SEED)
    spec = _level_value(distortion_id, level)
    white = distortions.get(3).apply(mid_tones, {"noise": "white", "variance": spec["variance"],
                                                 "noise_seed": recipe["params"]["noise_seed"]})
    _check_noise("white", mid_tones, white, spec, rounded=True)
    codec = {**recipe["params"], codec_param: spec[codec_param]}
    np.testing.assert_array_equal(out, distortions.get(codec_id).apply(white, codec))


# -- tone: darken, mean shift, contrast stretch (uint8 in, a curve per value) ----------------------

def _rounded(values: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)


def _assert_close(out: np.ndarray, expected: np.ndarray, *, worst: int = 1,
                  mean: float = 0.05) -> None:
    """Equal but for float rounding: no value off by more than `worst` levels, on average
    less than `mean`."""
    difference = np.abs(out.astype(np.int64) - expected)
    assert difference.max() <= worst and difference.mean() < mean, (difference.max(),
                                                                    difference.mean())


@pytest.mark.parametrize("level", distortions.LEVELS)
def test_darken_is_the_spline_through_0_0_half_c_and_1_1(small_image, level):
    c = 0.5 - _level_value(17, level)["amount"] / 2
    curve = CubicSpline([0, 0.5, 1], [0, c, 1], bc_type="not-a-knot")
    out, _ = distortions.apply(small_image, "darken", level, seed=SEED)
    _assert_close(out, _rounded(curve(small_image / 255.0)), mean=0.01)
    assert out.mean() < small_image.mean()


@pytest.mark.parametrize("level", distortions.LEVELS)
def test_mean_shift_adds_the_shift_and_clips(small_image, level):
    shift = _level_value(18, level)["shift"]
    out, _ = distortions.apply(small_image, "mean_shift", level, seed=SEED)
    _assert_close(out, _rounded(small_image / 255.0 + shift), mean=0.01)


def _matlab_stretch_limits(channel: np.ndarray, fraction: float) -> tuple[float, float]:
    """stretchlim(I, [p 1-p]) on uint8 values: the lowest value whose cumulative share exceeds
    p and the lowest whose share reaches 1 - p (from the sorted values, not a histogram)."""
    ordered = np.sort(channel.ravel())
    share = np.arange(1, ordered.size + 1) / ordered.size
    low = ordered[np.searchsorted(share, fraction, side="right")]
    high = ordered[np.searchsorted(share, 1 - fraction, side="left")]
    return (0.0, 255.0) if low >= high else (float(low), float(high))


@pytest.mark.parametrize("level", distortions.LEVELS)
def test_contrast_stretch_is_imadjust_of_stretchlim_per_channel(small_image, level):
    fraction = _level_value(21, level)["fraction"]
    out, _ = distortions.apply(small_image, "contrast_stretch", level, seed=SEED)
    for c in range(3):
        low, high = _matlab_stretch_limits(small_image[..., c], fraction)
        expected = _rounded((small_image[..., c] - low) / (high - low))
        _assert_close(out[..., c], expected, mean=0.01)
        # at least the fraction saturates at each end (stretchlim's rule: more where ties)
        assert (out[..., c] == 0).mean() > fraction and (out[..., c] == 255).mean() >= fraction


# -- Lab: unsharp mask on L*, colour diffusion and saturation on a* b* ---------------------------

def _bank_gaussian(plane: np.ndarray, sigma: float, size: int) -> np.ndarray:
    """fspecial('gaussian', size, sigma) filtering with a replicated border, by scipy."""
    return ndimage.gaussian_filter(plane, sigma, mode="nearest", truncate=(size // 2) / sigma)


def _lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """CIE 1976 L*a*b* (D65) to sRGB, each channel clipped to [0, 1] as MATLAB's lab2rgb and
    im2uint8 do: the inverse of the CIE formulas, then skimage's XYZ to sRGB (skimage's own
    lab2rgb clips negative Z before, which moves all three channels of an out-of-gamut colour).
    """
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    delta = 6 / 29
    xyz = np.where(f > delta, f**3, 3 * delta**2 * (f - 4 / 29))
    return xyz2rgb(xyz * xyz_tristimulus_values(illuminant="D65", observer="2"))


def _through_lab(img: np.ndarray, change) -> np.ndarray:
    lab = rgb2lab(img)
    change(lab)
    return _rounded(_lab_to_srgb(lab))


@pytest.mark.parametrize("level", distortions.LEVELS)
def test_unsharp_mask_sharpens_lightness_with_a_13_tap_std_3_gaussian(small_image, level):
    amount = _level_value(19, level)["amount"]

    def sharpen(lab):
        lightness = lab[..., 0].copy()
        lab[..., 0] = lightness + amount * (lightness - _bank_gaussian(lightness, 3.0, 13))

    out, _ = distortions.apply(small_image, "unsharp_mask", level, seed=SEED)
    _assert_close(out, _through_lab(small_image, sharpen))


@pytest.mark.parametrize("level", distortions.LEVELS)
def test_color_diffusion_blurs_and_scales_a_and_b(small_image, level):
    amount = _level_value(27, level)["amount"]
    sigma = 1.5 * amount + 2
    size = 2 * math.ceil(2 * sigma) + 1  # the bank's Gaussian support (type 13's rule)

    def diffuse(lab):
        for c in (1, 2):
            lab[..., c] = _bank_gaussian(lab[..., c], sigma, size) * amount

    out, _ = distortions.apply(small_image, "color_diffusion", level, seed=SEED)
    _assert_close(out, _through_lab(small_image, diffuse))


@pytest.mark.parametrize("level", distortions.LEVELS)
def test_saturation_lab_scales_a_and_b(small_image, level):
    factor = _level_value(31, level)["factor"]

    def saturate(lab):
        lab[..., 1:] *= factor

    out, _ = distortions.apply(small_image, "saturation_lab", level, seed=SEED)
    _assert_close(out, _through_lab(small_image, saturate))


# -- spatial: jitter, non-eccentricity, colour blocks ---------------------------------------------

def _keys_weights(fraction: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution (a = -0.75, OpenCV's bicubic) weights of the 4 taps at offsets
    -1, 0, 1, 2 from the sample below a point `fraction` of a pixel past it."""
    a = -0.75
    t = np.abs(fraction[..., None] - np.arange(-1, 3))
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((t - 5) * t + 8) * t * a - 4 * a
    return np.where(t < 1, near, np.where(t < 2, far, 0.0))


def _bicubic_replicate(plane: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """plane sampled at (x, y) by Keys' bicubic, the border replicated (each tap's index
    clipped to the image)."""
    left, top = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    wx, wy = _keys_weights(x - left), _keys_weights(y - top)
    height, width = plane.shape
    out = np.zeros(plane.shape)
    for j in range(4):
        rows = np.clip(top + j - 1, 0, height - 1)
        for i in range(4):
            cols = np.clip(left + i - 1, 0, width - 1)
            out += wy[..., j] * wx[..., i] * plane[rows, cols]
    return out


@pytest.mark.parametrize("level", distortions.LEVELS)
def test_jitter_is_five_rounds_of_gaussian_offsets_bicubic_with_a_replicated_border(
        small_image, level):
    """Each round draws the x offsets, then the y offsets, N(0, 1) * a per pixel, from the
    recipe's noise seed (float32 draws of numpy's PCG64)."""
    amount = _level_value(22, level)["amount"]
    out, recipe = distortions.apply(small_image, "jitter", level, seed=SEED)
    rng = np.random.default_rng(recipe["params"]["noise_seed"])
    height, width = small_image.shape[:2]
    rows, cols = np.mgrid[0:height, 0:width]
    planes = [small_image[..., c] / 255.0 for c in range(3)]
    for _ in range(5):
        dx = rng.standard_normal((height, width), dtype=np.float32) * np.float32(amount)
        dy = rng.standard_normal((height, width), dtype=np.float32) * np.float32(amount)
        planes = [_bicubic_replicate(plane, cols + dx, rows + dy) for plane in planes]
    _assert_close(out, _rounded(np.stack(planes, axis=-1)))


@pytest.mark.parametrize(("spot", "top_left"), [(0.0, 16), (0.999999, None)])
def test_non_eccentricity_copies_a_16_px_patch_from_inside_the_margin_to_its_offset(
        small_image, spot, top_left):
    height, width = small_image.shape[:2]
    for dy, dx in [(8, -8), (-8, 8), (3, 0)]:
        params = {"patches_count": 1, "patches": [[spot, spot, dy, dx]]}
        out = distortions.get("non_eccentricity").apply(small_image, params)
        top = top_left if top_left is not None else height - 16 - 16  # last start: 16 px margin
        left = top_left if top_left is not None else width - 16 - 16
        expected = small_image.copy()
        expected[top + dy:top + dy + 16, left + dx:left + dx + 16] = (
            small_image[top:top + 16, left:left + 16])
        np.testing.assert_array_equal(out, expected)


def test_non_eccentricity_draws_n_patches_with_offsets_uniform_in_plus_minus_8():
    distortion = distortions.get("non_eccentricity")
    rng = np.random.default_rng(SEED)
    offsets, spots = [], []
    for level in distortions.LEVELS:
        for _ in range(20):
            patches = distortion.sample_params(level, rng)["patches"]
            assert len(patches) == _level_value(23, level)["patches_count"]
            spots += [p[:2] for p in patches]
            offsets += [p[2:] for p in patches]
    offsets, spots = np.asarray(offsets), np.asarray(spots)
    assert offsets.dtype.kind == "i" and set(np.unique(offsets)) == set(range(-8, 9))
    counts = np.bincount(offsets.ravel() + 8)  # 17 values, 6000 draws each way
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()
    assert spots.min() >= 0 and spots.max() < 1
    assert spots.mean() == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("level", distortions.LEVELS)
def test_color_blocks_are_32_px_squares_of_their_recorded_colour(small_image, level):
    out, recipe = distortions.apply(small_image, "color_block", level, seed=SEED)
    blocks = recipe["params"]["blocks"]
    assert len(blocks) == _level_value(26, level)["blocks_count"]
    height, width = small_image.shape[:2]
    expected = small_image.copy()
    for fy, fx, *colour in blocks:  # painted in order: a later block covers an earlier one
        top, left = int(fy * (height - 31)), int(fx * (width - 31))
        expected[top:top + 32, left:left + 32] = colour
    np.testing.assert_array_equal(out, expected)


def test_color_block_colours_are_uniform_over_0_to_255():
    distortion = distortions.get("color_block")
    rng = np.random.default_rng(SEED)
    colours = np.asarray([block[2:] for _ in range(300)
                          for block in distortion.sample_params(5, rng)["blocks"]])
    assert colours.min() == 0 and colours.max() == 255
    # 9,000 values of a uniform on 0..255: mean 127.5, standard deviation 73.9
    assert colours.mean() == pytest.approx(127.5, abs=5 * 73.9 / math.sqrt(colours.size))
    assert colours.std() == pytest.approx(math.sqrt((256**2 - 1) / 12), rel=0.03)


# -- colour quantization -----------------------------------------------------------------------

@pytest.mark.parametrize("level", distortions.LEVELS)
def test_color_quantization_is_a_palette_of_n_colours_dithered(small_image, level):
    """A palette of exactly n colours (the photo has thousands); error diffusion shows as pixels
    away from their nearest palette colour whose 5 x 5 neighbourhoods keep the image's local
    means better than the nearest colours would."""
    colours = _level_value(29, level)["colors"]
    out, _ = distortions.apply(small_image, "color_quantization", level, seed=SEED)
    palette = np.unique(out.reshape(-1, 3), axis=0).astype(np.float64)
    assert len(palette) == colours < len(np.unique(small_image.reshape(-1, 3), axis=0))
    distance = ((small_image.reshape(-1, 1, 3) - palette[None]) ** 2).sum(axis=-1)
    nearest = palette[distance.argmin(axis=1)].reshape(small_image.shape)
    assert (out != nearest).any(axis=2).mean() > 0.1

    def local_error(image: np.ndarray) -> float:
        local_means = ndimage.uniform_filter(image - small_image, size=(5, 5, 1), mode="nearest")
        return float(np.abs(local_means).mean())

    assert local_error(out.astype(np.float64)) < 0.98 * local_error(nearest)


@pytest.mark.parametrize("name", ["chroma_noise", "mono_noise", "brighten", "unsharp_mask",
                                  "color_diffusion", "color_shift", "saturation_lab"])
def test_the_types_that_keep_a_conversion_convert_each_image_anew(small_image, name):
    """The YCbCr, Lab or edge weight of the image converted last on a thread is kept (a
    reference's versions of types 4, 5, 16, 19, 27, 28 and 31 start from it): images
    interleaved, each version is the one a thread that never converted another image makes
    (a fresh thread keeps nothing); one that differs only in its last row is another image."""
    from concurrent.futures import ThreadPoolExecutor

    import distortions

    distortion = distortions.get(name)
    other = np.ascontiguousarray(small_image[::-1])
    same_bytes_other_shape = np.ascontiguousarray(small_image.reshape(192, 176, 3))
    last_row_other = small_image.copy()
    last_row_other[-1] = 255 - last_row_other[-1]
    for img in (small_image, other, small_image, last_row_other, same_bytes_other_shape,
                small_image.copy()):
        for level in (2, 5):
            params = distortion.sample_params(level, np.random.default_rng(level))
            with ThreadPoolExecutor(1) as fresh:
                expected = fresh.submit(distortion.apply, img, params).result()
            assert np.array_equal(distortion.apply(img, params), expected)
            assert np.array_equal(distortion.apply(img, params), expected)  # kept, unchanged
