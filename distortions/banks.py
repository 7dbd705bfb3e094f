"""Named selections of the registry, one table beside it: the distortion types each method's
data is made of (shared/design/seed-methods.md)."""

from distortions.errors import UnknownBankError
from distortions.registry import BANK, REGISTERED

MT4_NAMES = ("jpeg", "jpeg2000", "gaussian_blur", "white_noise")
REIQA_ADDED = ("resize_bicubic", "resize_bilinear", "resize_lanczos", "resize_nearest",
               "denoise_blur")
# DB-CNN's nine synthetic types; colour dithering is color_quantization (a median-cut palette
# with Floyd-Steinberg dithering)
DBCNN_NAMES = ("jpeg", "jpeg2000", "gaussian_blur", "white_noise", "pink_noise",
               "contrast_change", "color_quantization", "overexposure", "underexposure")

BANKS: dict[str, tuple[int, ...]] = {
    # the paper's 33 (ids 1-33)
    "all": tuple(d.id for d in BANK),
    # the 25 types of KADID-10k (collaborative auto-encoders)
    "kadid25": tuple(d.id for d in BANK if d.kadid_id is not None),
    # multitask restoration's four: JPEG, JPEG 2000, Gaussian blur, white noise
    "mt4": tuple(d.id for d in BANK if d.name in MT4_NAMES),
    # Re-IQA: the KADID 25, its four resize types and its noise-then-blur "denoise"
    "reiqa": tuple(d.id for d in REGISTERED
                   if d.kadid_id is not None or d.name in REIQA_ADDED),
    # the multi-task method's synthetic mode (DB-CNN's classes)
    "dbcnn": tuple(d.id for d in REGISTERED if d.name in DBCNN_NAMES),
    # every registered type (1-43)
    "registered": tuple(d.id for d in REGISTERED),
}


def bank_ids(name: str) -> tuple[int, ...]:
    """The distortion ids of the named bank, in id order."""
    if name not in BANKS:
        raise UnknownBankError(f"no bank {name!r}; the banks are {', '.join(BANKS)}")
    return BANKS[name]
