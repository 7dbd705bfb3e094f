"""`train predict`: a quality model's scores of image files, checked against the same network
run here with timm directly; every image listed keeps a row, the ones that cannot be scored
with why; an image scores the same wherever it is listed."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from training.cli import main

from .conftest import png
from .test_cli import TINY
from .test_ddp import torchrun


def _pretrained(dataset: Path, out: Path, target: str) -> Path:
    """A one-step pretraining checkpoint of test_resnet at 32 pixels."""
    assert main(["pretrain", str(dataset), "--out", str(out), "--target", target, "--epochs",
                 "1", "--steps-per-epoch", "1", "--batch-size", "4", *TINY]) == 0
    return out / "best.pt"


@pytest.fixture(scope="module")
def checkpoint(tiny_dataset, tmp_path_factory) -> Path:
    """A quality model."""
    return _pretrained(tiny_dataset, tmp_path_factory.mktemp("predict-model"), "quality")


def _scored_here(checkpoint: Path, pixels: np.ndarray) -> float:
    """The checkpoint's network on the whole image, built and normalised here from timm and
    the checkpoint's recorded input (a multi-head model: its backbone, then its quality
    head's weights)."""
    saved = torch.load(checkpoint, weights_only=True)
    augment = saved["config"]["augment"]
    scaled = (pixels / 255.0 - augment["mean"]) / augment["std"]
    image = torch.from_numpy(scaled.transpose(2, 0, 1)[None]).float()
    state = saved["model"]
    if "heads.quality.weight" not in state:
        model = timm.create_model("test_resnet", num_classes=1)
        model.load_state_dict(state)
        with torch.no_grad():
            return float(model.eval()(image))
    backbone = timm.create_model("test_resnet", num_classes=0)
    backbone.load_state_dict({key.removeprefix("backbone."): value for key, value in
                              state.items() if key.startswith("backbone.")})
    with torch.no_grad():
        features = backbone.eval()(image)
        return float(features @ state["heads.quality.weight"].T + state["heads.quality.bias"])


def _texture(seed: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(rng.uniform(40, 215), rng.uniform(5, 60), (size, size, 3)), 0,
                   255).astype(np.uint8)


def _rows(out: Path) -> list[dict]:
    with open(out / "predictions.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_scores_are_the_networks_and_every_listed_image_keeps_a_row(checkpoint, tmp_path,
                                                                    capsys):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    images = {folder / "b.png": _texture(1, 32), folder / "nested" / "a.PNG": _texture(2, 32)}
    for path, pixels in images.items():
        path.write_bytes(png(pixels))
    (folder / "notes.txt").write_text("not an image")           # not an image name: skipped
    (folder / "small.png").write_bytes(png(_texture(3, 16)))     # smaller than the crop
    (folder / "fake.jpg").write_text("not an image either")      # an image name, no image
    (folder / "cut.png").write_bytes(png(_texture(4, 32))[:120])  # header whole, data cut
    lone = tmp_path / "lone.png"
    lone.write_bytes(png(_texture(5, 32)))
    images[lone] = _texture(5, 32)
    out = tmp_path / "out"
    assert main(["predict", str(folder), str(lone), "--checkpoint", str(checkpoint),
                 "--out", str(out), "--workers", "0", "--device", "cpu"]) == 0
    rows = _rows(out)
    names = [folder / "b.png", folder / "cut.png", folder / "fake.jpg", folder / "nested" /
             "a.PNG", folder / "small.png", lone]
    assert [row["path"] for row in rows] == [str(path) for path in names]  # sorted, then named
    by_path = {row["path"]: row for row in rows}
    for path, pixels in images.items():  # a 32-pixel image is its own crop: every crop is it
        assert float(by_path[str(path)]["score"]) == pytest.approx(
            _scored_here(checkpoint, pixels), rel=1e-5, abs=1e-6)
        assert by_path[str(path)]["error"] == ""
    assert "smaller than the 32-pixel crop" in by_path[str(folder / "small.png")]["error"]
    assert "not an image" in by_path[str(folder / "fake.jpg")]["error"]
    assert "cannot be read" in by_path[str(folder / "cut.png")]["error"]
    for failed in ("small.png", "fake.jpg", "cut.png"):
        assert by_path[str(folder / failed)]["score"] == ""
    summary = json.loads((out / "prediction.json").read_text())
    assert (summary["images"], summary["scored"], summary["failed"]) == (6, 3, 3)
    assert summary["meaning"].startswith("the ensemble label Q of")
    assert (out / "extremes.png").stat().st_size > 5_000
    assert "scored 3 of 6 images (3 could not be" in capsys.readouterr().out


def test_a_multi_head_model_is_scored_by_its_quality_head(tiny_dataset, tmp_path):
    model = _pretrained(tiny_dataset, tmp_path / "heads", "level,quality")
    image = tmp_path / "one.png"
    image.write_bytes(png(_texture(7, 32)))
    assert main(["predict", str(image), "--checkpoint", str(model), "--out",
                 str(tmp_path / "out"), "--workers", "0", "--device", "cpu"]) == 0
    assert float(_rows(tmp_path / "out")[0]["score"]) == pytest.approx(
        _scored_here(model, _texture(7, 32)), rel=1e-5, abs=1e-6)
    classes = _pretrained(tiny_dataset, tmp_path / "classes", "level")
    assert main(["predict", str(image), "--checkpoint", str(classes), "--out",
                 str(tmp_path / "out2"), "--workers", "0", "--device", "cpu"]) == 2


def test_one_crop_is_the_centre_as_evaluate_takes_it():
    """predict, evaluate and probe score one crop the same way: the centre one (a single
    random crop made a score a matter of chance, and predict's differ from evaluate's)."""
    from training.transforms import Augment, centre_view, eval_views

    pixels = _texture(5, 48)
    augment = Augment(crop=32)
    for seed in range(3):
        torch.testing.assert_close(eval_views(pixels, augment, np.random.default_rng(seed), 1),
                                   centre_view(pixels, augment)[None], rtol=0, atol=0)
    torch.testing.assert_close(centre_view(pixels, augment),
                               centre_view(pixels[8:40, 8:40], augment), rtol=0, atol=0)


def test_an_image_scores_the_same_wherever_it_is_listed(checkpoint, tmp_path):
    """Its crops come from its own pixels, not its place in the list."""
    paths = []
    for seed in range(4):
        paths.append(tmp_path / f"img{seed}.png")
        paths[-1].write_bytes(png(_texture(seed, 48)))  # larger than the crop: crops differ
    scores = []
    for name, listed in (("alone", paths[3:]), ("last", paths), ("first", paths[::-1])):
        assert main(["predict", *map(str, listed), "--checkpoint", str(checkpoint), "--out",
                     str(tmp_path / name), "--eval-crops", "3", "--workers", "0",
                     "--device", "cpu"]) == 0
        scores.append({row["path"]: float(row["score"]) for row in _rows(tmp_path / name)})
    # the same crops: equal but for float32's last bits in batches of another size or order
    target = str(paths[3])
    assert scores[1][target] == pytest.approx(scores[0][target], rel=1e-6)
    for path, value in scores[1].items():
        assert scores[2][path] == pytest.approx(value, rel=1e-6)
    # the crops do move the score: one crop at two places scores two values
    assert len({round(value, 6) for value in scores[1].values()}) == 4


def test_a_file_name_that_is_not_utf8_keeps_its_row_and_its_bytes(checkpoint, tmp_path):
    """Linux takes any bytes for a name: b'caf\\xe9.png' (Latin-1) is scored, and its row
    holds those bytes, so it names that file (read with surrogateescape, as Python lists it)."""
    folder = tmp_path / "images"
    folder.mkdir()
    odd = os.fsdecode(b"caf\xe9.png")
    (folder / odd).write_bytes(png(_texture(0, 32)))
    (folder / "plain.png").write_bytes(png(_texture(1, 32)))
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--eval-crops", "1", "--workers", "0", "--device", "cpu"]) == 0
    with open(out / "predictions.csv", newline="", encoding="utf-8",
              errors="surrogateescape") as handle:
        rows = {row["path"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {str(folder / odd), str(folder / "plain.png")}
    assert all(row["score"] and not row["error"] for row in rows.values())
    assert Path(next(path for path in rows if "caf" in path)).is_file()
    assert json.loads((out / "prediction.json").read_text())["scored"] == 2


def test_bad_inputs_are_named(checkpoint, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no image here")
    assert main(["predict", str(empty), "--checkpoint", str(checkpoint), "--out",
                 str(tmp_path / "out"), "--workers", "0", "--device", "cpu"]) == 2
    assert "no image file in" in capsys.readouterr().err
    image = tmp_path / "one.png"
    image.write_bytes(png(_texture(0, 32)))
    assert main(["predict", str(image), "--checkpoint", str(tmp_path / "none.pt"), "--out",
                 str(tmp_path / "out"), "--workers", "0"]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


@pytest.mark.slow
def test_two_ranks_score_each_image_as_one_process_does(checkpoint, tmp_path):
    """Each rank scores every other image; the gathered rows map back to their files (an odd
    count, one image that fails on its rank)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed in range(5):
        (folder / f"img{seed}.png").write_bytes(png(_texture(seed, 40)))
    (folder / "img2.png").write_bytes(png(_texture(2, 40))[:120])  # cut: fails on a rank
    run = [str(folder), "--checkpoint", str(checkpoint), "--eval-crops", "2", "--workers",
           "0", "--device", "cpu", "--batch-size", "2"]
    torchrun("predict", *run, "--out", str(tmp_path / "two"))
    assert main(["predict", *run, "--out", str(tmp_path / "one")]) == 0
    one, two = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert [row["path"] for row in two] == [row["path"] for row in one]
    assert [bool(row["error"]) for row in two] == [False, False, True, False, False]
    for first, second in zip(one, two, strict=True):
        if first["score"]:
            assert float(second["score"]) == pytest.approx(float(first["score"]), rel=1e-6)


def test_each_image_is_scored_once_and_never_the_runs_own_pictures(checkpoint, tmp_path,
                                                                   capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    image = folder / "one.png"
    image.write_bytes(png(_texture(1, 32)))
    (tmp_path / "link.png").symlink_to(image)
    out = folder / "scores"  # inside the folder scored: its extremes.png is no input
    named = [str(folder), str(image.resolve()), str(tmp_path / "link.png")]
    for _ in range(2):
        assert main(["predict", *named, "--checkpoint", str(checkpoint), "--out", str(out),
                     "--workers", "0", "--device", "cpu"]) == 0
        assert [row["path"] for row in _rows(out)] == [str(image)]  # as first named
        assert "scored 1 of 1 images" in capsys.readouterr().out
    (folder / "one.png").write_bytes(png(_texture(1, 16)))  # now smaller than the crop
    assert main(["predict", str(folder), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--workers", "0", "--device", "cpu"]) == 1
    assert "none of the 1 images could be scored" in capsys.readouterr().err


def test_a_name_without_an_image_keeps_its_row_and_the_others_are_scored(checkpoint,
                                                                          tmp_path, capsys):
    """A file named that is not there, a link to nothing and a FIFO in a folder (never opened:
    it would block), as the README says: each keeps its row with why, the others are
    scored; a run where no name holds an image says so (exit 1)."""
    import os

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "good.png").write_bytes(png(_texture(3, 32)))
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    os.mkfifo(folder / "pipe.png")
    missing = tmp_path / "missing.jpg"
    run = ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"), "--workers", "0",
           "--device", "cpu"]
    assert main(["predict", str(missing), str(folder), *run]) == 0
    rows = {row["path"]: row for row in _rows(tmp_path / "out")}
    assert list(rows) == [str(missing), str(folder / "gone.png"), str(folder / "good.png"),
                          str(folder / "pipe.png")]
    assert rows[str(folder / "good.png")]["score"] and not rows[str(folder / "good.png")]["error"]
    for name in (missing, folder / "gone.png"):
        assert rows[str(name)]["error"].startswith("no file behind the name (nothing there")
    assert rows[str(folder / "pipe.png")]["error"].startswith(
        "no regular file behind the name (a pipe")
    assert not any(rows[str(name)]["score"] for name in (missing, folder / "gone.png",
                                                         folder / "pipe.png"))
    assert "scored 1 of 4 images (3 could not be" in capsys.readouterr().out
    assert main(["predict", str(missing), *run]) == 1
    said = capsys.readouterr()
    assert "none of the 1 images could be scored" in said.err
    assert f"(1 could not be, e.g. {missing}: no file behind the name" in said.out  # at once


def test_the_output_folder_may_be_the_input_folder_its_own_picture_left_out(checkpoint,
                                                                           tmp_path, capsys):
    """--out the folder scored (or one below it): its photos are scored, twice the same, and
    only the picture predict writes there (extremes.png) is left out."""
    folder = tmp_path / "photos"
    (folder / "2024").mkdir(parents=True)
    (folder / "top.png").write_bytes(png(_texture(4, 32)))
    (folder / "2024" / "a.png").write_bytes(png(_texture(5, 32)))
    for out in (folder, folder / "2024"):
        for _ in range(2):
            assert main(["predict", str(folder), "--checkpoint", str(checkpoint), "--out",
                         str(out), "--workers", "0", "--device", "cpu"]) == 0
            assert [row["path"] for row in _rows(out)] == [str(folder / "2024" / "a.png"),
                                                           str(folder / "top.png")]
            assert (out / "extremes.png").is_file()
    capsys.readouterr()


def test_an_images_score_is_the_mean_of_its_crops_scores():
    """The 10-crop test: each image scored as the mean over its crops (never one crop, never
    their sum), checked with a network whose score is a crop's mean normalised pixel."""
    from training.distributed import Context
    from training.loop import predict
    from training.precision import FP32, Inputs

    generator = torch.Generator().manual_seed(0)
    crops = torch.randint(0, 256, (3, 10, 3, 4, 4), dtype=torch.uint8, generator=generator)
    targets = torch.tensor([0.1, 0.2, 0.3])
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)

    class PixelMean(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return images.mean(dim=(1, 2, 3))[:, None]

    cpu = torch.device("cpu")
    predicted, target = predict(Context(0, 1, 0, cpu), PixelMean(), [(crops, targets)],
                                Inputs(mean, std, cpu, FP32))
    normalised = ((crops.numpy() / 255.0 - np.reshape(mean, (3, 1, 1)))
                  / np.reshape(std, (3, 1, 1)))
    np.testing.assert_allclose(predicted, normalised.mean(axis=(1, 2, 3, 4)), rtol=1e-5)
    np.testing.assert_allclose(target, targets.numpy(), rtol=1e-7)
