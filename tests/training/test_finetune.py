"""Fine-tuning and evaluation on a tiny KADID-10k-format set, in one process."""

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from training import checkpoint
from training.evaluate import EvaluateConfig, evaluate
from training.finetune import FinetuneConfig, finetune
from training.model import ModelConfig, ModelInitError
from training.optim import OptimConfig
from training.transforms import Augment

from .conftest import read_json


@pytest.fixture
def finetuned(kadid_folder, tmp_path):
    config = FinetuneConfig(
        "kadid10k", str(kadid_folder), str(tmp_path / "finetune"),
        ModelConfig("test_resnet", init="random"),
        OptimConfig(lr=3e-3, halve_every=10, epochs=2, batch_size=4),
        Augment(crop=32), repeats=2, eval_crops=3, workers=0, device="cpu")
    return config, finetune(config)


def test_finetune_reports_the_median_over_splits(finetuned):
    config, summary = finetuned
    out = Path(config.out)
    assert summary["repeats"] == 2 and len(summary["splits"]) == 2
    srocc = sorted(split["test"]["srocc"] for split in summary["splits"])
    assert summary["median"]["srocc"] == pytest.approx(np.median(srocc))
    assert read_json(out / "results.json") == json.loads(json.dumps(summary))
    for repeat in range(2):
        split_dir = out / f"split-{repeat}"
        assert (split_dir / "scatter.png").stat().st_size > 10_000
        result = read_json(split_dir / "test.json")
        assert result["test_images"] == 6  # one of the four references, 6 versions
        assert -1 <= result["test"]["srocc"] <= 1 and result["test"]["count"] == 6
    first, second = (set(split["test_groups"]) for split in summary["splits"])
    assert len(first) == len(second) == 1 and not first & second  # distinct references


def _stopped_in_epoch(config: FinetuneConfig, epoch: int, monkeypatch) -> None:
    """Run `config`, interrupted at the end of its `epoch`-th epoch over all splits (before
    that epoch's validation and last.pt: the last.pt holds the one before)."""
    import training.loop

    epochs_ended, broadcast = [], training.loop.broadcast_buffers

    def stopping(*args):  # once per epoch
        epochs_ended.append(1)
        if len(epochs_ended) == epoch:
            raise KeyboardInterrupt
        return broadcast(*args)
    monkeypatch.setattr(training.loop, "broadcast_buffers", stopping)
    with pytest.raises(KeyboardInterrupt):
        finetune(config)
    monkeypatch.setattr(training.loop, "broadcast_buffers", broadcast)


def test_an_interrupted_run_resumes_to_the_figures_of_one_never_stopped(finetuned, tmp_path,
                                                                        monkeypatch, capsys):
    """Stopped in split 1's second epoch (its last.pt holds the first), `--resume` tests split
    0 again from its best.pt, continues split 1 and gives what the run never stopped gave."""
    config, whole = finetuned
    stopped = dataclasses.replace(config, out=str(tmp_path / "stopped"))
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        finetune(stopped, resume=True)
    _stopped_in_epoch(stopped, 4, monkeypatch)
    out = Path(stopped.out)
    assert not (out / "results.json").exists() and not (out / "split-1" / "test.json").exists()
    with pytest.raises(ValueError, match="other settings"):
        finetune(dataclasses.replace(stopped, seed=1), resume=True)
    capsys.readouterr()
    resumed = finetune(stopped, resume=True)
    trained = [line.split()[1] for line in capsys.readouterr().out.splitlines()
               if line.startswith("epoch ")]
    assert trained == ["2/2"]  # split 1's second epoch alone (a fresh start gives the same)
    for made, never_stopped in zip(resumed["splits"], whole["splits"], strict=True):
        assert made["test"] == never_stopped["test"]
        assert (made["epochs_run"], made["best_epoch"]) == (never_stopped["epochs_run"],
                                                             never_stopped["best_epoch"])
    assert resumed["median"] == whole["median"]


def test_a_resume_whose_start_file_changed_is_refused_before_a_split_starts_from_it(
        finetuned, tmp_path, monkeypatch):
    """Stopped in split 0, split 1 not begun: --resume with other weights under the start
    file's name would start split 1 from them, one run's median mixing two starts."""
    config, _ = finetuned
    start = tmp_path / "start.pt"
    start.write_bytes((Path(config.out) / "split-0" / checkpoint.BEST).read_bytes())
    stopped = dataclasses.replace(config, out=str(tmp_path / "stopped"), model=ModelConfig(
        "test_resnet", init="random", pretrained_file=str(start)))
    _stopped_in_epoch(stopped, 2, monkeypatch)
    assert not (Path(stopped.out) / "split-1").exists()
    kept = start.read_bytes()
    other = checkpoint.load(Path(config.out) / "split-1" / checkpoint.BEST)
    checkpoint.save(other, start)
    with pytest.raises(ValueError, match=rf"--pretrained-file {re.escape(str(start))} holds "
                                         r"other weights than .*split-0/last\.pt started from"):
        finetune(stopped, resume=True)
    start.unlink()  # split 1 has no last.pt to take its weights from: refused before split 0
    stopped_at = (Path(stopped.out) / "split-0" / checkpoint.LAST).read_bytes()  # goes on
    with pytest.raises(ModelInitError, match=rf"{re.escape(str(start))} does not exist, and "
                                             r"split\(s\) \[1\] not begun"):
        finetune(stopped, resume=True)
    assert (Path(stopped.out) / "split-0" / checkpoint.LAST).read_bytes() == stopped_at
    start.write_bytes(kept)
    resumed = finetune(stopped, resume=True)
    assert [split["epochs_run"] for split in resumed["splits"]] == [2, 2]
    # a run begun from --init's weights, resumed with a start file: split 0 would go on from
    # random weights, split 1 start from the file, and results.json name the file for both
    random_start = dataclasses.replace(config, out=str(tmp_path / "random"))
    _stopped_in_epoch(random_start, 2, monkeypatch)
    with pytest.raises(ValueError, match=rf"--resume with --pretrained-file "
                                         rf"{re.escape(str(start))}: .*split-0/last\.pt began "
                                         r"from --init's weights, not a file"):
        finetune(dataclasses.replace(random_start, model=stopped.model), resume=True)


def test_a_fresh_run_resumed_never_continues_a_split_of_the_earlier_run(finetuned,
                                                                         monkeypatch):
    """A fresh run of other settings into a finished run's folder, stopped in split 0's second
    epoch: its --resume starts split 1 afresh (the earlier run's split-1/last.pt went at the
    start)."""
    config, _ = finetuned
    assert (Path(config.out) / "split-1" / "last.pt").is_file()
    other = dataclasses.replace(config, seed=1)
    _stopped_in_epoch(other, 2, monkeypatch)
    assert not (Path(config.out) / "split-1" / "last.pt").exists()
    resumed = finetune(other, resume=True)
    assert [split["epochs_run"] for split in resumed["splits"]] == [2, 2]


def test_a_second_run_into_the_same_folder_says_it_replaces_the_first(finetuned, capsys):
    config, _ = finetuned
    finetune(dataclasses.replace(config, repeats=1))
    assert (f"NOTICE: {config.out} holds an earlier fine-tuning run: its files are replaced as "
            "this one writes its own (split-1 of it removed when this one ends)"
            ) in capsys.readouterr().out
    assert read_json(Path(config.out) / "results.json")["repeats"] == 1
    assert sorted(p.name for p in Path(config.out).glob("split-*")) == ["split-0"]


def test_a_run_refused_at_its_start_leaves_the_earlier_run_whole(finetuned):
    config, summary = finetuned
    with pytest.raises(ModelInitError, match="does not exist"):
        finetune(dataclasses.replace(config, repeats=1, model=dataclasses.replace(
            config.model, pretrained_file="/nowhere/best.pt")))
    assert read_json(Path(config.out) / "results.json") == json.loads(json.dumps(summary))
    assert sorted(p.name for p in Path(config.out).glob("split-*")) == ["split-0", "split-1"]
    assert all((Path(config.out) / f"split-{r}" / "last.pt").is_file() for r in range(2))


def test_evaluate_reproduces_the_test_figures_of_a_split(finetuned, tmp_path, capsys):
    config, summary = finetuned
    checkpoint = f"{config.out}/split-0/best.pt"
    result = evaluate(EvaluateConfig(checkpoint, "kadid10k", config.root,
                                     str(tmp_path / "evaluation"), subset="test",
                                     seed=config.seed, eval_crops=3, batch_size=4, workers=0,
                                     device="cpu"))
    for name in ("srocc", "plcc", "krcc", "rmse"):
        assert result["figures"][name] == pytest.approx(summary["splits"][0]["test"][name],
                                                        abs=1e-6)
    assert (tmp_path / "evaluation" / "scatter.png").is_file()
    recorded = read_json(tmp_path / "evaluation" / "evaluation.json")
    assert (recorded["crop"], recorded["eval_crops"]) == (config.augment.crop, 3)
    whole = evaluate(EvaluateConfig(checkpoint, "kadid10k", config.root,
                                    str(tmp_path / "all"), eval_crops=3, workers=0,
                                    device="cpu"))
    assert whole["figures"]["count"] == 24
    assert "all of it holds the images it trained on" in capsys.readouterr().out


def test_evaluate_refuses_images_of_one_score_before_scoring_them(finetuned, tmp_path,
                                                                  monkeypatch):
    """Another dataset whose scores are all alike: no figure measures the model (the fitted
    RMSE was 0, the best there is). Refused before a single image is scored."""
    import shutil

    from training import evaluate as evaluate_module
    from training.rated_datasets import DatasetLayoutError

    config, _ = finetuned
    alike = tmp_path / "alike"
    shutil.copytree(config.root, alike)
    header, *rows = (alike / "dmos.csv").read_text().splitlines()
    (alike / "dmos.csv").write_text("\n".join(
        [header] + [",".join([*row.split(",")[:2], "3.0", "0"]) for row in rows]) + "\n")
    scored = []
    monkeypatch.setattr(evaluate_module, "test_figures", lambda *a, **k: scored.append(a))
    with pytest.raises(DatasetLayoutError, match=r"kadid10k \(all\): its 24 images all score "
                                                 r"0\.5 \(rescaled to 0-1\)"):
        evaluate(EvaluateConfig(f"{config.out}/split-0/best.pt", "kadid10k", str(alike),
                                str(tmp_path / "out"), eval_crops=1, workers=0, device="cpu"))
    assert scored == [] and not (tmp_path / "out" / "evaluation.json").exists()


def test_evaluate_tests_a_checkpoint_on_its_own_split_and_refuses_another(finetuned, tmp_path):
    """split-1's checkpoint trained on images of split 0's test part: evaluate takes the split
    the checkpoint records, and refuses one that differs, rather than test on training images."""
    config, summary = finetuned
    checkpoint = f"{config.out}/split-1/best.pt"
    evaluation = EvaluateConfig(checkpoint, "kadid10k", config.root, str(tmp_path / "own"),
                                subset="test", eval_crops=3, batch_size=4, workers=0,
                                device="cpu")
    result = evaluate(evaluation)
    assert result["split"] == {"split_by": "reference", "seed": 0, "repeat": 1}
    for name in ("srocc", "plcc", "krcc", "rmse"):
        assert result["figures"][name] == pytest.approx(summary["splits"][1]["test"][name],
                                                        abs=1e-6)
    for other in ({"repeat": 0}, {"seed": 3}, {"split_by": "image"}):
        with pytest.raises(ValueError, match="would hold images it trained on"):
            evaluate(dataclasses.replace(evaluation, **other))


def test_the_same_images_elsewhere_are_tested_on_the_checkpoints_own_split(finetuned, tmp_path,
                                                                        capsys):
    """A dataset copied (or moved) after fine-tuning is still the checkpoint's own: its names
    and references are recorded, so split-1's checkpoint is tested on split 1's test part, not
    on split 0's (which holds images it trained on). A dataset with other images is not."""
    import shutil

    config, summary = finetuned
    copy = tmp_path / "copied"
    shutil.copytree(config.root, copy)
    evaluation = EvaluateConfig(f"{config.out}/split-1/best.pt", "kadid10k", str(copy),
                                str(tmp_path / "moved"), subset="test", eval_crops=3,
                                batch_size=4, workers=0, device="cpu")
    result = evaluate(evaluation)
    assert "tested as its own dataset" in capsys.readouterr().out
    assert result["split"] == {"split_by": "reference", "seed": 0, "repeat": 1}
    assert result["figures"]["srocc"] == pytest.approx(summary["splits"][1]["test"]["srocc"],
                                                       abs=1e-6)
    table = copy / "dmos.csv"
    lines = table.read_text().splitlines()
    table.write_text("\n".join(lines[:-1]) + "\n")  # one image fewer: other images


def test_a_changed_copy_is_never_tested_on_images_the_checkpoint_trained_on(finetuned, tmp_path,
                                                                           capsys):
    """A copy of the dataset with one image dropped is not known as the checkpoint's own (its
    fingerprint differs): it is split afresh (split 0 by default), whose test part may hold
    images the checkpoint trained on. Each checkpoint records the images of its train and
    validation parts (reference and name), so none of them is tested with --subset test, and
    --subset all says how many it holds."""
    import csv
    import shutil

    config, summary = finetuned
    copy = tmp_path / "copied"
    shutil.copytree(config.root, copy)
    table = copy / "dmos.csv"
    lines = table.read_text().splitlines()
    table.write_text("\n".join(lines[:-1]) + "\n")
    rows = list(csv.DictReader(table.open()))
    reference = {row["dist_img"]: row["ref_img"] for row in rows}

    evaluation = EvaluateConfig(f"{config.out}/split-1/best.pt", "kadid10k", str(copy),
                                str(tmp_path / "other"), subset="test", eval_crops=3,
                                batch_size=4, workers=0, device="cpu")
    # split 0's test reference is one split 1 trained (or validated) on: all of its images
    assert summary["splits"][0]["test_groups"] != summary["splits"][1]["test_groups"]
    with pytest.raises(ValueError, match=r"of the test part are ones .* fine-tuned on .* 0 "
                                         "left to test"):
        evaluate(evaluation)
    whole = evaluate(dataclasses.replace(evaluation, subset="all"))
    untrained = [name for name, ref in reference.items()
                 if ref in summary["splits"][1]["test_groups"]]  # (KADID's groups)
    trained = len(rows) - len(untrained)
    assert whole["figures"]["count"] == len(rows) == 23
    assert (f"{trained} of the 23 images are ones {evaluation.checkpoint} was fine-tuned on"
            in capsys.readouterr().out)
    # split 0's checkpoint never trained on split 0's test reference: tested whole
    unseen = evaluate(dataclasses.replace(evaluation, checkpoint=f"{config.out}/split-0/best.pt",
                                          out=str(tmp_path / "unseen")))
    assert unseen["figures"]["count"] == sum(
        ref in summary["splits"][0]["test_groups"] for ref in reference.values())
    assert "fine-tuned on (" not in capsys.readouterr().out


def test_new_versions_of_a_trained_reference_in_a_copy_are_never_tested(finetuned, tmp_path):
    """Split by reference, a checkpoint saw every image of its train and validation
    references: versions of one added to a copy (new names, the same reference) show it
    content it trained on, so --subset test leaves them out too (they were tested: the
    checkpoint recorded its images, not its references)."""
    import shutil

    config, summary = finetuned
    copy = tmp_path / "grown"
    shutil.copytree(config.root, copy)
    (reference,) = summary["splits"][0]["test_groups"]  # the copy's default test part
    assert reference not in summary["splits"][1]["test_groups"]  # split 1 trained on it
    stem = Path(reference).stem
    with (copy / "dmos.csv").open("a") as table:
        for level in (1, 2, 3):
            added = f"{stem}_03_{level:02d}.png"
            shutil.copyfile(copy / "images" / f"{stem}_01_{level:02d}.png",
                            copy / "images" / added)
            table.write(f"{added},{reference},{4 - level:.2f},0.5\n")
    evaluation = EvaluateConfig(f"{config.out}/split-1/best.pt", "kadid10k", str(copy),
                                str(tmp_path / "out"), subset="test", eval_crops=1, workers=0,
                                device="cpu")
    with pytest.raises(ValueError, match=r"9 of the 9 images of the test part are ones .* "
                                         r"another image of one of its references\): 0 left"):
        evaluate(evaluation)
    unseen = evaluate(dataclasses.replace(evaluation, checkpoint=f"{config.out}/split-0/best.pt",
                                          out=str(tmp_path / "unseen")))
    assert unseen["figures"]["count"] == 9  # split 0 never trained on it: its 6 and the 3 new


def test_a_reference_is_known_by_one_of_its_trained_images_never_by_its_label_alone():
    """Split by reference, the other images of a reference it trained on are left out too,
    but only where one of its trained images (reference and name) is among those evaluated:
    another dataset's reference labelled alike ("1" in two CSV files) is another photo.
    Split by image, an image is known by its own reference and name only."""
    from training.rated_datasets import LabelledImage, image_id
    from training.trained import TrainedRun

    trained = TrainedRun(backbone="test_resnet", dataset="csv", repeat=0,
                         trained_images=frozenset({image_id(LabelledImage("a.png", 0.5, "1"))}))
    grown = [LabelledImage(name, 0.5, group) for name, group in
             (("a.png", "1"), ("a_new.png", "1"), ("b.png", "2"))]
    assert [image.name for image in trained.trained_on(grown)] == ["a.png", "a_new.png"]
    other = [LabelledImage(name, 0.5, "1") for name in ("x.png", "y.png")]
    assert trained.trained_on(other) == []
    by_image = dataclasses.replace(trained, split_by="image")
    assert [image.name for image in by_image.trained_on(grown)] == ["a.png"]


def test_a_dataset_changed_in_place_has_no_test_part_of_the_checkpoints_split(finetuned,
                                                                               tmp_path):
    """The split is a function of the images: made again over a root that now holds others
    (a reference left out here), its test part would hold references the checkpoint trained
    on. Its recorded fingerprint differs: --subset test is refused; --subset all still runs."""
    config, _ = finetuned
    table = Path(config.root) / "dmos.csv"
    lines = table.read_text().splitlines()
    table.write_text("\n".join(lines[:-6]) + "\n")  # the last reference's six versions gone
    evaluation = EvaluateConfig(f"{config.out}/split-1/best.pt", "kadid10k", config.root,
                                str(tmp_path / "changed"), subset="test", eval_crops=3,
                                batch_size=4, workers=0, device="cpu")
    with pytest.raises(ValueError, match=r"no longer holds the images .* cannot be made again"):
        evaluate(evaluation)
    assert evaluate(dataclasses.replace(evaluation, subset="all"))["figures"]["count"] == 18


def test_an_image_smaller_than_the_crop_is_named_before_any_training(kadid_folder, tmp_path):
    from PIL import Image

    from training.rated_datasets import DatasetLayoutError

    small = kadid_folder / "images" / "I04_01_01.png"
    with Image.open(small) as image:
        image.crop((0, 0, 24, 24)).save(small)
    config = FinetuneConfig("kadid10k", str(kadid_folder), str(tmp_path / "finetune"),
                            ModelConfig("test_resnet", init="random"),
                            OptimConfig(lr=3e-3, halve_every=10, epochs=1, batch_size=4),
                            Augment(crop=32), workers=0,
                            device="cpu")
    with pytest.raises(DatasetLayoutError, match=r"1 of 24 images are smaller than the "
                                                 r"32-pixel crop, e\.g\. I04_01_01\.png \(24x24\)"):
        finetune(config)
    assert not any((tmp_path / "finetune").rglob("*.pt"))  # nothing was trained


def test_a_split_without_a_figure_leaves_the_others_median_and_is_counted():
    from training.finetune import median_figures, median_line, undefined_figures

    def split(srocc: float, plcc: float) -> dict:
        return {"test": {"srocc": srocc, "plcc": plcc, "plcc_raw": 0.3, "krcc": 0.1,
                         "rmse": 0.2, "rmse_raw": 0.4}}

    # constant predictions on one split: its PLCC is undefined (NaN)
    results = [split(0.5, float("nan")), split(0.7, 0.97), split(0.6, 0.49)]
    medians = median_figures(results)
    assert medians["srocc"] == 0.6 and medians["plcc"] == pytest.approx(np.median([0.97, 0.49]))
    assert undefined_figures(results) == {"plcc": 1}
    assert np.isnan(median_figures([split(0.5, float("nan"))])["plcc"])
    line = median_line({"median": medians, "undefined": undefined_figures(results)}, 3)
    assert line.startswith("test figures, median of 3 split(s): SROCC 0.6000")
    assert line.endswith("; left out as undefined: PLCC in 1 split(s)")


def _one_split_run(root: Path, tmp_path: Path) -> FinetuneConfig:
    return FinetuneConfig(
        "kadid10k", str(root), str(tmp_path / "finetune"),
        ModelConfig("test_resnet", init="random"),
        OptimConfig(lr=3e-3, halve_every=10, epochs=2, batch_size=4), Augment(crop=32),
        workers=0, device="cpu")


def test_a_split_too_small_for_its_figures_is_refused_before_training(kadid_folder, tmp_path):
    from training.rated_datasets import DatasetLayoutError

    table = kadid_folder / "dmos.csv"  # 2 references: a part of 1 image
    header = table.read_text().splitlines()[0]
    table.write_text(f"{header}\nI01_01_01.png,I01.png,4.0,0\nI01_01_02.png,I01.png,3.0,0\n"
                     "I02_01_01.png,I02.png,2.0,0\n")
    config = _one_split_run(kadid_folder, tmp_path)
    with pytest.raises(DatasetLayoutError, match=r"split 0: its (validation|test) part holds "
                                                 r"\d image\(s\) of 3; its correlations need"):
        finetune(config)
    assert not (tmp_path / "finetune" / "split-0").exists()


def test_a_test_part_of_one_score_is_refused_before_training(kadid_folder, tmp_path):
    """A curve fitted to one opinion score is that score: the split's test RMSE was 0, the
    best there is, whatever the model (and its correlations undefined). Refused as a
    validation part of one score is, before training."""
    from training import rated_datasets
    from training.image_data import split
    from training.rated_datasets import DatasetLayoutError

    config = _one_split_run(kadid_folder, tmp_path)
    parts = split(rated_datasets.load(config.dataset, config.root), config.split_by,
                  config.seed, 0)
    tested = {Path(image.name).name for image in parts.test}
    table = kadid_folder / "dmos.csv"
    header, *rows = table.read_text().splitlines()
    table.write_text("\n".join([header] + [
        f"{row.split(',')[0]},{row.split(',')[1]},3.0,0" if row.split(",")[0] in tested
        else row for row in rows]) + "\n")
    with pytest.raises(DatasetLayoutError, match=rf"split 0: its test part: its {len(tested)} "
                                                 r"images all score [\d.]+ \(rescaled to 0-1\)"):
        finetune(config)
    assert not (tmp_path / "finetune" / "split-0").exists()


def test_a_training_part_too_small_for_a_batch_is_refused_before_training(kadid_folder,
                                                                         tmp_path):
    """A lone image is left out of a batch of several (batch norm): a training part of one
    image per rank would train nothing yet report test figures, so the split is refused."""
    from training import rated_datasets
    from training.finetune import checked_split
    from training.rated_datasets import DatasetLayoutError

    config = _one_split_run(kadid_folder, tmp_path)  # 4 references of 6: 12 train images
    images = rated_datasets.load(config.dataset, config.root)
    parts = checked_split(config, images, 0, world_size=1)
    assert len(parts.train) == 12
    assert checked_split(config, images, 0, world_size=4) == parts  # 3 per rank
    def batch(size: int) -> FinetuneConfig:
        return dataclasses.replace(config, optim=dataclasses.replace(config.optim,
                                                                     batch_size=size))
    with pytest.raises(DatasetLayoutError, match=r"split 0: its training part holds 12 "
                                                 r"image\(s\) of 24, 1 per rank of 12"):
        checked_split(batch(24), images, 0, world_size=12)  # batches of 2 per rank
    assert checked_split(batch(12), images, 0, world_size=12) == parts  # of 1: as asked


def test_a_validation_part_of_one_score_is_refused_before_training(kadid_folder, tmp_path):
    """Its correlations are undefined every epoch: no epoch could be chosen as the best."""
    from training.rated_datasets import DatasetLayoutError

    table = kadid_folder / "dmos.csv"  # every version of a reference scores the same
    header, *rows = table.read_text().splitlines()
    table.write_text("\n".join([header] + [
        f"{name},{ref},{float(ref[1:3])},0" for name, ref, *_ in (r.split(",") for r in rows)])
        + "\n")
    config = _one_split_run(kadid_folder, tmp_path)
    with pytest.raises(DatasetLayoutError, match=r"split 0: the 6 images of its validation "
                                                 r"part all score [\d.]+ \(rescaled to 0-1\): no "):
        finetune(config)
    assert not (tmp_path / "finetune" / "split-0").exists()


def test_an_undefined_validation_score_still_keeps_the_first_epoch():
    """A model that predicts one value for every validation image has no correlation (NaN):
    its first epoch is kept until a number beats it, so a run always has a best.pt."""
    from training.optim import EarlyStopping

    stopping = EarlyStopping(patience=3)
    assert stopping.update(float("nan"), 0) and stopping.best_epoch == 0
    assert not stopping.update(float("nan"), 1)
    assert stopping.update(-0.2, 2) and (stopping.best, stopping.best_epoch) == (-0.2, 2)
    assert not stopping.update(float("nan"), 3) and stopping.bad_epochs == 1


def test_an_undefined_figure_is_null_in_the_json_and_said_undefined_in_compare(tmp_path, capsys):
    from training.compare import table
    from training.results_files import figures_line, write_json

    figures = {"srocc": float("nan"), "plcc": 0.5, "plcc_raw": 0.4, "krcc": float("nan"),
               "rmse": 0.0, "rmse_raw": 0.1}
    path = tmp_path / "run" / "results.json"
    path.parent.mkdir()
    write_json(path, {"dataset": "csv", "median": figures, "splits": [{"test": figures}],
                      "best": float("-inf"), "repeats": 1})

    def refuse(constant: str):
        raise AssertionError(f"{constant} is not JSON")

    document = json.loads(path.read_text(), parse_constant=refuse)
    assert document["median"]["srocc"] is None and document["best"] is None
    assert document["splits"][0]["test"]["plcc"] == 0.5
    assert figures_line(figures, ("srocc", "plcc")) == "SROCC undefined  PLCC 0.5000"
    row = table([path]).splitlines()[2].split()
    assert row[-7:] == ["undefined", "0.5000", "0.4000", "undefined", "0.0000", "0.1000", "1"]


def test_compare_says_how_many_splits_each_median_left_out(tmp_path):
    """A run where 9 of 10 splits left PLCC and SROCC undefined: their medians are one split's
    figures, and the row says so beside the runs whose medians hold every split."""
    from training.compare import table
    from training.results_files import write_json

    figures = {"srocc": 0.9, "plcc": 0.95, "plcc_raw": 0.9, "krcc": 0.7, "rmse": 0.1,
               "rmse_raw": 0.1}
    for name, undefined in (("few", {"plcc": 9, "srocc": 9}), ("all", {})):
        (tmp_path / name).mkdir()
        write_json(tmp_path / name / "results.json",
                   {"dataset": "kadid10k", "start": "random", "median": figures, "repeats": 10,
                    "undefined": undefined, "splits": []})
    lines = table([tmp_path / "few", tmp_path / "all"]).splitlines()
    assert lines[0].endswith("repeats  undefined in (splits)")
    assert lines[2].startswith("few") and lines[2].endswith("10  PLCC 9, SROCC 9 of 10")
    assert lines[3].startswith("all") and lines[3].endswith("10")


def test_compare_says_a_figure_every_split_left_undefined(tmp_path):
    """PLCC undefined in all 3 splits: its median is undefined and the row says 3 of 3."""
    from training.compare import table
    from training.results_files import write_json

    figures = {"srocc": 0.9, "plcc": None, "plcc_raw": 0.9, "krcc": 0.7, "rmse": 0.1,
               "rmse_raw": 0.1}
    write_json(tmp_path / "results.json",
               {"dataset": "kadid10k", "start": "random", "median": figures, "repeats": 3,
                "undefined": {"plcc": 3}, "splits": []})
    assert table([tmp_path]).splitlines()[2].endswith("3  PLCC 3 of 3")


def test_compare_shows_names_and_paths_whole(tmp_path):
    """A long run folder, checkpoint path and dataset names are never cut (kadid10k read as
    adid10k)."""
    from training.compare import table
    from training.results_files import write_json

    figures = {"srocc": 0.9, "plcc": 0.8, "plcc_raw": 0.7, "krcc": 0.6, "rmse": 0.1,
               "rmse_raw": 0.2}
    checkpoint = "/data/runs/a-rather-long-folder-name/kadid10k-finetune/split-0/best.pt"
    path = tmp_path / "evaluation-of-kadid10k-on-koniq10k" / "evaluation.json"
    path.parent.mkdir()
    write_json(path, {"checkpoint": checkpoint, "dataset": "koniq10k", "subset": "all",
                      "trained_on": "kadid10k", "figures": figures})
    assert table([]).splitlines()[0].split()[:2] == ["run", "kind"]
    text = table([path])
    assert "evaluation-of-kadid10k-on-koniq10k" in text and checkpoint in text
    assert "kadid10k -> koniq10k" in text.splitlines()[2]


def test_compare_tells_runs_of_one_folder_name_apart(tmp_path):
    """make pretrain-demo compares demo/<run>/probe with demo/random-96/probe: two rows named
    probe said nothing of which was which."""
    from training.compare import table
    from training.results_files import write_json

    figures = {"srocc": 0.9, "plcc": 0.8, "plcc_raw": 0.7, "krcc": 0.6, "rmse": 0.1,
               "rmse_raw": 0.2}
    paths = [tmp_path / run / "probe" / "evaluation.json" for run in ("resnet18", "random-96")]
    for path in paths:
        path.parent.mkdir(parents=True)
        write_json(path, {"checkpoint": "best.pt", "dataset": "koniq10k", "subset": "all",
                          "trained_on": "kadid10k", "figures": figures})
    labels = [line.split()[0] for line in table(paths).splitlines()[2:]]
    assert labels == ["resnet18/probe", "random-96/probe"]
    beside = paths[0].with_name("results.json")  # a run folder's two results share its label
    write_json(beside, {"checkpoint": "best.pt", "dataset": "koniq10k", "subset": "all",
                        "trained_on": "kadid10k", "figures": figures})
    labels = [line.split()[0] for line in table([*paths, beside]).splitlines()[2:]]
    assert labels == ["resnet18/probe", "random-96/probe", "resnet18/probe"]


def test_predictions_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """A test's predictions file: read back as numpy wrote it; a write that fails part way
    leaves the earlier file as it was, and no partial one beside it."""
    from training.results_files import write_predictions

    path = tmp_path / "test_predictions.npz"
    predicted, opinion = np.linspace(0, 1, 7), np.arange(7.0)
    write_predictions(path, predicted, opinion)
    with np.load(path) as saved:
        assert np.array_equal(saved["predicted"], predicted)
        assert np.array_equal(saved["opinion"], opinion)
    before = path.read_bytes()

    def failing(handle, **arrays):
        handle.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing)
    with pytest.raises(OSError, match="disk full"):
        write_predictions(path, predicted, opinion)
    assert path.read_bytes() == before
    assert [item.name for item in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("count", [0, 1, 5, 8, 11])
def test_predictions_gathered_from_rank_shares_are_put_back_in_dataset_order(count,
                                                                            world_size):
    """Each rank's share as rank_share_loader hands it out, concatenated in rank order as
    the gather does, comes back as the dataset's items in their order."""
    import torch

    from training.distributed import Context
    from training.finetune import in_dataset_order, rank_share_loader

    items = np.arange(100, 100 + count)
    gathered = [int(value) for rank in range(world_size) for batch in rank_share_loader(
        Context(rank, world_size, rank, torch.device("cpu")), items, 0, 3) for value in batch]
    assert list(in_dataset_order(np.array(gathered, dtype=np.int64), world_size)) == \
        list(items)
