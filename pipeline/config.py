"""The run configuration: one frozen, validated object, written into the output."""

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import distortions
from distortions.registry import is_integer
from distortions.seeding import check_seed
from distortions.validation import MIN_LONG_SIDE, MIN_SHORT_SIDE
from labelers.registry import AVAILABLE_METRICS, METRICS
from pipeline.sizing import NATIVE, TargetSize, check_max_side, parse_size
from shards.decode import DEFAULT_MAX_PIXELS
from shards.layout import DEFAULT_STORE, MANIFEST_FILE, RunFileError, check_store, run_file
from shards.storage import Location, redact

SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # train, val, test
# shards.md: R chosen so a shard is roughly 0.5-1 GB, R = 16 at 512x384 PNG (the paper's 1 + 165
# images per reference); other runs scale R by the images and pixels per reference
SPEC_SHARD_REFS, SPEC_SHARD_IMAGES, SPEC_SHARD_PIXELS = 16, 166, 512 * 384
NATIVE_PIXELS = 1024 * 768  # what a --size native run is assumed to hold per image
SOURCE_KINDS = ("synthetic", "authentic")
# generation modes beyond the paper's grid, with their defaults; a mode at its default stays
# out of the plan digest, so datasets made before the modes existed keep theirs
MODE_DEFAULTS = {"bank": "all", "versions_per_ref": None, "max_side": None,
                 "source_kind": "synthetic", "compose": None, "store": DEFAULT_STORE,
                 "keep_pngs": (), "compose_share": 0.0, "type_levels": ()}
# the plan inputs that say how versions are stored, not what they are (materialize drops them)
STORAGE_INPUTS = ("store", "keep_pngs")


def _whole(name: str, value) -> int:
    """`value` as an int: a ValueError naming `name` where it is no whole number."""
    if not is_integer(value):
        raise ValueError(f"{name} takes whole numbers, got {value!r}")
    return int(value)


def _listed(name: str, values) -> tuple:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ValueError(f"{name} must be a list or tuple, got {values!r}")
    return tuple(values)


def composes_undoing_pairs(ids: Iterable[int], compose: tuple[int, int] | None,
                           compose_share: float) -> bool:
    """Whether versions compose types (`compose` or a `compose_share`) and a type and its
    undoer are both among `ids`: then the chain rule (undoing_apart) decides what is drawn."""
    ids = tuple(ids)
    composes = compose is not None or bool(compose_share)
    return composes and distortions.longest_chain(ids) < len(ids)


@dataclass(frozen=True)
class RunConfig:
    sources: str
    out: str
    seed: int = 0
    size: TargetSize | str = field(default_factory=TargetSize)  # or NATIVE
    allow_upscale: bool = False
    shard_refs: int = 16
    limit: int | None = None
    distortion_ids: tuple[int, ...] = tuple(d.id for d in distortions.all())
    levels: tuple[int, ...] = distortions.LEVELS
    metrics: tuple[str, ...] = METRICS  # the ten of the default ensemble
    allow_missing_metrics: bool = False
    ensemble_file: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    codec: str = "png"
    bank: str = "all"                     # the named bank distortion_ids lie in
    versions_per_ref: int | None = None   # K types drawn per reference; None: the full grid
    max_side: int | None = None           # with size NATIVE: downscale above this long side
    source_kind: str = "synthetic"        # synthetic | authentic, recorded per reference
    compose: tuple[int, int] | None = None  # (K, M): each version a chain of K-M types
    store: str = DEFAULT_STORE            # images | recipes | hybrid (shards.store_modes)
    keep_pngs: tuple[int, ...] = ()       # hybrid: types whose versions also keep their PNG
    compose_share: float = 0.0            # with versions_per_ref: this share of the versions
                                          # composes a second type (Re-IQA's 10%)
    # ((id, levels), ...): types made at levels of their own in place of `levels`; None: the
    # bank's (distortions.bank_type_levels: dbcnn's exposure at 2 and 4), for selected types
    type_levels: tuple[tuple[int, tuple[int, ...]], ...] | None = None
    # chains never hold a type and the type that undoes it (over- and underexposure); False:
    # a dataset planned before this rule, its chains drawn as they were (from_json, resume)
    undoing_apart: bool = True
    # a reference's split drawn from its name (the safe stem, before a suffix that makes its
    # id unique: split_rule), not its id; False: a dataset planned before this rule
    split_by_name: bool = True

    def __post_init__(self):
        self._check_types()
        if self.type_levels is None:
            object.__setattr__(self, "type_levels", tuple(
                (d, levels) for d, levels in distortions.bank_type_levels(self.bank).items()
                if d in self.distortion_ids))
        if self.shard_refs < 1:
            raise ValueError(f"shard_refs must be at least 1, got {self.shard_refs}")
        # (an empty one would list the working folder: Path("") is ".")
        if not isinstance(self.sources, str) or not self.sources.strip():
            raise ValueError(f"sources must name a folder, a list file, a URI or 'embedded'; "
                             f"got {self.sources!r}")
        check_seed(self.seed)  # an InvalidSeedError, a ValueError
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1, got {self.limit}")
        self._check_grid()
        unknown = [m for m in self.metrics if m not in AVAILABLE_METRICS]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; choose from "
                             f"{', '.join(AVAILABLE_METRICS)}, or none")
        self._check_max_pixels()
        if self.codec != "png":
            raise ValueError(f"codec must be png (lossless), got {self.codec!r}")
        self._check_modes()

    def _check_grid(self) -> None:
        """The distortions (known, in the bank) and levels (1-5); they and the metrics each
        listed once."""
        for distortion_id in self.distortion_ids:
            distortions.get(distortion_id)  # raises UnknownDistortionError
        outside = sorted(set(self.distortion_ids) - set(distortions.bank_ids(self.bank)))
        if outside or not self.distortion_ids:
            raise ValueError(f"distortions {outside or '(none)'} are not in the bank "
                             f"{self.bank!r}: choose among its types")
        bad_levels = [lv for lv in self.levels if lv not in distortions.LEVELS]
        if bad_levels or not self.levels:
            raise ValueError(f"levels must be a non-empty subset of 1-5, got {self.levels}")
        for name, values in (("distortions", self.distortion_ids), ("levels", self.levels),
                             ("metrics", self.metrics)):
            twice = sorted({v for v in values if list(values).count(v) > 1})
            if twice:  # samples' keys twice into one tar; a score column twice
                raise ValueError(f"{name} {twice} listed more than once in {list(values)}")

    def _check_modes(self) -> None:
        if self.compose is not None:
            self._check_compose()
        elif self.versions_per_ref is not None and not (
                1 <= self.versions_per_ref <= len(self.distortion_ids)):
            raise ValueError(f"versions_per_ref must be 1-{len(self.distortion_ids)} (the "
                             f"types selected), got {self.versions_per_ref}")
        if self.compose_share:
            self._check_compose_share()
        self._check_type_levels()
        if self.max_side is not None and self.size != NATIVE:
            raise ValueError("--max-side applies to the native size policy (--size native)")
        if self.allow_upscale and self.size == NATIVE:
            raise ValueError("allow_upscale applies to a target size (--size WxH): the native "
                             "policy keeps each source's own size, and one below the bank's "
                             "minimum is left out as too_small")
        check_max_side(self.max_side)
        check_store(self.store)
        self._check_keep_pngs()
        if self.source_kind not in SOURCE_KINDS:
            raise ValueError(f"source_kind must be one of {SOURCE_KINDS}, got "
                             f"{self.source_kind!r}")

    def _check_types(self) -> None:
        """Whole numbers where counts, ids and levels go (3.0 == 3 and True == 1 would pass
        the range checks, then every version fail in the bank), held as Python ints and
        tuples (numpy's and lists taken); flags as bools; the size a TargetSize or NATIVE."""
        for name in ("seed", "max_pixels"):  # (numpy's as ints: checked below, named)
            value = getattr(self, name)
            if is_integer(value):
                object.__setattr__(self, name, int(value))
        for name in ("shard_refs", "limit", "versions_per_ref", "max_side"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _whole(name, value))
        for name in ("distortion_ids", "levels", "keep_pngs", "compose"):
            values = getattr(self, name)
            if values is not None:
                object.__setattr__(self, name, tuple(_whole(name, value)
                                                     for value in _listed(name, values)))
        if self.type_levels is not None:
            object.__setattr__(self, "type_levels", tuple(
                (_whole("type_levels", d), tuple(_whole("type_levels", v)
                                                 for v in _listed("type_levels", levels)))
                for d, levels in _listed("type_levels", self.type_levels)))
        if not all(isinstance(m, str) for m in _listed("metrics", self.metrics)):
            raise ValueError(f"metrics must be metric names, got {self.metrics!r}")
        object.__setattr__(self, "metrics", tuple(self.metrics))
        for name in ("allow_upscale", "allow_missing_metrics", "undoing_apart", "split_by_name"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.size != NATIVE and not isinstance(self.size, TargetSize):
            raise ValueError(f"size must be a TargetSize or {NATIVE!r} (parse_size reads "
                             f"'512x384'), got {self.size!r}")

    def _check_max_pixels(self) -> None:
        """Below the smallest image the run makes, every source would be refused."""
        smallest = (MIN_LONG_SIDE * MIN_SHORT_SIDE if self.size == NATIVE
                    else self.size.width * self.size.height)
        what = ("the bank's smallest image" if self.size == NATIVE
                else f"the target {self.size}")
        if (not isinstance(self.max_pixels, int) or isinstance(self.max_pixels, bool)
                or self.max_pixels < smallest):
            raise ValueError(f"--max-pixels must be at least {smallest} ({what}), got "
                             f"{self.max_pixels!r}")

    def _check_keep_pngs(self) -> None:
        if self.keep_pngs and self.store != "hybrid":
            raise ValueError(f"--keep-pngs applies to --store hybrid, not {self.store}")
        unused = sorted(set(self.keep_pngs) - set(self.distortion_ids))
        if unused:
            raise ValueError(f"--keep-pngs {unused}: not among the run's distortion types")
        if list(self.keep_pngs) != sorted(set(self.keep_pngs)):
            raise ValueError(f"--keep-pngs must be distinct ids in increasing order, got "
                             f"{list(self.keep_pngs)}")

    def _check_compose(self) -> None:
        k, m = self.compose
        longest = self._longest_chain(self.distortion_ids)
        if not 1 <= k <= m <= longest:
            apart = ", nor holds both of over- and underexposure" if self.undoing_apart else ""
            raise ValueError(f"compose {k}-{m}: needs 1 <= K <= M <= {longest} (the types "
                             f"selected; a chain never repeats a type{apart})")
        learned = [i for i in self.distortion_ids if distortions.get(i).learned]
        if learned:
            rest = [i for i in self.distortion_ids if i not in learned]
            raise ValueError(f"compose: the learned-denoiser types {learned} cannot be composed "
                             "(their network runs batched apart from the shard task); leave "
                             f"them out: --distortions {_as_ranges(rest)}")
        if self.versions_per_ref is not None and self.versions_per_ref < 1:
            raise ValueError(f"versions_per_ref must be at least 1, got {self.versions_per_ref}")

    def _check_type_levels(self) -> None:
        for distortion_id, levels in self.type_levels:
            if distortion_id not in self.distortion_ids:
                raise ValueError(f"type_levels: type {distortion_id} is not selected")
            if not levels or not set(levels) <= set(distortions.LEVELS):
                raise ValueError(f"type_levels of type {distortion_id} must be a non-empty "
                                 f"subset of 1-5, got {levels}")

    def _check_compose_share(self) -> None:
        share = self.compose_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
            raise ValueError(f"compose_share must be a fraction in [0, 1], got {share!r}")
        if self.versions_per_ref is None or self.compose is not None:
            raise ValueError("compose_share applies to versions drawn per reference "
                             "(--versions-per-ref), without --compose")
        composable = tuple(i for i in self.distortion_ids if not distortions.get(i).learned)
        if self._longest_chain(composable) < 2:
            raise ValueError("compose_share needs two or more types that compose (the "
                             "learned-denoiser types never do, over- and underexposure not "
                             "with each other)")

    def _longest_chain(self, ids: tuple[int, ...]) -> int:
        """The most types of `ids` one chain can hold under the run's chain rule."""
        return distortions.longest_chain(tuple(ids)) if self.undoing_apart else len(ids)

    @property
    def holds_undoing_pairs(self) -> bool:
        return composes_undoing_pairs(self.distortion_ids, self.compose, self.compose_share)

    def sized_shard_refs(self) -> int:
        """References per shard for about the spec's shard size (16 at 512x384 with 165
        versions): fewer images per reference, or smaller ones, give more references."""
        if self.size == NATIVE:
            pixels = NATIVE_PIXELS if self.max_side is None else self.max_side ** 2 * 3 // 4
        else:
            pixels = self.size.width * self.size.height
        images = SPEC_SHARD_REFS * SPEC_SHARD_IMAGES * SPEC_SHARD_PIXELS
        return max(1, round(images / ((1 + self.versions_count) * pixels)))

    @property
    def labelled(self) -> bool:
        """False for a label-free run (--metrics none): no scores, no Q."""
        return bool(self.metrics)

    @property
    def versions_count(self) -> int:
        """Distorted versions planned per reference: with compose, versions_per_ref chains or
        one per selected type."""
        if self.compose:
            return self.versions_per_ref or len(self.distortion_ids)
        return self.versions_per_ref or len(self.scenarios)

    def modes(self) -> dict:
        """The generation modes, for the manifest, the report and inspect."""
        return {"labels": list(self.metrics) or "none", "size": str(self.size),
                **{key: getattr(self, key) for key in MODE_DEFAULTS}}

    @property
    def scenarios(self) -> list[tuple[int, int]]:
        """(distortion id, level) pairs of every reference, in id then level order."""
        return distortions.grid(self.distortion_ids, self.levels, dict(self.type_levels))

    def to_json(self) -> dict:
        data = asdict(self)
        data["size"] = str(self.size)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "RunConfig":
        fields = dict(data)
        fields["size"] = parse_size(fields["size"])
        for key in ("distortion_ids", "levels", "metrics"):
            fields[key] = tuple(fields[key])
        fields["keep_pngs"] = tuple(fields.get("keep_pngs", ()))  # absent before the option
        if fields.get("compose") is not None:
            fields["compose"] = tuple(fields["compose"])
        fields["type_levels"] = tuple((d, tuple(levels)) for d, levels in  # absent before
                                      fields.get("type_levels", ()))      # the option
        fields.setdefault("undoing_apart", False)  # absent before the rule: drawn without it
        fields.setdefault("split_by_name", False)  # absent before the rule: split by id
        return cls(**fields)

    def plan_inputs(self) -> dict:
        """What the shard plan depends on (never the cluster's size or timing)."""
        keys = ("seed", "shard_refs", "limit", "distortion_ids", "levels", "metrics", "codec",
                "allow_upscale", "max_pixels")
        modes = {key: getattr(self, key) for key, default in MODE_DEFAULTS.items()
                 if getattr(self, key) != default}
        # only where it decides the draw, and only the new rule: older plans keep their digest
        rule = {"undoing_apart": True} if self.undoing_apart and self.holds_undoing_pairs else {}
        return {**{key: getattr(self, key) for key in keys}, "size": str(self.size), **modes,
                **rule}


def manifest_config(location: Location) -> RunConfig:
    """The run configuration a dataset's manifest.json records; a RunFileError naming what is
    damaged where it cannot be read as one."""
    return recorded_config(run_file(location, MANIFEST_FILE),
                           redact(location.path(MANIFEST_FILE)))


def recorded_config(manifest: dict, shown: str) -> RunConfig:
    """The run configuration of a read manifest (`shown`: its path, for errors); a
    RunFileError naming what is damaged where it is not one."""
    try:
        return RunConfig.from_json(manifest["config"])
    except KeyError as error:
        raise RunFileError(f"{shown} lacks the field {error}: damaged") from None
    except (TypeError, ValueError, AttributeError) as error:
        raise RunFileError(f"{shown} is damaged ({type(error).__name__}: {error})") from None


def _as_ranges(ids: list[int]) -> str:
    """[1, 2, 3, 5, 7, 8] -> '1-3,5,7-8': ids as --distortions reads them."""
    runs: list[list[int]] = []
    for i in ids:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ",".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else f"{run[0]}" for run in runs)
