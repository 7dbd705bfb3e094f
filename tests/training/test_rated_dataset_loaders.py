"""The LIVE, CSIQ, LIVE Challenge, SPAQ and FLIVE loaders on tiny copies of their layouts."""

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from training import rated_datasets
from training.cli import build_parser
from training.image_data import published_split_notice, split
from training.rated_datasets import LOADERS, DatasetLayoutError

LIVE_COUNTS = {"jp2k": 227, "jpeg": 233, "wn": 174, "gblur": 174, "fastfading": 174}


def _encoded(fmt: str, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _cells(strings: list[str], shape: tuple[int, int]) -> np.ndarray:
    """A MATLAB cell array of strings, as scipy.io.savemat writes one."""
    return np.array(strings, dtype=object).reshape(shape)


@pytest.fixture
def live_folder(tmp_path) -> tuple[Path, np.ndarray, np.ndarray, list[str]]:
    """LIVE release 2: 982 entries, every fifth a reference copy (orgs 1, DMOS 0)."""
    root = tmp_path / "live"
    names = [f"{folder}/img{k}.bmp" for folder, count in LIVE_COUNTS.items()
             for k in range(1, count + 1)]
    originals = (np.arange(len(names)) % 5 == 0).astype(float)
    dmos = np.where(originals == 1, 0.0, np.round(
        np.random.default_rng(0).uniform(15, 95, len(names)), 2))
    refs = [f"ref{k % 29:02d}.bmp" for k in range(len(names))]
    bmp = _encoded("BMP")
    for name in [*names, *sorted(set(refs))]:
        _write(root / (name if "/" in name else f"refimgs/{name}"), bmp)
    savemat(root / "dmos.mat", {"dmos": dmos[None, :], "orgs": originals[None, :]})
    savemat(root / "refnames_all.mat", {"refnames_all": _cells(refs, (1, len(refs)))})
    return root, dmos, originals, refs


def test_live_inverts_dmos_and_groups_by_reference(live_folder):
    root, dmos, originals, refs = live_folder
    images = rated_datasets.load("live", str(root))
    kept = originals == 0
    assert len(images) == kept.sum() == 785
    by_name = {image.name: image for image in images}
    first_jpeg = by_name["jpeg/img2.bmp"]  # entry 228 of dmos.mat (jpeg/img1 is entry 227)
    assert first_jpeg.score == pytest.approx(1 - dmos[228] / 100)
    assert first_jpeg.group == refs[228]
    assert "jp2k/img1.bmp" not in by_name  # entry 0: a reference copy
    np.testing.assert_allclose([i.score for i in images], 1 - dmos[kept] / 100)
    assert [i.group for i in images] == list(np.array(refs)[kept])
    assert by_name["fastfading/img174.bmp"].pixels().shape == (24, 32, 3)
    parts = split(images, "reference", seed=0)
    assert not {i.group for i in parts.train} & {i.group for i in parts.test}


def test_live_names_a_missing_or_short_file(live_folder):
    root, dmos, originals, _ = live_folder
    savemat(root / "dmos.mat", {"dmos": dmos[None, :-1], "orgs": originals[None, :-1]})
    with pytest.raises(DatasetLayoutError, match="LIVE release 2 has 982"):
        rated_datasets.load("live", str(root))
    savemat(root / "dmos.mat", {"dmos": dmos[None, :]})
    with pytest.raises(DatasetLayoutError, match=r"dmos\.mat has no variable 'orgs'"):
        rated_datasets.load("live", str(root))
    (root / "refnames_all.mat").unlink()
    savemat(root / "dmos.mat", {"dmos": dmos[None, :], "orgs": originals[None, :]})
    with pytest.raises(DatasetLayoutError, match=r"refnames_all\.mat does not exist"):
        rated_datasets.load("live", str(root))
    for damaged in (b"", b"MATLAB 5.0 MAT-file cut", b"\x89HDF\r\n\x1a\n" + bytes(600)):
        (root / "dmos.mat").write_bytes(damaged)  # empty, truncated, a v7.3 (HDF5) file
        with pytest.raises(DatasetLayoutError, match=r"dmos\.mat is not a MATLAB file scipy"):
            rated_datasets.load("live", str(root))


def test_csiq_inverts_dmos_and_finds_its_file_names(tmp_path):
    rows = ["image,dst_idx,dst_type,dst_lev,dmos_std,dmos"]
    expected = {}
    for image in ("1600", "boston"):
        _write(tmp_path / "src_imgs" / f"{image}.png", _encoded("PNG"))
        for number, (kind, folder, tag) in enumerate((
                ("noise", "awgn", "AWGN"), ("jpeg 2000", "jpeg2000", "jpeg2000"),
                ("blur", "blur", "BLUR")), start=1):
            for level in (1, 2):
                name = f"{image}.{tag}.{level}.png"
                _write(tmp_path / "dst_imgs" / folder / name, _encoded("PNG", level))
                dmos = 0.1 * level + 0.05 * number
                rows.append(f"{image},{number},{kind},{level},0.02,{dmos:.3f}")
                expected[name] = (1 - round(dmos, 3), image)
    (tmp_path / "csiq.DMOS.csv").write_text("\n".join(rows) + "\n")
    images = rated_datasets.load("csiq", str(tmp_path))
    assert len(images) == 12
    for image in images:
        assert image.score == pytest.approx(expected[image.name][0])
        assert image.group == expected[image.name][1]
        assert Path(image.path).parent.name in ("awgn", "jpeg2000", "blur")
    assert images[0].pixels().shape == (24, 32, 3)
    (tmp_path / "csiq.DMOS.csv").write_text("\n".join(rows) + "\n,,,,,\n,,,,,\n")  # Excel's
    assert len(rated_datasets.load("csiq", str(tmp_path))) == 12  # empty rows are no rows
    # the all_by_image sheet saved as CSV: its table starts at D4 (CSIQ's csiq.DMOS.xlsx),
    # so three rows of empty cells come first and three empty cells open every row
    exported = [",,,,,,,,"] * 3 + [",,," + row for row in rows]
    (tmp_path / "csiq.DMOS.csv").write_text("\r\n".join(exported) + "\r\n")
    assert sorted((i.name, i.score) for i in rated_datasets.load("csiq", str(tmp_path))) == \
        sorted((name, pytest.approx(score)) for name, (score, _) in expected.items())
    (tmp_path / "csiq.DMOS.csv").write_text("\n".join(exported[:4])
                                            + "\n,,,1600,1,noise,1,0.02,0.2,0.5\n")
    with pytest.raises(DatasetLayoutError, match=r"line 5 has 10 fields, the header 9"):
        rated_datasets.load("csiq", str(tmp_path))
    (tmp_path / "csiq.DMOS.csv").write_text(rows[0] + "\n1600,1,sharpen,1,0.1,0.2\n")
    with pytest.raises(DatasetLayoutError, match="unknown dst_type 'sharpen'"):
        rated_datasets.load("csiq", str(tmp_path))
    (tmp_path / "csiq.DMOS.csv").write_text(rows[0] + "\n1600,1,noise,,0.1,0.2\n")
    with pytest.raises(DatasetLayoutError, match=r"csiq\.DMOS\.csv.*dst_lev"):
        rated_datasets.load("csiq", str(tmp_path))
    (tmp_path / "csiq.DMOS.csv").unlink()
    with pytest.raises(DatasetLayoutError, match=r"csiq\.DMOS\.csv does not exist"):
        rated_datasets.load("csiq", str(tmp_path))


def test_clive_reads_the_mat_files_and_leaves_out_the_instruction_images(tmp_path):
    names = ["t1.bmp", "t2.bmp", "3.bmp", "4.bmp", "1169.bmp"]
    mos = np.array([60.0, 25.0, 44.5, 90.0, 3.25])
    for name in names:
        folder = "Images/trainingImages" if name.startswith("t") else "Images"
        _write(tmp_path / folder / name, _encoded("BMP"))
    (tmp_path / "Data").mkdir()
    savemat(tmp_path / "Data" / "AllImages_release.mat",
            {"AllImages_release": _cells(names, (len(names), 1))})
    savemat(tmp_path / "Data" / "AllMOS_release.mat", {"AllMOS_release": mos[None, :]})
    images = rated_datasets.load("clive", str(tmp_path))
    assert [(i.name, i.group) for i in images] == [(n, n) for n in names[2:]]
    np.testing.assert_allclose([i.score for i in images], mos[2:] / 100)
    (tmp_path / "Data" / "AllMOS_release.mat").unlink()
    with pytest.raises(DatasetLayoutError, match=r"AllMOS_release\.mat does not exist"):
        rated_datasets.load("clive", str(tmp_path))


@pytest.mark.parametrize("table", ["MOS and Image attribute scores.csv",
                                   "Annotations/MOS and Image attribute scores.csv"])
def test_spaq_reads_its_exported_sheet(tmp_path, table):
    for number in (1, 2, 3):
        _write(tmp_path / "TestImage" / f"{number:05d}.jpg", _encoded("JPEG", number))
    (tmp_path / table).parent.mkdir(exist_ok=True)
    (tmp_path / table).write_text(
        "Image name,MOS,Brightness,Colorfulness,Contrast,Noisiness,Sharpness\n"
        "00001.jpg,48.86,47.43,55.57,55.71,37.86,42.57\n00002.jpg,62.5,1,1,1,1,1\n"
        "00003.jpg,100,1,1,1,1,1\n")
    images = rated_datasets.load("spaq", str(tmp_path))
    assert [(i.name, i.score) for i in images] == [
        ("00001.jpg", pytest.approx(0.4886)), ("00002.jpg", 0.625), ("00003.jpg", 1.0)]
    assert images[0].pixels().shape == (24, 32, 3)


def test_spaq_names_its_missing_sheet(tmp_path):
    with pytest.raises(DatasetLayoutError,  # both places it may be
                       match=r"MOS and Image attribute scores\.csv does not exist \(nor "
                             rf"{tmp_path}/Annotations/MOS and Image attribute scores\.csv\)"):
        rated_datasets.load("spaq", str(tmp_path))


@pytest.fixture
def flive_folder(tmp_path) -> Path:
    """The PaQ-2-PiQ database folder: labels_image.csv, labels640.csv (the test set)."""
    names = ["voc_emotic_ava/AVA__149.jpg", "blur_dataset/motion0044.jpg",
             "EE371R/rq59.jpg", "voc_emotic_ava/EMOTIC__cwpvmtkuw83q2or3za.jpg",
             "voc_emotic_ava/JPEGImages__2007_001630.jpg"]
    for number, name in enumerate(names):
        _write(tmp_path / name, _encoded("JPEG", number))
    (tmp_path / "labels_image.csv").write_text(
        "name,mos\n" + "".join(f"{name},{50 + 10 * k}.5\n" for k, name in enumerate(names)))
    (tmp_path / "labels640.csv").write_text(
        "mos_patch_1,name_patch,mos_image,name_image,width_image,height_image\n"
        f"79.5,patches/EMOTIC__cwpvmtkuw83q2or3za.jpg,59.6,{names[3]},1200,660\n")
    return tmp_path


def test_flive_keeps_the_published_test_set(flive_folder):
    images = rated_datasets.load("flive", str(flive_folder))
    assert [i.score for i in images] == pytest.approx([0.505, 0.605, 0.705, 0.805, 0.905])
    assert [i.published_split for i in images] == ["train"] * 3 + ["test", "train"]
    assert all(i.group == i.name for i in images)
    for repeat in range(3):  # whatever the seeded split, the published test set is tested
        parts = split(images, "reference", seed=repeat, repeat=repeat)
        assert [i.name for i in parts.test] == ["voc_emotic_ava/EMOTIC__cwpvmtkuw83q2or3za.jpg"]
        assert len(parts.train) + len(parts.val) == 4
    # finetune and probe say so where more than one repeat is asked for
    assert published_split_notice(images, "flive", 3) == (
        "flive has a published train/test split: every repeat tests on its test set (only "
        "the validation part changes)")
    assert published_split_notice(images, "flive", 1) is None
    assert published_split_notice([replace(i, published_split=None) for i in images],
                                  "flive", 3) is None


def test_flive_names_a_missing_or_foreign_test_list(flive_folder):
    (flive_folder / "labels640.csv").write_text("name_image\nsomewhere/else.jpg\n")
    with pytest.raises(DatasetLayoutError, match=r"no image of .*labels640\.csv"):
        rated_datasets.load("flive", str(flive_folder))
    (flive_folder / "labels640.csv").unlink()
    with pytest.raises(DatasetLayoutError, match=r"labels640\.csv does not exist"):
        rated_datasets.load("flive", str(flive_folder))


@pytest.mark.parametrize("kind", ["live", "csiq", "clive", "spaq", "flive"])
def test_the_new_kinds_are_registered_and_offered_by_the_cli(kind, tmp_path):
    assert kind in LOADERS
    args = build_parser().parse_args(["evaluate", "--checkpoint", "best.pt", "--dataset", kind,
                                      "--root", str(tmp_path), "--out", str(tmp_path)])
    assert args.dataset == kind
    with pytest.raises(DatasetLayoutError, match="does not exist"):  # an empty folder
        rated_datasets.load(kind, str(tmp_path))
