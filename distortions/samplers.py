"""Random parameter draws: everything random a distortion needs, drawn from a seeded generator
so that the recipe (level parameters plus these draws) replays the output exactly."""

import math
from collections.abc import Callable

import numpy as np

from distortions import denoiser
from distortions.blur import DENOISE_FILTERS
from distortions.spatial import PATCH_REACH

Draw = Callable[[dict, np.random.Generator], dict]
_SEED_LIMIT = 2**63


def no_draw(level: dict, rng: np.random.Generator) -> dict:
    return {}


def noise_seed(level: dict, rng: np.random.Generator) -> dict:
    return {"noise_seed": int(rng.integers(_SEED_LIMIT))}


def denoiser_run(level: dict, rng: np.random.Generator) -> dict:
    """A noise seed, and which denoiser runs where (the recipe records both)."""
    active = denoiser.active_denoiser()
    return {**noise_seed(level, rng), "denoiser": active.identity, "device": active.spec.device}


def motion_angle(level: dict, rng: np.random.Generator) -> dict:
    return {"angle": int(rng.integers(0, 181))}


def shift_direction(level: dict, rng: np.random.Generator) -> dict:
    """KADID's round(normr(rand(1, 2)) * amount): a direction in the first quadrant (both
    components >= 0), scaled to `amount` pixels and rounded half away from zero per axis.
    MATLAB circshift takes [rows cols], so the first component is the shift in y."""
    direction = rng.random(2)
    down, right = direction / np.hypot(*direction) * level["amount"]
    return {"shift_x": math.floor(right + 0.5), "shift_y": math.floor(down + 0.5)}


def denoise_filter(level: dict, rng: np.random.Generator) -> dict:
    """A noise seed, and Re-IQA's 50/50 choice of blur (Gaussian or box) with its radius."""
    name = ("gaussian", "box")[int(rng.integers(2))]
    return {**noise_seed(level, rng), "filter": name, "radius": DENOISE_FILTERS[name][1]}


def channel_offsets(level: dict, rng: np.random.Generator) -> dict:
    """Per RGB channel an integer (dy, dx): a uniform direction of length `amount`, each
    component rounded half away from zero (never (0, 0): one component is at least
    amount / sqrt(2) in size)."""
    angles = rng.random(3) * 2 * math.pi
    offsets = np.column_stack([np.sin(angles), np.cos(angles)]) * level["amount"]
    return {"offsets": [[_round_half_away(dy), _round_half_away(dx)] for dy, dx in offsets]}


def _round_half_away(value: float) -> int:
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def patch_moves(level: dict, rng: np.random.Generator) -> dict:
    """Per patch: its position (fractions) and an offset of up to 8 px in y and x."""
    count = level["patches_count"]
    spots = rng.random((count, 2))
    offsets = rng.integers(-PATCH_REACH, PATCH_REACH + 1, size=(count, 2))
    return {"patches": [[float(fy), float(fx), int(dy), int(dx)]
                        for (fy, fx), (dy, dx) in zip(spots, offsets, strict=True)]}


def colour_blocks(level: dict, rng: np.random.Generator) -> dict:
    """Per block: its position (fractions) and a uniform random uint8 colour."""
    count = level["blocks_count"]
    spots = rng.random((count, 2))
    colours = rng.integers(0, 256, size=(count, 3))
    return {"blocks": [[float(fy), float(fx), *map(int, colour)]
                       for (fy, fx), colour in zip(spots, colours, strict=True)]}
