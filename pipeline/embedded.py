"""The embedded default sources: the natural colour photographs scikit-image ships that cover
512 x 384, so `make generate` runs anywhere without data."""

import numpy as np
import skimage.data

# name -> loader; motorcycle_left is the left view of the stereo pair.
EMBEDDED_PHOTOS = {
    "astronaut": skimage.data.astronaut,
    "coffee": skimage.data.coffee,
    "rocket": skimage.data.rocket,
    "motorcycle_left": lambda: skimage.data.stereo_motorcycle()[0],
    "hubble_deep_field": skimage.data.hubble_deep_field,
}


def embedded_photo(name: str) -> np.ndarray:
    """One embedded photo as uint8 RGB."""
    if name not in EMBEDDED_PHOTOS:
        raise ValueError(f"no embedded photo {name!r}; choose from {', '.join(EMBEDDED_PHOTOS)}")
    return np.ascontiguousarray(EMBEDDED_PHOTOS[name]()[..., :3])
