"""Named selections of the registry, one table beside it: the distortion types each method's
data is made of (shared/design/seed-methods.md)."""

from distortions.errors import UnknownBankError
from distortions.registry import BANK, REGISTERED

MT4_NAMES = ("jpeg", "jpeg2000", "gaussian_blur", "white_noise")
# Re-IQA's 26 (its datasets/dataset.py draws from choices 1-26): the KADID types but JPEG
# 2000, the two quantizations and KADID's learned denoise (its own noise-then-blur "denoise"
# instead), and four resize types
REIQA_NAMES = ("gaussian_blur", "lens_blur", "color_diffusion", "color_shift",
               "saturation_hsv", "saturation_lab", "jpeg", "white_noise", "chroma_noise",
               "impulse_noise", "speckle_noise", "denoise_blur", "brighten", "darken",
               "mean_shift", "resize_bicubic", "unsharp_mask", "contrast_change", "color_block",
               "pixelate", "non_eccentricity", "jitter", "resize_bilinear", "resize_nearest",
               "resize_lanczos", "motion_blur")
# DB-CNN's nine synthetic types; colour dithering is color_quantization (a minimum-variance
# palette with Floyd-Steinberg dithering)
DBCNN_NAMES = ("jpeg", "jpeg2000", "gaussian_blur", "white_noise", "pink_noise",
               "contrast_change", "color_quantization", "overexposure", "underexposure")
# its authentic mode's seven, mixed on the target dataset's own photos
DBCNN_AUTHENTIC_NAMES = ("jpeg", "gaussian_blur", "motion_blur", "contrast_reduction",
                         "rgb_shift", "overexposure", "underexposure")

BANKS: dict[str, tuple[int, ...]] = {
    # the paper's 33 (ids 1-33)
    "all": tuple(d.id for d in BANK),
    # the 25 types of KADID-10k (collaborative auto-encoders)
    "kadid25": tuple(d.id for d in BANK if d.kadid_id is not None),
    # multitask restoration's four: JPEG, JPEG 2000, Gaussian blur, white noise
    "mt4": tuple(d.id for d in BANK if d.name in MT4_NAMES),
    # Re-IQA's 26: 21 of the KADID types, its four resize types and its noise-then-blur
    # "denoise"
    "reiqa": tuple(d.id for d in REGISTERED if d.name in REIQA_NAMES),
    # the multi-task method's synthetic mode (DB-CNN's classes)
    "dbcnn": tuple(d.id for d in REGISTERED if d.name in DBCNN_NAMES),
    # its authentic mode (mixtures: --compose), each type at its own levels
    "dbcnn_authentic": tuple(d.id for d in REGISTERED if d.name in DBCNN_AUTHENTIC_NAMES),
    # every registered type (1-43)
    "registered": tuple(d.id for d in REGISTERED),
}


# the levels a bank gives some of its types in place of a run's: the multi-task method makes
# over- and under-exposure at two levels each (7 x 5 + 2 x 2 = 39 classes); ours that match
# are levels 2 and 4 (one and two stops, docs/distortions-spec-notes.md). Gaussian and motion
# blur's level 1 leaves a photo as it is (sigma 0.1, a line of one pixel): a class or a
# mixture's bit would name a distortion its images do not hold, so the synthetic mode makes
# Gaussian blur at levels 2-5 (38 classes) and the authentic mode, whose other five types
# take three levels (ours 1, 3 and 5: mild, middle, severe), makes the blurs at 2, 3 and 5
EXPOSURE_LEVELS = {"overexposure": (2, 4), "underexposure": (2, 4)}
BLUR_LEVELS = {"gaussian_blur": (2, 3, 5), "motion_blur": (2, 3, 5)}
BANK_TYPE_LEVELS: dict[str, dict[str, tuple[int, ...]]] = {
    "dbcnn": {**EXPOSURE_LEVELS, "gaussian_blur": (2, 3, 4, 5)},
    "dbcnn_authentic": {**dict.fromkeys(DBCNN_AUTHENTIC_NAMES, (1, 3, 5)), **BLUR_LEVELS,
                        **EXPOSURE_LEVELS},
}


# types no chain holds together (--compose, --compose-share): each undoes the other, +a stops
# then -a stops being the photo again but for clipping, under two labels
UNDOING_PAIRS = (("overexposure", "underexposure"),)


def undoing(distortion_id: int) -> frozenset[int]:
    """The ids of the types that undo the type `distortion_id`."""
    by_name = {d.name: d.id for d in REGISTERED}
    return frozenset(by_name[other] for pair in UNDOING_PAIRS for name, other in
                     (pair, pair[::-1]) if by_name[name] == distortion_id)


def longest_chain(ids: tuple[int, ...]) -> int:
    """The most types of `ids` one chain can hold: all, less one of each pair among them that
    undoes itself."""
    return len(ids) - sum(1 for d in ids for other in undoing(d) if other in ids) // 2


def bank_type_levels(name: str) -> dict[int, tuple[int, ...]]:
    """{distortion id: its levels} of the types the named bank makes at levels of their own."""
    bank_ids(name)  # an unknown bank is refused
    by_name = {d.name: d.id for d in REGISTERED}
    return {by_name[type_name]: levels
            for type_name, levels in BANK_TYPE_LEVELS.get(name, {}).items()}


def grid(ids: tuple[int, ...], levels: tuple[int, ...],
         type_levels: dict[int, tuple[int, ...]] | None = None) -> list[tuple[int, int]]:
    """The (distortion id, level) pairs of a selection, in its id then level order: each type
    at `levels`, or at its own where `type_levels` gives them."""
    own = type_levels or {}
    return [(d, lv) for d in ids for lv in own.get(d, levels)]


def bank_ids(name: str) -> tuple[int, ...]:
    """The distortion ids of the named bank, in id order."""
    if name not in BANKS:
        raise UnknownBankError(f"no bank {name!r}; the banks are {', '.join(BANKS)}")
    return BANKS[name]
