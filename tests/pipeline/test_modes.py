"""Generation modes (issue 10): K drawn versions per reference, label-free runs, named banks,
native sizes and the source kind; each recorded and in the plan digest (at its default, out of
it)."""

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from PIL import Image

import distortions
from labelers import Labeler
from pipeline import cli
from pipeline.config import RunConfig
from pipeline.plan import Plan, persist_or_check, scenarios_for
from pipeline.report import merge, write_run_files
from pipeline.sizing import NATIVE
from pipeline.sources import list_sources
from pipeline.worker import produce_shard
from shards.layout import shard_paths
from shards.reader import read_index
from shards.storage import Location
from tests.conftest import finish, local_scorer


def _run(config, ensemble):
    plan = Plan.make(list_sources(config.sources), config)
    location = Location.parse(config.out)
    persist_or_check(plan, location)
    scorer = local_scorer(Labeler(metrics=config.metrics or ("mae",), device="cpu"))
    for index in range(plan.shard_count):
        produce_shard(index, plan, config, scorer, ensemble, location)
    return plan, location


def test_versions_per_ref_draws_k_distinct_types_per_reference_reproducibly(fast_config,
                                                                          mae_ensemble):
    config = fast_config("embedded", limit=3, shard_refs=2, distortion_ids=(1, 3, 13, 16, 20),
                         levels=(2, 4), versions_per_ref=3)
    plan, location = _run(config, mae_ensemble)
    rows = read_index(location).to_pylist()
    drawn = {}
    for row in rows:
        if row["kind"] == "distorted":
            drawn.setdefault(row["ref_id"], []).append((row["distortion_id"], row["level"]))
    assert sorted(drawn) == sorted(ref.ref_id for ref in plan.references)
    for ref_id, pairs in drawn.items():
        types = [d for d, _ in pairs]
        assert len(types) == len(set(types)) == 3  # K distinct types
        assert set(types) <= {1, 3, 13, 16, 20} and {lv for _, lv in pairs} <= {2, 4}
        assert sorted(pairs) == scenarios_for(ref_id, config)
    assert len({tuple(sorted(p)) for p in drawn.values()}) > 1  # drawn per reference
    again = fast_config("embedded", limit=3, shard_refs=2, distortion_ids=(1, 3, 13, 16, 20),
                        levels=(2, 4), versions_per_ref=3)
    assert [scenarios_for(r, again) for r in drawn] == [scenarios_for(r, config) for r in drawn]
    with pytest.raises(ValueError, match="versions_per_ref must be 1-5"):
        fast_config("embedded", distortion_ids=(1, 3, 13, 16, 20), versions_per_ref=6)


def test_a_label_free_run_writes_null_labels_and_no_ensemble(fast_config, mae_ensemble,
                                                            tmp_path):
    config = fast_config("embedded", limit=1, distortion_ids=(1, 13), levels=(1,), metrics=())
    plan, location = _run(config, mae_ensemble)
    distorted = [row for row in read_index(location).to_pylist() if row["kind"] == "distorted"]
    assert len(distorted) == 2
    assert all(row["scores"] is None and row["quality"] is None for row in distorted)
    write_run_files(location, config, plan, mae_ensemble, ())
    manifest = json.loads(location.read_bytes(location.path("manifest.json")))
    assert manifest["ensemble_hash"] is None and manifest["modes"]["labels"] == "none"
    assert not location.exists(location.path("ensemble.json"))
    tally = merge(location, plan)
    assert tally.distorted == 2 and not tally.quality_count


def test_a_merge_that_fails_leaves_the_earlier_lists_as_they_were(fast_config, mae_ensemble):
    config = fast_config("embedded", limit=2, shard_refs=1, distortion_ids=(1,), levels=(1,),
                         metrics=())
    plan, location = _run(config, mae_ensemble)
    merge(location, plan)
    before = {name: location.read_bytes(location.path(name))
              for name in ("sources.parquet", "failures.jsonl")}
    assert pq.read_table(location.path("sources.parquet")).num_rows == 2
    # one row group for the dataset, not one per shard (8,751 at paper scale: slow to read)
    assert pq.ParquetFile(location.path("sources.parquet")).metadata.num_row_groups == 1
    Path(shard_paths(location, 1)["sources"]).unlink()  # the second shard's list is gone
    with pytest.raises(FileNotFoundError):
        merge(location, plan)
    assert {name: location.read_bytes(location.path(name)) for name in before} == before
    assert not list(Path(location.root).glob("*.partial"))


def test_native_sizes_survive_into_the_shards(tmp_path, small_image, fast_config,
                                              mae_ensemble):
    folder = tmp_path / "authentic"
    folder.mkdir()
    big = np.asarray(Image.fromarray(small_image).resize((640, 480)))
    Image.fromarray(small_image).save(folder / "a_small.png")        # 192 x 176: kept
    Image.fromarray(big).save(folder / "b_big.png")                  # 640 x 480 -> 400 x 300
    Image.fromarray(np.asarray(Image.fromarray(small_image).resize((900, 180)))).save(
        folder / "c_wide.png")  # 900 x 180: the short side may not fall below 176
    config = fast_config(str(folder), size=NATIVE, max_side=400, distortion_ids=(1,),
                         levels=(1,), source_kind="authentic")
    _, location = _run(config, mae_ensemble)
    sizes = {row["ref_id"]: (row["width"], row["height"])
             for row in read_index(location).to_pylist() if row["kind"] == "reference"}
    assert sizes == {"a_small": (192, 176), "b_big": (400, 300), "c_wide": (880, 176)}
    distorted = [row for row in read_index(location).to_pylist() if row["kind"] == "distorted"]
    assert all((row["width"], row["height"]) == sizes[row["ref_id"]] for row in distorted)
    plan = Plan.make(list_sources(config.sources), config)
    merge(location, plan)
    kinds = pq.read_table(location.path("sources.parquet")).column("source_kind").to_pylist()
    assert kinds == ["authentic"] * 3
    with pytest.raises(ValueError, match="--max-side applies to the native"):
        fast_config("embedded", max_side=400)
    with pytest.raises(ValueError, match=r"allow_upscale applies to a target size \(--size "
                                         r"WxH\): the native policy keeps each source's own"):
        fast_config("embedded", size=NATIVE, allow_upscale=True)  # would only change the plan


def test_named_banks_and_the_distortions_that_narrow_them(tmp_path, capsys):
    assert distortions.bank_ids("kadid25") == tuple(
        d.id for d in distortions.all() if d.kadid_id is not None)
    assert len(distortions.bank_ids("kadid25")) == 25
    assert [distortions.get(i).name for i in distortions.bank_ids("mt4")] == [
        "jpeg", "jpeg2000", "white_noise", "gaussian_blur"]
    assert cli._in_bank("mt4", None) == (1, 2, 3, 13)
    assert cli._in_bank("mt4", (13, 1, 20)) == (1, 13)
    with pytest.raises(ValueError, match="none of --distortions"):
        cli._in_bank("mt4", (20,))
    with pytest.raises(ValueError, match="not in the bank 'mt4'"):
        RunConfig("embedded", "out", bank="mt4", distortion_ids=(1, 20))
    with pytest.raises(distortions.UnknownBankError, match="kadid25"):
        distortions.bank_ids("kadid10")
    parser = cli.build_parser()
    for unknown in ("1,999", "40-44", "1,nope"):  # never dropped unseen: refused
        with pytest.raises(SystemExit):
            parser.parse_args(["generate", "--distortions", unknown])
        assert "no distortion" in capsys.readouterr().err
    config = cli.run_config(parser.parse_args(["generate", "--out", str(tmp_path / "o"),
                                               "--bank", "mt4", "--distortions", "1,20,40"]))
    assert config.distortion_ids == (1,)  # narrowed, the types left out named
    assert ("note: --distortions 20 (contrast_change), 40 (overexposure) not in the bank "
            "'mt4': left out") in capsys.readouterr().out


def test_modes_enter_the_plan_digest_only_away_from_their_defaults(fast_config):
    base = fast_config("embedded")
    assert not {"bank", "versions_per_ref", "max_side", "source_kind"} & set(base.plan_inputs())
    sources = list_sources("embedded")
    digests = {Plan.make(sources, config).digest for config in (
        base, fast_config("embedded", versions_per_ref=2), fast_config("embedded", metrics=()),
        fast_config("embedded", source_kind="authentic"),
        fast_config("embedded", size=NATIVE), fast_config("embedded", size=NATIVE, max_side=300),
        fast_config("embedded", bank="mt4", distortion_ids=(1, 13)))}
    assert len(digests) == 7
    assert RunConfig.from_json(fast_config("embedded", size=NATIVE, max_side=300,
                                           metrics=()).to_json()).size == NATIVE


def test_ssim_is_stored_when_asked_for(fast_config, mae_ensemble):
    config = fast_config("embedded", limit=1, distortion_ids=(1, 13), levels=(1, 5),
                         metrics=("mae", "gmsd", "ssim"))
    _, location = _run(config, mae_ensemble)
    distorted = [row for row in read_index(location).to_pylist() if row["kind"] == "distorted"]
    values = {(row["distortion_id"], row["level"]): row["scores"]["ssim"] for row in distorted}
    assert all(0 < value <= 1 for value in values.values())  # 1: a version equal to its ref
    assert values[(13, 5)] < values[(13, 1)] and values[(1, 5)] < values[(1, 1)]  # worse at 5


@pytest.mark.slow
def test_validate_levels_checks_the_report_a_run_writes(fast_config, mae_ensemble, tmp_path,
                                                        capsys, s3_bucket):
    # the scenario keys of a real report: JPEG, mean shift (two-sided) and pixelate at all
    # five levels of three photos; MAE and GMSD grow with each type's severity there
    config = fast_config("embedded", limit=3, shard_refs=2, distortion_ids=(1, 18, 24),
                         levels=(1, 2, 3, 4, 5))
    plan, location = _run(config, mae_ensemble)
    finish(location, plan, config)
    target = tmp_path / "validated"
    assert cli.main(["validate-levels", config.out, "--target", str(target)]) == 0
    assert "all level orders hold" in capsys.readouterr().out
    rows = json.loads((target / "validate-levels.json").read_text())
    assert [row["name"] for row in rows] == ["jpeg", "mean_shift", "pixelate"]
    shift = rows[1]["quality"]
    assert shift[2] == 1.0 and max(shift) == shift[2]  # level 3 leaves the photo as it is
    assert (target / "validate-levels.png").stat().st_size > 0
    # on an object store: the table names the dataset without its credentials
    stored = s3_bucket.uri("levels")
    pafs.copy_files(config.out, Location.parse(stored).root,
                    destination_filesystem=Location.parse(stored).fs)
    assert cli.main(["validate-levels", stored, "--target", str(tmp_path / "stored")]) == 0
    table = (tmp_path / "stored" / "validate-levels.md").read_text()
    assert f"3 references of s3://***@{s3_bucket.name}/levels" in table
    assert s3_bucket.secret not in table and s3_bucket.access not in table
    assert json.loads((tmp_path / "stored" / "validate-levels.json").read_text()) == rows
    tar = next(Path(config.out, "shards").glob("*.tar"))
    os.truncate(tar, tar.stat().st_size // 2)  # as inspect, convert and train refuse it
    assert cli.main(["validate-levels", config.out, "--target", str(target)]) == 2
    assert "do not match their stats" in capsys.readouterr().err


def test_validate_levels_refuses_a_label_free_dataset(tmp_path, capsys):
    (tmp_path / "report.json").write_text(json.dumps({"mean_quality_by_scenario": {}}))
    assert cli.main(["validate-levels", str(tmp_path), "--target", str(tmp_path / "v")]) == 2
    assert "has no labels (a label-free run" in capsys.readouterr().err


def test_validate_levels_names_a_damaged_report(tmp_path, capsys, monkeypatch):
    """An edited or damaged report.json is named with what it holds, not a KeyError."""
    cases = [({}, "has no mean_quality_by_scenario object (it holds NoneType)"),
             ({"mean_quality_by_scenario": [0.5]}, "(it holds list)"),
             ({"mean_quality_by_scenario": {f"01-{level}": "0.5" for level in range(1, 6)}},
              "holds 5 value(s) that are not numbers in 0..1, e.g. 01-1: '0.5'"),
             ({"mean_quality_by_scenario": {"01-1": 1.7, "01-2": -3, "01-3": 0.5}},
              "holds 2 value(s) that are not numbers in 0..1, e.g. 01-1: 1.7"),
             ({"mean_quality_by_scenario": {"01-1": True, "01-2": 0.5}},
              "e.g. 01-1: True"),
             ({"modes": {}, "mean_quality_by_scenario": {"01-1": float("nan")}},
              "e.g. 01-1: nan"),
             ({"mean_quality_by_scenario": {"01-1": 0.9, "99-1": 0.5, "1-1": 0.5}},
              "names 2 scenario(s) of no type of this bank, e.g. '1-1': made by another "
              "version of iqa-factory, or edited"),
             ({"modes": ["compose"], "mean_quality_by_scenario": {"01-1": 0.5}},
              "report.json's modes is ['compose'], not an object of the generation modes")]
    for report, said in cases:
        (tmp_path / "report.json").write_text(json.dumps(report))
        assert cli.main(["validate-levels", str(tmp_path), "--target", str(tmp_path / "v")]) == 2
        assert said in capsys.readouterr().err
    falling = {f"01-{level}": 1.0 - 0.1 * level for level in range(1, 6)}
    (tmp_path / "report.json").write_text(json.dumps({"mean_quality_by_scenario": falling}))
    assert cli.main(["validate-levels", str(tmp_path), "--target", str(tmp_path / "v")]) == 0
    assert f"Mean quality label Q over {tmp_path}." in (tmp_path / "v" /
                                                        "validate-levels.md").read_text()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a file:// URI is a local folder: its files go there too
    assert cli.main(["validate-levels", f"file://{tmp_path}"]) == 0
    assert (tmp_path / "validate-levels.md").is_file() and not list(elsewhere.iterdir())


def test_validate_levels_names_a_target_it_cannot_write_and_the_types_that_fail(tmp_path,
                                                                                 capsys):
    """A --target where no file can be made (under /proc, even for root) is named in one line;
    the types whose order fails are listed in words, as the report lists them."""
    rising = {f"{type_id:02d}-{level}": 0.1 * level for type_id in (1, 3)
              for level in range(1, 6)}
    (tmp_path / "report.json").write_text(json.dumps({"mean_quality_by_scenario": rising}))
    assert cli.main(["validate-levels", str(tmp_path), "--target", "/proc/iqa-factory"]) == 2
    assert capsys.readouterr().err.startswith("iqa-factory: error: --target /proc/iqa-factory "
                                              "cannot be written to (")
    assert cli.main(["validate-levels", str(tmp_path), "--target", str(tmp_path / "v")]) == 1
    assert "level order fails for: jpeg, white_noise\n" in capsys.readouterr().out


def test_validate_levels_never_passes_what_it_did_not_check(tmp_path, capsys):
    two_levels = {"01-1": 0.9, "01-5": 0.7, "13-1": 0.95, "13-5": 0.6}  # --levels 1,5
    (tmp_path / "report.json").write_text(json.dumps({"mean_quality_by_scenario": two_levels,
                                                      "sources_ok": 2}))
    assert cli.main(["validate-levels", str(tmp_path), "--target", str(tmp_path / "v")]) == 2
    assert "no type of" in capsys.readouterr().err and not (tmp_path / "v").exists()
    assert cli.main(["validate-levels", str(tmp_path / "nothing"), "--target", "v"]) == 2
    assert f"{tmp_path / 'nothing'} does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["validate-levels", str(tmp_path / "empty"), "--target", "v"]) == 2
    assert "has no report.json: not a dataset" in capsys.readouterr().err
    rising = {f"01-{level}": 0.5 + 0.1 * level for level in range(1, 6)}  # Q grows: fails
    (tmp_path / "report.json").write_text(json.dumps({"mean_quality_by_scenario": rising,
                                                      "sources_ok": 2}))
    assert cli.main(["validate-levels", str(tmp_path), "--target", str(tmp_path / "v")]) == 1
    assert "level order fails for: jpeg\n" in capsys.readouterr().out
    drawn = {f"38-{level}": 0.9 - 0.01 * level for level in range(1, 6)}  # denoise_blur only
    (tmp_path / "report.json").write_text(json.dumps({"mean_quality_by_scenario": drawn,
                                                      "sources_ok": 2}))
    assert cli.main(["validate-levels", str(tmp_path), "--target", str(tmp_path / "v")]) == 2
    assert "has a level order to check (denoise_blur: it follows a draw" in \
        capsys.readouterr().err


def test_validate_levels_checks_the_added_types_too(tmp_path, capsys):
    """Types 34-43 (overexposure 40, underexposure 41, ...) are checked and plotted like the
    paper's 33 (they were left out, and a run of them alone was called unlabelled)."""
    falling = {f"{d:02d}-{level}": 1.0 - 0.1 * level for d in (13, 40, 41)
               for level in range(1, 6)}
    (tmp_path / "report.json").write_text(json.dumps({"mean_quality_by_scenario": falling,
                                                      "sources_ok": 2}))
    assert cli.main(["validate-levels", str(tmp_path), "--target", str(tmp_path / "v")]) == 0
    rows = json.loads((tmp_path / "v" / "validate-levels.json").read_text())
    assert [(row["id"], row["new"]) for row in rows] == [(13, False), (40, True), (41, True)]
    every = {f"{d.id:02d}-{level}": 1.0 - 0.1 * level for d in distortions.registered()
             for level in range(1, 6)}  # all 43: the figure grows to hold them
    (tmp_path / "report.json").write_text(json.dumps({"mean_quality_by_scenario": every,
                                                      "sources_ok": 2}))
    cli.main(["validate-levels", str(tmp_path), "--target", str(tmp_path / "all")])
    from PIL import Image
    with Image.open(tmp_path / "all" / "validate-levels.png") as figure:
        assert figure.height > 80 * (2.4 * 6 + 0.8) - 2  # seven rows of panels, not five



    from labelers.registry import AVAILABLE_METRICS
    from shards.schema import METRIC_KEYS

    assert METRIC_KEYS == AVAILABLE_METRICS  # else pyarrow drops the scores silently


def test_an_ensemble_alone_chooses_the_metrics_it_weighs():
    pmos = cli.run_config(cli.build_parser().parse_args(["generate", "--ensemble", "pmos"]))
    assert set(pmos.metrics) == {"ssim", "ms_ssim", "mdsi", "vsi", "fsim", "gmsd"}
    default = cli.run_config(cli.build_parser().parse_args(["generate"]))
    from labelers.registry import METRICS

    assert default.metrics == METRICS
    chosen = cli.run_config(cli.build_parser().parse_args(
        ["generate", "--ensemble", "pmos", "--metrics", "mae"]))
    assert chosen.metrics == ("mae",)


def test_validate_levels_writes_into_the_dataset_without_a_target(tmp_path, monkeypatch,
                                                                  capsys):
    """Not into the current folder's docs/ (run from a checkout, over its committed ones)."""
    falling = {f"01-{level}": 1.0 - 0.1 * level for level in range(1, 6)}
    (tmp_path / "report.json").write_text(json.dumps({"mean_quality_by_scenario": falling,
                                                      "sources_ok": 2}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli.main(["validate-levels", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("validate-levels.*")) == [
        "validate-levels.json", "validate-levels.md", "validate-levels.png"]
    assert not any(elsewhere.iterdir())
