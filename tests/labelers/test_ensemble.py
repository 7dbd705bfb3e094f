import json

import numpy as np
import pytest

from labelers import ensemble as ens
from labelers.fitting import fit_ensemble, split_by_reference


def _toy() -> ens.Ensemble:
    return ens.Ensemble(
        "toy", {"gmsd": 1.0, "mae": 3.0},
        {"gmsd": ens.Mapping01("linear", best=0.0, worst=0.4),
         "mae": ens.Mapping01("linear", best=0.0, worst=0.2)})


def test_linear_mapping_sends_best_to_1_worst_to_0_and_clips():
    mapping = ens.Mapping01("linear", best=1.0, worst=0.5)  # higher is better
    np.testing.assert_allclose(mapping(np.array([1.0, 0.75, 0.5, 0.2, 1.3])), [1, .5, 0, 0, 1])


def test_quality_is_the_weighted_mean_and_renormalises_when_metrics_are_absent():
    toy = _toy()
    scores = {"gmsd": np.array([0.0, 0.2]), "mae": np.array([0.0, 0.05])}
    quality, used = toy.quality(scores)
    np.testing.assert_allclose(quality, [1.0, (1 * 0.5 + 3 * 0.75) / 4])
    assert used == ("gmsd", "mae")
    only_mae, used = toy.quality({"mae": scores["mae"]})
    np.testing.assert_allclose(only_mae, [1.0, 0.75])
    assert used == ("mae",)
    with pytest.raises(ens.EnsembleError, match="no metric of positive weight among"):
        toy.quality({"lpips": np.zeros(2)})


def test_the_order_of_an_ensemble_files_metrics_changes_no_bit_of_q():
    """One definition, one hash, one Q: a file listing its metrics in another order (written
    by hand) labels with the bits the dataset's ensemble.json (sorted) gives its readers, the
    metrics used named in sorted order. Q added its terms in the file's order (2.2e-16 apart
    in 40% of the samples)."""
    with open(ens.DEFAULT_ENSEMBLE_FILE) as file:
        document = json.load(file)
    reversed_document = {**document, **{part: dict(reversed(list(document[part].items())))
                                        for part in ("weights", "mappings")}}
    written = ens.parsed(json.dumps(reversed_document).encode(), "mine.json")
    sorted_back = ens.Ensemble.from_json(json.loads(json.dumps(written.to_json())))
    rng = np.random.default_rng(0)
    scores = {key: rng.uniform(0.2, 0.9, 1000) for key in document["weights"]}
    q, used = written.quality(scores)
    expected_q, expected_used = sorted_back.quality(scores)
    assert q.tobytes() == expected_q.tobytes()
    assert used == expected_used == tuple(sorted(document["weights"]))


def test_hash_covers_the_definition_and_detects_edits(tmp_path):
    toy = _toy()
    path = tmp_path / "toy.json"
    toy.save(path)
    assert ens.load(path).hash == toy.hash
    data = json.loads(path.read_text())
    data["weights"]["mae"] = 2.0
    path.write_text(json.dumps(data))
    with pytest.raises(ens.EnsembleError, match="does not match its content"):
        ens.load(path)
    other = ens.Ensemble("toy", {"gmsd": 1.0, "mae": 2.0}, toy.mappings)
    assert other.hash != toy.hash


@pytest.mark.parametrize("bad", [
    {"name": "x", "weights": {"mae": 1}, "mappings": {}},
    {"name": "x", "weights": {"mae": -1}, "mappings": {"mae": {"kind": "linear", "best": 0,
                                                               "worst": 1}}},
    {"name": "x", "weights": {"mae": 1}, "mappings": {"mae": {"kind": "cubic"}}},
    {"weights": {}},
])
def test_malformed_ensembles_are_typed_errors(bad):
    with pytest.raises(ens.EnsembleError):
        ens.Ensemble.from_json(bad)


LINEAR = {"kind": "linear", "best": 0, "worst": 1}


@pytest.mark.parametrize(("weights", "mapping", "name", "message"), [
    ({"ms-ssim": 1}, LINEAR, "x", r"unknown metric\(s\) \['ms-ssim'\]"),
    ({"mae": 0}, LINEAR, "x", "a metric of positive weight"),
    ({"mae": "abc"}, LINEAR, "x", "the weight of mae must be a finite number, got 'abc'"),
    ({"mae": True}, LINEAR, "x", "the weight of mae must be a finite number"),
    ({"mae": 1}, {**LINEAR, "best": float("nan")}, "x", "best must be a finite number"),
    ({"mae": 1}, {**LINEAR, "worst": float("inf")}, "x", "worst must be a finite number"),
    ({"mae": 1}, {**LINEAR, "best": "0.1", "worst": 0.1}, "x", "best must be a finite number"),
    ({"mae": 1}, {"kind": "sigmoid", "center": 0, "scale": float("nan")}, "x",
     "scale must be a finite number"),
    ({"mae": 1}, {"kind": "sigmoid", "center": 0, "scale": "0"}, "x", "scale must be a finite"),
    # a span that overflows would make q NaN (or 0 for every score)
    ({"vif": 1}, {"kind": "linear", "best": 1.5e308, "worst": -1.5e308}, "x",
     "their difference a finite number"),
    ({"mae": 1}, LINEAR, 5, "name must be a string"),
    ({"mae": 10 ** 400}, LINEAR, "x", "the weight of mae must be a finite number"),
    # MAE: lower is better, so q must fall as the score rises
    ({"mae": 1}, {"kind": "linear", "best": 1, "worst": 0}, "x",
     "the mapping of mae gives a better score a lower q"),
    ({"mae": 1}, {"kind": "sigmoid", "center": 0.5, "scale": 1e-13}, "x",
     "the mapping of mae gives a better score a lower q"),
    ({"vif": 1}, {"kind": "sigmoid", "center": 0.5, "scale": -2.0}, "x",
     "the mapping of vif gives a better score a lower q"),
])
def test_hostile_ensemble_files_are_refused_naming_the_field(weights, mapping, name, message):
    data = {"name": name, "weights": weights, "mappings": {key: mapping for key in weights}}
    with pytest.raises(ens.EnsembleError, match=message):
        ens.Ensemble.from_json(data)


@pytest.mark.parametrize("missing", ["name", "weights", "mappings"])
def test_an_ensemble_file_without_a_field_names_it(missing):
    data = {"name": "x", "weights": {"mae": 1}, "mappings": {"mae": LINEAR}}
    del data[missing]
    with pytest.raises(ens.EnsembleError, match=f"not an ensemble file: it has no field "
                                                f"'{missing}'"):
        ens.Ensemble.from_json(data)


def test_a_file_that_is_no_ensemble_is_named(tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"config": {}}))
    with pytest.raises(ens.EnsembleError, match=rf"{manifest}: not an ensemble file: it has no "
                                                "field 'name'"):
        ens.load(str(manifest))
    for text, why in (("[1, 2]", "a JSON list, not an object"), ("{", "cannot read")):
        manifest.write_text(text)
        with pytest.raises(ens.EnsembleError, match=why):
            ens.load(str(manifest))


def test_an_ensemble_named_by_a_folder_is_refused_as_a_folder(tmp_path):
    folder = tmp_path / "tilted.json"
    folder.mkdir()
    with pytest.raises(ens.EnsembleError, match=r"tilted\.json': a folder, not a file"):
        ens.load(str(folder))
    with pytest.raises(ens.EnsembleError, match=r"nothing\.json': no such file"):
        ens.load(str(tmp_path / "nothing.json"))
    for blank in ("", "  "):  # Path("") is the working folder: not "a folder, not a file"
        with pytest.raises(ens.EnsembleError, match=rf"the ensemble is named '{blank}': give "
                                                    "a file, or a shipped ensemble's name"):
            ens.load(blank)


def test_weights_whose_sum_overflows_are_refused():
    """Each 1e308 is finite; their sum is not, and Q would be inf / inf (NaN)."""
    mapping = ens.Mapping01("linear", best=0, worst=1)
    with pytest.raises(ens.EnsembleError, match="sum overflows"):
        ens.Ensemble("huge", {"mae": 1e308, "gmsd": 1e308}, {"mae": mapping, "gmsd": mapping})
    scaled = ens.Ensemble("fine", {"mae": 1e307, "gmsd": 1e307}, {"mae": mapping,
                                                                   "gmsd": mapping})
    q, _ = scaled.quality({"mae": np.array([0.0, 1.0]), "gmsd": np.array([0.0, 1.0])})
    np.testing.assert_allclose(q, [1.0, 0.0])


def test_weights_too_small_to_carry_a_score_are_refused():
    """5e-324 (the least subnormal) times a q of 0.3 is 5e-324 or 0: Q would come out 0, 0.5
    or 1 whatever the scores. Weights of a normal float's size keep their ratios' Q."""
    mapping = ens.Mapping01("linear", best=0, worst=1)
    for tiny in (5e-324, 1e-310):
        with pytest.raises(ens.EnsembleError, match=r"below 2\.225e-308, where a weight times "
                                                    "a score loses its digits"):
            ens.Ensemble("tiny", {"mae": tiny, "gmsd": tiny}, {"mae": mapping, "gmsd": mapping})
    small = ens.Ensemble("small", {"mae": 1e-300, "gmsd": 3e-300},
                         {"mae": mapping, "gmsd": mapping})
    q, _ = small.quality({"mae": np.array([0.3]), "gmsd": np.array([0.1])})
    np.testing.assert_allclose(q, [(1 * 0.7 + 3 * 0.9) / 4], rtol=1e-12)


def test_quality_refuses_scores_that_are_not_finite():
    toy = ens.Ensemble("toy", {"mae": 1.0}, {"mae": ens.Mapping01("linear", best=0, worst=1)})
    with pytest.raises(ens.EnsembleError, match="1 mae score"):
        toy.quality({"mae": np.array([0.1, np.nan, 0.2])})


@pytest.mark.parametrize("gmsd", [[0.0], [0.0, 0.1, 0.2]])
def test_quality_refuses_score_arrays_of_other_lengths(gmsd):
    """One score per sample from every metric, or no Q: numpy would reuse a lone value for
    every sample (or fail with its own words)."""
    shipped = ens.load()
    scores = {key: np.array([m.best, m.worst]) for key, m in shipped.mappings.items()}
    assert len(shipped.quality(scores)[0]) == 2
    with pytest.raises(ens.EnsembleError, match="not one per sample alike"):
        shipped.quality({**scores, "gmsd": np.array(gmsd)})


def test_split_is_by_reference_and_seeded():
    refs = np.repeat([f"r{i}" for i in range(10)], 5)
    train = split_by_reference(refs, seed=3)
    assert train.sum() == 40
    for ref in np.unique(refs):
        assert len(set(train[refs == ref])) == 1  # a reference is on one side only
    assert np.array_equal(train, split_by_reference(refs, seed=3))
    assert not np.array_equal(train, split_by_reference(refs, seed=4))


def test_fit_recovers_known_weights_and_mappings():
    rng = np.random.default_rng(0)
    n = 3000
    truth = {"a": (0.3, 0.08, 0.5), "b": (10.0, -2.0, 0.3), "c": (0.0, 1.0, 0.2)}  # centre,
    scores, opinion = {}, np.full(n, 1.0)                                        # scale, weight
    for key, (center, scale, weight) in truth.items():
        scores[key] = center + scale * rng.uniform(-4, 4, n)
        opinion = opinion + 4 * weight / (1 + np.exp(-(scores[key] - center) / scale))
    references = np.repeat(np.arange(n // 15), 15)
    report = fit_ensemble(scores, opinion, references, seed=1,
                          rising={"a": True, "b": False, "c": True})
    for key, (center, scale, weight) in truth.items():
        assert report.ensemble.weights[key] == pytest.approx(weight, abs=1e-3)
        assert report.ensemble.mappings[key].center == pytest.approx(center, abs=1e-3 * abs(scale))
        assert report.ensemble.mappings[key].scale == pytest.approx(scale, rel=1e-3)
    assert report.ensemble_test["srocc"] > 0.999 and report.ensemble_test["plcc"] > 0.999
    assert report.train_references == 160 and report.test_references == 40
    assert report.per_metric["a"]["srocc"] < report.ensemble_test["srocc"]


def test_a_fit_does_not_depend_on_the_order_of_rows_or_metrics():
    """The hash names the label: the same data, seed and metrics fit one ensemble whatever
    the order of the table's rows and of --metrics (the optimisers' stopping points moved
    with it, and the hash with them)."""
    rng = np.random.default_rng(4)
    n = 90
    references = np.repeat(np.array([f"r{k}.png" for k in range(6)]), n // 6)
    opinion = rng.uniform(1, 5, n)
    scores = {"mae": 0.2 - 0.03 * opinion + rng.normal(0, 0.02, n),
              "gmsd": 0.3 - 0.05 * opinion + rng.normal(0, 0.05, n)}
    plain = fit_ensemble(scores, opinion, references, seed=2).ensemble
    order = rng.permutation(n)
    shuffled = fit_ensemble({key: scores[key][order] for key in ("gmsd", "mae")},
                            opinion[order], references[order], seed=2).ensemble
    assert shuffled.hash == plain.hash and shuffled.to_json() == plain.to_json()


def test_a_metric_is_never_fitted_against_its_own_direction():
    """A lower-is-better metric whose scores, here, rise with the opinion (noise a few
    references can show): its curve still falls, so it takes no weight instead of most."""
    rng = np.random.default_rng(2)
    n = 60
    good = rng.uniform(0, 1, n)
    opinion = 1 + 3 * good
    backwards = opinion + rng.normal(0, 0.3, n)  # declared lower-is-better, yet rises
    references = np.repeat(np.arange(n // 5), 5)
    report = fit_ensemble({"good": good, "backwards": backwards}, opinion, references,
                          rising={"good": True, "backwards": False})
    assert report.ensemble.mappings["backwards"].scale < 0
    assert report.ensemble.weights["backwards"] < 0.01
    assert report.ensemble_test["srocc"] > 0.99
    named = fit_ensemble({"gmsd": -good, "backwards": backwards}, opinion, references,
                         rising={"backwards": False})  # gmsd's direction from the registry
    assert named.ensemble.mappings["gmsd"].scale < 0 and named.ensemble.weights["gmsd"] > 0.99


def test_fitting_refuses_what_no_curve_fits():
    references = np.repeat(np.arange(4), 5)
    with pytest.raises(ens.EnsembleError, match=r"opinion scores are all equal \(1\)"):
        fit_ensemble({"gmsd": np.arange(20.0)}, np.ones(20), references)
    with pytest.raises(ens.EnsembleError, match="2 of the 20 opinion scores are not finite"):
        fit_ensemble({"gmsd": np.arange(20.0)}, np.r_[np.arange(18.0), np.nan, np.inf],
                     references)
    with pytest.raises(ens.EnsembleError, match="no opinion scores"):
        fit_ensemble({"gmsd": np.array([])}, np.array([]), np.array([]))
    with pytest.raises(ens.EnsembleError, match="the gmsd scores must be finite"):
        fit_ensemble({"gmsd": np.ones(20)}, np.arange(20.0), references)


def test_a_fitted_q_spans_the_unit_range_and_a_noise_metric_gets_no_weight():
    """Opinions made from GMSD alone, beside a metric of pure noise: each fitted curve is
    stretched to span [0, 1] over the training scores, so Q spans [0, 1] and the noise metric,
    whose curve explains nothing, weighs next to nothing (its saturated q once took the weight,
    Q then a sliver of [0, 1] with fine correlations); a metric constant on the training
    references is refused."""
    rng = np.random.default_rng(0)
    references = np.repeat(np.arange(20), 8)
    gmsd, noise = rng.uniform(0.01, 0.3, 160), rng.uniform(0, 0.1, 160)
    opinion = 5 - 10 * gmsd + rng.normal(0, 0.1, 160)
    report = fit_ensemble({"gmsd": gmsd, "mae": noise}, opinion, references, seed=0)
    quality, _ = report.ensemble.quality({"gmsd": gmsd, "mae": noise})
    assert np.ptp(quality) > 0.95 and report.ensemble.weights["mae"] < 1e-6
    assert report.ensemble_test["plcc"] > 0.99
    saved = ens.Ensemble.from_json(json.loads(json.dumps(report.ensemble.to_json())))
    np.testing.assert_array_equal(saved.quality({"gmsd": gmsd, "mae": noise})[0], quality)
    train = split_by_reference(references, 6)
    constant = np.where(train, 0.05, noise)  # varies on the test references only
    with pytest.raises(ens.EnsembleError, match="mae scores must be finite and not all equal "
                                                "on the training references"):
        fit_ensemble({"gmsd": gmsd, "mae": constant}, opinion, references, seed=6)


# shared/spec/labels.md, the table's "paper weight" column
SPEC_WEIGHTS = {"gmsd": 0.0324, "fsim": 0.0398, "vif": 0.0549, "cw_ssim": 0.0643, "nlpd": 0.0951,
                "mae": 0.1878, "ms_ssim": 0.1920, "mad": 0.1085, "dists": 0.1097,
                "lpips": 0.1153}


def test_the_shipped_default_ensemble_has_the_paper_weights_and_identity_bests():
    from tests.labelers.conftest import BEST

    default = ens.load()
    assert default.weights == SPEC_WEIGHTS
    assert sum(default.weights.values()) == pytest.approx(0.9998)
    for key, mapping in default.mappings.items():
        assert mapping.kind == "linear" and mapping.best == BEST[key]
        assert mapping(np.array([BEST[key]]))[0] == 1.0
        assert mapping(np.array([mapping.worst]))[0] == 0.0


def test_bounds_round_outward_towards_the_worse_side():
    from pipeline.commands.default_ensemble import _round_outward

    assert _round_outward(0.23456, towards_worse_up=True) == 0.235  # lower-is-better metric
    assert _round_outward(0.23456, towards_worse_up=False) == 0.234  # higher-is-better metric
    assert _round_outward(151.64, towards_worse_up=True) == 152.0


def test_hash_survives_a_round_trip_with_integer_values(tmp_path):
    integers = ens.Ensemble("ints", {"mae": 1}, {"mae": ens.Mapping01("linear", best=0, worst=1)})
    integers.save(tmp_path / "ints.json")
    assert ens.load(tmp_path / "ints.json").hash == integers.hash


def test_quality_ignores_scores_it_has_no_weight_for():
    # SSIM is scored beside the ten but is not in the default ensemble: Q must not change.
    default = ens.load()
    assert "ssim" not in default.weights
    rng = np.random.default_rng(0)
    scores = {key: rng.uniform(0, 1, 4) for key in default.weights}
    quality, used = default.quality(scores)
    with_ssim, used_with_ssim = default.quality({**scores, "ssim": rng.uniform(0, 1, 4)})
    np.testing.assert_array_equal(with_ssim, quality)
    assert used_with_ssim == used and "ssim" not in used


def test_q_is_made_over_the_metrics_every_sample_has():
    linear = ens.Mapping01("linear", best=0.0, worst=1.0)
    ensemble = ens.Ensemble("e", {"mae": 1.0, "gmsd": 2.0, "vif": 0.0},
                            {key: linear for key in ("mae", "gmsd", "vif")})
    # vif weighs 0: Q is not made of it, so it is not used, and only some samples having it
    # (or none having a finite one) stops nothing
    assert ensemble.metrics_every_sample_has({"mae": 4, "gmsd": 4, "vif": 4}, 4) == \
        ("gmsd", "mae")  # in the metrics' sorted order, not the ensemble's
    assert ensemble.metrics_every_sample_has({"mae": 4, "vif": 4}, 4) == ("mae",)
    assert ensemble.metrics_every_sample_has({"mae": 4, "gmsd": 4, "vif": 2}, 4) == \
        ("gmsd", "mae")
    scores = {"mae": np.array([0.1, 0.2]), "gmsd": np.array([0.1, 0.3]),
              "vif": np.array([np.nan, 0.5])}
    quality, used = ensemble.quality(scores)
    assert used == ("gmsd", "mae") and np.isfinite(quality).all()
    with pytest.raises(ens.EnsembleError, match=r"no score of gmsd \(1 of 4\)"):
        ensemble.metrics_every_sample_has({"mae": 4, "gmsd": 3}, 4)
    with pytest.raises(ens.EnsembleError, match="vif only, which the ensemble weighs 0"):
        ensemble.metrics_every_sample_has({"vif": 4}, 4)
    with pytest.raises(ens.EnsembleError, match="no sample has a score of any"):
        ensemble.metrics_every_sample_has({"lpips": 4}, 4)
    with pytest.raises(ens.EnsembleError, match="no distorted sample"):
        ensemble.metrics_every_sample_has({}, 0)


def test_a_sigmoid_of_a_tiny_scale_keeps_its_direction():
    """A scale below what the logistic divides by is taken at 1e-12 of its own sign: a
    falling curve stays a step down (a better, lower score gets q 1), never turns into a rise."""
    falling = ens.Mapping01("sigmoid", center=0.5, scale=-1e-13)
    np.testing.assert_allclose(falling([0.4, 0.6]), [1.0, 0.0], atol=1e-200)
    rising = ens.Mapping01("sigmoid", center=0.5, scale=1e-13)
    np.testing.assert_allclose(rising([0.4, 0.6]), [0.0, 1.0], atol=1e-200)


@pytest.mark.parametrize("name", ["default", "pmos"])
def test_a_shipped_files_hash_is_recomputed_from_its_definition_with_the_standard_library(
        name):
    """As docs/labels-spec-notes.md states it: SHA-256 of the compact, sorted-key JSON of
    name, weights and mappings, its first 16 hex digits (notes and the hash left out)."""
    import hashlib

    path = ens.resolve(name)
    data = json.loads(path.read_text())
    definition = {key: data[key] for key in ("name", "weights", "mappings")}
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"))
    recomputed = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert recomputed == data["hash"] == ens.load(name).hash


@pytest.mark.parametrize("scores, message", [
    (["x", 0.1], r"the gmsd scores are not numbers \(\['x', 0\.1\]\)"),
    ([{"a": 1}], "the gmsd scores are not numbers"),
    ([0.1, float("nan"), float("inf")], "2 gmsd score"),
])
def test_scores_that_are_not_finite_numbers_are_an_ensemble_error_naming_the_metric(
        scores, message):
    with pytest.raises(ens.EnsembleError, match=message):
        _toy().quality({"gmsd": scores, "mae": np.zeros(len(scores))})


def test_the_fit_reports_scipys_correlations_and_none_where_none_is_defined():
    """The fit's test figures are scipy.stats' SROCC and PLCC; null in its report (never NaN,
    which JSON lacks) for a constant side or fewer than three samples."""
    from scipy import stats

    from labelers.fitting import _correlations

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=40), rng.normal(size=40)
    assert _correlations(x, x + y) == pytest.approx(
        {"srocc": stats.spearmanr(x, x + y).statistic, "plcc": stats.pearsonr(x, x + y).statistic})
    for predicted, target in ((np.full(5, 0.5), y[:5]), (x[:5], np.ones(5)), (x[:2], y[:2]),
                              (np.array([0.1, np.nan, 0.3]), y[:3])):
        assert _correlations(predicted, target) == {"srocc": None, "plcc": None}


def _noisy_fit_data(seed: int, n: int = 120, references: int = 10):
    """Two metrics that follow the opinions through noise, over `references` references."""
    rng = np.random.default_rng(seed)
    opinion = rng.uniform(1, 5, n)
    scores = {"mae": 0.2 - 0.03 * opinion + rng.normal(0, 0.03, n),
              "gmsd": 0.3 - 0.05 * opinion + rng.normal(0, 0.08, n)}
    return scores, opinion, np.repeat(np.array([f"r{k}.png" for k in range(references)]),
                                      n // references)


def test_the_per_metric_figures_are_scipys_on_the_held_out_references():
    """labels.md: each metric's SROCC and PLCC are reported on the other 20%, the references
    the fit never saw: scipy's figures of its fitted q on their rows, not on the training
    rows."""
    from scipy import stats

    scores, opinion, references = _noisy_fit_data(5)
    report = fit_ensemble(scores, opinion, references, seed=3)
    test = ~split_by_reference(references, seed=3)
    for key in scores:
        q = report.ensemble.mappings[key](scores[key])[test]
        assert report.per_metric[key] == pytest.approx(
            {"srocc": stats.spearmanr(q, opinion[test]).statistic,
             "plcc": stats.pearsonr(q, opinion[test]).statistic}, abs=1e-12)


def test_rows_tied_in_opinion_fit_one_ensemble_in_any_order():
    """Rows of one reference with equal opinion scores (MOS on a coarse scale) are put in one
    order by their scores too: the fit and its hash do not move with the table's order."""
    scores, opinion, references = _noisy_fit_data(6)
    opinion = np.round(opinion)  # five values: ties within every reference
    plain = fit_ensemble(scores, opinion, references, seed=2).ensemble
    order = np.random.default_rng(7).permutation(len(opinion))
    shuffled = fit_ensemble({key: values[order] for key, values in scores.items()},
                            opinion[order], references[order], seed=2).ensemble
    assert shuffled.hash == plain.hash and shuffled.to_json() == plain.to_json()


def test_of_two_references_one_is_held_out_for_the_test():
    """80% of two references rounds to both: one is kept back all the same, or nothing would
    be left to report on."""
    references = np.repeat(["a.png", "b.png"], 4)
    for seed in range(5):
        train = split_by_reference(references, seed)
        assert len(set(references[train])) == 1 and len(set(references[~train])) == 1


def test_a_fitted_ensemble_records_its_split_seed():
    """The seed picks the training references: the ensemble file says which it was."""
    scores, opinion, references = _noisy_fit_data(5)
    for seed in (3, 11):
        ensemble = fit_ensemble(scores, opinion, references, seed=seed).ensemble
        assert ensemble.notes["split_seed"] == seed
        assert ens.Ensemble.from_json(ensemble.to_json()).notes["split_seed"] == seed


@pytest.mark.parametrize(("low", "high"), [(0.5, 0.5), (0.7, 0.3)])
def test_a_sigmoid_whose_stretch_spans_nothing_is_refused(low, high):
    """q = (f - low) / (high - low): with high <= low it divides by zero or falls with f."""
    mapping = {"kind": "sigmoid", "center": 0.5, "scale": 0.1, "low": low, "high": high}
    with pytest.raises(ens.EnsembleError, match="low and high are in"):
        ens.Ensemble.from_json({"name": "x", "weights": {"vif": 1}, "mappings": {"vif": mapping}})


def test_the_logistic_keeps_a_small_scale_it_can_divide_by():
    """Only a scale below 1e-12 is floored: 1e-4 is the formula's own, 1 / (1 + e^-1) one
    scale above the centre."""
    s = np.array([-1e-4, 0.0, 1e-4])
    expected = 1 / (1 + np.exp(-s / 1e-4))
    np.testing.assert_allclose(ens.logistic(s, 1.0, 0.0, 0.0, 1e-4), expected, rtol=1e-12)


def test_a_metric_that_ranks_every_image_backwards_gets_no_ensemble():
    """VIF's q rises with its score; opinions that fall as it rises have no least-squares
    weight W >= 0 but 0 (their covariance with q is negative): the solver's ~1e-12 of
    rounding is no weight to normalise to 1 (an ensemble of test SROCC -1)."""
    scores = np.random.default_rng(0).uniform(0, 1, 40)
    with pytest.raises(ens.EnsembleError, match="every fitted weight is zero"):
        fit_ensemble({"vif": scores}, -scores, np.repeat(np.arange(8), 5))
