import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem
from PIL import Image

from labelers import ensemble as ens
from pipeline import cli
from pipeline.commands import label_commands as lc
from shards import open_dataset
from shards.layout import plan_digest, shard_name
from shards.lease import LEASE_FILE, Lease
from shards.sidecar import SidecarError
from shards.storage import Location
from tests.conftest import finish, stats_agree


@pytest.fixture
def kadid_like(tmp_path, small_image):
    """A dmos.csv in KADID-10k's format: 5 references x 4 noise levels, opinion falling with it."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    lines = ["dist_img,ref_img,dmos,var"]
    for r in range(5):
        ref = np.roll(small_image, 17 * r, axis=1)
        Image.fromarray(ref).save(folder / f"I{r:02d}.png")
        for level, sigma in enumerate((2, 6, 14, 30), start=1):
            noisy = np.clip(ref + rng.normal(0, sigma, ref.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(folder / f"I{r:02d}_01_0{level}.png")
            lines.append(f"I{r:02d}_01_0{level}.png,I{r:02d}.png,{5 - level + r * 0.01},0.1")
    table = tmp_path / "dmos.csv"
    table.write_text("\n".join(lines) + "\n")
    return table


def test_fit_ensemble_writes_an_ensemble_and_a_report(kadid_like, tmp_path, capsys):
    output = tmp_path / "fitted.json"
    assert cli.main(["fit-ensemble", str(kadid_like), "--metrics", "mae,gmsd", "-o",
                     str(output), "--seed", "2"]) == 0
    fitted = ens.load(output)
    assert set(fitted.weights) == {"mae", "gmsd"}
    assert sum(fitted.weights.values()) == pytest.approx(1.0)
    report = json.loads(output.with_suffix(".report.json").read_text())
    assert report["ensemble_hash"] == fitted.hash
    assert (report["train_references"], report["test_references"]) == (4, 1)
    assert report["ensemble"]["srocc"] == pytest.approx(1.0)  # noise order is opinion order
    assert "ensemble" in capsys.readouterr().out


def test_fit_ensemble_checks_the_table_before_scoring(kadid_like, tmp_path, capsys):
    """Hours of scoring on KADID-10k must not end in an error the table showed at the start:
    a pair of two sizes, a file that is no image, a missing image, an opinion that is not a
    number, opinions all equal, one reference."""
    lines = kadid_like.read_text().splitlines()
    folder = tmp_path / "images"
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(folder / "small.png")
    (folder / "text.png").write_text("not an image")
    Image.fromarray(np.zeros((176, 192, 3), np.uint8)).save(folder / "pcx.png", "PCX")
    cases = [
        ([*lines, "small.png,I00.png,3.0,0.1"], "1 pair(s) of the table differ in size (width, "
         "height), e.g. small.png (12, 10) against I00.png (192, 176)"),
        ([*lines, "text.png,I00.png,3.0,0.1"], "1 image(s) the table names cannot be read as "
         f"images, e.g. {folder / 'text.png'} (not_an_image: no image format recognised)"),
        ([*lines, "pcx.png,I00.png,3.0,0.1"], "1 image(s) the table names cannot be read as "
         f"images, e.g. {folder / 'pcx.png'} (not_an_image"),  # Pillow's, not the decoder's
        ([*lines, "I09_01_01.png,I09.png,3.0,0.1"], "2 image(s) the table names are not there, "
         f"e.g. {tmp_path / 'images' / 'I09.png'}, {tmp_path / 'images' / 'I09_01_01.png'}"),
        ([lines[0], "", *lines[1:3], "I00_01_03.png,I00.png,n/a,0.1", *lines[4:]],
         f"{kadid_like} line 5: dmos 'n/a' is not a number"),
        ([*lines[:3], "I00_01_03.png,I00.png,nan,0.1", *lines[4:]],
         f"{kadid_like} line 4: dmos 'nan' is not a finite number"),
        ([lines[0], *(line.rsplit(",", 2)[0] + ",3.0,0.1" for line in lines[1:])],
         "the opinion scores are all equal (3): nothing to fit an ensemble to"),
        ([line for line in lines if not line.startswith(("I01", "I02", "I03", "I04"))],
         "at least two reference images"),
        (lines[:1], f"{kadid_like} has a header but no rows: no opinion scores to fit to"),
        ([*lines[:5], "", *lines[5:], lines[3]], f"{kadid_like}: 1 distorted image(s) "
         "listed more than once, e.g. I00_01_03.png (lines 4, 23): one row per distorted "
         "image"),  # the file's lines, its blank line counted
    ]
    for table, said in cases:
        kadid_like.write_text("\n".join(table) + "\n")
        assert cli.main(["fit-ensemble", str(kadid_like), "--metrics", "dists", "-o",
                         str(tmp_path / "fitted.json")]) == 2
        err = capsys.readouterr().err
        assert said in err and "weights missing" not in err  # refused before the labeler
    kadid_like.write_text("\n".join(lines) + "\n")
    (tmp_path / "taken.report.json").mkdir()
    for output, said in ((tmp_path, f"-o {tmp_path}: {tmp_path} is a folder; name the "
                          "ensemble's file"),
                         (tmp_path / "taken.json", f"{tmp_path / 'taken.report.json'} is a "
                          "folder"),
                         (kadid_like / "fitted.json", f"{kadid_like} is a file where a folder "
                          "is wanted")):
        assert cli.main(["fit-ensemble", str(kadid_like), "--metrics", "dists", "-o",
                         str(output)]) == 2
        err = capsys.readouterr().err
        assert said in err and "weights missing" not in err
    assert cli.main(["fit-ensemble", str(tmp_path / "images")]) == 2
    assert f"{tmp_path / 'images'} is a folder: name the MOS table" in capsys.readouterr().err


def test_fit_ensemble_never_writes_over_its_own_inputs(kadid_like, tmp_path, capsys):
    """-o naming the table, an image it names, or a file whose report would be one of them
    (`-o dmos.json` writes dmos.report.json): refused before any scoring, inputs intact."""
    images = tmp_path / "images"
    before = {path: path.read_bytes() for path in [kadid_like, *images.iterdir()]}
    (images / "I00_01_01.report.json").symlink_to(images / "I00_01_02.png")
    for output in (kadid_like, images / "I00.png", tmp_path / "images" / ".." / "dmos.csv",
                   images / "I00_01_01.json"):
        assert cli.main(["fit-ensemble", str(kadid_like), "--metrics", "mae", "-o",
                         str(output)]) == 2
        err = capsys.readouterr().err
        assert "is an input of the fit (the table or an image it names)" in err, output
    assert {path: path.read_bytes() for path in before} == before


@pytest.mark.parametrize(("row", "said"), [
    ("I00_01_01.png", "line 2: no ref_img"),  # the row ends after its first field
    ("I00_01_01.png,,4.0", "line 2: no ref_img"),
    (",I00.png,4.0", "line 2: no dist_img"),
])
def test_a_table_row_without_an_image_is_named_by_its_line(kadid_like, row, said, capsys):
    lines = kadid_like.read_text().splitlines()
    kadid_like.write_text("\n".join([lines[0], row, *lines[2:]]) + "\n")
    assert cli.main(["fit-ensemble", str(kadid_like), "--metrics", "mae", "-o",
                     str(kadid_like.parent / "fitted.json")]) == 2
    err = capsys.readouterr().err
    assert f"{kadid_like} {said}" in err and "Traceback" not in err


def test_a_table_saved_with_a_byte_order_mark_is_read_and_one_not_utf8_is_named(kadid_like,
                                                                               capsys):
    """Spreadsheets' "CSV UTF-8" starts with a byte-order mark; a table in Latin-1 is no
    UTF-8: named with the file, not a bare codec error."""
    from pipeline.commands.label_commands import read_opinion_table

    text = kadid_like.read_text()
    kadid_like.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert read_opinion_table(kadid_like)[0] == ("I00_01_01.png", "I00.png", 4.0)
    kadid_like.write_bytes(text.replace("I00_01_01.png", "I00_\xe9.png").encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{re.escape(str(kadid_like))} is not UTF-8 text "
                                         r"\(byte b'\\xe9': invalid continuation byte\): save "
                                         "the table as UTF-8"):
        read_opinion_table(kadid_like)


def test_an_image_whose_pixels_do_not_decode_is_left_out_and_the_fit_goes_on(kadid_like,
                                                                            tmp_path, capsys):
    """Its header is whole (the check before scoring reads headers), its pixels cut short:
    found when scored, left out with its reason (a distorted image: its pair; a reference:
    its pairs), and the fit goes on."""
    images = tmp_path / "images"
    for name in ("I01_01_02.png", "I03.png"):
        data = (images / name).read_bytes()
        (images / name).write_bytes(data[:len(data) // 3])
    output = tmp_path / "fitted.json"
    assert cli.main(["fit-ensemble", str(kadid_like), "--metrics", "mae,gmsd", "-o",
                     str(output)]) == 0
    report = json.loads(output.with_suffix(".report.json").read_text())
    assert report["train_references"] + report["test_references"] == 4  # I03 left out
    assert [item.split(" (")[0] for item in report["left_out"]] == ["I01_01_02.png", "I03.png"]
    assert all("truncated" in item for item in report["left_out"]), report["left_out"]


def test_fit_ensemble_leaves_out_a_reference_a_metric_refuses_and_says_why(kadid_like,
                                                                           tmp_path, capsys):
    """A flat reference VIF cannot rate (0 / 0 information) is found only when scored: its
    pairs are left out, named with the reason, and the fit goes on with the other five."""
    folder = tmp_path / "images"
    Image.fromarray(np.full((176, 192, 3), 90, np.uint8)).save(folder / "flat.png")
    lines = kadid_like.read_text().splitlines()
    for level in (1, 2):
        Image.fromarray(np.full((176, 192, 3), 90 + 20 * level, np.uint8)).save(
            folder / f"flat_{level}.png")
        lines.append(f"flat_{level}.png,flat.png,{3 - level},0.1")
    kadid_like.write_text("\n".join(lines) + "\n")
    output = tmp_path / "fitted.json"
    assert cli.main(["fit-ensemble", str(kadid_like), "--metrics", "mae,vif", "-o",
                     str(output)]) == 0
    report = json.loads(output.with_suffix(".report.json").read_text())
    assert report["train_references"] + report["test_references"] == 5
    assert len(report["left_out"]) == 1
    assert report["left_out"][0].startswith("flat.png (vif: the reference image is flat")
    assert f"note: left out of the fit: {report['left_out'][0]}" in capsys.readouterr().out


def test_pairs_with_a_score_that_is_not_finite_are_left_out_with_their_metrics():
    rows = [("a.png", "r1.png", 1.0), ("b.png", "r1.png", 2.0), ("c.png", "r2.png", 3.0),
            ("d.png", "r3.png", 4.0)]
    scores = {"mae": np.array([1.0, np.nan, 3.0, np.nan]),
              "gmsd": np.array([0.1, np.inf, 0.3, np.nan])}
    kept, kept_rows, left_out = lc.finite_rows(scores, rows, {"r3.png": "too small"})
    assert kept_rows == [rows[0], rows[2]]
    np.testing.assert_array_equal(kept["mae"], [1.0, 3.0])
    np.testing.assert_array_equal(kept["gmsd"], [0.1, 0.3])
    assert left_out == ["r3.png (too small)", "b.png (not finite: mae, gmsd)"]
    with pytest.raises(ValueError, match=r"no pair was scored by every metric: r3\.png"):
        lc.finite_rows({"mae": np.full(4, np.nan)}, rows, {"r3.png": "too small"})


def test_fit_ensemble_compares_sizes_as_scoring_decodes_them(tmp_path, small_image):
    """A JPEG stored on its side with EXIF orientation 6 decodes upright (read_rgb): its pair
    is of one size when upright, whatever its header says, and the other way round."""
    import io

    from pipeline.commands.label_commands import check_table
    from pipeline.sources import read_rgb

    Image.fromarray(small_image).save(tmp_path / "ref.png")  # 192 wide, 176 high
    Image.fromarray(small_image).save(tmp_path / "other.png")  # a fit needs two references

    def sideways(name: str, pixels: np.ndarray) -> None:
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise to view
        encoded = io.BytesIO()
        Image.fromarray(pixels).save(encoded, Path(name).suffix[1:].replace("jpg", "JPEG"),
                                     exif=exif.tobytes())
        (tmp_path / name).write_bytes(encoded.getvalue())

    sideways("upright.jpg", np.rot90(small_image))  # stored 176 wide: 192 x 176 upright
    sideways("upright.tiff", np.rot90(small_image))  # Pillow gives a TIFF's size upright
    sideways("turned.jpg", small_image)             # stored 192 wide: 176 x 192 upright
    for name in ("upright.jpg", "upright.tiff"):
        assert read_rgb(str(tmp_path / name)).shape == small_image.shape
        check_table([(name, "ref.png", 1.0), ("ref.png", "other.png", 2.0)], tmp_path,
                    tmp_path)
    with pytest.raises(ValueError, match=r"1 pair\(s\) of the table differ in size \(width, "
                                         r"height\), e.g. turned.jpg \(176, 192\) against "
                                         r"ref.png \(192, 176\)"):
        check_table([("turned.jpg", "ref.png", 1.0), ("ref.png", "other.png", 2.0)],
                    tmp_path, tmp_path)


def test_fit_ensemble_names_a_missing_table_and_missing_weights_with_their_remedies(
        kadid_like, tmp_path, capsys, monkeypatch):
    assert cli.main(["fit-ensemble", str(tmp_path / "nope.csv")]) == 2
    assert f"{tmp_path / 'nope.csv'} does not exist" in capsys.readouterr().err
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-weights"))
    assert cli.main(["fit-ensemble", str(kadid_like), "--metrics", "mae,lpips", "-o",
                     str(tmp_path / "fitted.json")]) == 2
    error = capsys.readouterr().err
    assert "for lpips" in error and "Or pass --allow-missing-metrics" in error


def test_fit_ensemble_rejects_a_table_without_kadid_columns(tmp_path, capsys):
    table = tmp_path / "scores.csv"
    table.write_text("image,score\na.png,3\n")
    assert cli.main(["fit-ensemble", str(table)]) == 2
    assert "dist_img" in capsys.readouterr().err


@pytest.fixture(scope="module")
def scored_dataset(tmp_path_factory) -> Path:
    """A finished dataset (two references in two shards, jpeg and gaussian blur at levels 1
    and 5) with gmsd and mae scores, made by the Ray-free worker."""
    from labelers import Labeler
    from pipeline.config import RunConfig
    from pipeline.plan import Plan, persist_or_check
    from pipeline.report import write_run_files
    from pipeline.sizing import TargetSize
    from pipeline.sources import list_sources
    from pipeline.worker import produce_shard
    from shards.storage import Location
    from tests.conftest import local_scorer

    out = tmp_path_factory.mktemp("relabel") / "data"
    config = RunConfig(sources="embedded", out=str(out), size=TargetSize(192, 176), limit=2,
                       shard_refs=1, distortion_ids=(1, 13), levels=(1, 5),
                       metrics=("gmsd", "mae"))
    ensemble = _halves()
    plan = Plan.make(list_sources("embedded"), config)
    location = Location.parse(config.out)
    persist_or_check(plan, location)
    write_run_files(location, config, plan, ensemble, ())
    scorer = local_scorer(Labeler(metrics=config.metrics, device="cpu"))
    for shard in range(plan.shard_count):
        produce_shard(shard, plan, config, scorer, ensemble, location)
    finish(location, plan, config)
    return out


def _halves(extra: str | None = None) -> ens.Ensemble:
    """gmsd (0 -> 1, 0.4 -> 0) and mae (0 -> 1, 0.2 -> 0), or gmsd and `extra` (vif)."""
    mappings = {"gmsd": ens.Mapping01("linear", best=0.0, worst=0.4),
                "mae": ens.Mapping01("linear", best=0.0, worst=0.2),
                "vif": ens.Mapping01("linear", best=1.0, worst=0.0)}
    keys = ("gmsd", extra) if extra else ("gmsd", "mae")
    return ens.Ensemble("halves", {key: 1.0 for key in keys}, {key: mappings[key] for key in keys})


def _copy(dataset: Path, tmp_path: Path) -> Path:
    shutil.copytree(dataset, tmp_path / "data")
    return tmp_path / "data"


def _stored(out: Path) -> dict[str, dict]:
    """key -> raw scores of the distorted samples, as the index stores them."""
    rows = [row for index in sorted((out / "shards").glob("*.parquet"))
            for row in pq.read_table(index).to_pylist()]
    return {row["key"]: row["scores"] for row in rows if row["kind"] == "distorted"}


@pytest.mark.parametrize("as_uri", [False, True])
def test_relabel_writes_a_sidecar_from_the_raw_scores(scored_dataset, tmp_path, as_uri,
                                                      capsys):
    out = _copy(scored_dataset, tmp_path)
    halves = _halves()  # the dataset's own; relabelled with gmsd weighing three times mae
    ensemble = ens.Ensemble("tilted", {"gmsd": 3.0, "mae": 1.0}, halves.mappings)
    ensemble.save(tmp_path / "tilted.json")
    named = out.as_uri() if as_uri else str(out)  # a folder, or its file:// URI
    assert cli.main(["relabel", named, "--ensemble", str(tmp_path / "tilted.json")]) == 0
    assert f"wrote labels-{ensemble.hash}.parquet in {named}: " in capsys.readouterr().out
    labels = pq.read_table(out / f"labels-{ensemble.hash}.parquet").to_pydict()
    stored = _stored(out)
    assert sorted(labels["key"]) == sorted(stored)
    expected = {key: (3 * np.clip(1 - stored[key]["gmsd"] / 0.4, 0, 1)
                      + np.clip(1 - stored[key]["mae"] / 0.2, 0, 1)) / 4 for key in stored}
    np.testing.assert_allclose(labels["quality"], [expected[key] for key in labels["key"]])
    shard_of = {row["key"]: shard for shard in (0, 1) for row in pq.read_table(
        out / "shards" / f"0000{shard}.parquet").to_pylist()}
    assert labels["shard"] == [shard_of[key] for key in labels["key"]]
    _read_with_the_sidecar(named, ensemble, expected)
    sidecar = out / f"labels-{ensemble.hash}.parquet"
    written = pq.read_table(sidecar)
    metadata = written.schema.metadata
    assert pq.ParquetFile(sidecar).num_row_groups == 2  # relabel's: a row group a shard, found
    for statistics in (True, False):  # by their statistics; one row group, or none: by filter
        pq.write_table(written, sidecar, write_statistics=statistics)
        _read_with_the_sidecar(named, ensemble, expected)
    # a sidecar of another dataset made from the same sources has the same keys: its plan
    # tells it apart
    assert metadata[b"plan_digest"].decode() == json.loads(
        (out / "shards" / "00000_stats.json").read_text())["plan_digest"]
    pq.write_table(written.replace_schema_metadata({**metadata, b"plan_digest": b"f" * 64}),
                   sidecar)
    from shards import open_dataset
    from shards.sidecar import SidecarError
    with pytest.raises(SidecarError, match=r"was made for another dataset \(plan ffffffffffff"):
        list(open_dataset(named, labels=ensemble.hash).samples(decode=False))
    # as relabel wrote it before the shard column and the plan: read whole, trusted by keys
    old = {key: value for key, value in metadata.items() if key != b"plan_digest"}
    pq.write_table(written.drop_columns(["shard"]).replace_schema_metadata(old), sidecar)
    _read_with_the_sidecar(named, ensemble, expected)


def _read_with_the_sidecar(named: str, ensemble: ens.Ensemble, expected: dict) -> None:
    """shards.md: readers take Q from a named sidecar when given one (by its file name or
    its ensemble's hash), in samples and in groups; the records' own Q otherwise."""
    from shards import open_dataset
    from shards.sidecar import SidecarError

    for name in (ensemble.hash, f"labels-{ensemble.hash}.parquet"):
        metas = [sample["meta"] for sample in
                 open_dataset(named, labels=name).samples(decode=False)]
        assert sorted(meta["key"] for meta in metas) == sorted(expected)
        for meta in metas:
            assert meta["quality"] == pytest.approx(expected[meta["key"]], abs=1e-12)
            assert meta["ensemble_hash"] == ensemble.hash
            assert meta["metrics_used"] == ["gmsd", "mae"]
    pairs = list(open_dataset(named, labels=ensemble.hash).groups("pair"))
    assert {group["meta"][0]["key"]: group["meta"][0]["quality"] for group in pairs} == \
        pytest.approx(expected, abs=1e-12)
    own = [sample["meta"] for sample in open_dataset(named).samples(decode=False)]
    assert all(meta["ensemble_hash"] != ensemble.hash for meta in own)
    assert any(abs(meta["quality"] - expected[meta["key"]]) > 1e-3 for meta in own)
    with pytest.raises(SidecarError, match=r"no relabel sidecar 'other' \(its sidecars: "
                                           rf"labels-{ensemble.hash}\.parquet\)"):
        open_dataset(named, labels="other")


def test_a_reader_refuses_a_sidecar_without_a_q_in_0_1_for_each_row(scored_dataset, tmp_path):
    """Q is clipped to 0..1 by its definition (labels.md): a NaN, a null, a 1.5, a column of
    text or none at all is a damaged sidecar, named, never a label handed to a trainer."""
    from shards.sidecar import Sidecar, SidecarError

    out = _copy(scored_dataset, tmp_path)
    _halves().save(tmp_path / "halves.json")
    assert cli.main(["relabel", str(out), "--ensemble", str(tmp_path / "halves.json")]) == 0
    sidecar = out / f"labels-{_halves().hash}.parquet"
    table = pq.read_table(sidecar)
    first = table["key"][0].as_py()  # shard 0's first row: the first read
    quality = table["quality"].to_pylist()
    for value, said in [(np.nan, "Q nan"), (None, "Q None"), (1.5, "Q 1.5"), (-0.1, "Q -0.1")]:
        pq.write_table(table.set_column(1, "quality", pa.array([value, *quality[1:]],
                                                               pa.float64())), sidecar)
        with pytest.raises(SidecarError, match=rf"sample {first} has {re.escape(said)}, not a "
                                               r"number in 0\.\.1 \(1 such\)"):
            list(open_dataset(out, labels=_halves().hash).samples(decode=False))
    pq.write_table(table.set_column(1, "quality", pa.array(["high"] * len(table))), sidecar)
    with pytest.raises(SidecarError, match="its quality column holds string, not numbers"):
        list(open_dataset(out, labels=_halves().hash).samples(decode=False))
    pq.write_table(table.drop_columns(["quality"]), sidecar)
    with pytest.raises(SidecarError, match=rf"{sidecar.name} cannot be read as a relabel "
                                           r"sidecar \(.*quality"):
        list(open_dataset(out, labels=_halves().hash).samples(decode=False))
    sidecar.write_bytes(b"not parquet")
    with pytest.raises(SidecarError, match="cannot be read as a relabel sidecar"):
        list(open_dataset(out, labels=_halves().hash).samples(decode=False))
    pq.write_table(table, sidecar)  # whole again, on a store that drops the connection
    flaky = Location(pafs.PyFileSystem(pafs.FSSpecHandler(_Unreachable())), str(out))
    with pytest.raises(SidecarError, match=r"could not be read \(Connection reset by peer\): "
                                           r"if the storage answers.*else try again$"):
        Sidecar.named(flaky, _halves().hash).qualities(0)


class _Unreachable(LocalFileSystem):
    """A local folder whose parquet files the network fails to bring."""

    def _open(self, path, mode="rb", **options):
        if path.endswith(".parquet"):
            raise ConnectionResetError("Connection reset by peer")
        return super()._open(path, mode, **options)


def test_relabel_onto_a_folder_of_the_sidecars_name_leaves_nothing_staged(scored_dataset,
                                                                           tmp_path, capsys):
    """The sidecar cannot be published where a folder has its name: the error names it, and
    the staged sidecar is removed (no `.partial` left beside the dataset's files)."""
    out = _copy(scored_dataset, tmp_path)
    _halves().save(tmp_path / "halves.json")
    (out / f"labels-{_halves().hash}.parquet").mkdir()
    before = sorted(path.name for path in out.iterdir())
    assert cli.main(["relabel", str(out), "--ensemble", str(tmp_path / "halves.json")]) == 2
    printed = capsys.readouterr()
    assert f"labels-{_halves().hash}.parquet" in printed.err and "Traceback" not in printed.err
    assert sorted(path.name for path in out.iterdir()) == before


def test_relabel_leaves_out_a_metric_the_dataset_never_scored_and_says_so(scored_dataset,
                                                                         tmp_path, capsys):
    out = _copy(scored_dataset, tmp_path)
    ensemble = _halves("vif")
    ensemble.save(tmp_path / "with-vif.json")
    assert cli.main(["relabel", str(out), "--ensemble", str(tmp_path / "with-vif.json")]) == 0
    assert "no vif scores: Q is renormalised over gmsd" in capsys.readouterr().out
    table = pq.read_table(out / f"labels-{ensemble.hash}.parquet")
    stored = _stored(out)
    np.testing.assert_allclose(table["quality"].to_pylist(),  # gmsd's alone
                               [np.clip(1 - stored[key]["gmsd"] / 0.4, 0, 1)
                                for key in table["key"].to_pylist()])
    assert json.loads(table.schema.metadata[b"metrics_used"]) == ["gmsd"]
    unweighed = ens.Ensemble("halves", {"gmsd": 1.0, "mae": 0.0}, _halves().mappings)
    unweighed.save(tmp_path / "unweighed.json")  # mae scored, weighed 0: nothing left out
    assert cli.main(["relabel", str(out), "--ensemble", str(tmp_path / "unweighed.json")]) == 0
    assert "renormalised" not in capsys.readouterr().out


def test_relabel_refuses_a_metric_only_some_samples_have(scored_dataset, tmp_path, capsys):
    out = _copy(scored_dataset, tmp_path)
    index = out / "shards" / "00000.parquet"
    rows = pq.read_table(index).to_pylist()
    next(row for row in rows if row["kind"] == "distorted")["scores"]["mae"] = None
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(index)), index)
    _halves().save(tmp_path / "halves.json")
    assert cli.main(["relabel", str(out), "--ensemble", str(tmp_path / "halves.json")]) == 2
    assert "00000: parquet is" in capsys.readouterr().err  # changed after it was written
    stats_agree(index)  # as if written so
    assert cli.main(["relabel", str(out), "--ensemble", str(tmp_path / "halves.json")]) == 2
    assert "some samples have no score of mae (1 of 8)" in capsys.readouterr().err
    assert not list(out.glob("labels-*.parquet"))


def test_relabel_refuses_an_unfinished_dataset(scored_dataset, tmp_path, capsys):
    out = _copy(scored_dataset, tmp_path)
    (out / "shards" / "00000_stats.json").unlink()  # the shard is no longer finished
    _halves().save(tmp_path / "halves.json")
    assert cli.main(["relabel", str(out), "--ensemble", str(tmp_path / "halves.json")]) == 2
    assert "00000: stats missing: the finished dataset lost it" in capsys.readouterr().err
    assert not list(out.glob("labels-*.parquet"))
    out = _copy(scored_dataset, tmp_path / "miscounted")  # stats that count another parquet
    stats = out / "shards" / "00000_stats.json"
    stats.write_text(json.dumps({**json.loads(stats.read_text()),
                                 "samples": json.loads(stats.read_text())["samples"] + 1}))
    assert cli.main(["relabel", str(out), "--ensemble", str(tmp_path / "halves.json")]) == 2
    assert re.search(r"00000: stats say \d+ samples, parquet has \d+", capsys.readouterr().err)
    assert not list(out.glob("labels-*.parquet"))
    out = _copy(scored_dataset, tmp_path / "unmerged")  # every shard, but the run's end not written
    (out / "report.json").unlink()
    assert cli.main(["relabel", str(out), "--ensemble", str(tmp_path / "halves.json")]) == 2
    assert "has no report.json: generate has not finished it" in capsys.readouterr().err
    assert not list(out.glob("labels-*.parquet"))


def test_relabel_is_refused_while_another_command_writes_the_dataset(scored_dataset, tmp_path,
                                                                    capsys):
    """relabel holds OUT's lease as generate does: while a generate (here, a lease this process
    holds) writes OUT, relabel writes nothing; once it is done, relabel runs and lets go."""
    out = _copy(scored_dataset, tmp_path)
    _halves().save(tmp_path / "halves.json")
    writer = Lease(Location.parse(str(out)))
    writer.acquire()
    try:
        assert cli.main(["relabel", str(out), "--ensemble", str(tmp_path / "halves.json")]) == 2
        assert "being written by another driver (iqa-factory generate on host" in \
            capsys.readouterr().err
        assert not list(out.glob("labels-*.parquet"))
    finally:
        writer.release()
    assert cli.main(["relabel", str(out), "--ensemble", str(tmp_path / "halves.json")]) == 0
    assert len(list(out.glob("labels-*.parquet"))) == 1
    assert not (out / LEASE_FILE).exists()


def test_relabel_interrupted_as_its_lease_is_taken_lets_the_lease_go(scored_dataset, tmp_path,
                                                                      monkeypatch):
    """An interrupt that comes as the lease's acquire returns (before the notices it gives
    are printed) came before the block that lets the lease go: OUT stayed held, every other
    writer refused for the stale time."""
    out = _copy(scored_dataset, tmp_path)
    _halves().save(tmp_path / "halves.json")
    acquire = Lease.acquire

    def interrupted_as_it_returns(self, *arguments, **options):
        acquire(self, *arguments, **options)
        raise KeyboardInterrupt
    monkeypatch.setattr(Lease, "acquire", interrupted_as_it_returns)
    assert cli.main(["relabel", str(out), "--ensemble", str(tmp_path / "halves.json")]) == 130
    assert not (out / LEASE_FILE).exists() and not list(out.glob("labels-*.parquet"))


def test_relabel_whose_lease_is_taken_over_publishes_nothing(scored_dataset, tmp_path, capsys,
                                                             monkeypatch):
    """A relabel suspended past the stale time whose lease another writer took over finds it
    out before its sidecar is published."""
    out = _copy(scored_dataset, tmp_path)
    _halves().save(tmp_path / "halves.json")
    location, read, calls = Location.parse(str(out)), lc._distorted_scores, []
    indexes = len(list((out / "shards").glob("*.parquet")))

    def taken_over_while_writing(*arguments):
        calls.append(1)
        if len(calls) == indexes + 1:  # every index checked; the sidecar's writing begins
            holder = {**Lease(location).holder, "host": "elsewhere", "pid": 7}
            Lease(location, holder=holder)._write()
        return read(*arguments)
    monkeypatch.setattr(lc, "_distorted_scores", taken_over_while_writing)
    assert cli.main(["relabel", str(out), "--ensemble", str(tmp_path / "halves.json")]) == 2
    assert "another driver took this run's lease over (iqa-factory generate on host " \
           "elsewhere pid 7" in capsys.readouterr().err
    assert not list(out.glob("labels-*.parquet")) and not list(out.glob("*.staged*"))
    assert json.loads((out / LEASE_FILE).read_text())["host"] == "elsewhere"  # left as found


def test_relabel_refuses_a_folder_that_is_not_a_dataset(tmp_path, capsys):
    assert cli.main(["relabel", str(tmp_path), "--ensemble", "x.json"]) == 2
    assert "cannot read ensemble file" in capsys.readouterr().err
    _halves().save(tmp_path / "halves.json")
    mistyped = tmp_path / "runs" / "no" / "such"
    assert cli.main(["relabel", str(mistyped), "--ensemble", str(tmp_path / "halves.json")]) == 2
    assert f"{mistyped} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # refused before its lease would make OUT
    (tmp_path / "empty").mkdir()
    assert cli.main(["relabel", str(tmp_path / "empty"), "--ensemble", "default"]) == 2
    assert "has no plan.json: not a dataset written by generate" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("a file")
    for command in (["relabel", str(tmp_path / "notes.txt"), "--ensemble", "default"],
                    ["materialize", str(tmp_path / "notes.txt"), str(tmp_path / "m")]):
        assert cli.main(command) == 2
        assert "notes.txt is a file, not a dataset folder" in capsys.readouterr().err
    (tmp_path / "empty.json").write_text("")
    assert cli.main(["relabel", str(tmp_path), "--ensemble", str(tmp_path / "empty.json")]) == 2
    assert "empty.json: not JSON text" in capsys.readouterr().err


def _inspect(out: Path, capsys) -> tuple[int, str]:
    """inspect's exit code and its problems."""
    code = cli.main(["inspect", str(out)])
    printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err
    return code, "\n".join(line for line in printed.out.splitlines()
                           if line.startswith("PROBLEM:"))


def test_inspect_names_a_sidecars_duplicated_unknown_and_untyped_keys(scored_dataset, tmp_path,
                                                                     capsys):
    out = _copy(scored_dataset, tmp_path)
    _halves().save(tmp_path / "halves.json")
    assert cli.main(["relabel", str(out), "--ensemble", str(tmp_path / "halves.json")]) == 0
    sidecar = out / f"labels-{_halves().hash}.parquet"
    table = pq.read_table(sidecar)
    keys = table["key"].to_pylist()
    pq.write_table(pa.concat_tables([table, table.slice(2, 1)]), sidecar)  # a label twice
    code, printed = _inspect(out, capsys)
    assert code == 1 and "labels 8 samples (9 rows) but the dataset has 8 distorted ones: " \
        "relabel again" in printed
    renamed = ["zz_not_a_sample", "aa_nor_this", *keys[2:]]
    pq.write_table(table.set_column(0, "key", pa.array(renamed)), sidecar)
    code, printed = _inspect(out, capsys)
    assert code == 1 and (f"labels 8 samples (8 rows) but the dataset has 8 distorted ones "
                          f"(first missing {min(keys[:2])}) (first unknown aa_nor_this)"
                          ) in printed
    pq.write_table(table.set_column(0, "key", pa.array(range(len(keys)))), sidecar)
    code, printed = _inspect(out, capsys)
    assert code == 1 and f"labels-{_halves().hash}.parquet is unreadable" in printed
    shard = table.column_names.index("shard")
    unfiled = pa.array([None, *table["shard"].to_pylist()[1:]], table["shard"].type)
    pq.write_table(table.set_column(shard, "shard", unfiled), sidecar)  # a label in no shard
    code, printed = _inspect(out, capsys)
    assert code == 1 and f"files 1 label(s) under another shard than their samples' (e.g. " \
        f"{keys[0]} in shard None" in printed
    pq.write_table(table.set_column(0, "key", table["key"].cast(pa.large_string())), sidecar)
    assert _inspect(out, capsys) == (0, "")  # keys written as large strings are keys


def test_inspect_checks_each_sidecar_against_the_dataset(scored_dataset, tmp_path, capsys):
    out = _copy(scored_dataset, tmp_path)
    _halves().save(tmp_path / "halves.json")
    assert cli.main(["relabel", str(out), "--ensemble", str(tmp_path / "halves.json")]) == 0
    assert _inspect(out, capsys) == (0, "")  # a sidecar relabel wrote is sound
    sidecar = out / f"labels-{_halves().hash}.parquet"
    table = pq.read_table(sidecar)
    pq.write_table(table.slice(1), sidecar)  # a label lost
    code, printed = _inspect(out, capsys)
    first = table["key"][0].as_py()
    assert code == 1 and f"labels 7 samples (7 rows) but the dataset has 8 distorted ones " \
        f"(first missing {first})" in printed
    shards = table["shard"].to_pylist()
    moved = table.set_column(table.column_names.index("shard"), "shard",
                             pa.array([1 - shards[0], *shards[1:]], table["shard"].type))
    pq.write_table(moved, sidecar)  # a label filed under the other shard
    code, printed = _inspect(out, capsys)
    assert code == 1 and (f"files 1 label(s) under another shard than their samples' (e.g. "
                          f"{first} in shard {1 - shards[0]}, its sample in shard "
                          f"{shards[0]})") in printed
    with pytest.raises(SidecarError, match=f"sample {first} has no Q"):  # as readers refuse it
        list(open_dataset(str(out), labels=_halves().hash).samples(kind="distorted"))
    quality = table["quality"].to_pylist()
    pq.write_table(table.set_column(1, "quality", pa.array([np.nan, *quality[1:]]))
                   .replace_schema_metadata({"ensemble_hash": "0" * 16}), sidecar)
    code, printed = _inspect(out, capsys)
    assert code == 1 and f"sample {first} has Q nan, not a number in 0..1 (1 such)" in printed
    assert f"records ensemble {'0' * 16}, not the one its name says" in printed
    pq.write_table(table.set_column(1, "quality", pa.array([1.5, *quality[1:]])), sidecar)
    code, printed = _inspect(out, capsys)  # what a reader refuses, inspect names
    assert code == 1 and f"sample {first} has Q 1.5, not a number in 0..1" in printed
    pq.write_table(table.set_column(1, "quality", pa.array(["high"] * len(table))), sidecar)
    code, printed = _inspect(out, capsys)
    assert code == 1 and "its quality column holds string, not numbers" in printed
    metadata = {**table.schema.metadata, b"metrics_used": b'["gmsd", "lpips"]'}
    pq.write_table(table.replace_schema_metadata(metadata), sidecar)
    code, printed = _inspect(out, capsys)  # the run scored gmsd and mae: lpips is no Q's part
    assert code == 1 and (f"{sidecar.name} says its Q is made of lpips, which this dataset "
                          "never scored") in printed
    sidecar.write_bytes(b"not parquet")
    code, printed = _inspect(out, capsys)
    assert code == 1 and f"{sidecar.name} is unreadable" in printed
    (out / "shards" / "00000.tar").write_bytes(b"")  # a damaged shard: relabel refuses it, and
    code, printed = _inspect(out, capsys)           # the sidecar is not judged against it
    assert code == 1 and "shard 00000" in printed and sidecar.name not in printed


@pytest.mark.parametrize(("name", "content", "said"), [
    ("report.json", "{half", "report.json is not JSON"),
    ("report.json", "[1, 2]", "report.json holds list, not an object"),
    ("report.json", "{}", "report.json lacks the field 'samples'"),
    ("manifest.json", "{trunc", "manifest.json is not JSON"),
    ("manifest.json", "{}", "manifest.json lacks the field 'config'"),
    ("plan.json", None, "no plan.json: not a dataset written by generate"),
    ("plan.json", json.dumps({"inputs": {}, "references": [],
                              "digest": plan_digest({"inputs": {}, "references": []})}),
     "not a shard plan (KeyError: 'shard_refs')"),
    ("plan.json", '{"inputs": {}, "references": []}', "plan.json: its digest None is not that "
     "of the plan it holds"),
    ("report.json", None, "no report.json: the run has not finished"),
    ("ensemble.json", "{half", "ensemble.json is damaged"),
    ("ensemble.json", None, "no ensemble.json: the ensemble the run's Q was made with"),
    ("ensemble.json", json.dumps(_halves("vif").to_json()),
     f"ensemble.json holds ensemble {_halves('vif').hash}, not the run's {_halves().hash}"),
])
def test_inspect_names_a_damaged_run_file(scored_dataset, tmp_path, capsys, name, content,
                                          said):
    out = _copy(scored_dataset, tmp_path)
    if content is None:
        (out / name).unlink()
    else:
        (out / name).write_text(content)
    code, printed = _inspect(out, capsys)
    assert code == 1 and said in printed


@pytest.mark.parametrize(("name", "field", "value", "said"), [
    ("manifest.json", ("config", "size"), 5, "manifest.json is damaged (AttributeError"),
    ("report.json", ("failures_by_reason",), 5,
     "report.json's failures_by_reason is 5, not a count by reason"),
    ("report.json", ("pixel_duplicates",), [{}],
     "report.json's pixel_duplicates is [{}], not a list of {ref_id, of, splits}"),
    ("report.json", ("modes",), ["store"],
     "report.json's modes is ['store'], not an object of the generation modes"),
    ("report.json", ("samples",), "16", "report.json's samples is '16', not a count"),
    ("report.json", ("metrics_absent",), None,
     "report.json's metrics_absent is None, not a list of metric names"),
    ("shards/00000_stats.json", ("samples",), None, "shard 00000: "),  # not a TypeError
    ("shards/00000_stats.json", ("samples",), "7", "shard 00000: "),
])
def test_inspect_names_a_damaged_field_of_a_run_file(scored_dataset, tmp_path, capsys, name,
                                                     field, value, said):
    out = _copy(scored_dataset, tmp_path)
    data = json.loads((out / name).read_text())
    inner = data
    for key in field[:-1]:
        inner = inner[key]
    inner[field[-1]] = value
    (out / name).write_text(json.dumps(data))
    code, printed = _inspect(out, capsys)
    assert code == 1 and said in printed
    if name.endswith("stats.json"):  # named as a damaged shard in other words
        said = f"{shard_name(0)}: stats say {value} samples"
    _refused_as_a_source(out, tmp_path, capsys, said)


def test_an_older_report_without_modes_is_inspected_with_its_library_differences(
        scored_dataset, tmp_path, capsys):
    """A report written before `modes` (2026-11-30) is read without it: shards of another
    library version in an images dataset are a note, never a KeyError."""
    out = _copy(scored_dataset, tmp_path)
    report = json.loads((out / "report.json").read_text())
    del report["modes"]
    report["libraries_differing"] = {"numpy": {"0.1": 2}}
    (out / "report.json").write_text(json.dumps(report))
    assert cli.main(["inspect", str(out)]) == 0
    printed = capsys.readouterr()
    assert "numpy 0.1 in 2 shards" in printed.out and "Traceback" not in printed.err


def _refused_as_a_source(out: Path, tmp_path: Path, capsys, said: str) -> None:
    """What inspect names of a dataset, convert (which copies its run files) and relabel
    refuse before any work, named the same way."""
    _halves().save(tmp_path / "halves.json")
    for command in (["convert", str(out), str(tmp_path / "recipes"), "--store", "recipes"],
                    ["relabel", str(out), "--ensemble", str(tmp_path / "halves.json")]):
        assert cli.main(command) == 2, command
        printed = capsys.readouterr()
        assert said in printed.err and "Traceback" not in printed.out + printed.err
    assert not (tmp_path / "recipes").exists() and not list(out.glob("labels-*"))


@pytest.mark.parametrize(("field", "value"), [("samples", 5), ("samples", 0),
                                              ("distorted", 0), ("sources_ok", 0),
                                              ("sources", 9)])
def test_inspect_holds_the_reports_counts_to_the_shards(scored_dataset, tmp_path, capsys,
                                                        field, value):
    """report.json's counts as the shards' parquet indices and sources.parquet give them
    (not the report's word: 0 samples is no 'none of the sources could be used')."""
    out = _copy(scored_dataset, tmp_path)
    rows = pa.concat_tables([pq.read_table(path) for path in
                             sorted((out / "shards").glob("*.parquet"))])
    sources = pq.read_table(out / "sources.parquet").to_pylist()
    held = {"samples": len(rows), "distorted": sum(key.rpartition("_")[2] != "ref"
                                                   for key in rows["key"].to_pylist()),
            "sources": len(sources),
            "sources_ok": sum(row["status"] == "ok" for row in sources)}
    report = json.loads((out / "report.json").read_text())
    assert {name: report[name] for name in held} == held  # as generate wrote it
    (out / "report.json").write_text(json.dumps({**report, field: value}))
    code, printed = _inspect(out, capsys)
    said = f"report.json says {field} {value} but the shards hold {held[field]}: edited or damaged"
    assert code == 1 and said in printed
    assert "none of the" not in printed
    _refused_as_a_source(out, tmp_path, capsys, said)


def _sources_edited(table: pa.Table, edit: str) -> pa.Table:
    if edit == "row lost":
        return table.slice(1)
    if edit == "row twice":
        return pa.concat_tables([table, table])
    if edit == "split moved":
        moved = ["test" if split != "test" else "train" for split in table["split"].to_pylist()]
        return table.set_column(table.column_names.index("split"), "split", pa.array(moved))
    if edit in ("shard moved", "status changed", "pixels changed"):  # the first row's
        name, value = {"shard moved": ("shard", 7), "status changed": ("status", "failed"),
                       "pixels changed": ("sha256", "0" * 64)}[edit]
        column = table[name].to_pylist()
        return table.set_column(table.column_names.index(name), name,
                                pa.array([value, *column[1:]], table.schema.field(name).type))
    return table.drop_columns(["status"])


@pytest.mark.parametrize(("edit", "said"), [
    (None, "sources.parquet does not exist"),
    (b"PAR1 cut", "sources.parquet cannot be read as parquet"),
    ("row lost", "sources.parquet lists 1 sources, the plan 2 (not planned: [], not listed"),
    ("row twice", "sources.parquet lists 4 sources, the plan 2"),
    ("split moved", "sources.parquet puts 2 sources in another split than the plan"),
    ("shard moved", "sources.parquet routes 1 sources otherwise than their shards' lists "
                    "(astronaut ok in shard 7 (pixels "),
    ("status changed", "sources.parquet routes 1 sources otherwise than their shards' lists "
                       "(astronaut failed in shard 0 (pixels "),
    ("pixels changed", "sources.parquet routes 1 sources otherwise than their shards' lists "
                       "(astronaut ok in shard 0 (pixels 00000000), its shard's list: ok in "
                       "shard 0 (pixels "),  # a mix of two datasets' files
    ("column lost", "sources.parquet lacks the columns ['status']"),
])
def test_inspect_names_a_sources_parquet_the_readers_could_not_trust(scored_dataset, tmp_path,
                                                                    capsys, edit, said):
    out = _copy(scored_dataset, tmp_path)
    path = out / "sources.parquet"
    if edit is None:
        path.unlink()
    elif isinstance(edit, bytes):
        path.write_bytes(edit)
    else:
        pq.write_table(_sources_edited(pq.read_table(path), edit), path)
    code, printed = _inspect(out, capsys)
    assert code == 1 and said in printed
    if isinstance(edit, bytes) or edit == "column lost":  # readers name it too, not pyarrow
        with pytest.raises(ValueError, match=re.escape(f"{path} ")):
            open_dataset(str(out)).samples(split="train")


def test_inspect_calls_a_finished_run_without_a_sample_a_problem(tmp_path, capsys):
    """Two sources that are no images, made by the Ray-free worker: a finished run whose
    shards hold nothing, named as such (its report agrees with its shards)."""
    from labelers import Labeler
    from pipeline.config import RunConfig
    from pipeline.plan import Plan, persist_or_check
    from pipeline.report import write_run_files
    from pipeline.sizing import TargetSize
    from pipeline.sources import list_sources
    from pipeline.worker import produce_shard
    from tests.conftest import local_scorer

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_text("no image")
    config = RunConfig(sources=str(folder), out=str(tmp_path / "data"),
                       size=TargetSize(192, 176), shard_refs=1, distortion_ids=(1,),
                       levels=(1,), metrics=("gmsd", "mae"))
    plan = Plan.make(list_sources(str(folder)), config)
    location = Location.parse(config.out)
    persist_or_check(plan, location)
    write_run_files(location, config, plan, _halves(), ())
    scorer = local_scorer(Labeler(metrics=config.metrics, device="cpu"))
    for shard in range(plan.shard_count):
        produce_shard(shard, plan, config, scorer, _halves(), location)
    finish(location, plan, config)
    code, printed = _inspect(tmp_path / "data", capsys)
    assert code == 1 and "no sample: none of the 2 sources could be used" in printed
    assert "report.json says" not in printed


def test_weights_import_reports_a_folder_without_the_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    assert cli.main(["weights", "import", str(tmp_path)]) == 2
    assert "vgg16-397923af.pth" in capsys.readouterr().err


def test_relabel_names_a_plan_json_that_is_not_one(scored_dataset, tmp_path, capsys):
    out = _copy(scored_dataset, tmp_path)
    (out / "plan.json").write_text("garbage")
    assert cli.main(["relabel", str(out), "--ensemble", "default"]) == 2
    assert f"{out / 'plan.json'} is not JSON (Expecting value" in capsys.readouterr().err


def test_one_image_spelled_two_ways_is_one_reference_of_the_fit(tmp_path):
    """`./r1.png` and `r1.png` name one file: read as one reference, so the fit's split by
    reference never puts one image on both sides (its held-out figures would be its own)."""
    from pipeline.commands.label_commands import read_opinion_table

    table = tmp_path / "dmos.csv"
    table.write_text("dist_img,ref_img,dmos\nd1.png,./r1.png,3.0\nsub/../d2.png,r1.png,2.0\n")
    rows = read_opinion_table(table)
    assert [(dist, ref) for dist, ref, _ in rows] == [("d1.png", "r1.png"), ("d2.png", "r1.png")]


def test_a_reader_refuses_a_sidecar_copied_under_another_ensembles_name(scored_dataset,
                                                                        tmp_path):
    """A sidecar's name says which ensemble's Q it holds, and so does its metadata: a reader
    asked for one ensemble never takes another's Q from a copy under its name (inspect names
    the same sidecar as a problem)."""
    out = _copy(scored_dataset, tmp_path)
    _halves().save(tmp_path / "halves.json")
    assert cli.main(["relabel", str(out), "--ensemble", str(tmp_path / "halves.json")]) == 0
    shutil.copy(out / f"labels-{_halves().hash}.parquet", out / f"labels-{'0' * 16}.parquet")
    assert len(list(open_dataset(out, labels=_halves().hash).samples(decode=False))) > 0
    from shards.sidecar import SidecarError
    with pytest.raises(SidecarError, match=rf"labels-{'0' * 16}\.parquet records ensemble "
                                           rf"{_halves().hash}, not the one its name says"):
        open_dataset(out, labels="0" * 16)


@pytest.mark.parametrize(("field", "value", "said"), [
    (b"metrics_used", b'"gmsd"', "its metrics_used is 'gmsd', not a list of distinct metric "
     "names among gmsd, fsim"),
    (b"metrics_used", b"[1, 2]", "its metrics_used is [1, 2], not a list of distinct"),
    (b"metrics_used", b"[]", "its metrics_used is [], not a list of distinct"),
    (b"metrics_used", b'["foo", "bar"]', "its metrics_used is ['foo', 'bar'], not a list of "
     "distinct"),
    (b"metrics_used", b'["gmsd", "gmsd"]', "its metrics_used is ['gmsd', 'gmsd'], not a list"),
    (b"metrics_used", b"[gmsd", "its metadata: Expecting value"),
    (b"plan_digest", b"\xff\xfe", "its metadata: 'utf-8' codec can't decode"),
    (b"ensemble_hash", b"\xff", "its metadata: 'utf-8' codec can't decode"),
])
def test_a_sidecar_whose_metadata_is_damaged_is_named_by_readers_inspect_and_convert(
        scored_dataset, tmp_path, capsys, field, value, said):
    """A sidecar's metadata says what its Q is (the metrics it is made of: labels.md, and the
    dataset it was made for): where it is not text, or metrics_used no JSON list of metric
    names, the file is named as damaged, never a bare decode error nor a label handed on."""
    out = _copy(scored_dataset, tmp_path)
    _halves().save(tmp_path / "halves.json")
    assert cli.main(["relabel", str(out), "--ensemble", str(tmp_path / "halves.json")]) == 0
    sidecar = out / f"labels-{_halves().hash}.parquet"
    table = pq.read_table(sidecar)
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, field: value}),
                   sidecar)
    damaged = f"{sidecar.name} is damaged: delete it and relabel again ({said}"
    with pytest.raises(SidecarError, match=re.escape(damaged)):
        list(open_dataset(out, labels=_halves().hash).samples(decode=False))
    code, printed = _inspect(out, capsys)
    assert code == 1 and damaged in printed
    assert cli.main(["convert", str(out), str(tmp_path / "recipes"), "--store",
                     "recipes"]) == 2
    printed = capsys.readouterr()
    assert damaged in printed.err and "Traceback" not in printed.out + printed.err
    assert not (tmp_path / "recipes").exists()


@pytest.mark.parametrize("content, said", [("[1", "is not JSON"),
                                           ("[]", "holds list, not an object")])
def test_readers_name_a_damaged_plan_or_manifest(scored_dataset, tmp_path, content, said):
    """plan.json and manifest.json as open_dataset and its group readers take them: a file
    that is not a JSON object is named with what is wrong, never a raw parse error or an
    AttributeError."""
    from shards.layout import RunFileError

    out = _copy(scored_dataset, tmp_path)
    plan = (out / "plan.json").read_bytes()
    (out / "plan.json").write_text(content)
    with pytest.raises(RunFileError, match=rf"plan\.json {re.escape(said)}"):
        open_dataset(out)
    (out / "plan.json").write_bytes(plan)
    (out / "manifest.json").write_text(content)
    dataset = open_dataset(out)
    assert len(list(dataset.samples(decode=False))) > 0  # samples need no manifest
    with pytest.raises(RunFileError, match=rf"manifest\.json {re.escape(said)}"):
        next(iter(dataset.groups("pair", crop=32)))
