"""Training views keep quality: a random crop and a horizontal flip (half of the time), never a
vertical one; evaluation's single crop is the centre."""

import numpy as np
import torch

from training.transforms import Augment, _warp, centre_view, train_view


def _channels_first(pixels: np.ndarray) -> torch.Tensor:
    """HxWx3 pixels as the 3xHxW tensor a view is."""
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())


def test_a_training_view_is_the_crop_or_its_left_right_mirror_each_about_half_the_time():
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    whole = _channels_first(pixels)  # a crop of 16: the image
    mirrored = _channels_first(np.fliplr(pixels))
    rng = np.random.default_rng(1)
    views = [train_view(pixels, Augment(crop=16), rng) for _ in range(200)]
    flipped = sum(torch.equal(view, mirrored) for view in views)
    assert flipped + sum(torch.equal(view, whole) for view in views) == 200
    assert 100 - 3 * 7.1 < flipped < 100 + 3 * 7.1  # binomial(200, 1/2): 100 +- 3 sd
    unflipped = [train_view(pixels, Augment(crop=16, flip=False), rng) for _ in range(20)]
    assert all(torch.equal(view, whole) for view in unflipped)


def test_the_centre_crop_is_centred_on_both_axes():
    pixels = np.random.default_rng(2).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    expected = pixels[2:18, 7:23]  # (20 - 16) / 2 rows and (30 - 16) / 2 columns off
    assert torch.equal(centre_view(pixels, Augment(crop=16)),
                       _channels_first(expected))


def test_a_translation_alone_or_a_rotation_alone_moves_the_view():
    """Each is an option of its own (the reference setup's augmentation): asked for alone, the
    view is no longer the image itself."""
    pixels = np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    whole = _channels_first(pixels)
    rng = np.random.default_rng(4)
    for augment in (Augment(crop=16, flip=False, translate=0.25),
                    Augment(crop=16, flip=False, rotate=30)):
        views = [train_view(pixels, augment, rng) for _ in range(5)]
        assert not any(torch.equal(view, whole) for view in views), augment


def _coordinates(height: int, width: int) -> np.ndarray:
    """An image whose red is each pixel's column and green its row (blue 0)."""
    rows, columns = np.mgrid[:height, :width]
    return np.dstack([columns, rows, np.zeros_like(rows)]).astype(np.uint8)


def test_a_translation_shifts_at_most_its_fraction_of_the_width_across_and_height_down():
    """--translate t: shifts up to t x width across and t x height down (Augment's
    definition); read off the centre pixel, which shows the column and row it came from."""
    height, width, fraction = 40, 100, 0.25
    rng = np.random.default_rng(5)
    shifts = np.array([(width // 2, height // 2) - _warp(
        _coordinates(height, width), Augment(crop=16, translate=fraction), rng
    )[height // 2, width // 2, :2].astype(float) for _ in range(300)])
    across, down = np.abs(shifts).max(axis=0)
    assert 0.8 * fraction * width < across <= fraction * width + 1
    assert 0.8 * fraction * height < down <= fraction * height + 1


def test_a_rotation_turns_either_way_up_to_its_angle():
    """--rotate r: an angle drawn in [-r, r]; a pixel 20 to the right of the centre moves
    20 sin(angle) rows, up or down."""
    side, reach, degrees = 64, 20, 30
    rng = np.random.default_rng(6)
    moved = np.array([float(_warp(_coordinates(side, side), Augment(crop=16, rotate=degrees),
                                  rng)[side // 2, side // 2 + reach, 1]) - side // 2
                      for _ in range(60)])
    bound = reach * np.sin(np.radians(degrees)) + 1
    assert moved.min() < -bound / 2 and moved.max() > bound / 2
    assert np.abs(moved).max() <= bound
