"""`iqa-factory materialize` (issue 11): a recipes or hybrid dataset replayed into the same
tars and indexes, byte for byte, as generating the run with --store images; resumable; and
refused on a dataset with nothing to materialize."""

import json

import pytest

from pipeline import cli
from pipeline.commands.materialize import MaterializeError, materialize

COMPARED = ("plan.json", "sources.parquet", "failures.jsonl", "ensemble.json")


def _files(root) -> dict[str, bytes]:
    """Every shard file but the stats (which time the write), and the run's files."""
    shard_files = {f"shards/{p.name}": p.read_bytes() for p in (root / "shards").iterdir()
                   if not p.name.endswith("_stats.json")}
    return {**shard_files, **{name: (root / name).read_bytes() for name in COMPARED}}


@pytest.mark.parametrize("store", ["recipes", "hybrid", "hybrid_kept"])
def test_materialize_gives_the_images_datasets_bytes(store_datasets, tmp_path, store, capsys):
    out = tmp_path / "images"
    assert cli.main(["materialize", str(store_datasets[store]), str(out)]) == 0
    assert "versions replayed and verified" in capsys.readouterr().out
    expected = _files(store_datasets["images"])
    got = _files(out)
    assert sorted(got) == sorted(expected)
    assert [name for name in expected if got[name] != expected[name]] == []
    made = json.loads((out / "manifest.json").read_text())
    original = json.loads((store_datasets["images"] / "manifest.json").read_text())
    assert (made["store"], made["config"]["store"]) == ("images", "images")
    assert made["plan_digest"] == original["plan_digest"]
    for stats in (out / "shards").glob("*_stats.json"):
        theirs = json.loads((store_datasets["images"] / "shards" / stats.name).read_text())
        mine = json.loads(stats.read_text())
        assert {k: mine[k] for k in ("tar_bytes", "tar_sha256", "plan_digest", "samples")} == {
            k: theirs[k] for k in ("tar_bytes", "tar_sha256", "plan_digest", "samples")}


def test_materialize_resumes_and_refuses_what_it_cannot_do(store_datasets, tmp_path):
    out = tmp_path / "images"
    first = materialize(str(store_datasets["recipes"]), str(out), workers=2)
    assert first["skipped"] == 0 and first["replayed"] == 3 * 6  # 3 references x 6 versions
    tar = out / "shards" / "00000.tar"
    before = tar.stat().st_mtime_ns
    again = materialize(str(store_datasets["recipes"]), str(out))
    assert (again["skipped"], again["replayed"]) == (first["shards"], 0)
    assert tar.stat().st_mtime_ns == before
    with pytest.raises(MaterializeError, match="already an images dataset"):
        materialize(str(store_datasets["images"]), str(tmp_path / "other"))
    with pytest.raises(MaterializeError, match=r"has no plan\.json"):
        materialize(str(tmp_path / "nothing"), str(tmp_path / "other"))
    with pytest.raises(MaterializeError, match="workers must be at least 1"):
        materialize(str(store_datasets["recipes"]), str(tmp_path / "other"), workers=0)
