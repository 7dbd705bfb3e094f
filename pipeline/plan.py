"""The deterministic shard plan: sources sorted by their relative path or URI, each given a
ref_id and a seeded train/val/test split, shard k holding references k*R .. k*R+R-1. It is
persisted with a digest; a rerun with a different plan refuses to resume."""

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np

import distortions
from distortions.canonical import canonical_json
from distortions.seeding import stable_hash
from pipeline.config import (
    MODE_DEFAULTS,
    SPLIT_FRACTIONS,
    STORAGE_INPUTS,
    RunConfig,
    manifest_config,
)
from pipeline.errors import PlanMismatchError, UnfinishedDatasetError
from pipeline.report_check import (
    held_counts,
    report_count_problems,
    report_form_problems,
    stats_counts,
)
from pipeline.sources import Source
from shards.keys import ref_ids, safe_name
from shards.layout import (
    MANIFEST_FILE,
    PLAN_FILE,
    REPORT_FILE,
    RunFileError,
    plan_digest,
    run_file,
    shard_count,
)
from shards.lease import writing_now
from shards.reader import damage_message, examine_shard, shard_states
from shards.reads import read_ahead
from shards.storage import Location, redact
from shards.words import a_few


@dataclass(frozen=True)
class PlannedReference:
    ref_id: str
    uri: str
    order_key: str
    split: str
    key: str = ""  # an object-store listing's key (Source.key)

    def to_json(self) -> dict:
        """Its fields; an empty key is left out, so plans without keys keep their digest."""
        return {name: value for name, value in asdict(self).items() if name != "key" or value}

    def source(self) -> Source:
        return Source(self.uri, self.order_key, self.ref_id, self.key)


@dataclass(frozen=True)
class Duplicate:
    """A source left out of the plan: the same bytes as the planned reference `of`."""

    ref_id: str
    uri: str
    of: str


def split_of(name: str, seed: int) -> str:
    """train / val / test (80/10/10) from a seeded hash of a reference's name (split_rule)."""
    u = stable_hash("split", seed, name) / 2**64
    train, val, _ = SPLIT_FRACTIONS
    return "train" if u < train else "val" if u < train + val else "test"


def split_rule(config: RunConfig, ids: list[str], names: list[str]
               ) -> tuple[list[str], dict]:
    """(what each reference's split is drawn from, what the plan's inputs record of it): its
    name, the safe stem of its file (so a photo keeps its split when sources of the same name
    join the folder and its id takes a suffix, and copies of one name share one), recorded
    only where an id differs from its name (older plans keep their digest); or, for a
    dataset planned before this rule (split_by_name False), its id."""
    if not config.split_by_name or ids == names:
        return ids, {}
    return names, {"split_by": "name"}


Chain = tuple[tuple[int, int], ...]  # (distortion id, level) links in application order


def scenarios_for(ref_id: str, config: RunConfig) -> list[tuple[int, int]]:
    """The (distortion id, level) pairs made of one reference, in id order: the full grid, or
    with versions_per_ref K, K distinct types drawn from the selected ones, each at a level
    drawn from the selected levels (seeded by the run seed and the ref_id, so a rerun or a
    replay draws the same)."""
    if not config.versions_per_ref:
        return config.scenarios
    rng = np.random.default_rng(stable_hash("versions", config.seed, ref_id))
    types = rng.choice(config.distortion_ids, size=config.versions_per_ref, replace=False)
    levels = rng.choice(config.levels, size=config.versions_per_ref)
    return sorted((int(d), own_level(config, int(d), int(lv), ref_id))
                  for d, lv in zip(types, levels, strict=True))


def own_level(config: RunConfig, distortion_id: int, drawn: int, *seeds: object) -> int:
    """`drawn` (from the run's levels), or for a type made at levels of its own
    (type_levels) one of those, drawn apart (seeded by the run seed, `seeds` and the type),
    so the other types' draws are what they are without type levels."""
    own = dict(config.type_levels).get(distortion_id)
    if own is None:
        return drawn
    rng = np.random.default_rng(stable_hash("own-level", config.seed, *seeds, distortion_id))
    return int(rng.choice(own))


def chains_for(ref_id: str, config: RunConfig) -> list[Chain]:
    """With compose (K, M): each composed version of one reference, in version order, as its
    chain of (distortion id, level) links in application order: K-M distinct types (the count
    drawn per version) from the selected ones, in drawn order, each at a level drawn from the
    selected levels; seeded by the run seed, the ref_id and the version index."""
    low, high = config.compose
    chains = []
    for index in range(config.versions_count):
        rng = np.random.default_rng(stable_hash("compose", config.seed, ref_id, index))
        count = int(rng.integers(low, high + 1))
        types = _chain_types(rng.choice(config.distortion_ids, size=count, replace=False),
                             config, ref_id, index)
        levels = rng.choice(config.levels, size=count)
        chains.append(tuple((int(d), own_level(config, int(d), int(lv), ref_id, index))
                            for d, lv in zip(types, levels, strict=True)))
    return chains


def _chain_types(drawn: np.ndarray, config: RunConfig, ref_id: str, index: int) -> list[int]:
    """A chain's types: those `drawn`, or, where two of them undo each other (over- then
    underexposure), as many drawn again one at a time, each taking its undoer out of the
    types left (a chain drawn without such a pair keeps its draw: the plans of datasets made
    before this rule are unchanged but for those chains)."""
    types = [int(d) for d in drawn]
    if not config.undoing_apart or not any(
            other in types for d in types for other in distortions.undoing(d)):
        return types
    rng = np.random.default_rng(stable_hash("compose-undone", config.seed, ref_id, index))
    left, types = list(config.distortion_ids), []
    while len(types) < len(drawn):  # enough are left: RunConfig checks longest_chain
        pick = int(rng.choice(left))
        types.append(pick)
        left = [d for d in left if d != pick and d not in distortions.undoing(pick)]
    return types


def second_links(ref_id: str, config: RunConfig) -> dict[int, Chain]:
    """With compose_share p: {index in scenarios_for: its chain of two} of the versions of one
    reference that compose a second distortion. Each version composes with probability p (a
    learned-denoiser version never does), its second type drawn from the other selected types
    that compose. The two share one level as Re-IQA's code splits it (l1 ~ U{0..4},
    l2 ~ U{0..l1}; the first type at l1 - l2, the second at l2): by rank among the selected
    levels, the two ranks sum to a drawn rank, so no composed version is worse than the worst
    single level twice over (a type with levels of its own takes one of them, drawn apart by
    own_level, whatever its share: its pair may pass the drawn rank). A type never composes
    the type that undoes it (where the draw picks it, the second type is drawn again from the
    others, so versions drawn without it keep the draw of datasets made before this rule).
    Seeded by the run seed, the ref_id and the version's index."""
    if not config.compose_share:
        return {}
    composable = [d for d in config.distortion_ids if not distortions.get(d).learned]
    levels = sorted(config.levels)
    chains = {}
    for index, (first, _) in enumerate(scenarios_for(ref_id, config)):
        rng = np.random.default_rng(stable_hash("compose-share", config.seed, ref_id, index))
        if rng.random() >= config.compose_share or first not in composable:
            continue
        second = _second_type(int(rng.choice([d for d in composable if d != first])), first,
                              composable, config, ref_id, index)
        if second is None:  # (only its undoer composes)
            continue
        total = int(rng.integers(len(levels)))
        second_rank = int(rng.integers(total + 1))
        chains[index] = tuple(
            (distortion, own_level(config, distortion, levels[rank], ref_id, index))
            for distortion, rank in ((first, total - second_rank), (second, second_rank)))
    return chains


def _second_type(drawn: int, first: int, composable: list[int], config: RunConfig,
                 ref_id: str, index: int) -> int | None:
    """The second type of a composed version: `drawn`, or, where it undoes `first` under the
    run's chain rule, one drawn again from the other composable types (None: there is none)."""
    if not config.undoing_apart or drawn not in distortions.undoing(first):
        return drawn
    others = [d for d in composable if d != first and d not in distortions.undoing(first)]
    if not others:
        return None
    rng = np.random.default_rng(stable_hash("compose-share-undone", config.seed, ref_id, index))
    return int(rng.choice(others))


def planned_versions(ref_id: str, config: RunConfig
                     ) -> tuple[list[tuple[int, int]], list[tuple[int, Chain]]]:
    """The versions of one reference: (its single-type versions as (id, level), its chains
    as (version index, chain)): the grid or drawn types; --compose's chains; or, with
    compose_share, the drawn types of which some compose a second (second_links)."""
    if config.compose:
        return [], list(enumerate(chains_for(ref_id, config)))
    scenarios, composed = scenarios_for(ref_id, config), second_links(ref_id, config)
    return ([scenario for index, scenario in enumerate(scenarios) if index not in composed],
            list(composed.items()))


def chosen(sources: list[Source], config: RunConfig) -> list[Source]:
    """The sources a run uses: the first --limit of the listing, or all."""
    return sources[: config.limit] if config.limit else sources


@dataclass(frozen=True)
class Plan:
    inputs: dict
    references: tuple[PlannedReference, ...]
    duplicates: tuple[Duplicate, ...] = ()
    # each reference's file size and modification time (ns) where the listing told them (None
    # elsewhere; () in plans made before they were kept): outside the digest, so a resume can
    # say which sources changed
    source_bytes: tuple[int | None, ...] = ()
    source_mtimes: tuple[int | None, ...] = ()

    @classmethod
    def make(cls, sources: list[Source], config: RunConfig, labels: dict | None = None,
             duplicates: dict[int, int] | None = None) -> "Plan":
        """The plan of `config` over `sources`; `labels` (label_identity) puts what Q means
        into the digest, so a dataset never mixes two ensembles. `duplicates` ({index in the
        chosen sources: index of the source it repeats}) are left out and listed."""
        used = chosen(sources, config)
        ids = ref_ids(source.stem for source in used)
        drawn, rule = split_rule(config, ids, [safe_name(source.stem) for source in used])
        repeats = duplicates or {}
        references = tuple(
            PlannedReference(ref_id, s.uri, s.order_key, split_of(name, config.seed), s.key)
            for i, (ref_id, name, s) in enumerate(zip(ids, drawn, used, strict=True))
            if i not in repeats)
        left_out = tuple(Duplicate(ids[i], used[i].uri, ids[j]) for i, j in sorted(repeats.items()))
        kept = [s for i, s in enumerate(used) if i not in repeats]
        return cls({**config.plan_inputs(), **rule, **(labels or {})}, references, left_out,
                   _known(s.size for s in kept), _known(s.mtime_ns for s in kept))

    @property
    def shard_refs(self) -> int:
        return self.inputs["shard_refs"]

    @property
    def shard_count(self) -> int:
        return shard_count(len(self.references), self.shard_refs)

    def shard(self, index: int) -> tuple[PlannedReference, ...]:
        return self.references[index * self.shard_refs:(index + 1) * self.shard_refs]

    def part(self, index: int) -> "ShardPlan":
        """What shard `index`'s task needs of the plan."""
        return ShardPlan(index, self.shard(index), self.digest)

    def to_json(self) -> dict:
        """Its fields: what the digest covers, and the sources' sizes and times where known."""
        document = self._identity()
        for name in LISTING_FIELDS:
            if getattr(self, name):
                document[name] = list(getattr(self, name))
        return document

    def _identity(self) -> dict:
        """What the dataset is made of (duplicates only where there are some: older plans keep
        their digest)."""
        document = {"inputs": self.inputs, "references": [r.to_json() for r in self.references]}
        if self.duplicates:
            document["duplicates"] = [asdict(d) for d in self.duplicates]
        return document

    @cached_property
    def digest(self) -> str:
        return plan_digest(self._identity())

    @classmethod
    def from_json(cls, data: dict) -> "Plan":
        """The plan a plan.json holds; a ValueError where it is not one."""
        try:
            plan = cls(data["inputs"], tuple(PlannedReference(**r) for r in data["references"]),
                       tuple(Duplicate(**d) for d in data.get("duplicates", ())),
                       *(tuple(data.get(name, ())) for name in LISTING_FIELDS))
            if isinstance(plan.shard_refs, bool) or plan.shard_refs < 1:
                raise TypeError(f"shard_refs {plan.shard_refs!r}")
            for name in LISTING_FIELDS:
                values = getattr(plan, name)
                if values and (len(values) != len(plan.references) or not all(
                        value is None or type(value) is int for value in values)):
                    raise TypeError(f"{name} is not one integer (or null) per reference")
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a shard plan ({type(error).__name__}: {error}): a "
                             f"{PLAN_FILE} generate did not write, or a damaged one") from None
        return plan


LISTING_FIELDS = ("source_bytes", "source_mtimes")  # Plan's fields the digest leaves out


@dataclass(frozen=True)
class ShardPlan:
    """One shard's part of a plan: its references and the plan's digest (its stats name it),
    what a shard task is sent (the whole plan, rebuilt and hashed in every task, cost 1 s a
    task at 140,000 references: shards x references over a run)."""

    index: int
    references: tuple[PlannedReference, ...]
    digest: str

    def shard(self, index: int) -> tuple[PlannedReference, ...]:
        if index != self.index:
            raise ValueError(f"the plan's part of shard {self.index}, asked for shard {index}")
        return self.references

    def to_json(self) -> dict:
        return {"index": self.index, "references": [r.to_json() for r in self.references],
                "digest": self.digest}

    @classmethod
    def from_json(cls, data: dict) -> "ShardPlan":
        return cls(data["index"], tuple(PlannedReference(**r) for r in data["references"]),
                   data["digest"])


def _known(values: Iterable[int | None]) -> tuple[int | None, ...]:
    """One value per reference, or () where the listing told none."""
    values = tuple(values)
    return values if any(value is not None for value in values) else ()


def label_identity(ensemble_hash: str, absent: tuple[str, ...]) -> dict:
    """What a label Q means: the ensemble file's hash and the metrics it had to go without."""
    return {"ensemble_hash": ensemble_hash, "metrics_absent": sorted(absent)}


def differences(old: Plan, new: Plan) -> list[str]:
    """What differs between two plans, in words (values compared as the plan file holds them:
    a tuple and its list are the same)."""
    keys = sorted(old.inputs.keys() | new.inputs.keys())
    # a plan leaves a mode at its default out: shown and compared as that default
    before = {key: old.inputs.get(key, MODE_DEFAULTS.get(key)) for key in keys}
    after = {key: new.inputs.get(key, MODE_DEFAULTS.get(key)) for key in keys}
    changed = [f"{key} {_shown(before[key])} -> {_shown(after[key])}" for key in keys
               if canonical_json(before[key]) != canonical_json(after[key])]
    if (old.references, old.duplicates) != (new.references, new.duplicates):
        changed.append(f"sources ({len(old.references)} -> {len(new.references)} references, "
                       f"{len(old.duplicates)} -> {len(new.duplicates)} duplicates"
                       f"{_first_reference_difference(old, new)})")
    return changed


def _shown(value) -> str:
    """A plan input as the plan file holds it (tuples, nested too, as lists)."""
    return repr(_listed(value))


def _listed(value):
    return [_listed(item) for item in value] if isinstance(value, tuple | list) else value


def _first_reference_difference(old: Plan, new: Plan) -> str:
    """Where the first reference differs (a path spelled otherwise shows here)."""
    for before, after in zip(old.references, new.references, strict=False):
        if before != after:
            fields = [f"{name} {value!r} -> {getattr(after, name)!r}"
                      for name, value in asdict(before).items() if value != getattr(after, name)]
            return f"; the first that differs, {before.ref_id}: {', '.join(fields)}"
    shorter = min(len(old.references), len(new.references))
    if len(old.references) > shorter:  # the same but for the end of the sort order
        return f"; gone from the end, {old.references[shorter].uri!r} and on"
    if len(new.references) > shorter:
        return f"; new at the end, {new.references[shorter].uri!r} and on"
    return ""


def read_plan(location: Location) -> Plan:
    """The plan in a dataset's plan.json; a RunFileError where there is none or it is not one."""
    document = run_file(location, PLAN_FILE)
    try:
        return Plan.from_json(document)
    except ValueError as error:
        raise RunFileError(f"{location.path(PLAN_FILE)}: {error}") from None


def persist_or_check(plan: Plan, location: Location, restart: bool = False) -> bool:
    """Write the plan, or check it against the one already there. Returns True when an
    earlier run of this same plan exists (resume: source_changes then checks its sources
    against the finished shards). A different plan raises PlanMismatchError unless `restart`
    is set, in which case the caller clears the output first."""
    path = location.path(PLAN_FILE)
    if location.exists(path) and not restart:
        existing = read_plan(location)
        if existing.digest != plan.digest:
            raise PlanMismatchError(
                f"{location.root} holds another plan ({existing.digest[:12]}) than this run's "
                f"({plan.digest[:12]}): {'; '.join(differences(existing, plan))}. Resuming "
                "would mix two datasets: rerun with --restart to start over, or choose "
                "another --out")
        return True
    location.makedirs(location.root)
    record_plan(location, plan)
    return False


def sources_changed(location: Location, changed: list[str], since: str) -> PlanMismatchError:
    """The refusal of a resume whose sources changed (`changed`: each, in words)."""
    return PlanMismatchError(
        f"{location.root}: {len(changed)} sources changed {since} "
        f"({a_few(changed, '; ')}). Resuming would mix "
        "images made from two versions of them: restore them, or rerun with --restart to "
        "start over")


def record_plan(location: Location, plan: Plan) -> None:
    """Write the dataset's plan.json."""
    document = {**plan.to_json(), "digest": plan.digest}
    location.write_json(location.path(PLAN_FILE), document)


def _check_storage(location: Location, plan: "Plan") -> None:
    """A RunFileError where the manifest's configuration cannot be read, or its storage (how
    commands read the tars) is not the plan's: an edited or damaged manifest.json."""
    config = manifest_config(location)

    def storage(inputs: dict) -> str:
        return json.dumps([inputs.get(name, MODE_DEFAULTS[name]) for name in STORAGE_INPUTS])
    if storage(config.plan_inputs()) != storage(plan.inputs):
        raise RunFileError(f"{redact(location.path(MANIFEST_FILE))} stores versions as "
                           f"{storage(config.plan_inputs())}, the plan as "
                           f"{storage(plan.inputs)} (store, keep_pngs): edited or damaged")


def finished_plan(location: Location) -> "Plan":
    """The plan of a dataset generate finished: its report written (a run's last act), every
    shard complete, none damaged (its lists there, its parquet of the samples its stats count);
    an UnfinishedDatasetError naming what is missing otherwise (nothing partial is read), a
    RunFileError where a run file is damaged (the report too: its fields, and its counts
    against the shards')."""
    if not location.exists(location.root):
        raise UnfinishedDatasetError(f"{location.root} does not exist")
    if not location.is_dir(location.root):
        raise UnfinishedDatasetError(f"{location.root} is a file, not a dataset folder")
    if not location.exists(location.path(PLAN_FILE)):
        raise UnfinishedDatasetError(f"{location.root} has no {PLAN_FILE}: not a dataset written "
                                     "by generate")
    if not location.exists(location.path(MANIFEST_FILE)):
        raise UnfinishedDatasetError(f"{location.root} has no {MANIFEST_FILE}: not a finished "
                                     "dataset (generate resumes it)")
    if not location.exists(location.path(REPORT_FILE)):
        writer = writing_now(location)
        raise UnfinishedDatasetError(
            f"{location.root} has no {REPORT_FILE}: "
            + (f"{writer}: wait until it ends" if writer else
               "generate has not finished it (rerun it to resume)"))
    report = run_file(location, REPORT_FILE)  # (copied by convert) named before any work
    if form := report_form_problems(report):
        raise RunFileError(f"{redact(location.root)}: {'; '.join(form)}")
    plan = read_plan(location)
    _check_storage(location, plan)
    complete, damaged = shard_states(location)
    store = plan.inputs.get("store", MODE_DEFAULTS["store"])
    counts, statuses = Counter(), {}
    examined = read_ahead(lambda index: _examined(location, index, plan.digest, store),
                          complete)  # what a reader does not check: the lists, parquet rows
    for index, (problems, counted, listed) in zip(complete, examined, strict=True):
        if problems:
            damaged[index] = "; ".join(problems)
        counts.update(counted)
        statuses.update(listed)
    if damaged:
        raise UnfinishedDatasetError(damage_message(location, damaged))
    missing = sorted(set(range(plan.shard_count)) - set(complete))
    if missing:
        raise UnfinishedDatasetError(f"{location.root}: shards {missing} are not complete; "
                                     "finish the run (generate resumes) first")
    held = held_counts(counts, statuses.values(), len(plan.duplicates))
    if differing := report_count_problems(report, held):  # an edited report convert would copy
        raise RunFileError(f"{redact(location.root)}: {'; '.join(differing)}")
    return plan


def _examined(location: Location, index: int, digest: str, store: str
              ) -> tuple[list[str], Counter, dict[str, str | None]]:
    """A finished shard's problems, the report's counts its stats give, and the status of
    each source its list names (only these kept: not its index bytes)."""
    examination = examine_shard(location, index, digest, store)
    return (examination.problems, stats_counts(examination.stats),
            {row["ref_id"]: row.get("status") for row in examination.sources or ()})
