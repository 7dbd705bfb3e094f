"""Transparent replay of recipe samples (datasets generated with --store recipes or hybrid).

A shard's references come first (shared/spec/shards.md); `replaying` keeps them decoded while
its shard streams and gives each sample stored without pixels a `Pending` in place of its
image bytes. The replay itself runs when the sample is decoded (`shards.records.decode`), so
after a shuffle buffer and on whichever DataLoader worker decodes it. A recipe runs only if
its parameters are those its type, level and seed give (`distortions.check_recipe`); its
pixels' SHA-256 is checked against the recorded one, and a mismatch raises
`ReplayMismatchError` naming the sample and the libraries whose versions differ from those
that made its shard (its stats; the manifest's where they record none)."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np

import distortions
from shards.keys import distorted_key
from shards.layout import MANIFEST_FILE, run_file_or_empty
from shards.provenance import differing_libraries
from shards.reader import shard_stats
from shards.schema import chain_of, pixel_sha256
from shards.storage import Location


class ReplayError(ValueError):
    """A recipe sample that cannot be replayed (no reference in its shard, a bad recipe)."""


class ReplayMismatchError(ReplayError):
    """A replayed sample whose pixels' SHA-256 is not the recorded one."""


@dataclass(frozen=True)
class ReplayContext:
    """What replay needs besides the shard: the library versions the dataset recorded (None:
    none recorded) and whether to verify each replay's SHA-256 (False only for benchmarks)."""

    libraries: dict | None = None
    verify: bool = True

    @classmethod
    def of(cls, location: Location, verify: bool = True) -> "ReplayContext":
        manifest = run_file_or_empty(location, MANIFEST_FILE)
        return cls(manifest.get("replay_libraries"), verify)

    def for_shard(self, location: Location, index: int) -> "ReplayContext":
        """The context of shard `index`'s replays (`for_stats` of its stats)."""
        return self.for_stats(shard_stats(location, index))

    def for_stats(self, stats: dict) -> "ReplayContext":
        """The versions that made the shard of `stats` (they record them; a resume under other
        code rewrites the manifest's), so that a mismatch names what differs for its shard;
        the manifest's where its stats record none."""
        recorded = stats.get("libraries")
        return replace(self, libraries=recorded) if isinstance(recorded, dict) else self


# what a processor has, not a version one installs (shards.store_modes.library_versions)
PROCESSOR_FEATURES = frozenset({"opencv_dispatch"})
MATERIALIZE = "`iqa-factory materialize` to --store images"


def mismatch_message(key: str, recipe: dict, libraries: dict | None) -> str:
    """Why a replay may have differed (the libraries whose versions differ from those that
    made its shard, the device a learned-denoiser version was made on) and what to do."""
    differ = differing_libraries(libraries)
    if libraries is None:
        why = "the dataset records no library versions (no manifest.json replay_libraries)"
        advice = f"read it, or {MATERIALIZE}, on the machine that made it"
    elif differ:
        why = "versions that differ from those that made its shard: " + ", ".join(
            f"{name} {'not recorded' if made is None else made} there, {here} here"
            for name, (made, here) in differ.items())
        advice = (f"read it, or {MATERIALIZE}, on a processor like the one that made it"
                  if set(differ) <= PROCESSOR_FEATURES else
                  f"install the recorded versions, or {MATERIALIZE} where they are")
    elif "distortions_code" in libraries:
        why = ("every recorded library version and the bank's code are the same here: the "
               "processor's instruction set may move its float results")
        advice = f"read it, or {MATERIALIZE}, on a processor like the one that made it"
    else:
        why = ("every recorded library version is the same here: the bank's own code may "
               "differ from the code that made it")
        advice = f"read it, or {MATERIALIZE}, with the code that made it"
    devices = {link["params"].get("device") for link in recipe.get("chain", [recipe])
               if isinstance(link.get("params"), dict)} - {None}
    made_on = (f"; made by the learned denoiser on {', '.join(sorted(devices))}, whose float "
               "results also move with the device and, on a CPU, with the vector instructions "
               "its oneDNN uses (AVX-512 against AVX2), which no version records"
               if devices else "")
    return (f"sample {key}: replayed pixels differ from the recorded SHA-256 ({why}{made_on}); "
            f"{advice}")


def _recorded_shape(meta: dict) -> tuple | None:
    """The (height, width) a record gives its pixels; None where it gives none."""
    height, width = meta.get("height"), meta.get("width")
    return None if height is None or width is None else (height, width)


def differs_from_record(pixels: np.ndarray, meta: dict) -> bool:
    """Whether `pixels` are not those record `meta` describes: another SHA-256, or the same
    bytes in another shape (the SHA-256 is of the bytes alone)."""
    shape = _recorded_shape(meta)
    return (pixel_sha256(pixels) != meta.get("sha256")
            or (shape is not None and tuple(pixels.shape[:2]) != shape))


def changed_reference(key: str, pixels: np.ndarray, meta: dict) -> str | None:
    """What is wrong with reference `key` whose decoded pixels are `pixels` and record `meta`:
    None where they are the pixels it records (SHA-256 and shape)."""
    if not meta.get("sha256"):
        return (f"reference {key}'s record has no SHA-256 to check its pixels by: damaged, so "
                "none of its versions can be verified (restore the shard, or generate it "
                "again)")
    if not differs_from_record(pixels, meta):
        return None
    return (f"reference {key}'s pixels are not those recorded (SHA-256 and shape): its shard "
            "changed after it was written, so none of its versions replays or keeps its "
            "labels (restore the shard, or generate it again)")


def labels_problem(key: str, record: dict, recipe) -> str | None:
    """Where the labels a version `key` trains on (its chain: classes and multihot bits; its
    distortion_id, distortion, category, level and seed: the first link's; a single
    version's key) are not those of the recipe its pixels are made and replayed from."""
    try:
        links = recipe.get("chain", [recipe])
        made = [{"id": link["distortion_id"], "level": link["level"]} for link in links]
        first = distortions.get(links[0]["distortion_id"])
    except (TypeError, ValueError, KeyError, IndexError, AttributeError,
            distortions.DistortionError) as error:
        return f"{key}: its recipe names no distortion ({type(error).__name__}: {error})"
    expected = {"chain": made, "distortion_id": first.id, "distortion": first.name,
                "category": first.category, "level": made[0]["level"],
                "seed": links[0].get("seed")}
    if "chain" not in recipe:
        expected["key"] = distorted_key(record.get("ref_id"), first.id, made[0]["level"])
    differing = [name for name, value in expected.items()
                 if (chain_of(record) if name == "chain" else record.get(name)) != value]
    if differing:
        return (f"{key}: its labels differ from its recipe in {', '.join(differing)} (they "
                "would name another distortion than its pixels hold)")
    return None


@dataclass(frozen=True)
class Pending:
    """A recipe sample's image, made on request from its reference's pixels."""

    key: str
    reference: np.ndarray
    meta: dict
    context: ReplayContext

    def pixels(self) -> np.ndarray:
        """The replayed H x W x 3 uint8 pixels, verified against the recorded SHA-256."""
        try:
            distortions.check_recipe(self.meta["recipe"])
            image = distortions.replay(self.reference, self.meta["recipe"])
        except (KeyError, TypeError, ValueError) as error:  # DistortionError is a ValueError
            raise ReplayError(f"sample {self.key} cannot be replayed: {error}") from error
        if not self.context.verify:
            return image
        if problem := labels_problem(self.key, self.meta, self.meta["recipe"]):
            raise ReplayError(f"sample {problem}")
        if not self.meta.get("sha256"):
            raise ReplayError(f"sample {self.key}'s record has no SHA-256 to verify its replay "
                              "by: damaged (restore the shard, or generate it again)")
        if differs_from_record(image, self.meta):
            raise ReplayMismatchError(mismatch_message(self.key, self.meta["recipe"],
                                                       self.context.libraries))
        return image


def replaying(records: Iterator[dict], context: ReplayContext, decode: Callable,
              keep: Callable[[str], bool] = lambda key: True) -> Iterator[dict]:
    """One shard's records with each recipe sample's `encoded` a `Pending`; references are
    held decoded for the shard's replays, each checked against its recorded SHA-256 as it is
    read (a ReplayMismatchError before the reference or any of its versions is passed on);
    records are passed on only where `keep(key)`."""
    references: dict[str, np.ndarray] = {}
    for item in records:
        if item["meta"].get("kind") == "reference":
            references[item["ref_id"]] = decode(item["encoded"], item["key"])
            if context.verify and (problem := changed_reference(
                    item["key"], references[item["ref_id"]], item["meta"])):
                raise ReplayMismatchError(problem)
        if not keep(item["key"]):
            continue
        if item["encoded"] is not None:
            yield item
        elif item["ref_id"] not in references:
            raise ReplayError(f"sample {item['key']} has no pixels and its reference "
                              f"{item['ref_id']}_ref is not before it in its shard")
        else:
            yield {**item, "encoded": Pending(item["key"], references[item["ref_id"]],
                                              item["meta"], context)}
