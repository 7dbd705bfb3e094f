"""Issue 11 end to end through the real command line and a real Ray run: generate --store
hybrid, inspect it (valid, bytes per sample, a replay check), materialize it, and compare the
tars with the --store images tars the real shard worker makes of the same configuration."""

import json
from pathlib import Path

import pytest

from labelers import Labeler
from labelers.ensemble import load as load_ensemble
from pipeline import cli
from pipeline.commands.inspect_dataset import inspect
from pipeline.config import RunConfig
from pipeline.plan import Plan
from pipeline.sources import list_sources
from pipeline.worker import produce_shard
from shards.storage import Location
from tests.conftest import local_scorer

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _images_tars(config: RunConfig) -> dict[str, bytes]:
    """The tars of `config` with --store images, made by the shard worker in this process."""
    plan = Plan.make(list_sources(config.sources), config)
    location = Location.parse(config.out)
    ensemble = load_ensemble(config.ensemble_file)
    scorer = local_scorer(Labeler(metrics=config.metrics, device="cpu"))
    for index in range(plan.shard_count):
        produce_shard(index, plan, config, scorer, ensemble, location)
    return {p.name: p.read_bytes() for p in sorted((Path(config.out) / "shards").glob("*.tar"))}


def test_hybrid_run_inspects_and_materializes_to_the_images_bytes(local_ray, shifted_sources,
                                                                  tmp_path, capsys):
    folder, ensemble = shifted_sources(3)
    hybrid, images = tmp_path / "hybrid", tmp_path / "materialized"
    assert cli.main(["generate", "--sources", str(folder), "--out", str(hybrid),
                     "--size", "192x176", "--shard-refs", "2", "--distortions", "1,8,26",
                     "--levels", "1,5", "--ensemble", str(ensemble), "--store", "hybrid"]) == 0
    lines, problems = inspect(str(hybrid), deep=2)
    assert problems == []
    assert any(line.startswith("storage: hybrid,") and "kB per sample" in line
               for line in lines)
    assert any(line.startswith("replay check:") and "the recorded one" in line
               for line in lines)
    assert any(line.startswith("deep check: 2 sampled versions") for line in lines)
    assert cli.main(["materialize", str(hybrid), str(images)]) == 0
    manifest = json.loads((hybrid / "manifest.json").read_text())
    config = RunConfig.from_json({**manifest["config"], "store": "images",
                                  "out": str(tmp_path / "images")})
    expected = _images_tars(config)
    got = {p.name: p.read_bytes() for p in sorted((images / "shards").glob("*.tar"))}
    assert list(got) == list(expected) == ["00000.tar", "00001.tar"]
    assert got == expected
    capsys.readouterr()
