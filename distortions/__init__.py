"""The distortion bank: 33 types x 5 levels, pure and replayable.

    import distortions
    distortions.all()                       # the 33, in id order
    d = distortions.get("jpeg")             # or get(1)
    out, recipe = distortions.apply(img, 1, level=3, seed=7)
    assert (distortions.replay(img, recipe) == out).all()
"""

import numpy as np

from distortions.denoiser import use_denoiser
from distortions.errors import (
    DenoiserMismatchError,
    DenoiserUnavailableError,
    DistortionError,
    ImageTooSmallError,
    InvalidImageError,
    InvalidLevelError,
    InvalidRecipeError,
    UnknownDistortionError,
)
from distortions.registry import BANK, LEVELS, Distortion
from distortions.seeding import derive_seed
from distortions.validation import check_image

RECIPE_VERSION = 1

_BY_ID = {d.id: d for d in BANK}
_BY_NAME = {d.name: d for d in BANK}

__all__ = [
    "LEVELS",
    "RECIPE_VERSION",
    "DenoiserMismatchError",
    "DenoiserUnavailableError",
    "Distortion",
    "DistortionError",
    "ImageTooSmallError",
    "InvalidImageError",
    "InvalidLevelError",
    "InvalidRecipeError",
    "UnknownDistortionError",
    "all",
    "apply",
    "check_image",
    "derive_seed",
    "get",
    "replay",
    "use_denoiser",
]


def all() -> tuple[Distortion, ...]:
    """The 33 distortions in id order."""
    return BANK


def get(id_or_name: int | str) -> Distortion:
    """A distortion by its id (1-33) or name ('jpeg')."""
    found = _BY_ID.get(id_or_name) if isinstance(id_or_name, int) else _BY_NAME.get(id_or_name)
    if found is None:
        raise UnknownDistortionError(
            f"no distortion {id_or_name!r}: ids are 1-33, names e.g. 'jpeg', 'gaussian_blur'"
        )
    return found


def apply(img: np.ndarray, id_or_name: int | str, level: int, seed: int) -> tuple[np.ndarray, dict]:
    """Distort `img` at `level` with randomness from `seed`; returns (image, recipe)."""
    distortion = get(id_or_name)
    check_image(img)
    params = distortion.sample_params(level, np.random.default_rng(seed))
    recipe = {
        "version": RECIPE_VERSION,
        "distortion_id": distortion.id,
        "distortion": distortion.name,
        "level": level,
        "seed": int(seed),
        "params": params,
    }
    return distortion.apply(img, params), recipe


def replay(img: np.ndarray, recipe: dict) -> np.ndarray:
    """Reproduce a distorted image from its reference and recipe."""
    try:
        distortion = get(recipe["distortion_id"])
        params = recipe["params"]
    except (KeyError, TypeError) as error:
        raise InvalidRecipeError(f"not a distortion recipe: missing {error}") from None
    if recipe.get("distortion") not in (None, distortion.name):
        raise InvalidRecipeError(
            f"recipe names {recipe['distortion']!r} but id {distortion.id} is {distortion.name!r}"
        )
    return distortion.apply(img, params)
