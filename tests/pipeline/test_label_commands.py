import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from labelers import ensemble as ens
from pipeline import cli


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


def test_fit_ensemble_rejects_a_table_without_kadid_columns(tmp_path, capsys):
    table = tmp_path / "scores.csv"
    table.write_text("image,score\na.png,3\n")
    assert cli.main(["fit-ensemble", str(table)]) == 2
    assert "dist_img" in capsys.readouterr().err


def _dataset(tmp_path):
    """A dataset directory with one parquet index in the shard format: a reference row
    (no scores) and two distorted rows."""
    scores_type = pa.struct([("gmsd", pa.float64()), ("mae", pa.float64())])
    table = pa.table({
        "key": ["a_ref", "a_d01_l1", "a_d01_l5"],
        "kind": ["reference", "distorted", "distorted"],
        "scores": pa.array([None, {"gmsd": 0.0, "mae": 0.1}, {"gmsd": 0.2, "mae": 0.2}],
                           type=scores_type),
    })
    (tmp_path / "shards").mkdir(parents=True)
    pq.write_table(table, tmp_path / "shards" / "00000.parquet")
    return tmp_path


def test_relabel_writes_a_sidecar_from_the_raw_scores(tmp_path):
    out = _dataset(tmp_path / "data")
    ensemble = ens.Ensemble("halves", {"gmsd": 1.0, "mae": 1.0},
                            {"gmsd": ens.Mapping01("linear", best=0.0, worst=0.4),
                             "mae": ens.Mapping01("linear", best=0.0, worst=0.2)})
    ensemble.save(tmp_path / "halves.json")
    assert cli.main(["relabel", str(out), "--ensemble", str(tmp_path / "halves.json")]) == 0
    labels = pq.read_table(out / f"labels-{ensemble.hash}.parquet").to_pydict()
    assert labels["key"] == ["a_d01_l1", "a_d01_l5"]
    np.testing.assert_allclose(labels["quality"], [(1.0 + 0.5) / 2, (0.5 + 0.0) / 2])


def test_relabel_leaves_out_a_metric_the_dataset_never_scored_and_says_so(tmp_path, capsys):
    out = _dataset(tmp_path / "data")
    ensemble = ens.Ensemble("with-vif", {"gmsd": 1.0, "vif": 3.0},
                            {"gmsd": ens.Mapping01("linear", best=0.0, worst=0.4),
                             "vif": ens.Mapping01("linear", best=1.0, worst=0.0)})
    ensemble.save(tmp_path / "with-vif.json")
    assert cli.main(["relabel", str(out), "--ensemble", str(tmp_path / "with-vif.json")]) == 0
    assert "no vif scores: Q is renormalised over gmsd" in capsys.readouterr().out
    table = pq.read_table(out / f"labels-{ensemble.hash}.parquet")
    np.testing.assert_allclose(table["quality"].to_pylist(), [1.0, 0.5])  # gmsd's alone
    assert json.loads(table.schema.metadata[b"metrics_used"]) == ["gmsd"]


def test_relabel_refuses_a_metric_only_some_samples_have(tmp_path, capsys):
    out = _dataset(tmp_path / "data")
    index = out / "shards" / "00000.parquet"
    table = pq.read_table(index).to_pylist()
    table[2]["scores"]["mae"] = None
    pq.write_table(pa.Table.from_pylist(table, schema=pq.read_schema(index)), index)
    ensemble = ens.Ensemble("halves", {"gmsd": 1.0, "mae": 1.0},
                            {"gmsd": ens.Mapping01("linear", best=0.0, worst=0.4),
                             "mae": ens.Mapping01("linear", best=0.0, worst=0.2)})
    ensemble.save(tmp_path / "halves.json")
    assert cli.main(["relabel", str(out), "--ensemble", str(tmp_path / "halves.json")]) == 2
    assert "some samples have no score of mae (1 of 2)" in capsys.readouterr().err
    assert not list(out.glob("labels-*.parquet"))


def test_relabel_refuses_a_folder_that_is_not_a_dataset(tmp_path, capsys):
    assert cli.main(["relabel", str(tmp_path), "--ensemble", "x.json"]) == 2
    assert "cannot read ensemble file" in capsys.readouterr().err


def test_weights_import_reports_a_folder_without_the_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    assert cli.main(["weights", "import", str(tmp_path)]) == 2
    assert "vgg16-397923af.pth" in capsys.readouterr().err
