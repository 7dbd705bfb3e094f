"""The shipped pseudo-MOS ensemble (pmos_ensemble.json), ensembles by name, and the default
ensemble's hash, unchanged by their arrival."""

import json

import numpy as np
import pytest

import distortions
import labelers
from labelers import ensemble as ens
from pipeline.commands.pmos_ensemble import PMOS_METRICS
from tests.labelers.conftest import BEST

DEFAULT_HASH = "45e0cf50148a6555"  # default-v1, as shipped before the named ensembles


def _by_hand(scores: dict[str, np.ndarray]) -> np.ndarray:
    """Q of the pmos file computed from its JSON: the plain mean of six clipped linear maps."""
    mappings = json.loads(ens.PMOS_ENSEMBLE_FILE.read_text())["mappings"]
    mapped = [np.clip((scores[key] - mappings[key]["worst"])
                      / (mappings[key]["best"] - mappings[key]["worst"]), 0, 1)
              for key in PMOS_METRICS]
    return sum(mapped) / 6


def test_pmos_weighs_the_six_equally_with_identity_bests():
    pmos = ens.load("pmos")
    assert pmos.name == "pmos-v1" and set(pmos.weights) == set(PMOS_METRICS)
    assert all(weight == 1 / 6 for weight in pmos.weights.values())
    for key, mapping in pmos.mappings.items():
        assert mapping.kind == "linear" and mapping.best == BEST[key]
        assert (mapping.worst > mapping.best) is (not labelers.metric_class(key).higher_is_better)
    assert set(PMOS_METRICS) <= set(labelers.AVAILABLE_METRICS)


def test_pmos_quality_is_the_mean_of_the_six_mapped_scores_and_rises_for_milder_versions(
        small_image):
    versions = [distortions.apply(small_image, name, level, seed=0)[0]
                for name in ("gaussian_blur", "jpeg", "white_noise") for level in (5, 3, 2)]
    scores = labelers.Labeler(metrics=PMOS_METRICS, device="cpu").score(small_image, versions)
    quality, used = ens.load("pmos").quality(scores)
    assert sorted(used) == sorted(PMOS_METRICS)
    assert np.all((quality >= 0) & (quality <= 1))
    np.testing.assert_allclose(quality, _by_hand(scores), rtol=0, atol=1e-12)
    for levels_5_3_2 in quality.reshape(3, 3):
        assert np.all(np.diff(levels_5_3_2) > 0), quality
    identical = labelers.Labeler(metrics=PMOS_METRICS, device="cpu").score(small_image,
                                                                           [small_image])
    assert ens.load("pmos").quality(identical)[0] == pytest.approx([1.0], abs=1e-6)


def test_ensembles_load_by_name_or_path():
    default = ens.load()
    assert ens.load("default").hash == default.hash
    assert ens.load(ens.DEFAULT_ENSEMBLE_FILE).hash == default.hash
    assert ens.load(str(ens.PMOS_ENSEMBLE_FILE)).hash == ens.load("pmos").hash != default.hash


def test_an_existing_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    toy = ens.Ensemble("toy", {"mae": 1.0}, {"mae": ens.Mapping01("linear", best=0, worst=1)})
    toy.save(tmp_path / "pmos")
    monkeypatch.chdir(tmp_path)
    assert ens.load("pmos").name == "toy"


def test_an_unknown_name_is_an_error_listing_the_names():
    with pytest.raises(ens.EnsembleError, match=r"'pmso'.*names: default, pmos"):
        ens.load("pmso")


def test_the_default_ensembles_hash_is_unchanged():
    data = json.loads(ens.DEFAULT_ENSEMBLE_FILE.read_bytes())
    assert ens.Ensemble.from_json(data).hash == data["hash"] == DEFAULT_HASH
    assert ens.load().hash == ens.load("default").hash == DEFAULT_HASH
