"""The demo summary reads each run's results.json and counts, split by split, where the
pretrained encoder's test SROCC beats its baseline's."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import demo_summary


def _write(path: Path, sroccs: list[float], **fields) -> None:
    path.mkdir(parents=True)
    median = {"srocc": sorted(sroccs)[(len(sroccs) - 1) // 2], "plcc": 0.5, "krcc": 0.25,
              "rmse": 0.1}
    splits = [{"test": {"srocc": value}} for value in sroccs]
    (path / "results.json").write_text(json.dumps({"median": median, "splits": splits,
                                                   **fields}))


def test_rows_count_the_splits_each_run_wins(tmp_path):
    _write(tmp_path / "contrastive" / "probe", [0.5, 0.2, 0.9], crop=96)
    _write(tmp_path / "random-96" / "probe", [0.4, 0.3, 0.1], crop=96)
    _write(tmp_path / "regression" / "probe", [0.6], crop=128)
    _write(tmp_path / "random-128" / "probe", [0.7], crop=128)
    _write(tmp_path / "regression" / "pretrained", [0.3, 0.8])
    _write(tmp_path / "regression" / "baseline", [0.2, 0.9])
    rows = demo_summary.summary(tmp_path)
    assert [(r["objective"], r["read_out"], r["splits_won"], r["splits"], r["crop"])
            for r in rows] == [("contrastive", "probe", 2, 3, 96),
                               ("regression", "probe", 0, 1, 128),
                               ("regression", "fine-tune", 1, 2, 128)]
    assert rows[0]["srocc"] == 0.5 and rows[0]["baseline_srocc"] == 0.3
    assert "| contrastive | probe | 96 | 0.5 |" in demo_summary.markdown(rows)


def test_no_run_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="make pretrain-demo"):
        demo_summary.summary(tmp_path)


def test_the_scatter_plot_of_the_fine_tuned_first_split_is_copied(tmp_path):
    split = tmp_path / "demo" / "regression" / "pretrained" / "split-0"
    split.mkdir(parents=True)
    (split / "scatter.png").write_bytes(b"a picture")
    (tmp_path / "docs").mkdir()
    assert demo_summary.copy_scatter(tmp_path / "demo", tmp_path / "docs") == (
        tmp_path / "docs" / "pretrain-demo-scatter.png")
    assert (tmp_path / "docs" / "pretrain-demo-scatter.png").read_bytes() == b"a picture"
    assert demo_summary.copy_scatter(tmp_path / "none", tmp_path / "docs") is None


def test_an_undefined_figure_is_shown_undefined_and_its_split_not_won(tmp_path):
    """A collapsed run's results.json holds null figures (constant predictions have no
    correlation): its row says undefined, and a split whose SROCC is null is won by no one."""
    (tmp_path / "reconstruction" / "probe").mkdir(parents=True)
    (tmp_path / "reconstruction" / "probe" / "results.json").write_text(json.dumps({
        "median": {"srocc": 0.5, "plcc": None, "krcc": None, "rmse": 0.2},
        "splits": [{"test": {"srocc": None}}, {"test": {"srocc": 0.5}}], "crop": 96}))
    _write(tmp_path / "random-96" / "probe", [0.1, 0.9], crop=96)
    (row,) = demo_summary.summary(tmp_path)
    assert (row["plcc"], row["splits_won"], row["srocc"]) == (None, 0, 0.5)
    assert "| reconstruction | probe | 96 | 0.5 | undefined | undefined | 0.2 |" in \
        demo_summary.markdown([row])
