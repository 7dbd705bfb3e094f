"""Independent checks of the types added after the paper's 33 (ids 34-43): each test derives a
property of the output with its own code (formulas, Pillow calls, numpy shifts written here),
never with the bank's functions."""

import math

import numpy as np
import pytest
from PIL import Image, ImageFilter

import distortions

LEVELS = distortions.LEVELS
RESIZE = {
    "resize_bicubic": (Image.Resampling.BICUBIC, (2, 3, 4, 8, 16)),
    "resize_bilinear": (Image.Resampling.BILINEAR, (2, 3, 4, 8, 16)),
    "resize_lanczos": (Image.Resampling.LANCZOS, (2, 3, 4, 8, 16)),
    "resize_nearest": (Image.Resampling.NEAREST, (2, 3, 4, 5, 6)),
}


# -- 34-37 resize ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", RESIZE)
def test_resize_is_pillow_down_by_the_factor_and_back_to_the_input_size(small_image, name):
    # Re-IQA's imresizedist: im.resize((int(w / f), int(h / f)), filter).resize((w, h), filter)
    resample, factors = RESIZE[name]
    height, width = small_image.shape[:2]
    for level, factor in zip(LEVELS, factors, strict=True):
        out, _ = distortions.apply(small_image, name, level, seed=0)
        small = Image.fromarray(small_image).resize((int(width / factor), int(height / factor)),
                                                    resample)
        assert out.shape == small_image.shape
        assert np.array_equal(out, np.asarray(small.resize((width, height), resample)))


def test_resize_nearest_picks_the_pixel_under_each_centre(small_image):
    # nearest: output pixel x of n_out samples input pixel floor((x + 1/2) s), s = n_in / n_out;
    # Pillow steps the coordinate by adding s once per pixel in float64, so where (x + 1/2) s is
    # an integer the running sum can land just below it (176 -> 58: pixel 43 reads 131, not 132)
    def picks(n_in: int, n_out: int) -> np.ndarray:
        step = n_in / n_out
        return np.floor(np.cumsum([step / 2] + [step] * (n_out - 1))).astype(int)

    height, width = small_image.shape[:2]
    for level, factor in zip(LEVELS, RESIZE["resize_nearest"][1], strict=True):
        out, _ = distortions.apply(small_image, "resize_nearest", level, seed=0)
        small_h, small_w = height // factor, width // factor
        rows = picks(height, small_h)[picks(small_h, height)]
        cols = picks(width, small_w)[picks(small_w, width)]
        assert np.array_equal(out, small_image[rows[:, None], cols[None, :]])


def _kernel(name: str):
    """Pillow's resampling kernels: triangle, Keys cubic a = -0.5, Lanczos-3."""
    def cubic(x, a=-0.5):
        x = np.abs(x)
        return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                        np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))

    return {"resize_bilinear": lambda x: np.maximum(1 - np.abs(x), 0),
            "resize_bicubic": cubic,
            "resize_lanczos": lambda x: np.where(np.abs(x) < 3, np.sinc(x) * np.sinc(x / 3), 0),
            }[name]


def _resample_matrix(n_in: int, n_out: int, name: str) -> np.ndarray:
    """Rows of weights: a kernel centred on each output pixel's centre in input coordinates,
    widened by the factor when shrinking (antialiasing), cut at the image, normalised."""
    kernel = _kernel(name)
    scale = n_in / n_out
    widen = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale
    taps = np.arange(n_in) + 0.5
    weights = kernel((taps[None, :] - centres[:, None]) / widen)  # zero beyond the support
    return weights / weights.sum(axis=1, keepdims=True)


def _resize_float(x: np.ndarray, height: int, width: int, name: str) -> np.ndarray:
    """Horizontal then vertical pass, each clipped to [0, 255] as Pillow's 8-bit passes are."""
    x = np.clip(np.einsum("lk,ikc->ilc", _resample_matrix(x.shape[1], width, name), x), 0, 255)
    return np.clip(np.einsum("ij,jkc->ikc", _resample_matrix(x.shape[0], height, name), x), 0, 255)


@pytest.mark.parametrize("name", ["resize_bicubic", "resize_bilinear", "resize_lanczos"])
def test_resize_filters_are_the_antialiased_kernels_they_are_named_after(small_image, name):
    # the same round trip in float64 from the kernels' definitions; Pillow rounds to 8 bits
    # after each of its four passes, so within two levels
    height, width = small_image.shape[:2]
    for level, factor in zip(LEVELS, RESIZE[name][1], strict=True):
        out, _ = distortions.apply(small_image, name, level, seed=0)
        small = _resize_float(small_image.astype(np.float64), height // factor, width // factor,
                              name)
        error = np.abs(out - _resize_float(small, height, width, name))
        assert error.max() <= 2 and error.mean() < 0.5, (level, error.max(), error.mean())


# -- 38 denoise_blur ---------------------------------------------------------------------------

def test_denoise_blur_draws_its_blur_50_50_and_records_it():
    drawn = [distortions.get("denoise_blur").sample_params(3, np.random.default_rng(seed))
             for seed in range(400)]
    assert {(p["filter"], p["radius"]) for p in drawn} == {("gaussian", 3), ("box", 2)}
    gaussian = sum(p["filter"] == "gaussian" for p in drawn)
    assert 160 <= gaussian <= 240  # 200 +- 4 standard deviations


def test_denoise_blur_is_the_seeds_noise_of_the_level_variance_then_the_recorded_blur(
        small_image):
    variances = (0.001, 0.002, 0.003, 0.005, 0.01)
    filters = {"gaussian": ImageFilter.GaussianBlur, "box": ImageFilter.BoxBlur}
    seen = set()
    for level, variance in zip(LEVELS, variances, strict=True):
        for seed in (1, 2, 3):
            out, recipe = distortions.apply(small_image, "denoise_blur", level, seed=seed)
            params = recipe["params"]
            seen.add(params["filter"])
            rng = np.random.default_rng(params["noise_seed"])
            noise = rng.standard_normal(small_image.shape, dtype=np.float32) * math.sqrt(variance)
            assert noise.var() == pytest.approx(variance, rel=0.03)  # before any blurring
            noisy = np.rint(np.clip(small_image / 255 + noise, 0, 1) * 255).astype(np.uint8)
            blurred = Image.fromarray(noisy).filter(filters[params["filter"]](params["radius"]))
            error = np.abs(out.astype(int) - np.asarray(blurred))
            assert error.max() <= 1 and (error == 0).mean() > 0.99
    assert seen == {"gaussian", "box"}


def test_the_box_blur_is_a_5_by_5_mean_with_the_border_replicated(small_image):
    out = np.asarray(Image.fromarray(small_image).filter(ImageFilter.BoxBlur(2))).astype(int)
    height, width = small_image.shape[:2]
    padded = np.pad(small_image.astype(np.float64), ((2, 2), (2, 2), (0, 0)), mode="edge")
    mean = sum(padded[dy:dy + height, dx:dx + width] for dy in range(5) for dx in range(5)) / 25
    assert np.abs(out - mean).max() <= 1


# -- 39 pink_noise -----------------------------------------------------------------------------

def test_pink_noise_power_spectrum_falls_as_one_over_frequency():
    grey = np.full((256, 256, 3), 128, np.uint8)
    out, _ = distortions.apply(grey, "pink_noise", 5, seed=3)
    noise = out.astype(np.float64) - 128
    assert noise.var() == pytest.approx(0.01 * 255**2, rel=0.02)
    power = (np.abs(np.fft.fft2(noise, axes=(0, 1))) ** 2).mean(axis=2)
    fy, fx = np.meshgrid(np.fft.fftfreq(256), np.fft.fftfreq(256), indexing="ij")
    ring = np.rint(np.hypot(fy, fx) * 256).astype(int).ravel()
    radial = np.bincount(ring, power.ravel()) / np.bincount(ring)
    cycles = np.arange(4, 100)
    slope = np.polyfit(np.log(cycles), np.log(radial[cycles]), 1)[0]
    assert slope == pytest.approx(-1, abs=0.1)
    # white noise of the same strength would be flat
    white, _ = distortions.apply(grey, "white_noise", 5, seed=3)
    flat = (np.abs(np.fft.fft2(white.astype(np.float64), axes=(0, 1))) ** 2).mean(axis=2)
    flat_radial = np.bincount(ring, flat.ravel()) / np.bincount(ring)
    assert abs(np.polyfit(np.log(cycles), np.log(flat_radial[cycles]), 1)[0]) < 0.1


# -- 40-41 exposure ----------------------------------------------------------------------------

def _srgb_decode(value: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB to linear light, value in 8-bit units (may be fractional)."""
    v = np.clip(value / 255, 0, 1)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


@pytest.mark.parametrize(("name", "sign"), [("overexposure", 1), ("underexposure", -1)])
def test_exposure_scales_linear_light_by_2_to_the_ev(small_image, name, sign):
    ramp = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, :, None], (176, 256, 3)).copy()
    for img in (ramp, small_image):
        for level, stops in zip(LEVELS, (0.5, 1, 1.5, 2, 3), strict=True):
            out, _ = distortions.apply(img, name, level, seed=0)
            target = 2.0 ** (sign * stops) * _srgb_decode(img.astype(np.float64))
            unclipped = out < 255
            low = _srgb_decode(out.astype(np.float64) - 0.5)
            high = _srgb_decode(out.astype(np.float64) + 0.5)
            # every unclipped value is 2^EV times the input's light, to the nearest 8-bit code
            inside = (low <= target + 1e-12) & (target <= high + 1e-12)
            assert np.all(inside[unclipped])
            # and what clipped was pushed past white
            assert np.all(target[~unclipped] >= _srgb_decode(np.float64(254.5)) - 1e-12)


# -- 42 rgb_shift ------------------------------------------------------------------------------

def test_rgb_shift_moves_each_channel_by_its_recorded_offset(small_image):
    height, width = small_image.shape[:2]
    distinct = 0
    for level, amount in zip(LEVELS, (1, 2, 3, 5, 8), strict=True):
        for seed in range(10):
            out, recipe = distortions.apply(small_image, "rgb_shift", level, seed=seed)
            offsets = recipe["params"]["offsets"]
            distinct += len({tuple(o) for o in offsets}) > 1
            for c, (dy, dx) in enumerate(offsets):
                assert (dy, dx) != (0, 0) and abs(math.hypot(dy, dx) - amount) <= math.sqrt(2) / 2
                padded = np.pad(small_image[..., c], amount, mode="edge")
                moved = padded[amount - dy:amount - dy + height, amount - dx:amount - dx + width]
                assert np.array_equal(out[..., c], moved), (level, seed, c)
    assert distinct >= 40  # the channels move independently


def test_rgb_shift_offsets_are_recovered_by_cross_correlation(small_image):
    out, recipe = distortions.apply(small_image, "rgb_shift", 4, seed=5)
    inner = (slice(8, -8), slice(8, -8))
    for c, offset in enumerate(recipe["params"]["offsets"]):
        errors = {(dy, dx): np.mean((out[..., c][inner].astype(float)
                                     - np.roll(small_image[..., c], (dy, dx), (0, 1))[inner]) ** 2)
                  for dy in range(-6, 7) for dx in range(-6, 7)}
        assert min(errors, key=errors.get) == tuple(offset) and errors[tuple(offset)] == 0


# -- 43 contrast_reduction ---------------------------------------------------------------------

def test_contrast_reduction_keeps_the_mean_and_scales_deviations_by_1_minus_c(small_image):
    x = small_image.astype(np.float64)
    mean = x.mean()
    for level, c in zip(LEVELS, (0.1, 0.2, 0.35, 0.5, 0.7), strict=True):
        out, _ = distortions.apply(small_image, "contrast_reduction", level, seed=0)
        exact = mean + (1 - c) * (x - mean)
        assert np.abs(out - exact).max() <= 0.5 + 1e-9  # the formula, then rounding only
        # the formula keeps the mean exactly; rounding each value moves it by at most 1/2
        # (structured, not averaging out: at c = 0.5 every even input rounds the same way)
        assert abs(out.mean() - mean) <= 0.5
        slope = np.sum((out - mean) * (x - mean)) / np.sum((x - mean) ** 2)
        assert slope == pytest.approx(1 - c, abs=0.002)
