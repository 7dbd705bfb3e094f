"""Storage modes (issue 11): a recipes or hybrid dataset holds no PNG of the versions it keeps
as recipes, and reads back, through the same API, the same pixels as the images dataset of
the same run (expected values from the images dataset's PNGs, read with tarfile and PIL);
a replay whose pixels are not the recorded ones is an error naming the sample and the
libraries that differ."""

import hashlib
import importlib.metadata
import io
import json
import re
import shutil
import tarfile
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

import distortions
from pipeline.commands.contact_sheet import render_shard_sheet
from pipeline.commands.inspect_dataset import ShardCheck, checked_shard, inspect
from pipeline.plan import Plan
from shards import open_dataset
from shards.keys import distorted_key
from shards.layout import store_of
from shards.provenance import library_versions
from shards.reader import read_index
from shards.replay import (
    Pending,
    ReplayContext,
    ReplayError,
    ReplayMismatchError,
    changed_reference,
    labels_problem,
)
from shards.schema import pixel_sha256
from shards.storage import Location
from shards.tar_stream import TAR_CHANGED
from tests.conftest import rewrite_tar, stats_before_index_digests

LEARNED = {d.id for d in distortions.registered() if d.learned}


def _members(root) -> dict[str, dict[str, bytes]]:
    """key -> {extension: bytes} of every shard tar, read with tarfile."""
    found = {}
    for path in sorted((root / "shards").glob("*.tar*")):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                key, _, extension = member.name.partition(".")
                found.setdefault(key, {})[extension] = tar.extractfile(member).read()
    return found


def _pil(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def test_recipe_tars_keep_references_and_only_the_modes_pngs(store_datasets):
    images, recipes, hybrid, kept = (_members(store_datasets[m]) for m in
                                     ("images", "recipes", "hybrid", "hybrid_kept"))
    assert list(images) == list(recipes) == list(hybrid) == list(kept)  # same order
    for key, parts in images.items():
        meta = json.loads(parts["json"])
        assert recipes[key]["json"] == hybrid[key]["json"] == kept[key]["json"] == parts["json"]
        reference = meta["kind"] == "reference"
        learned = not reference and meta["distortion_id"] in LEARNED
        assert ("png" in recipes[key]) == reference
        assert ("png" in hybrid[key]) == (reference or learned)
        assert ("png" in kept[key]) == (reference or learned or meta["distortion_id"] == 26)
        for mode in (hybrid, kept):
            assert mode[key].get("png", parts["png"]) == parts["png"]
    sizes = {mode: sum(p.stat().st_size for p in (root / "shards").glob("*.tar*"))
             for mode, root in store_datasets.items()}
    assert sizes["recipes"] < sizes["hybrid"] < sizes["hybrid_kept"] < sizes["images"]
    assert [store_of(Location.parse(str(store_datasets[m]))) for m in store_datasets] == [
        "images", "recipes", "hybrid", "hybrid"]
    manifest = json.loads((store_datasets["hybrid"] / "manifest.json").read_text())
    assert manifest["store"] == "hybrid" and manifest["replay_libraries"] == library_versions()
    assert {"numpy", "torch", "pillow", "opencv_jpeg"} <= set(manifest["replay_libraries"])
    # the denoiser's noise estimate (scikit-image's wavelet sigma) goes through PyWavelets
    # (whose own pywt.__version__ of the 1.9.0 wheel still says 1.8.0: the installed one counts)
    assert manifest["replay_libraries"]["pywavelets"] == importlib.metadata.version("PyWavelets")


def test_recipe_modes_gzip_their_tars_and_a_version_costs_less_than_a_tar_header(
        store_datasets):
    for mode, root in store_datasets.items():
        names = sorted(p.name for p in (root / "shards").glob("*.tar*"))
        assert names == [f"0000{i}.tar" + ("" if mode == "images" else ".gz") for i in (0, 1)]
    recipes = sorted((store_datasets["recipes"] / "shards").glob("*.tar.gz"))
    assert all(path.read_bytes()[:2] == b"\x1f\x8b" for path in recipes)  # gzip's magic
    samples = list(wds.WebDataset([str(p) for p in recipes], shardshuffle=False))
    images = _members(store_datasets["images"])
    assert [s["__key__"] for s in samples] == list(images)
    assert [s["json"] for s in samples] == [parts["json"] for parts in images.values()]
    # an uncompressed tar spends at least a 512-byte header and a 512-byte block on a record
    reference_pngs = sum(len(parts["png"]) for key, parts in images.items()
                         if key.endswith("_ref"))
    versions = sum(not key.endswith("_ref") for key in images)
    packed = sum(path.stat().st_size for path in recipes)
    assert (packed - reference_pngs) / versions < 512


def test_a_recipe_shards_contact_sheet_replays_the_images_shards_cells(store_datasets):
    sheets = {mode: np.asarray(render_shard_sheet(str(next(
        (store_datasets[mode] / "shards").glob("00000.tar*"))))[0]) for mode in store_datasets}
    np.testing.assert_array_equal(sheets["recipes"], sheets["images"])
    np.testing.assert_array_equal(sheets["hybrid"], sheets["images"])


def test_inspect_checks_a_hybrid_shards_pngs_against_its_kept_types(store_datasets):
    location = Location.parse(str(store_datasets["hybrid_kept"]))
    plan = Plan.from_json(json.loads((store_datasets["hybrid_kept"] / "plan.json").read_text()))
    assert plan.inputs["keep_pngs"] == [26]
    for index in range(plan.shard_count):
        assert checked_shard(ShardCheck.of(location, plan, index, 7, "hybrid", (26,)))[0] == []
        problems, _, _ = checked_shard(ShardCheck.of(location, plan, index, 7, "hybrid"))
        assert any("lack or hold a PNG against the store mode hybrid" in problem
                   for problem in problems)


@pytest.mark.parametrize("store", ["recipes", "hybrid", "hybrid_kept"])
def test_samples_replay_the_images_datasets_pixels(store_datasets, store):
    expected = {key: _pil(parts["png"]) for key, parts in
                _members(store_datasets["images"]).items()}
    dataset = open_dataset(str(store_datasets[store]))
    for kind in ("all", "distorted", "reference"):
        got = {s["key"]: s["image"] for s in dataset.samples(kind=kind)}
        wanted = {key for key in expected if (kind == "all" or key.endswith("_ref")
                                              == (kind == "reference"))}
        assert set(got) == wanted
        for key, pixels in got.items():
            np.testing.assert_array_equal(pixels, expected[key])
    ref_id = next(iter(dataset.references))
    one = [s["key"] for s in dataset.samples(refs=[ref_id])]
    assert one and all(key.startswith(f"{ref_id}_") for key in one)


@pytest.mark.parametrize(("kind", "options"), [
    ("pair", {"crop": 32}), ("triplet", {"crop": 32}),
    ("chunk", {"crop": 32, "versions": 3, "views": 2}), ("chunk", {"versions": 2})])
def test_groups_are_the_same_in_every_mode(store_datasets, kind, options):
    def groups(store):
        return list(open_dataset(str(store_datasets[store])).groups(kind, seed=5, **options))
    expected = groups("images")
    assert expected
    for store in ("recipes", "hybrid"):
        got = groups(store)
        assert [g["meta"] for g in got] == [g["meta"] for g in expected]
        for mine, theirs in zip(got, expected, strict=True):
            np.testing.assert_array_equal(np.asarray(mine["distorted"]),
                                          np.asarray(theirs["distorted"]))
            np.testing.assert_array_equal(mine["reference"], theirs["reference"])


def _rewritten(root, tmp_path, key: str, change) -> Path:
    """A copy of a dataset whose sample `key` records change(its record) (the tar rewritten
    with tarfile, member order kept)."""
    copy = tmp_path / "tampered"
    shutil.copytree(root, copy)
    for path in (copy / "shards").glob("*.tar*"):
        with tarfile.open(path) as tar:
            if f"{key}.json" not in tar.getnames():
                continue
        rewrite_tar(path, lambda name, data: json.dumps(change(json.loads(data))).encode()
                    if name == f"{key}.json" else data)
    return copy


def _tampered(root, tmp_path, key: str):
    """A copy of a dataset whose sample `key` records another SHA-256, and whose manifest and
    shard stats record another numpy version (as made with it)."""
    copy = _rewritten(root, tmp_path, key, lambda record: {**record, "sha256": "0" * 64})
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["replay_libraries"]["numpy"] = "1.0.0"
    del manifest["replay_libraries"]["pywavelets"]  # as datasets made before it was recorded
    (copy / "manifest.json").write_text(json.dumps(manifest))
    for path in (copy / "shards").glob("*_stats.json"):
        stats = json.loads(path.read_text())
        stats["libraries"] = manifest["replay_libraries"]
        path.write_text(json.dumps(stats))
    return copy


def _probe_room(tmp_path: Path, monkeypatch, name: str, files: dict[str, str]) -> Path:
    """An importable package `name` of an empty __init__.py and `files` (name -> text)."""
    room = tmp_path / name
    room.mkdir()
    (room / "__init__.py").write_text("")
    for file, text in files.items():
        (room / file).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    return room


def test_the_code_of_pixels_and_scores_is_recorded_by_its_digest(tmp_path, monkeypatch):
    """Every shard records a digest of the distortions and labelers code (an editable install
    keeps its version across commits): it moves with any source file's name or bytes, not
    with compiled files beside them."""
    from shards.provenance import code_digest

    recorded = library_versions()
    for room in ("distortions", "labelers", "shards", "pipeline"):  # references are sized,
        assert recorded[f"{room}_code"] == code_digest(room)       # records written there
    assert recorded["iqa-factory"] == importlib.metadata.version("iqa-factory")
    assert code_digest("no_such_room") is None
    room = _probe_room(tmp_path, monkeypatch, "probe_room", {"a.py": "X = 1\n"})
    before = code_digest("probe_room")
    expected = hashlib.sha256(b"__init__.py\0\0a.py\0X = 1\n\0").hexdigest()[:16]
    assert before == expected  # names and bytes, sorted by name
    (room / "a.cpython-311.pyc").write_bytes(b"compiled")
    assert code_digest("probe_room") == before
    (room / "a.py").write_text("X = 2\n")
    assert code_digest("probe_room") != before


def test_a_rooms_json_files_are_part_of_its_code_digest(tmp_path, monkeypatch):
    """A room's tables (*.json beside its *.py) make bytes as its code does: editing one
    moves the digest."""
    from shards.provenance import code_digest

    room = _probe_room(tmp_path, monkeypatch, "probe_tables", {"levels.json": '{"a": 1}'})
    before = code_digest("probe_tables")
    assert before == hashlib.sha256(b'__init__.py\0\0levels.json\0{"a": 1}\0').hexdigest()[:16]
    (room / "levels.json").write_text('{"a": 2}')
    assert code_digest("probe_tables") != before


def test_the_recorded_versions_name_opencvs_jpeg_jpeg2000_and_png_libraries():
    """The bank encodes JPEG, JPEG 2000 and PNG through OpenCV: the libraries its build
    information lists for them, with their versions, are recorded."""
    import cv2

    recorded = library_versions()
    info = cv2.getBuildInformation()
    for codec, key in (("JPEG", "opencv_jpeg"), ("JPEG 2000", "opencv_jpeg2000"),
                       ("PNG", "opencv_png")):
        listed = re.search(rf"^\s*{codec}:.*\(ver ([^)]*)\)\s*$", info, re.MULTILINE)
        if listed is not None:
            assert recorded[key] == listed[1].strip()


def test_a_replay_that_differs_is_an_error_naming_sample_and_libraries(store_datasets,
                                                                       tmp_path):
    key = next(k for k, parts in _members(store_datasets["recipes"]).items()
               if "png" not in parts)
    copy = _tampered(store_datasets["recipes"], tmp_path, key)
    dataset = open_dataset(str(copy))
    with pytest.raises(ReplayMismatchError, match=rf"sample {key}: .*numpy 1\.0\.0 there, "
                                                  rf"{np.__version__} here.*pywavelets not "
                                                  "recorded there"):
        list(dataset.samples())
    unverified = {s["key"]: s["image"] for s in dataset.samples(verify=False)}
    expected = _pil(_members(store_datasets["images"])[key]["png"])
    np.testing.assert_array_equal(unverified[key], expected)  # verify=False: not checked
    [row] = [row for row in read_index(Location.parse(str(copy)), with_shard=True).to_pylist()
             if row["key"] == key]
    with pytest.raises(ReplayMismatchError, match=r"numpy 1\.0\.0 there"):  # the sheet too
        render_shard_sheet(str(copy / "shards" / f"{row['shard']:05d}.tar.gz"),
                           ref_id=row["ref_id"])


def test_a_mismatch_names_what_made_its_shard_not_what_a_resume_recorded_last(
        store_datasets, tmp_path):
    """A resume under other code rewrites the manifest with the resuming driver's versions;
    each shard's stats keep those that made it. A replay that differs names the shard's (here
    other bank code), never blames the processor because the manifest matches."""
    key = next(k for k, parts in _members(store_datasets["recipes"]).items()
               if "png" not in parts)
    copy = _rewritten(store_datasets["recipes"], tmp_path, key,
                      lambda record: {**record, "sha256": "0" * 64})
    for path in (copy / "shards").glob("*_stats.json"):
        stats = json.loads(path.read_text())
        stats["libraries"] = {**stats["libraries"], "distortions_code": "6f89" * 4}
        path.write_text(json.dumps(stats))
    with pytest.raises(ReplayMismatchError, match=rf"sample {key}: .*distortions_code "
                                                  f"{'6f89' * 4} there"):
        list(open_dataset(str(copy)).samples())


@pytest.mark.parametrize("store", ["recipes", "hybrid"])
def test_a_reference_changed_since_its_shard_was_written_is_named_not_the_processor(
        store_datasets, tmp_path, store, capsys):
    """One pixel of a reference's PNG flipped (its shard's stats rewritten to agree): its
    versions cannot replay, and the error names the reference and why, not the libraries,
    before the reference or any version of it (a stored PNG with its labels too) is passed
    on: by the readers, the deep check, materialize and the contact sheet."""
    from pipeline import cli
    from pipeline.commands.deep_check import deep_check

    root = store_datasets[store]
    ref_key = next(k for k in _members(root) if k.endswith("_ref"))
    copy = tmp_path / "changed"
    shutil.copytree(root, copy)

    def flipped(name: str, data: bytes) -> bytes:
        if name != f"{ref_key}.png":
            return data
        pixels = _pil(data).copy()
        pixels[0, 0, 0] ^= 1
        encoded = io.BytesIO()
        Image.fromarray(pixels).save(encoded, format="PNG")
        return encoded.getvalue()

    for path in (copy / "shards").glob("*.tar*"):
        rewrite_tar(path, flipped)
    changed = (rf"reference {ref_key}'s pixels are not those recorded \(SHA-256 and shape\): "
               "its shard changed after it was written")
    dataset = open_dataset(str(copy))
    for stream in (dataset.samples(), dataset.groups("pair", crop=32)):
        passed = []
        with pytest.raises(ReplayMismatchError, match=changed):
            for item in stream:
                passed.append(item["ref_id"])
        assert ref_key.removesuffix("_ref") not in passed
    _, problems = deep_check(Location.parse(str(copy)), 100)
    assert any(re.search(changed, problem) for problem in problems)
    assert not any("processor" in problem for problem in problems)
    assert cli.main(["materialize", str(copy), str(tmp_path / "images")]) != 0
    assert re.search(changed, capsys.readouterr().err)
    shard = sorted((copy / "shards").glob("*.tar*"))[0]  # where _members found it first
    with pytest.raises(ValueError, match=changed):
        render_shard_sheet(str(shard), ref_key.removesuffix("_ref"))


def test_a_recipe_its_level_and_seed_do_not_make_is_refused_before_it_runs(store_datasets,
                                                                          tmp_path):
    """A hostile or damaged recipe shard: a sample's recipe with a level parameter of its own
    (a million, where the level's table says otherwise) is an error naming the sample, not a
    replay."""
    key, record = next((k, json.loads(parts["json"]))
                       for k, parts in _members(store_datasets["recipes"]).items()
                       if "png" not in parts)
    name = next(iter(distortions.get(record["recipe"]["distortion_id"]).levels[0]))

    def hostile(record: dict) -> dict:
        recipe = record["recipe"]
        return {**record, "recipe": {**recipe, "params": {**recipe["params"], name: 10**6}}}

    dataset = open_dataset(str(_rewritten(store_datasets["recipes"], tmp_path, key, hostile)))
    with pytest.raises(ReplayError, match=rf"sample {key} cannot be replayed: .*parameters "
                                          rf"{name} are not those the level and seed give"):
        list(dataset.samples(verify=False))


@pytest.mark.parametrize(("newer", "why"), [
    ({"version": 2}, "recipe version 2: this bank replays version 1"),
    ({"params": {"future_mode": 1}}, "parameters future_mode are unknown to this bank"),
])
def test_a_recipe_of_a_newer_bank_is_refused_naming_what_is_new(store_datasets, tmp_path,
                                                                 newer, why):
    key = next(k for k, parts in _members(store_datasets["recipes"]).items()
               if "png" not in parts)

    def from_a_newer_bank(record: dict) -> dict:
        recipe = record["recipe"]
        params = {**recipe["params"], **newer.get("params", {})}
        return {**record, "recipe": {**recipe, **newer, "params": params}}

    copy = _rewritten(store_datasets["recipes"], tmp_path, key, from_a_newer_bank)
    with pytest.raises(ReplayError, match=rf"sample {key} cannot be replayed: .*{why}"):
        list(open_dataset(str(copy)).samples(verify=False))


def _version_record(recipe: dict, image: np.ndarray, ref_id: str = "r") -> dict:
    """The record a shard keeps of a single-type version: its labels, pixels' SHA-256 and
    shape, and recipe."""
    distortion = distortions.get(recipe["distortion_id"])
    return {"key": distorted_key(ref_id, distortion.id, recipe["level"]), "ref_id": ref_id,
            "kind": "distorted", "distortion_id": distortion.id, "distortion": distortion.name,
            "category": distortion.category, "level": recipe["level"], "seed": recipe["seed"],
            "recipe": recipe, "sha256": pixel_sha256(image), "height": image.shape[0],
            "width": image.shape[1]}


def test_a_version_whose_labels_are_not_its_recipes_is_never_passed_on(small_image):
    """A record saying jpeg level 1 whose recipe makes color quantization level 5 replays
    and verifies (the SHA-256 is the recipe's pixels'), and was served under jpeg's labels:
    each label a version trains on is checked against its recipe, as the deep check does."""
    image, recipe = distortions.apply(small_image, 29, 5, seed=11)
    context = ReplayContext(library_versions())
    meta = _version_record(recipe, image)
    np.testing.assert_array_equal(Pending(meta["key"], small_image, meta, context).pixels(),
                                  image)
    jpeg = distortions.get(1)
    relabelled = {**meta, "distortion_id": 1, "distortion": jpeg.name,
                  "category": jpeg.category, "level": 1}
    with pytest.raises(ReplayError, match=r"sample r_d29_l5: its labels differ from its recipe "
                                          r"in chain, distortion_id, distortion, category, level"):
        Pending(meta["key"], small_image, relabelled, context).pixels()
    assert Pending("k", small_image, relabelled, replace(context, verify=False)).pixels() \
        is not None  # (unverified reads check nothing)


def test_pending_replays_lazily_and_says_when_libraries_are_the_same(small_image):
    image, recipe = distortions.apply(small_image, 1, 3, seed=11)
    meta = _version_record(recipe, image)
    same = ReplayContext(library_versions())
    np.testing.assert_array_equal(Pending("k", small_image, meta, same).pixels(), image)
    wrong = {**meta, "sha256": "f" * 64}
    with pytest.raises(ReplayMismatchError, match=r"sample k: .*every recorded library "
                                                  "version and the bank's code are the same "
                                                  "here"):
        Pending("k", small_image, wrong, same).pixels()
    earlier = {k: v for k, v in library_versions().items() if not k.endswith("_code")}
    with pytest.raises(ReplayMismatchError, match="distortions_code not recorded there"):
        Pending("k", small_image, wrong, ReplayContext(earlier)).pixels()
    # code a replay never runs (the labelers', the pipeline's) is not blamed for it
    other_labels = {**library_versions(), "labelers_code": "0" * 16, "iqa-factory": "0.0.9",
                    "pipeline_code": "1" * 16}
    with pytest.raises(ReplayMismatchError, match="every recorded library version and the "
                                                  "bank's code are the same here"):
        Pending("k", small_image, wrong, ReplayContext(other_labels)).pixels()
    with pytest.raises(ReplayMismatchError, match="records no library versions"):
        Pending("k", small_image, wrong, ReplayContext(None)).pixels()
    # what to do: a processor feature is no version one installs; a library version is
    elsewhere = {**library_versions(), "opencv_dispatch": "SSE SSE2"}
    with pytest.raises(ReplayMismatchError, match=r"opencv_dispatch SSE SSE2 there, .* here\); "
                                                  "read it, or `iqa-factory materialize` to "
                                                  "--store images, on a processor like the "
                                                  "one that made it$"):
        Pending("k", small_image, wrong, ReplayContext(elsewhere)).pixels()
    older = {**elsewhere, "numpy": "1.0.0"}
    with pytest.raises(ReplayMismatchError, match=r"; install the recorded versions, or "
                                                  r"`iqa-factory materialize` to --store images "
                                                  r"where they are$"):
        Pending("k", small_image, wrong, ReplayContext(older)).pixels()
    for params in ({"ratio": "x"}, {}, {"ratio": [45]}):  # a recipe no replay can take
        _, made = distortions.apply(small_image, 2, 3, seed=11)
        broken = {**meta, "recipe": {**made, "params": params}}
        with pytest.raises(ReplayError, match="sample k cannot be replayed"):
            Pending("k", small_image, broken, same).pixels()


def test_pixels_of_another_shape_or_a_record_without_its_sha256_are_never_passed_on(
        small_image):
    """The SHA-256 is of the pixels' bytes alone: a reference re-encoded transposed (the same
    bytes, H and W swapped) passed it, and its versions replayed scrambled, verified. The
    shape the record gives is checked too; a record with no SHA-256 says so, neither passed
    unverified (a reference) nor blamed on the libraries (a version)."""
    image, recipe = distortions.apply(small_image, 17, 3, seed=11)  # darken: pixel by pixel
    height, width = small_image.shape[:2]
    assert height != width
    reference = {"sha256": pixel_sha256(small_image), "height": height, "width": width}
    transposed = small_image.reshape(width, height, 3)  # the same bytes, another shape
    assert pixel_sha256(transposed) == reference["sha256"]
    assert changed_reference("r_ref", small_image, reference) is None
    assert "pixels are not those recorded (SHA-256 and shape)" in changed_reference(
        "r_ref", transposed, reference)
    assert "record has no SHA-256 to check its pixels by" in changed_reference(
        "r_ref", small_image, {"height": height, "width": width})
    meta = _version_record(recipe, image)
    context = ReplayContext(library_versions())
    np.testing.assert_array_equal(Pending("k", small_image, meta, context).pixels(), image)
    with pytest.raises(ReplayMismatchError, match="sample k: replayed pixels differ"):
        Pending("k", transposed, meta, context).pixels()
    with pytest.raises(ReplayError, match="sample k's record has no SHA-256 to verify its "
                                          "replay by: damaged") as raised:
        Pending("k", small_image, {**meta, "sha256": None}, context).pixels()
    assert not isinstance(raised.value, ReplayMismatchError)


def test_inspect_names_stats_that_miscount_and_files_of_no_planned_shard(store_datasets,
                                                                          tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(store_datasets["images"], copy)
    stats_path = copy / "shards" / "00000_stats.json"
    stats = json.loads(stats_path.read_text())
    stats_path.write_text(json.dumps({**stats, "references": stats["references"] + 1}))
    other_path = copy / "shards" / "00001_stats.json"
    other = json.loads(other_path.read_text())
    older_form = [[1, 1, 0.5]] * 3  # the per-version list stats held before their sums
    other_path.write_text(json.dumps({**other, "labels": older_form}))
    shutil.copyfile(copy / "shards" / "00000.tar", copy / "shards" / "00005.tar")
    (copy / "shards" / "00001.tar.gz").write_bytes(b"")  # another mode's name
    problems = inspect(str(copy))[1]
    assert f"shard 00000: its lists hold {stats['references']} references made, its stats " \
           f"{stats['references'] + 1}" in problems  # the lists, counted before the parquet
    assert f"shard 00001: its stats count 3 labels, its parquet {other['labels']}" \
        in problems
    assert ("2 file(s) in shards/ belong to none of the plan's 2 shards (00001.tar.gz, "
            "00005.tar): left by another run or copied in; remove them") in problems
    assert not any("distorted" in problem for problem in problems)
    stats_path.write_text(json.dumps({**stats, "labels": stats["labels"] - 1}))
    assert f"shard 00000: its stats count {stats['labels'] - 1} labels, its parquet " \
        f"{stats['labels']}" in inspect(str(copy))[1]


def test_inspect_calls_other_code_a_replay_problem_only_for_code_a_replay_runs(
        store_datasets, tmp_path):
    """A recipes dataset whose shards were made by other labeler, pipeline or shards code (a
    resume after an upgrade) is named, as a note: its replays are the bank's on the stored
    reference, checked by SHA-256. Other bank code, or another NumPy, is a problem there:
    its replays may give other pixels."""
    copy = tmp_path / "copy"
    shutil.copytree(store_datasets["recipes"], copy)
    report_path = copy / "report.json"
    report = json.loads(report_path.read_text())
    for differing, replayed in (({"labelers_code": {"0" * 16: 1}}, False),
                                ({"pipeline_code": {"1" * 16: 1}, "iqa-factory": {"0.0.9": 1}},
                                 False),
                                ({"shards_code": {"3" * 16: 1}}, False),
                                ({"distortions_code": {"2" * 16: 1}}, True),
                                ({"numpy": {"1.0.0": 1}}, True)):
        report_path.write_text(json.dumps({**report, "libraries_differing": differing}))
        lines, problems = inspect(str(copy))
        [named] = [text for text in lines + problems
                   if "shards were made with other library versions or code" in text]
        assert (named in problems) == replayed, differing
        assert ("their recipes replay only on those versions" in named) == replayed


def test_inspect_counts_every_file_of_a_dataset(store_datasets):
    root = store_datasets["recipes"]
    total = sum(path.stat().st_size for path in root.rglob("*") if path.is_file())
    tars = sum(path.stat().st_size for path in (root / "shards").glob("*.tar.gz"))
    samples = 3 * (1 + 6)  # 3 references, 6 versions each
    lines, problems = inspect(str(root))
    assert problems == []
    assert (f"storage: recipes, {total / 1e6:.1f} MB for {samples} samples "
            f"({total / samples / 1e3:.1f} kB per sample; tars {tars / 1e6:.1f} MB)") in lines


def test_a_denoiser_version_made_on_a_gpu_that_differs_here_says_where_it_was_made(
        small_image):
    image, recipe = distortions.apply(small_image, 8, 3, seed=11)  # the learned denoiser
    on_gpu = {**recipe, "params": {**recipe["params"], "device": "cuda"}}  # as a GPU records it
    gpu_pixels = image.copy()
    gpu_pixels[0, 0, 0] ^= 1  # the GPU's float32 rounded one intensity level the other way
    meta = _version_record(on_gpu, gpu_pixels)
    with pytest.raises(ReplayMismatchError, match=r"sample k: .*made by the learned denoiser "
                                                  r"on cuda, whose float results also move "
                                                  r"with the device and, on a CPU, with the "
                                                  r"vector instructions its oneDNN uses"):
        Pending("k", small_image, meta, ReplayContext(library_versions())).pixels()


def test_inspect_lists_a_damaged_recipe_shard_instead_of_stopping(store_datasets, tmp_path):
    """A byte flipped inside a gzipped tar (its size as recorded): the shard is named among
    the problems; the replay check, which would read it, does not run."""
    copy = tmp_path / "copy"
    shutil.copytree(store_datasets["recipes"], copy)
    tar = copy / "shards" / "00000.tar.gz"
    data = bytearray(tar.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tar.write_bytes(bytes(data))
    lines, problems = inspect(str(copy))
    assert f"shard 00000: {TAR_CHANGED}" in problems and "generate --verify" in TAR_CHANGED
    assert not any(text.startswith("replay check") for text in lines + problems)
    # a reference PNG garbled by its writer (the stats agree): the replay check names it
    shutil.copyfile(store_datasets["recipes"] / "shards" / "00000.tar.gz", tar)
    rewrite_tar(tar, lambda name, data: bytes(len(data)) if name.endswith("_ref.png") else data)
    problems = inspect(str(copy))[1]
    assert any(problem.startswith("replay check: sample ") and "do not decode" in problem
               for problem in problems)


def test_inspect_reads_shards_made_before_chains_were_recorded(store_datasets, tmp_path):
    """Their parquet has no chain column and their records no chain (as the readers accept):
    each version's one link is its distortion and level, and inspect finds nothing wrong.
    (Their stats record no size or SHA-256 of the parquet either.)"""
    import pyarrow.parquet as pq

    copy = tmp_path / "copy"
    shutil.copytree(store_datasets["images"], copy)
    for parquet in (copy / "shards").glob("*.parquet"):
        table = pq.read_table(parquet)
        pq.write_table(table.drop_columns(["chain"]), parquet)
        stats_before_index_digests(parquet)
    def without_chain(name: str, data: bytes) -> bytes:
        if not name.endswith(".json"):
            return data
        return json.dumps({k: v for k, v in json.loads(data).items() if k != "chain"}).encode()

    for path in (copy / "shards").glob("*.tar"):
        rewrite_tar(path, without_chain)
    problems = inspect(str(copy))[1]
    assert problems == []


@pytest.mark.parametrize("read", ["samples", "groups"])
def test_a_recipe_stream_reads_each_shards_stats_once_a_pass(store_datasets, monkeypatch, read):
    """Its replays name the versions that made the shard and its end checks the count the
    stats hold: one read of them (a round trip on an object store), not one for each."""
    dataset = open_dataset(str(store_datasets["recipes"]))

    def stream():
        return dataset.samples() if read == "samples" else dataset.groups("pair", crop=32)
    assert list(stream())  # what the dataset itself reads once is read now
    reads = []
    original = Location.read_bytes

    def counting(self, path):
        reads.extend([path] if path.endswith("_stats.json") else [])
        return original(self, path)
    monkeypatch.setattr(Location, "read_bytes", counting)
    assert list(stream())
    assert sorted(reads) == sorted(set(reads)) and len(reads) == 2  # the fixture's 2 shards


def test_inspect_reads_each_shards_stats_and_lists_once(store_datasets, monkeypatch):
    """Checking a shard, counting its samples and the storage line share one read of its
    stats, parquet index, sources and failures (a round trip each on an object store); the
    replay check reads the stats of the shard it replays from once more, as any reader
    does."""
    reads = []
    original = Location.read_bytes

    def counting(self, path):
        reads.append(path)
        return original(self, path)
    monkeypatch.setattr(Location, "read_bytes", counting)
    lines, problems = inspect(str(store_datasets["recipes"]))
    assert problems == [] and any(line.startswith("replay check:") for line in lines)
    counts = Counter(path.rpartition("/shards/")[2] for path in reads if "/shards/" in path)
    once = Counter(f"0000{index}_{name}" for index in (0, 1)
                   for name in ("stats.json", "sources.json", "failures.jsonl")) + Counter(
        f"0000{index}.parquet" for index in (0, 1))
    assert counts == once + Counter(["00000_stats.json"])


def test_inspect_deep_names_an_index_changed_after_it_was_written(store_datasets, tmp_path):
    """The deep check samples versions from the indexes: one that a bit flip changed (its
    size kept, so the shard still lists as complete) is a problem of the report, not an
    error that loses the rest of it."""
    from pipeline.commands.deep_check import deep_check

    copy = tmp_path / "flipped"
    shutil.copytree(store_datasets["images"], copy)
    index = copy / "shards" / "00001.parquet"
    data = bytearray(index.read_bytes())
    data[len(data) // 3] ^= 0x10
    index.write_bytes(bytes(data))
    problems = inspect(str(copy))[1]
    assert "shard 00001: parquet index differs from its stats' SHA-256" in " ".join(problems)
    _, deep_problems = deep_check(Location.parse(str(copy)), 5)
    assert deep_problems == [f"deep check: {index}: parquet index differs from its stats' "
                             "SHA-256 (changed after it was written; generate with the run's "
                             "options makes it again)"]


def test_a_single_versions_key_that_names_another_distortion_than_its_recipe_is_a_problem():
    """labels_problem's docstring: a single version's key is among the labels it checks
    against its recipe; shards.md gives the key `{ref_id}_d{id:02d}_l{level}`."""
    first = distortions.get(1)
    recipe = {"distortion_id": 1, "level": 3, "seed": 7, "params": {}}
    record = {"ref_id": "r", "key": "r_d01_l3", "distortion_id": 1, "distortion": first.name,
              "category": first.category, "level": 3, "seed": 7}
    assert labels_problem("r_d01_l3", record, recipe) is None
    for key in ("r_d02_l3", "r_d01_l4", "s_d01_l3"):
        problem = labels_problem(key, {**record, "key": key}, recipe)
        assert problem == (f"{key}: its labels differ from its recipe in key (they would name "
                           "another distortion than its pixels hold)")
