"""Composition (issue 14, item 2): `--compose K[-M]`, each version a chain of K-M distinct
types applied in order; the chain recorded in the sample .json and the parquet index, its
recipe replayed link by link."""

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import distortions
from labelers import Labeler
from pipeline import cli
from pipeline.commands.contact_sheet import render_shard_sheet
from pipeline.commands.deep_check import deep_check
from pipeline.commands.inspect_dataset import inspect
from pipeline.commands.validate_levels import validate_levels
from pipeline.config import RunConfig
from pipeline.errors import PlanMismatchError
from pipeline.plan import Plan, chains_for, persist_or_check
from pipeline.report import write_run_files
from pipeline.sources import list_sources
from pipeline.worker import produce_shard
from shards import open_dataset
from shards.keys import composed_key, ref_id_of
from shards.layout import shard_paths, tar_path
from shards.png import decode_png
from shards.reader import read_index, tar_members
from shards.schema import chain_of
from shards.storage import Location
from tests.conftest import (
    finish,
    local_scorer,
    rewrite_tar,
    stats_agree,
    stats_before_index_digests,
)

TYPES = (1, 3, 13, 16, 20)  # jpeg, white noise, gaussian blur, brighten, contrast change


def _run(config, ensemble):
    """A Ray-free run (produce_shard per shard), with its manifest and report written."""
    plan = Plan.make(list_sources(config.sources), config)
    location = Location.parse(config.out)
    persist_or_check(plan, location)
    write_run_files(location, config, plan, ensemble, ())
    scorer = local_scorer(Labeler(metrics=config.metrics or ("mae",), device="cpu"))
    for index in range(plan.shard_count):
        produce_shard(index, plan, config, scorer, ensemble, location)
    finish(location, plan, config)
    return plan, location


def _records(location, plan):
    """key -> (sample .json, decoded pixels) of every shard."""
    found = {}
    for index in range(plan.shard_count):
        for key, parts in tar_members(location, tar_path(location, index, "images")).items():
            found[key] = (json.loads(parts["json"]), decode_png(parts["png"]))
    return found


@pytest.mark.slow
def test_a_composed_run_stores_each_chain_applied_link_by_link(fast_config, mae_ensemble):
    config = fast_config("embedded", limit=3, shard_refs=2, distortion_ids=TYPES,
                         levels=(2, 4), compose=(2, 3), versions_per_ref=3)
    plan, location = _run(config, mae_ensemble)
    records = _records(location, plan)
    composed = {key: item for key, item in records.items() if item[0]["kind"] == "distorted"}
    assert len(composed) == 3 * 3  # --versions-per-ref 3 chains of each reference
    for key, (record, stored) in composed.items():
        ref_id = record["ref_id"]
        assert ref_id_of(key) == ref_id and "." not in key
        index = int(key.rpartition("_c")[2])
        chain = chains_for(ref_id, config)[index]
        assert record["chain"] == [{"id": d, "level": lv} for d, lv in chain]
        assert (record["distortion_id"], record["level"]) == chain[0]  # the first link's
        by_hand = records[f"{ref_id}_ref"][1]  # an independent check: apply, link by link
        for d, lv in chain:
            by_hand, _ = distortions.apply(by_hand, d, lv,
                                           distortions.derive_seed(config.seed, key, d, lv))
        assert np.array_equal(stored, by_hand)
        replayed = distortions.replay(records[f"{ref_id}_ref"][1], record["recipe"])
        assert np.array_equal(replayed, stored)
    rows = {row["key"]: row for row in read_index(location).to_pylist()}
    assert len(rows) == len(records)  # keys unique across the dataset
    assert all(rows[key]["chain"] == record.get("chain") for key, (record, _) in records.items())
    assert all(record["meta"]["chain"] == records[record["key"]][0]["chain"]
               for record in open_dataset(config.out).samples(decode=False))
    with pytest.raises(ValueError, match="composed version"):
        render_shard_sheet(tar_path(location, 0, "images"))


@pytest.mark.slow
def test_inspect_finds_no_problem_in_a_composed_dataset_and_replays_it(fast_config,
                                                                       mae_ensemble, tmp_path):
    config = fast_config("embedded", limit=2, shard_refs=1, distortion_ids=(1, 13, 16),
                         levels=(1, 5), compose=(2, 3))
    _run(config, mae_ensemble)
    lines, problems = inspect(config.out, deep=100)
    assert problems == []
    assert "compose (2, 3)" in lines[1]
    assert "6 sampled versions: 6 replayed exactly" in lines[-1]  # one chain per type
    location = Location.parse(config.out)
    report = json.loads(location.read_bytes(location.path("report.json")))
    assert report["modes"]["compose"] == [2, 3] and report["distorted"] == 6
    assert report["mean_quality_by_scenario"] == {}  # a chain has no (type, level) of its own
    with pytest.raises(ValueError, match="made with --compose"):
        validate_levels(config.out, tmp_path / "levels")


def test_compose_draws_2_to_4_distinct_types_per_version_reproducibly(fast_config):
    config = fast_config("embedded", distortion_ids=TYPES, levels=(2, 4), compose=(2, 4))
    assert config.versions_count == len(TYPES)  # the default: one chain per selected type
    refs = [f"photo{i}" for i in range(40)]
    drawn = {ref: chains_for(ref, config) for ref in refs}
    lengths = set()
    for chains in drawn.values():
        assert len(chains) == len(TYPES)
        for chain in chains:
            types = [d for d, _ in chain]
            assert 2 <= len(chain) <= 4 and len(set(types)) == len(types)
            assert set(types) <= set(TYPES) and {lv for _, lv in chain} <= {2, 4}
            lengths.add(len(chain))
    assert lengths == {2, 3, 4}
    again = fast_config("embedded", distortion_ids=TYPES, levels=(2, 4), compose=(2, 4))
    assert {ref: chains_for(ref, again) for ref in refs} == drawn  # reproducible
    assert len({tuple(chains) for chains in drawn.values()}) == len(refs)  # per reference
    other_seed = fast_config("embedded", distortion_ids=TYPES, levels=(2, 4), compose=(2, 4),
                             seed=1)
    assert chains_for("photo0", other_seed) != drawn["photo0"]
    assert len(chains_for("photo0", fast_config("embedded", distortion_ids=TYPES,
                                                compose=(2, 2), versions_per_ref=12))) == 12


def test_composed_keys_are_unique_and_map_back_to_their_reference():
    keys = [composed_key(ref, i) for ref in ("a", "a_c001", "b_d01_l1") for i in (0, 1, 1000)]
    assert len(set(keys)) == len(keys) and not any("." in key for key in keys)
    assert [ref_id_of(key) for key in keys] == [ref for ref in ("a", "a_c001", "b_d01_l1")
                                                for _ in range(3)]
    assert composed_key("a", 7) == "a_c007"


def test_compose_is_a_validated_mode_in_the_plan_digest(fast_config):
    with pytest.raises(ValueError, match=r"compose 3-2: needs 1 <= K <= M <= 3"):
        fast_config("embedded", compose=(3, 2))
    with pytest.raises(ValueError, match=r"compose 0-2"):
        fast_config("embedded", compose=(0, 2))
    with pytest.raises(ValueError, match=r"compose 2-4: needs 1 <= K <= M <= 3 \(the types"):
        fast_config("embedded", compose=(2, 4))
    with pytest.raises(ValueError, match=r"learned-denoiser types \[8, 9\] cannot be composed"):
        fast_config("embedded", distortion_ids=(1, 8, 9, 13), compose=(2, 2))
    with pytest.raises(ValueError) as refused:  # the paper's 33: what to give instead
        fast_config("embedded", distortion_ids=tuple(range(1, 34)), compose=(2, 2))
    value = str(refused.value).rpartition("--distortions ")[2]
    assert value == "1-7,13-33"
    assert cli._distortion_ids(value) == tuple(i for i in range(1, 34) if i not in range(8, 13))
    with pytest.raises(ValueError, match="versions_per_ref must be at least 1"):
        fast_config("embedded", compose=(2, 2), versions_per_ref=0)
    assert cli._compose("2") == (2, 2) and cli._compose("2-4") == (2, 4)
    with pytest.raises(argparse.ArgumentTypeError, match="K or K-M"):
        cli._compose("two")
    args = cli.build_parser().parse_args(["generate", "--sources", "embedded", "--out", "o",
                                          "--distortions", "1-5", "--compose", "2-4"])
    assert cli.run_config(args).compose == (2, 4)
    base = fast_config("embedded")
    composed = fast_config("embedded", compose=(2, 3))
    assert "compose" not in base.plan_inputs() and composed.plan_inputs()["compose"] == (2, 3)
    sources = list_sources("embedded")
    assert Plan.make(sources, base).digest != Plan.make(sources, composed).digest
    assert composed.modes()["compose"] == (2, 3) and base.modes()["compose"] is None
    assert RunConfig.from_json(json.loads(json.dumps(composed.to_json()))) == composed


@pytest.mark.slow
def test_single_distortion_samples_read_a_chain_of_one_in_old_datasets_too(fast_config,
                                                                         mae_ensemble):
    config = fast_config("embedded", limit=2, shard_refs=1, distortion_ids=(1, 13),
                         levels=(1,), metrics=())
    _run(config, mae_ensemble)
    one = [{"id": 1, "level": 1}]
    rows = read_index(Location.parse(config.out)).to_pylist()
    assert all(row["chain"] == ([{"id": row["distortion_id"], "level": 1}]
                                if row["kind"] == "distorted" else None) for row in rows)
    path = shard_paths(Location.parse(config.out), 0)["parquet"]
    pq.write_table(pq.read_table(path).drop_columns(["chain"]), path)  # as before chains
    stats_before_index_digests(Path(path))  # (and before the stats recorded the index)
    location = Location.parse(config.out)
    assert read_index(location).to_pylist() == rows  # old shard beside a new one
    assert read_index(location, [0], ["key", "chain"]).column_names == ["key", "chain"]
    assert read_index(location, [0], ["key"]).column_names == ["key"]
    old_json = {"kind": "distorted", "distortion_id": 1, "level": 1}
    assert chain_of(old_json) == one and chain_of({"kind": "reference"}) is None
    rewrite_tar(Path(tar_path(location, 0, "images")), change=lambda name, data: (
        json.dumps({k: v for k, v in json.loads(data).items() if k != "chain"}).encode()
        if name.endswith(".json") else data))  # the records, as before chains, too
    lines, problems = deep_check(location, 100)
    assert problems == [] and "4 replayed exactly" in lines[0]


def test_compose_share_composes_about_that_share_of_the_drawn_versions(fast_config):
    """Re-IQA (seed-methods.md): 11 copies of distinct types, rarely (10%) one composing two
    distortions. The drawn types stay those of the run without composition; a second type is
    never the first nor a learned one; the share over 2,200 versions is 10% within 3 binomial
    standard deviations (sqrt(2200 x 0.1 x 0.9) = 14). The two links share one level as
    Re-IQA's code splits it (l1 ~ U{0..4}, l2 ~ U{0..l1}, the links at l1 - l2 and l2): their
    0-based levels sum to at most 4, and every split of each sum occurs."""
    from pipeline.plan import planned_versions, scenarios_for, second_links

    bank = distortions.bank_ids("reiqa")
    plain = fast_config("embedded", bank="reiqa", distortion_ids=bank, levels=(1, 2, 3, 4, 5),
                        versions_per_ref=11)
    config = fast_config("embedded", bank="reiqa", distortion_ids=bank,
                         levels=(1, 2, 3, 4, 5), versions_per_ref=11, compose_share=0.1)
    composed, splits = 0, set()
    for ref_id in (f"ref{i}" for i in range(200)):
        scenarios = scenarios_for(ref_id, config)
        assert scenarios == scenarios_for(ref_id, plain)
        chains = second_links(ref_id, config)
        assert chains == second_links(ref_id, config)  # seeded
        for index, ((first, first_level), (second, second_level)) in chains.items():
            assert first == scenarios[index][0] and second != first
            assert not distortions.get(first).learned and not distortions.get(second).learned
            assert (first_level - 1) + (second_level - 1) <= 4
            splits.add((first_level, second_level))
        singles, planned = planned_versions(ref_id, config)
        assert len(singles) + len(planned) == 11
        types = [d for d, _ in singles] + [chain[0][0] for _, chain in planned]
        assert sorted(types) == sorted(d for d, _ in scenarios)  # the first links' types
        composed += len(chains)
    assert abs(composed - 220) <= 3 * 14
    assert splits == {(a, b) for a in range(1, 6) for b in range(1, 6) if a + b - 2 <= 4}


@pytest.mark.slow
def test_a_compose_share_run_stores_its_chains_beside_single_versions(fast_config,
                                                                      mae_ensemble):
    config = fast_config("embedded", limit=2, shard_refs=2, distortion_ids=TYPES,
                         levels=(2, 4), versions_per_ref=4, compose_share=0.5)
    from pipeline.plan import planned_versions

    plan, location = _run(config, mae_ensemble)
    records = _records(location, plan)
    distorted = {key: item for key, item in records.items() if item[0]["kind"] == "distorted"}
    assert len(distorted) == 2 * 4
    for key, (record, stored) in distorted.items():
        ref_id = record["ref_id"]
        singles, chains = planned_versions(ref_id, config)
        links = [(link["id"], link["level"]) for link in record["chain"]]
        if len(links) == 1:
            assert links[0] in singles and "_c" not in key
        else:
            assert (int(key.rpartition("_c")[2]), tuple(links)) in chains
        replayed = distortions.replay(records[f"{ref_id}_ref"][1], record["recipe"])
        assert np.array_equal(replayed, stored)
    assert any(len(item[0]["chain"]) == 2 for item in distorted.values())
    assert inspect(str(location.root))[1] == []
    for ref_id in {record["ref_id"] for record, _ in distorted.values()}:  # a sheet of its
        chained = sum(len(record["chain"]) > 1 for record, _ in distorted.values()  # singles
                      if record["ref_id"] == ref_id)
        assert render_shard_sheet(tar_path(location, 0, "images"), ref_id)[1] == chained


def test_compose_share_is_refused_outside_drawn_versions(fast_config):
    with pytest.raises(ValueError, match="compose_share applies to versions drawn"):
        fast_config("embedded", compose_share=0.1)
    with pytest.raises(ValueError, match="compose_share applies to versions drawn"):
        fast_config("embedded", distortion_ids=TYPES, versions_per_ref=3, compose=(2, 2),
                    compose_share=0.1)
    with pytest.raises(ValueError, match=r"compose_share must be a fraction in \[0, 1\]"):
        fast_config("embedded", distortion_ids=TYPES, versions_per_ref=3, compose_share=1.5)
    with pytest.raises(argparse.ArgumentTypeError, match="a fraction in"):
        cli._fraction("nan")
    plain = fast_config("embedded", distortion_ids=TYPES, versions_per_ref=3)
    shared = fast_config("embedded", distortion_ids=TYPES, versions_per_ref=3,
                         compose_share=0.1)
    assert "compose_share" not in plain.plan_inputs()  # older datasets keep their digest
    assert shared.plan_inputs()["compose_share"] == 0.1
    assert RunConfig.from_json(shared.to_json()) == shared


def test_no_chain_holds_two_types_that_undo_each_other(fast_config):
    """+1 stop then -1 stop gives the photo back but for clipping (checked here on a photo):
    a chain holding both would be labelled with two distortions it hardly shows. Neither
    --compose nor --compose-share puts them together; a chain drawn without such a pair is
    the draw it was before the rule (its types the run rng's first choice); a selection whose
    chains could not avoid the pair is refused."""
    from pipeline.plan import second_links

    photo = distortions.apply(np.full((176, 192, 3), 100, np.uint8), 3, 1, 1)[0]
    over, under = (distortions.get(name).id for name in ("overexposure", "underexposure"))
    there, _ = distortions.apply(photo, over, 2, 1)
    back, _ = distortions.apply(there, under, 2, 1)
    gap = np.abs(back.astype(int) - photo.astype(int))
    assert gap.max() <= 2 and np.abs(there.astype(int) - photo.astype(int)).mean() > 30
    assert distortions.undoing(over) == {under} and distortions.undoing(under) == {over}
    assert distortions.longest_chain((1, over, under, 13)) == 3

    ids = (1, 13, 15, over, under, 42, 43)
    config = fast_config("embedded", bank="registered", distortion_ids=ids, levels=(1, 3, 5),
                         compose=(2, 4))
    held = 0
    for ref_id in (f"r{i}" for i in range(60)):
        for index, chain in enumerate(chains_for(ref_id, config)):
            types = [d for d, _ in chain]
            assert not {over, under} <= set(types) and len(set(types)) == len(types)
            rng = np.random.default_rng(distortions.seeding.stable_hash(
                "compose", config.seed, ref_id, index))
            count = int(rng.integers(2, 5))
            first_draw = [int(d) for d in rng.choice(ids, size=count, replace=False)]
            assert len(types) == count
            if {over, under} <= set(first_draw):
                held += 1
            else:
                assert types == first_draw
    assert held > 10  # the rule was met, not avoided by luck

    share = fast_config("embedded", bank="registered", distortion_ids=ids, levels=(1, 3, 5),
                        versions_per_ref=7,
                        compose_share=1.0)
    links, redrawn = [], 0
    for ref_id in (f"r{i}" for i in range(60)):
        for index, chain in second_links(ref_id, share).items():
            links.append(chain)
            rng = np.random.default_rng(distortions.seeding.stable_hash(
                "compose-share", share.seed, ref_id, index))
            rng.random()
            first = chain[0][0]
            first_draw = int(rng.choice([d for d in ids if d != first]))
            if first_draw in distortions.undoing(first):
                redrawn += 1
            else:
                assert chain[1][0] == first_draw
    assert len(links) > 300 and redrawn > 10
    assert not any({over, under} <= {d for d, _ in chain} for chain in links)
    with pytest.raises(ValueError, match=r"K <= M <= 1 .*over- and underexposure"):
        fast_config("embedded", bank="registered", distortion_ids=(over, under), levels=(2, 4),
                    compose=(2, 2))
    with pytest.raises(ValueError, match="compose_share needs two or more types"):
        fast_config("embedded", bank="registered", distortion_ids=(over, under), levels=(2, 4),
                    versions_per_ref=2, compose_share=0.5)


@pytest.mark.slow
def test_a_dataset_planned_before_the_undoing_rule_keeps_its_draw(fast_config, tmp_path):
    """A composing dataset with both exposures, planned before chains kept them apart, has no
    undoing_apart in its plan or manifest: read back it keeps its draw (pairs and all, its
    chains as long as the types selected) and its digest, and generate resumes it with that
    draw; a new plan of the same selection says the rule in its digest, so it never resumes
    the old dataset silently."""
    from dataclasses import replace

    over, under = (distortions.get(name).id for name in ("overexposure", "underexposure"))
    ids = (1, 13, over, under)
    new = fast_config("embedded", bank="registered", distortion_ids=ids, levels=(1, 3, 5),
                      compose=(2, 3))
    recorded = {k: v for k, v in json.loads(json.dumps(new.to_json())).items()
                if k != "undoing_apart"}  # a manifest's config written before the rule
    old = RunConfig.from_json({**recorded, "compose": [2, 4]})
    assert not old.undoing_apart and new.undoing_apart
    assert RunConfig.from_json(json.loads(json.dumps(new.to_json()))) == new
    assert "undoing_apart" not in old.plan_inputs() and new.plan_inputs()["undoing_apart"]
    assert (replace(old, compose=(2, 3)).plan_inputs()
            == {k: v for k, v in new.plan_inputs().items() if k != "undoing_apart"})
    plain = fast_config("embedded", bank="registered", distortion_ids=ids, levels=(1, 3, 5))
    assert "undoing_apart" not in plain.plan_inputs()  # nothing composes: digest as before
    pairs = 0
    for ref_id in (f"r{i}" for i in range(40)):
        for index, chain in enumerate(chains_for(ref_id, old)):
            rng = np.random.default_rng(distortions.seeding.stable_hash(
                "compose", old.seed, ref_id, index))
            count = int(rng.integers(2, 5))
            assert [d for d, _ in chain] == [int(d) for d in rng.choice(ids, count, False)]
            pairs += {over, under} <= {d for d, _ in chain}
    assert pairs > 10
    with pytest.raises(ValueError, match=r"K <= M <= 3"):
        replace(old, undoing_apart=True)  # four types hold no chain of four under the rule

    out = tmp_path / "old"
    words = ["generate", "--sources", "embedded", "--out", str(out), "--bank", "registered",
             "--distortions", ",".join(map(str, ids)), "--levels", "1,3,5", "--compose", "2-4"]
    with pytest.raises(ValueError, match=r"K <= M <= 3"):  # a new plan: the rule
        cli.run_config(cli.build_parser().parse_args(words))
    planned = cli._given_config(cli.build_parser().parse_args(words), undoing_apart=False)
    persist_or_check(Plan.make(list_sources("embedded"), planned), Location.parse(str(out)))
    resumed = cli.run_config(cli.build_parser().parse_args(words))
    assert not resumed.undoing_apart and resumed.plan_inputs() == planned.plan_inputs()
    with pytest.raises(ValueError, match=r"K <= M <= 3"):
        cli.run_config(cli.build_parser().parse_args([*words, "--restart"]))
    with pytest.raises(PlanMismatchError, match=r"undoing_apart None -> True"):
        persist_or_check(Plan.make(list_sources("embedded"), replace(
            planned, compose=(2, 3), undoing_apart=True)), Location.parse(str(out)))


@pytest.mark.parametrize("recipe", ["[1, 2]", "5", "null", '{"chain": []}', '{"chain": [3]}',
                                    '{"distortion_id": 999, "level": 1}', '{"level": 1}'])
def test_a_recipe_naming_no_distortion_is_a_problem_not_a_crash(recipe):
    from pipeline.commands.deep_check import label_problem

    row = {"key": "r_01_1", "ref_id": "r", "recipe": recipe}
    assert label_problem(row).startswith("r_01_1: its recipe names no distortion (")


def test_inspect_deep_names_labels_that_are_not_their_recipes(fast_config, mae_ensemble):
    """A version whose chain (its classes and multihot bits), level or distortion were
    changed in its record and its index row alike (so they agree, and the stats were
    rewritten to match) still replays: its pixels are its recipe's. The labels it would train
    on are not: deep check names them, each version once."""
    import pyarrow as pa

    from shards.schema import INDEX_SCHEMA

    config = fast_config("embedded", limit=1, shard_refs=1, distortion_ids=TYPES, levels=(2, 4),
                         versions_per_ref=4, compose_share=0.5, metrics=())
    _, location = _run(config, mae_ensemble)
    rows = read_index(location).to_pylist()
    composed = next(row["key"] for row in rows if row["chain"] and len(row["chain"]) == 2)
    single = next(row["key"] for row in rows if row["chain"] and len(row["chain"]) == 1)
    assert deep_check(location, 100)[1] == []

    def mislabel(record: dict) -> dict:
        if record["key"] == composed:  # the second link at the other level
            link = record["chain"][1]
            record["chain"] = [record["chain"][0], {**link, "level": 6 - link["level"]}]
        elif record["key"] == single:  # another type's id, under its own key
            record["distortion_id"] = next(d for d in TYPES if d != record["distortion_id"])
        return record

    rewrite_tar(Path(tar_path(location, 0, "images")), change=lambda name, data: (
        json.dumps(mislabel(json.loads(data))).encode() if name.endswith(".json") else data))
    parquet = Path(shard_paths(location, 0)["parquet"])
    pq.write_table(pa.Table.from_pylist([mislabel(row) for row in rows], schema=INDEX_SCHEMA),
                   parquet)
    stats_agree(parquet)
    _, problems = deep_check(location, 100)
    assert sorted(problems) == sorted([
        f"{composed}: its labels differ from its recipe in chain (they would name another "
        "distortion than its pixels hold)",
        f"{single}: its labels differ from its recipe in distortion_id (they would name "
        "another distortion than its pixels hold)"])


def test_compose_share_splits_the_level_as_re_iqas_code_draws_it(fast_config):
    """Re-IQA's draw: l1 ~ U{0..4}, then l2 ~ U{0..l1}; the first link at l1 - l2, the second
    at l2 (0-based). So a split (a, b) with a + b = t <= 4 has probability 1/5 x 1/(t + 1):
    the counts of 1,000 references' composed versions (about 1,100) against it, chi-square
    (a uniform draw over the 15 splits, which the splits seen alone cannot tell from it, is
    refused: p < 1e-6 for it at this size)."""
    from scipy import stats

    from pipeline.plan import second_links

    bank = distortions.bank_ids("reiqa")
    config = fast_config("embedded", bank="reiqa", distortion_ids=bank,
                         levels=(1, 2, 3, 4, 5), versions_per_ref=11, compose_share=0.1)
    splits = [(a, b) for a in range(5) for b in range(5) if a + b <= 4]
    counts = dict.fromkeys(splits, 0)
    for ref_id in (f"ref{i}" for i in range(1000)):
        for (_, first_level), (_, second_level) in second_links(ref_id, config).values():
            counts[(first_level - 1, second_level - 1)] += 1
    observed = np.array([counts[split] for split in splits])
    expected = np.array([1 / 5 / (a + b + 1) for a, b in splits]) * observed.sum()
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    uniform = np.full(len(splits), observed.sum() / len(splits))
    assert stats.chisquare(observed, uniform).pvalue < 1e-6


def test_each_chain_is_drawn_on_its_own_so_a_random_types_repeat_differs_by_its_seed(
        fast_config):
    """Chains are drawn independently per version (as the README says): with one type at one
    level, every version of a reference draws the same chain, and a random type's versions
    still differ, each seeded by its own key."""
    from shards.keys import composed_key

    noise = fast_config("embedded", distortion_ids=(3,), levels=(2,), compose=(1, 1),
                        versions_per_ref=3)
    assert chains_for("r0", noise) == [((3, 2),)] * 3
    photo = np.full((176, 192, 3), 120, np.uint8)
    made = [distortions.apply(photo, 3, 2, distortions.derive_seed(
        noise.seed, composed_key("r0", index), 3, 2))[0] for index in range(3)]
    assert not np.array_equal(made[0], made[1]) and not np.array_equal(made[1], made[2])
