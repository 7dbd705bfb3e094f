"""The distortion bank: 33 types x 5 levels (the paper's), 10 more types for the other
methods' banks (ids 34-43), pure and replayable.

    import distortions
    distortions.all()                       # the paper's 33, in id order
    distortions.registered()                # every type, 1-43, in id order
    d = distortions.get("jpeg")             # or get(1); any registered type
    out, recipe = distortions.apply(img, 1, level=3, seed=7)
    assert (distortions.replay(img, recipe) == out).all()

The learned-denoiser types (8-12) also come in two halves, for a pipeline that batches the
network on a GPU: `prepare_learned` (the seeded noisy input, on a CPU) and `run_learned` (the
network over many prepared inputs at once, wherever the denoiser lives).
"""

import functools
import math
from collections import Counter
from dataclasses import dataclass
from numbers import Real

import cv2
import numpy as np

from distortions.banks import BANKS, bank_ids, bank_type_levels, grid, longest_chain, undoing
from distortions.canonical import canonical_json
from distortions.denoised import denoise_inputs, denoiser_input
from distortions.denoiser import active_denoiser, use_denoiser
from distortions.errors import (
    DenoiserMismatchError,
    DenoiserUnavailableError,
    DistortionError,
    ImageTooSmallError,
    InvalidImageError,
    InvalidLevelError,
    InvalidRecipeError,
    InvalidSeedError,
    UnknownBankError,
    UnknownDistortionError,
)
from distortions.registry import (
    BANK,
    LEVELS,
    REGISTERED,
    Distortion,
    check_params,
    is_integer,
)
from distortions.seeding import check_seed, derive_seed
from distortions.validation import check_image

RECIPE_VERSION = 1
# recipe parameters that say where a version was made (which denoiser weights, on which
# device), not what it is: replay checks the denoiser's identity itself
WHERE_MADE_PARAMS = ("denoiser", "device")
# parameters added after recipe version 1: a recipe made before one lacks it, and replays with
# its first meaning (JPEG 2000's rate_control 1, the search it was made with)
ADDED_PARAMS = ("rate_control",)

_BY_ID = {d.id: d for d in REGISTERED}
_BY_NAME = {d.name: d for d in REGISTERED}

__all__ = [
    "BANKS",
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
    "InvalidSeedError",
    "LearnedInput",
    "UnknownBankError",
    "UnknownDistortionError",
    "apply",
    "bank_ids",
    "bank_type_levels",
    "check_image",
    "check_recipe",
    "compose",
    "derive_seed",
    "get",
    "grid",
    "longest_chain",
    "prepare_learned",
    "registered",
    "replay",
    "run_learned",
    "undoing",
    "use_denoiser",
]


def all() -> tuple[Distortion, ...]:
    """The paper's 33 distortions (ids 1-33) in id order."""
    return BANK


def registered() -> tuple[Distortion, ...]:
    """Every registered distortion: the paper's 33 and the types added after them, in id order."""
    return REGISTERED


def get(id_or_name: int | str) -> Distortion:
    """A registered distortion by its id (1-43, numpy integers too) or name ('jpeg')."""
    if is_integer(id_or_name):
        found = _BY_ID.get(int(id_or_name))
    else:
        found = _BY_NAME.get(id_or_name) if isinstance(id_or_name, str) else None
    if found is None:
        raise UnknownDistortionError(
            f"no distortion {id_or_name!r}: ids are 1-{REGISTERED[-1].id}, names e.g. 'jpeg', "
            "'gaussian_blur'"
        )
    return found


def _recipe(distortion: Distortion, level: int, seed: int) -> dict:
    level = distortion.check_level(level)
    check_seed(seed)
    return {
        "version": RECIPE_VERSION,
        "distortion_id": distortion.id,
        "distortion": distortion.name,
        "level": level,
        "seed": int(seed),
        "params": distortion.sample_params(level, np.random.default_rng(int(seed))),
    }


def apply(img: np.ndarray, id_or_name: int | str, level: int, seed: int) -> tuple[np.ndarray, dict]:
    """Distort `img` at `level` with randomness from `seed`; returns (image, recipe)."""
    distortion = get(id_or_name)
    check_image(img)
    recipe = _recipe(distortion, level, seed)
    return distortion.apply(img, recipe["params"]), recipe


@dataclass(frozen=True)
class LearnedInput:
    """A learned-denoiser type's first half: the noisy float32 image, the sigma the network is
    told, and the recipe."""

    noisy: np.ndarray
    sigma: float
    recipe: dict


def prepare_learned(img: np.ndarray, id_or_name: int | str, level: int, seed: int
                    ) -> LearnedInput:
    """The CPU half of a learned-denoiser type (8-12): equal to `apply` once `run_learned`."""
    distortion = get(id_or_name)
    if not distortion.learned:
        raise InvalidRecipeError(f"{distortion.name} is not a learned-denoiser type (those "
                                 "are 8-12): apply() makes it")
    check_image(img)
    recipe = _recipe(distortion, level, seed)
    return LearnedInput(*denoiser_input(img, recipe["params"]), recipe)


def run_learned(inputs: list[LearnedInput]) -> list[tuple[np.ndarray, dict]]:
    """The network half over many prepared inputs of one size, batched on the active
    denoiser's device; (image, recipe) each, the recipe naming the device that ran it."""
    if not inputs:
        return []
    identities = {item.recipe["params"]["denoiser"] for item in inputs}
    if len(identities) > 1:
        raise DenoiserMismatchError(f"inputs prepared for several denoisers: {identities}")
    shapes = {item.noisy.shape for item in inputs}
    if len(shapes) > 1:
        raise InvalidImageError(f"one batch of the network takes inputs of one size, got "
                                f"{sorted(shapes)}")
    images = denoise_inputs([(item.noisy, item.sigma) for item in inputs], identities.pop())
    device = active_denoiser().spec.device
    return [(image, {**item.recipe, "params": {**item.recipe["params"], "device": device}})
            for image, item in zip(images, inputs, strict=True)]


def check_chain(ids: list[int]) -> None:
    """InvalidRecipeError unless the distortion ids of a chain are ones a chain may hold: each
    type once (so no longer than the bank), and no learned-denoiser type (its network runs
    batched apart). A chain read from a shard never runs thousands of links."""
    types = [get(i) for i in ids]  # 1, np.int64(1) and 'jpeg' are one type
    counts = Counter(distortion.id for distortion in types)
    repeated = [i for i, count in counts.items() if count > 1]
    if repeated:
        raise InvalidRecipeError(f"a chain holds each type once; {repeated} come again in "
                                 f"{[distortion.id for distortion in types]}")
    learned = [distortion.id for distortion in types if distortion.learned]
    if learned:
        raise InvalidRecipeError(f"a chain holds no learned-denoiser type; it holds {learned}")


def compose(img: np.ndarray, links: list[tuple[int, int, int]],
            changed: list[bool] | None = None) -> tuple[np.ndarray, dict]:
    """Apply a chain of (distortion id, level, seed) links in order, each to the previous
    link's output; returns (image, recipe), the recipe a recipe of the links' recipes. The
    chain holds each type once and no learned-denoiser type (check_chain). `changed`, where
    given, receives for each link whether its output differs from its input."""
    if not isinstance(links, list | tuple | np.ndarray) or len(links) == 0:
        raise InvalidRecipeError(f"a chain is a non-empty list of (distortion id, level, seed) "
                                 f"links, got {links!r}")
    if any(not isinstance(link, list | tuple | np.ndarray) or len(link) != 3 for link in links):
        raise InvalidRecipeError(f"a chain's links are (distortion id, level, seed), got "
                                 f"{links!r}")
    check_chain([link[0] for link in links])
    recipes = []
    for link in links:
        before = img
        img, recipe = apply(img, *link)
        recipes.append(recipe)
        if changed is not None:
            changed.append(not np.array_equal(img, before))
    return img, {"version": RECIPE_VERSION, "chain": recipes}


def replay(img: np.ndarray, recipe: dict) -> np.ndarray:
    """Reproduce a distorted image from its reference and recipe (a composed recipe's links
    in order). Any parameter values the type can apply are taken (`check_recipe` refuses
    those its level and seed do not give); a recipe of another version, or with a parameter
    the type does not know, is refused rather than replayed otherwise than it was made."""
    if isinstance(recipe, dict) and recipe.get("version", RECIPE_VERSION) != RECIPE_VERSION:
        raise InvalidRecipeError(f"recipe version {recipe['version']!r}: this bank replays "
                                 f"version {RECIPE_VERSION}")
    if isinstance(recipe, dict) and "chain" in recipe:
        if not isinstance(recipe["chain"], list) or not recipe["chain"]:
            raise InvalidRecipeError("a composed recipe needs a non-empty list of links")
        for link in recipe["chain"]:
            img = replay(img, link)
        return img
    try:
        distortion = get(recipe["distortion_id"])
        params = recipe["params"]
    except UnknownDistortionError:
        raise
    except (KeyError, TypeError) as error:
        raise InvalidRecipeError(f"not a distortion recipe: missing {error}") from None
    _check_names(recipe, distortion, params)
    return _replayed(distortion, img, params)


def _check_names(recipe: dict, distortion: Distortion, params: dict) -> None:
    """InvalidRecipeError where the recipe's name, if it has one, is not its id's, or its
    parameters are not the type's (check_params; where-made ones in words; none unknown)."""
    if recipe.get("distortion") not in (None, distortion.name):
        raise InvalidRecipeError(
            f"recipe names {recipe['distortion']!r} but id {distortion.id} is {distortion.name!r}"
        )
    check_params(distortion, params)
    for name in WHERE_MADE_PARAMS:
        if name in params and not isinstance(params[name], str):
            raise InvalidRecipeError(f"{distortion.name}: parameter {name} names where it was "
                                     f"made, in words; got {params[name]!r}")
    if unknown := _unknown_params(distortion, params):
        raise InvalidRecipeError(_unknown_message(distortion, unknown))


@functools.cache
def _param_names(distortion_id: int) -> frozenset[str]:
    """Every parameter a recipe of the type may hold: its level table's, its fixed ones
    (JPEG 2000's rate_control among them) and its random draws' (the learned types' where
    they were made among them), the same names at every level."""
    return frozenset(get(distortion_id).sample_params(LEVELS[0], np.random.default_rng(0)))


def _unknown_params(distortion: Distortion, params: dict) -> list[str]:
    return sorted(set(params) - _param_names(distortion.id))


def _unknown_message(distortion: Distortion, unknown: list[str]) -> str:
    return (f"{distortion.name}: parameters {', '.join(map(str, unknown))} are unknown to this "
            f"bank (a recipe of a newer iqa-factory, or a damaged one; this one replays recipe "
            f"version {RECIPE_VERSION})")


def check_recipe(recipe: dict) -> None:
    """InvalidRecipeError unless `recipe` is one this bank makes: this recipe version, and
    parameters (where-made ones aside) equal to those its type, level and seed give (for a
    composed recipe, each link's). A recipe read from a shard is checked before it runs, so a
    damaged or hostile one never runs with parameters of its own (a huge blur, a million
    blocks); `replay` alone takes any parameters the type can apply."""
    if not isinstance(recipe, dict):
        raise InvalidRecipeError(f"a recipe is a JSON object, got {type(recipe).__name__}")
    version = recipe.get("version")
    if not is_integer(version) or version != RECIPE_VERSION:  # (True and 1.0 are not 1)
        raise InvalidRecipeError(f"recipe version {version!r}: this bank replays version "
                                 f"{RECIPE_VERSION}")
    if "chain" in recipe:
        _check_composed(recipe["chain"])
    else:
        _check_single(recipe)


def _check_composed(links) -> None:
    """check_recipe of a composed recipe's links: single distortions, a chain the bank
    composes."""
    if not isinstance(links, list) or not links:
        raise InvalidRecipeError("a composed recipe needs a non-empty list of links")
    for link in links:  # (`all` is this module's list of distortions)
        if not isinstance(link, dict) or "chain" in link:
            raise InvalidRecipeError("a chain's links are single distortions (JSON "
                                     "objects), not other chains")
    check_chain([link.get("distortion_id") for link in links])  # before any link's check
    for link in links:
        check_recipe(link)


def _check_single(recipe: dict) -> None:
    """check_recipe of a single distortion's recipe: its parameters those its level and seed
    give."""
    try:
        distortion = get(recipe["distortion_id"])
        made = _recipe(distortion, recipe["level"], recipe["seed"])
        params = recipe["params"]
    except UnknownDistortionError:
        raise
    except KeyError as error:
        raise InvalidRecipeError(f"not a distortion recipe: missing {error}") from None
    _check_names(recipe, distortion, params)
    names = ((set(made["params"]) | set(params)) - set(WHERE_MADE_PARAMS)
             - {name for name in ADDED_PARAMS if name not in params})
    differ = sorted(name for name in names
                    if canonical_json(params.get(name)) != canonical_json(made["params"].get(name)))
    if differ:
        raise InvalidRecipeError(
            f"{made['distortion']} level {made['level']} seed {made['seed']}: parameters "
            f"{', '.join(differ)} are not those the level and seed give")


def _check_param(distortion: Distortion, name: str, value) -> None:
    if name.endswith("seed") and (not is_integer(value) or value < 0):
        raise InvalidRecipeError(f"{distortion.name}: parameter {name} must be a non-negative "
                                 f"integer (the replay's seed), got {value!r}")
    if value is None or (isinstance(value, Real) and not math.isfinite(value)):
        raise InvalidRecipeError(f"{distortion.name}: parameter {name} is {value!r}, not a "
                                 "value it can apply")
    for item in value if isinstance(value, list | tuple) else ():
        _check_param(distortion, name, item)


def _replayed(distortion: Distortion, img: np.ndarray, params: dict) -> np.ndarray:
    """`distortion` with a recipe's parameters, which come from outside (a file, a shard): a
    parameter it cannot apply, one that is null or not finite, a seed that is not a
    non-negative integer (numpy would draw a fresh one: no replay), or an output of another
    shape, is InvalidRecipeError."""
    for name, value in params.items():
        _check_param(distortion, name, value)
    try:
        out = distortion.apply(img, params)
    except DistortionError:
        raise
    except (TypeError, ValueError, IndexError, ArithmeticError, MemoryError, cv2.error) as error:
        raise InvalidRecipeError(f"{distortion.name}: parameters {params!r} cannot be applied "
                                 f"({type(error).__name__}: {error})") from None
    if out.shape != img.shape or out.dtype != np.uint8:
        raise InvalidRecipeError(f"{distortion.name}: parameters {params!r} gave {out.dtype} "
                                 f"{out.shape}, not the input's {img.shape}")
    return out
