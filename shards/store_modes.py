"""What a dataset stores of its distorted versions (`generate --store`); the library versions
its replay depends on are shards.provenance's.

- images (the default, and every dataset made before the modes): every version's PNG.
- recipes: the references' PNGs and every sample's record (recipe, labels, SHA-256 of the
  pixels); no distorted pixels: readers replay each version from its reference and recipe.
- hybrid: recipes, plus the PNGs of the versions whose replay is not portable: the learned
  denoiser's (types 8-12: a float32 network whose output may differ by one intensity level
  between CPU and GPU or processor generations, and the slowest replay). Every other type is
  integer or float code on the NumPy/OpenCV/Pillow/SciPy versions the manifest records, and
  its replay is verified against the stored SHA-256 wherever it runs. `--keep-pngs TYPES`
  keeps those types' PNGs too (slow replays: bytes bought back as loader rate).

The mode of a dataset is in its plan (plan.json's inputs, only when not images), so a dataset
never mixes two modes; the modes' names and file layout are in shards.layout."""

import distortions
from shards.layout import DEFAULT_STORE
from shards.schema import chain_of


def not_portable(record: dict) -> bool:
    """Whether a distorted sample's replay is not portable: a link of its chain is a
    learned-denoiser type."""
    return any(distortions.get(link["id"]).learned for link in chain_of(record))


def stores_pixels(store: str, record: dict, keep_pngs: tuple[int, ...] = ()) -> bool:
    """Whether a dataset in mode `store` keeps this sample's PNG: references always do; in
    hybrid, versions whose replay is not portable, and those with a link of a `keep_pngs`
    type (`generate --keep-pngs`: the types whose replay is too slow for the loader)."""
    if record.get("kind") == "reference" or store == DEFAULT_STORE:
        return True
    return store == "hybrid" and (not_portable(record) or any(
        link["id"] in keep_pngs for link in chain_of(record)))
