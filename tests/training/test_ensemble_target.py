"""`train pretrain --ensemble`: the quality target's Q made from each sample's raw scores under
another ensemble (as `relabel` makes it), in place of the Q stored in the shards."""

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from iqa_factory.cli import main
from labelers.ensemble import Ensemble, Mapping01
from shards import open_dataset
from shards.storage import Location
from tests.conftest import stats_agree
from training.pretrain import ensemble_target
from training.shard_data import (
    ShardStream,
    StreamConfig,
    Target,
    distorted_index,
    reference_splits,
    split_shards,
)
from training.transforms import Augment

from .conftest import write_tiny_dataset
from .test_cli import TINY

STRICT_WORST = 0.05  # the tiny dataset's own ensemble maps MAE 0.1 to 0; this one 0.05


def _strict(*extra: str) -> Ensemble:
    """Linear MAE with a stricter bound (and `extra` metrics, higher-is-better ones, that the
    tiny dataset never scored)."""
    keys = ("mae", *extra)
    return Ensemble("strict", dict.fromkeys(keys, 1.0),
                    {"mae": Mapping01("linear", best=0.0, worst=STRICT_WORST),
                     **dict.fromkeys(extra, Mapping01("linear", best=1.0, worst=0.0))})


def _expected(mae: float) -> float:
    return float(np.clip(1 - mae / STRICT_WORST, 0, 1))  # the linear mapping, by hand


def test_each_sample_learns_q_of_the_chosen_ensemble(tiny_dataset):
    location = Location.parse(str(tiny_dataset))
    index = distorted_index(location)
    target = ensemble_target(location, index, Target(), str(_save(_strict("vif"),
                                                                   tiny_dataset.parent)))
    assert target.ensemble_metrics == ("mae",)  # vif was never scored: left out
    records = [s["meta"] for s in open_dataset(str(tiny_dataset)).samples("val", kind="distorted")]
    assert records and all(target.value(r) == pytest.approx(_expected(r["scores"]["mae"]),
                                                            abs=1e-12) for r in records)
    assert any(target.value(r) != pytest.approx(r["quality"]) for r in records)  # not stored Q
    shards = split_shards(location, index, reference_splits(open_dataset(str(tiny_dataset))), "val")
    stream = ShardStream(StreamConfig(str(tiny_dataset), shards, target, Augment(crop=32),
                                      train=False), 0, 1)
    streamed = sorted(value.item() for _, value in stream)
    np.testing.assert_allclose(streamed, sorted(_expected(r["scores"]["mae"]) for r in records),
                               atol=1e-6)  # the stream's float32 targets


def _save(ensemble: Ensemble, folder) -> object:
    path = folder / f"{ensemble.name}-{ensemble.hash}.json"
    ensemble.save(path)
    return path


def test_pretrain_records_the_ensemble_it_learnt(tiny_dataset, tmp_path, capsys):
    strict = _strict()
    out = tmp_path / "run"
    assert main(["train", "pretrain", str(tiny_dataset), "--out", str(out), "--epochs", "1",
                 "--steps-per-epoch", "1", "--ensemble", str(_save(strict, tmp_path)),
                 *TINY]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ensemble"] == strict.hash
    printed = capsys.readouterr().out
    assert f"Q under ensemble strict ({strict.hash}) from the raw scores of mae" in printed
    file = next(tmp_path.glob("strict-*.json"))
    elsewhere = tmp_path / "copy.json"  # the same ensemble by another path: resumes
    elsewhere.write_bytes(file.read_bytes())
    assert main(["train", "pretrain", str(tiny_dataset), "--out", str(out), "--epochs", "2",
                 "--steps-per-epoch", "1", "--ensemble", str(elsewhere), "--resume", *TINY]) == 0
    Ensemble("strict", {"mae": 1.0}, {"mae": Mapping01("linear", 0.0, 0.2)}).save(file)
    assert main(["train", "pretrain", str(tiny_dataset), "--out", str(out), "--epochs", "3",
                 "--steps-per-epoch", "1", "--ensemble", str(file), "--resume", *TINY]) == 2
    assert "ensemble_hash" in capsys.readouterr().err  # the file now defines another Q


def test_a_pretrained_checkpoint_is_evaluated_on_its_own_shards_under_its_ensemble(
        tiny_dataset, tmp_path, capsys):
    """On the shards it was pretrained on: Q under the ensemble it learnt unless another is
    chosen, and the references whose samples it trained on named (optimistic figures)."""
    strict = _save(_strict(), tmp_path)
    out, shards = tmp_path / "run", tmp_path / "dataset"
    shutil.copytree(tiny_dataset, shards)
    assert main(["train", "pretrain", str(shards), "--out", str(out), "--epochs", "1",
                 "--steps-per-epoch", "1", "--ensemble", str(strict), "--val-refs", "r0",
                 *TINY]) == 0  # trains on r1, r2, r3 (r0 moved to val)
    capsys.readouterr()

    def evaluate(refs: str, name: str) -> tuple[str, dict]:
        assert main(["train", "evaluate", "--checkpoint", str(out / "best.pt"), "--dataset",
                     "shards", "--root", str(shards), "--refs", refs, "--out",
                     str(tmp_path / name), "--eval-crops", "1", "--workers", "0", "--device",
                     "cpu"]) == 0
        return (capsys.readouterr().out,
                json.loads((tmp_path / name / "evaluation.json").read_text()))

    printed, result = evaluate("r0,r1,r5", "seen")
    assert f"NOTICE: Q under ensemble {strict}, which {out / 'best.pt'} was pretrained on" \
        in printed and result["ensemble"] == str(strict)
    assert "was pretrained on the samples of 1 of the references given (r1): optimistic" \
        in printed
    opinion = np.load(tmp_path / "seen" / "predictions.npz")["opinion"]
    records = open_dataset(str(tiny_dataset)).samples(refs={"r0", "r1", "r5"},
                                                      kind="distorted")
    np.testing.assert_allclose(sorted(opinion), sorted(
        _expected(s["meta"]["scores"]["mae"]) for s in records), atol=1e-6)
    printed, _ = evaluate("r0,r5", "unseen")
    assert "pretrained on the samples" not in printed
    (shards / "sources.parquet").unlink()  # as a resume that extends the dataset leaves it
    printed, _ = evaluate("r0,r1,r5", "no-sources")  # the splits from the shards' indexes
    assert "was pretrained on the samples of 1 of the references given (r1)" in printed


def test_an_ensemble_needs_scores_every_sample_has(tmp_path, capsys):
    root = write_tiny_dataset(tmp_path / "dataset")
    index_file = root / "shards" / "00000.parquet"
    rows = pq.read_table(index_file).to_pylist()
    next(row for row in rows if row["kind"] == "distorted")["scores"]["mae"] = None
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(index_file)), index_file)
    stats_agree(index_file)  # as if written so: not a damaged shard

    def run(*options) -> int:
        return main(["train", "pretrain", str(root), "--out", str(tmp_path / "run"),
                     "--epochs", "1", "--steps-per-epoch", "1", *options, *TINY])

    assert run("--ensemble", str(_save(_strict(), tmp_path))) == 2
    assert "some samples have no score of mae (1 of 36)" in capsys.readouterr().err
    only_vif = Ensemble("vif", {"vif": 1.0}, {"vif": Mapping01("linear", 1.0, 0.0)})
    assert run("--ensemble", str(_save(only_vif, tmp_path))) == 2
    assert "no sample has a score of any of the ensemble's metrics ['vif']" in \
        capsys.readouterr().err
    assert run("--ensemble", "default", "--target", "mae") == 2
    assert "add quality to --target" in capsys.readouterr().err
    assert run("--ensemble", "default", "--objective", "contrastive") == 2
    assert "--ensemble are labels to regress" in capsys.readouterr().err


def test_the_shards_benchmark_scores_its_images_under_the_chosen_ensemble(tiny_dataset,
                                                                          tmp_path):
    """finetune, evaluate and probe on `--dataset shards --ensemble`: Q from the raw scores."""
    from training import rated_datasets

    refs = ("r0", "r1")
    stored = rated_datasets.load("shards", str(tiny_dataset), refs)
    chosen = rated_datasets.load("shards", str(tiny_dataset), refs,
                             str(_save(_strict("vif"), tmp_path)))
    records = {s["key"]: s["meta"] for s in open_dataset(str(tiny_dataset)).samples(
        refs=set(refs), kind="distorted")}
    assert [i.name for i in chosen] == [i.name for i in stored] and len(chosen) == len(records)
    for image in chosen:
        assert image.score == pytest.approx(_expected(records[image.name]["scores"]["mae"]),
                                            abs=1e-12)
    assert [i.score for i in stored] == [records[i.name]["quality"] for i in stored]
    assert any(a.score != pytest.approx(b.score) for a, b in zip(chosen, stored, strict=True))
    with pytest.raises(ValueError, match="applies to --dataset shards, not csv"):
        rated_datasets.load("csv", str(tmp_path / "table.csv"), ensemble="default")
    with pytest.raises(ValueError, match=r"--refs chooses .* not kadid10k"):  # never ignored
        rated_datasets.load("kadid10k", str(tmp_path), refs=("r0",))


def test_finetune_on_shards_under_another_ensemble_says_which_q_it_learns(tiny_dataset,
                                                                          tmp_path, capsys):
    strict = _save(_strict(), tmp_path)
    out = tmp_path / "ft"
    assert main(["train", "finetune", "--dataset", "shards", "--root", str(tiny_dataset),
                 "--refs", "r0,r1,r2,r3,r4", "--ensemble", str(strict), "--out", str(out),
                 "--epochs", "1", "--eval-crops", "1", *TINY]) == 0
    assert (f"NOTICE: Q under ensemble {strict}, made from the raw scores, stand in for "
            "opinion scores") in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["ensemble"] == str(strict)
    evaluation = tmp_path / "eval"
    assert main(["train", "evaluate", "--checkpoint", str(out / "split-0" / "best.pt"),
                 "--dataset", "shards", "--root", str(tiny_dataset), "--refs", "r5",
                 "--ensemble", str(strict), "--out", str(evaluation), "--eval-crops", "1",
                 "--workers", "0", "--device", "cpu"]) == 0
    result = json.loads((evaluation / "evaluation.json").read_text())
    assert result["ensemble"] == str(strict) and result["figures"]["count"] == 6
    # r5 was no reference it fine-tuned on: no notice of optimistic figures
    assert "optimistic figures" not in capsys.readouterr().out
    assert main(["train", "evaluate", "--checkpoint", str(out / "split-0" / "best.pt"),
                 "--dataset", "shards", "--root", str(tiny_dataset), "--refs", "r4,r5",
                 "--ensemble", str(strict), "--out", str(tmp_path / "eval-r4"),
                 "--eval-crops", "1", "--workers", "0", "--device", "cpu"]) == 0
    assert ("was fine-tuned on a split of references that holds r4 of those evaluated: their "
            "images may be ones it trained on (optimistic figures)") in capsys.readouterr().out
    opinion = np.load(evaluation / "predictions.npz")["opinion"]
    records = open_dataset(str(tiny_dataset)).samples(refs={"r5"}, kind="distorted")
    np.testing.assert_allclose(sorted(opinion), sorted(
        _expected(s["meta"]["scores"]["mae"]) for s in records), atol=1e-6)
    # its own split's test part: the references, like the seed and split, are the checkpoint's
    own = tmp_path / "own"
    assert main(["train", "evaluate", "--checkpoint", str(out / "split-0" / "best.pt"),
                 "--dataset", "shards", "--root", str(tiny_dataset), "--subset", "test",
                 "--ensemble", str(strict), "--out", str(own), "--eval-crops", "1",
                 "--workers", "0", "--device", "cpu"]) == 0
    tested = json.loads((out / "split-0" / "test.json").read_text())
    assert json.loads((own / "evaluation.json").read_text())["figures"]["count"] == \
        tested["test"]["count"]
    # ... and so is the ensemble whose Q it learnt, where none is chosen: the split's figures
    capsys.readouterr()
    assert main(["train", "evaluate", "--checkpoint", str(out / "split-0" / "best.pt"),
                 "--dataset", "shards", "--root", str(tiny_dataset), "--subset", "test",
                 "--out", str(tmp_path / "own-default"), "--eval-crops", "1",
                 "--workers", "0", "--device", "cpu"]) == 0
    assert f"NOTICE: Q under ensemble {strict}, which" in capsys.readouterr().out
    result = json.loads((tmp_path / "own-default" / "evaluation.json").read_text())
    assert result["ensemble"] == str(strict)
    for name in ("srocc", "plcc", "rmse"):
        assert result["figures"][name] == pytest.approx(tested["test"][name], abs=1e-6)
    # the same shards copied elsewhere, read with more references: its own, and those refused
    shutil.copytree(tiny_dataset, tmp_path / "copied")
    assert main(["train", "evaluate", "--checkpoint", str(out / "split-0" / "best.pt"),
                 "--dataset", "shards", "--root", str(tmp_path / "copied"), "--subset", "test",
                 "--refs", "r0,r1,r2,r3,r4,r5", "--out", str(tmp_path / "copied-eval"),
                 "--eval-crops", "1", "--workers", "0", "--device", "cpu"]) == 2
    printed = capsys.readouterr()
    assert "holds the images" in printed.out and "would hold images it trained on" in printed.err


def test_a_probe_tests_shards_on_q_of_its_ensemble_and_names_images_it_was_fitted_on(
        tiny_dataset, tmp_path, capsys):
    """`train probe --ensemble`: the ridge is fitted on Q of that ensemble, and a shards test
    dataset is scored against Q of the same one, not the stored Q; a test dataset sharing
    images with --dataset (r3 here) is said to; --test-refs alone is refused."""
    strict = _save(_strict(), tmp_path)
    out = tmp_path / "probe"
    probe = ["train", "probe", "--dataset", "shards", "--root", str(tiny_dataset), "--refs",
             "r0,r1,r2,r3", "--ensemble", str(strict), "--repeats", "1", "--eval-crops", "1",
             "--out", str(out), *TINY]
    assert main([*probe, "--test-dataset", "shards", "--test-root", str(tiny_dataset),
                  "--test-refs", "r3,r4,r5"]) == 0
    opinion = np.load(out / "test_predictions.npz")["opinion"]
    records = open_dataset(str(tiny_dataset)).samples(refs={"r3", "r4", "r5"},
                                                      kind="distorted")
    np.testing.assert_allclose(sorted(opinion), sorted(
        _expected(s["meta"]["scores"]["mae"]) for s in records), atol=1e-6)
    assert "NOTICE: 6 of the 18 test images are also in --dataset (r3_" in \
        capsys.readouterr().out
    assert main([*probe, "--test-refs", "r4,r5"]) == 2
    assert "--test-refs chooses the references of --test-dataset shards" in \
        capsys.readouterr().err

