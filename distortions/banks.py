"""Named selections of the bank, one table beside the registry: the distortion types each
method's data is made of (shared/design/seed-methods.md)."""

from distortions.errors import UnknownBankError
from distortions.registry import BANK

MT4_NAMES = ("jpeg", "jpeg2000", "gaussian_blur", "white_noise")

BANKS: dict[str, tuple[int, ...]] = {
    "all": tuple(d.id for d in BANK),
    # the 25 types of KADID-10k (collaborative auto-encoders)
    "kadid25": tuple(d.id for d in BANK if d.kadid_id is not None),
    # multitask restoration's four: JPEG, JPEG 2000, Gaussian blur, white noise
    "mt4": tuple(d.id for d in BANK if d.name in MT4_NAMES),
}


def bank_ids(name: str) -> tuple[int, ...]:
    """The distortion ids of the named bank, in id order."""
    if name not in BANKS:
        raise UnknownBankError(f"no bank {name!r}; the banks are {', '.join(BANKS)}")
    return BANKS[name]
