"""The storage benchmark counts every byte of a dataset (the datasets it measures are made by
`iqa-factory convert`, pinned to generate's own in tests/pipeline/test_convert.py), and its
loader model is the stated formula."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_storage


def test_every_byte_of_a_dataset_is_counted(store_datasets):
    root = store_datasets["recipes"]
    spent = bench_storage.dataset_bytes(root)
    assert (spent["references"], spent["versions"]) == (3, 3 * 6)
    assert spent["total"] == sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_the_paper_scale_ratio_is_the_runs_own_where_its_versions_per_reference_are_the_papers():
    """140k references and 23.1M versions are 165 versions per reference, as the embedded run's
    5 and 825: the projection scales both modes' bytes alike, so their ratio is the run's
    (from rounded terabytes it read 127.2 for recipes, where the bytes give 126.1)."""
    spent = {mode: {"tars": 0, "indexes": 10, "side_files": 0, "run_files": 0,
                    "reference_pngs": 1618246, "references": 5, "versions": 825, "total": total}
             for mode, total in (("images", 267945661), ("recipes", 2124358))}
    found = bench_storage.projected(spent)
    assert found["recipes"]["times_smaller_than_images"] == round(267945661 / 2124358, 1)
    assert found["recipes"]["paper_times_smaller"] == found["recipes"]["times_smaller_than_images"]


def test_the_loader_model_replaces_each_decode_by_its_replay():
    replay = [{"id": 1, "name": "a", "replay_ms": 2.0, "png_decode_ms": 4.0, "png_bytes": 10,
               "stored_in_hybrid": False},
              {"id": 2, "name": "b", "replay_ms": 30.0, "png_decode_ms": 6.0, "png_bytes": 20,
               "stored_in_hybrid": False},
              {"id": 8, "name": "c", "replay_ms": 300.0, "png_decode_ms": 5.0, "png_bytes": 30,
               "stored_in_hybrid": True}]
    result = {"replay": replay, "loader_samples_per_s": {"images": {"1": 100.0}},
              "sizes": {"images": {"total": 1000, "versions": 30},
                        "recipes": {"total": 10}}}
    # 10 ms a sample, of which 5 decoding on average: 5 ms of other work
    assert bench_storage.predicted_share(result, set()) == pytest.approx(10 / (5 + 332 / 3))
    assert bench_storage.predicted_share(result, {8}) == pytest.approx(10 / (5 + 37 / 3))
    assert bench_storage.predicted_share(result, {1, 2, 8}) == pytest.approx(1.0)
    steps = bench_storage.frontier(result)  # learned first, then the slowest replay, until 80%
    assert [step["ids"] for step in steps] == [[], [8], [2, 8]]
    # 10 versions a type: 1000 bytes against the 10 of recipes plus the PNGs kept
    assert [step["times_smaller"] for step in steps] == [100.0, round(1000 / 310, 1),
                                                         round(1000 / 510, 1)]
    assert bench_storage.kept_types({**result, "frontier": steps}) == [2]
