import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from shards.decode import DecodeError, decode
from training import rated_datasets
from training.image_data import ImageViews, held_out_groups, split
from training.rated_datasets import DatasetLayoutError, LabelledImage
from training.transforms import Augment

from .conftest import png


def _image(seed: int) -> bytes:
    return png(np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8))


def test_kadid_layout(kadid_folder):
    images = rated_datasets.load("kadid10k", str(kadid_folder))
    assert len(images) == 24
    first = images[0]
    assert (first.name, first.group) == ("I01_01_01.png", "I01.png")
    assert first.score == pytest.approx((5 - 1 - 0.1 - 1) / 4)
    assert first.pixels().shape == (48, 64, 3)


def test_tid2013_matches_names_without_case(tmp_path):
    (tmp_path / "distorted_images").mkdir()
    (tmp_path / "distorted_images" / "I01_01_1.BMP").write_bytes(_image(0))
    (tmp_path / "distorted_images" / "i02_01_1.bmp").write_bytes(_image(1))
    table = tmp_path / "mos_with_names.txt"
    table.write_text("4.5 i01_01_1.bmp\n6.75 i02_01_1.bmp\n")
    images = rated_datasets.load("tid2013", str(tmp_path))
    assert [(i.group, i.score) for i in images] == [("i01", 0.5), ("i02", 0.75)]
    table.write_bytes(b"\xef\xbb\xbf" + table.read_bytes())  # a BOM, as Notepad writes
    assert rated_datasets.load("tid2013", str(tmp_path)) == images
    table.write_text("4.5 i01_01_1.bmp\n", encoding="utf-16")
    with pytest.raises(DatasetLayoutError, match=r"mos_with_names\.txt is not UTF-8 text"):
        rated_datasets.load("tid2013", str(tmp_path))


def test_koniq_and_biq2021_layouts(tmp_path):
    koniq = tmp_path / "koniq"
    (koniq / "1024x768").mkdir(parents=True)
    (koniq / "1024x768" / "a.jpg").write_bytes(_image(2))
    (koniq / "koniq10k_scores_and_distributions.csv").write_text(
        'image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,MOS_zscore\n"a.jpg",0,0,1,0,0,1,3.0,0.1,50\n')
    assert rated_datasets.load("koniq10k", str(koniq))[0].score == 0.5
    biq = tmp_path / "biq"
    (biq / "Images").mkdir(parents=True)
    for number in range(3):
        (biq / "Images" / f"ss01 ({number}).jpg").write_bytes(_image(number))
    (biq / "Train.csv").write_text("Image Name,MOS\nss01 (0).jpg,0.2\nss01 (1).jpg,0.7\n")
    (biq / "Test.csv").write_text("Image Name,MOS\nss01 (2).jpg,0.5\n")
    images = rated_datasets.load("biq2021", str(biq))
    parts = split(images, "reference", seed=5)
    assert [i.name for i in parts.test] == ["ss01 (2).jpg"]  # the published split is kept
    # the repository's own names: its list says ss02 (1014).jpg, its file is .JPG
    (biq / "Images" / "ss02 (1014).JPG").write_bytes(_image(4))
    (biq / "Train (Images and MOS).csv").write_text(
        "Image Name,MOS,,\nss01 (0).jpg,0.2,,\nss02 (1014).jpg,0.7,,\n")
    # the first release's Train.csv still beside it (copied over): the current list is read
    assert {i.name: Path(i.path).name for i in rated_datasets.load("biq2021", str(biq))}[
        "ss02 (1014).jpg"] == "ss02 (1014).JPG"
    (biq / "Train.csv").unlink()
    scores = {i.name: i.score for i in rated_datasets.load("biq2021", str(biq))}
    assert scores["ss01 (0).jpg"] == 0.2
    # its first release: Subset_01..03/ and a few MOS below 0 (clipped to the [0, 1] scale)
    first = tmp_path / "biq-first"
    for number, subset in ((0, "Subset_01"), (1, "Subset_03")):
        (first / subset).mkdir(parents=True, exist_ok=True)
        (first / subset / f"ss0{number + 1} ({number}).jpg").write_bytes(_image(number))
    (first / "Train.csv").write_text("Image Name,MOS\nss01 (0).jpg,-0.22748\n")
    (first / "Test.csv").write_text("Image Name,MOS\nss02 (1).jpg,0.83292\n")
    assert [(i.name, i.score) for i in rated_datasets.load("biq2021", str(first))] == [
        ("ss01 (0).jpg", 0.0), ("ss02 (1).jpg", 0.83292)]


def test_generic_csv_rescales_scores(tmp_path):
    for number in range(3):
        (tmp_path / f"{number}.png").write_bytes(_image(number))
    table = tmp_path / "scores.csv"
    table.write_text("path,score\n0.png,10\n1.png,55\n2.png,100\n")
    assert [i.score for i in rated_datasets.load("csv", str(table))] == [0.0, 0.5, 1.0]
    with pytest.raises(DatasetLayoutError, match="is a folder, not a table"):
        rated_datasets.load("csv", str(tmp_path))
    (tmp_path / "again.csv").write_text("path,score\n0.png,10\n1.png,55\n./0.png,100\n")
    with pytest.raises(DatasetLayoutError, match=r"more than once \(1\), e\.g\. .*0\.png"):
        rated_datasets.load("csv", str(tmp_path / "again.csv"))


def test_a_csv_group_is_its_text_without_surrounding_spaces(tmp_path):
    """' I01' and 'I01 ' are the reference I01 (a stray space would put its images in two
    groups, and --split-by reference on both sides of a split); a blank group, the image."""
    for number in range(4):
        (tmp_path / f"{number}.png").write_bytes(_image(number))
    table = tmp_path / "scores.csv"
    table.write_text("path,score,group\n0.png,1,I01\n1.png,2, I01\n2.png,3,I01 \n"
                     "3.png,4,  \n")
    assert [i.group for i in rated_datasets.load("csv", str(table))] == ["I01", "I01", "I01",
                                                                        "3.png"]


def test_sixteen_bit_images_are_read_as_the_pipeline_reads_its_sources(tmp_path):
    """A 16-bit gray PNG and a 16-bit colour TIFF: each value v becomes round(v / 257), not
    saturated nor cut to its high byte, and EXIF-free gray is spread over three channels."""
    values = np.array([[0, 128, 257 * 100, 257 * 100 + 129, 65535, 40000]] * 4, np.uint16)
    cv2.imwrite(str(tmp_path / "gray.png"), values)
    colour = np.stack([values, values[:, ::-1], np.full_like(values, 1000)], axis=-1)
    cv2.imwrite(str(tmp_path / "colour.tif"), colour[..., ::-1])  # OpenCV writes BGR
    (tmp_path / "scores.csv").write_text("path,score\ngray.png,1\ncolour.tif,2\n")
    gray, rgb = (image.pixels()
                 for image in rated_datasets.load("csv", str(tmp_path / "scores.csv")))
    expected = np.floor(values / 257 + 0.5).astype(np.uint8)  # 128/257 < 1/2, 40000/257 = 155.6
    assert gray.dtype == np.uint8 and np.array_equal(gray, np.stack([expected] * 3, axis=-1))
    assert np.array_equal(rgb, np.floor(colour / 257 + 0.5).astype(np.uint8))


def test_missing_images_and_unknown_kinds_are_named(kadid_folder):
    (kadid_folder / "images" / "I02_01_01.png").unlink()
    with pytest.raises(DatasetLayoutError, match=r"1 of 24 images .* missing"):
        rated_datasets.load("kadid10k", str(kadid_folder))
    with pytest.raises(ValueError, match="dataset must be one of"):
        rated_datasets.load("nope", str(kadid_folder))
    with pytest.raises(DatasetLayoutError, match=r"dmos\.csv does not exist"):
        rated_datasets.load("kadid10k", str(kadid_folder / "images"))


def test_files_that_are_not_images_are_named_before_training_and_a_truncated_one_at_decode(
        tmp_path):
    """Headers are read at load (an empty file, text under an image name); a truncated
    image has a valid header, so only its first decode finds it, naming it too."""
    for number in range(3):
        (tmp_path / f"{number}.png").write_bytes(_image(number))
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    table = tmp_path / "scores.csv"
    table.write_text("path,score\n0.png,10\n1.png,20\nempty.png,30\ntext.jpg,40\n")
    with pytest.raises(DatasetLayoutError, match=r"2 of 4 images listed in .* are not "
                                                 r"images: .*empty\.png .*; .*text\.jpg"):
        rated_datasets.load("csv", str(table))
    # formats Pillow opens that the decoder does not (PCX under a .png name, ICO), and a
    # header of more pixels than it decodes: each refused by the decoder itself, so named
    # at load, not after a whole fine-tuning run at the test part's first decode
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(buffer, format="PCX")
    (tmp_path / "pcx.png").write_bytes(buffer.getvalue())
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "icon.ico")
    header = struct.pack(">IIBBBBB", 20_000, 6_000, 8, 2, 0, 0, 0)  # 120M pixels, RGB
    (tmp_path / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        for kind, data in ((b"IHDR", header), (b"IDAT", b""), (b"IEND", b""))))
    for name in ("pcx.png", "icon.ico", "huge.png"):
        with pytest.raises(DecodeError):
            decode((tmp_path / name).read_bytes())
    table.write_text("path,score\n0.png,10\n1.png,20\npcx.png,30\nicon.ico,40\n"
                     "huge.png,50\n")
    with pytest.raises(DatasetLayoutError, match=r"3 of 5 images listed in .* are not images: "
                                                 r".*pcx\.png .*; .*icon\.ico .*; .*huge\.png "
                                                 r"\(too_many_pixels: 20000x6000 exceeds "
                                                 r"100000000 pixels"):
        rated_datasets.load("csv", str(table))
    (tmp_path / "cut.png").write_bytes(_image(2)[:200])  # its header, then nothing
    table.write_text("path,score\n0.png,10\n1.png,20\ncut.png,30\n")
    [cut] = [image for image in rated_datasets.load("csv", str(table)) if image.name == "cut.png"]
    with pytest.raises(DatasetLayoutError, match=r"cut\.png cannot be read as an image"):
        cut.pixels()


@pytest.mark.parametrize("bad", ["nan", "inf", "", "good"])
def test_a_score_that_is_not_a_finite_number_is_named(tmp_path, bad):
    for number in range(3):
        (tmp_path / f"{number}.png").write_bytes(_image(number))
    table = tmp_path / "scores.csv"  # one bad row would make every scaled score NaN
    table.write_text(f"path,score\n0.png,10\n1.png,{bad}\n2.png,100\n")
    with pytest.raises(DatasetLayoutError, match=rf"path='1\.png'.* has score '{bad}', not a "
                                                 "finite number"):
        rated_datasets.load("csv", str(table))
    (tmp_path / "mos_with_names.txt").write_text(f"4.5 0.png\n{bad or '-'} 1.png\n")
    (tmp_path / "distorted_images").mkdir()
    with pytest.raises(DatasetLayoutError, match=rf"name='1\.png'.* has mos '{bad or '-'}'"):
        rated_datasets.load("tid2013", str(tmp_path))


def test_a_score_off_its_datasets_scale_is_named(tmp_path, kadid_folder):
    """KADID-10k's DMOS and KonIQ-10k's MOS are means of 1..5 ratings, TID2013's MOS lies in
    0..9: a score outside (another scale, another column) is named, not trained on as a
    score outside 0..1."""
    table = kadid_folder / "dmos.csv"
    header, first, *rows = table.read_text().splitlines()
    name, reference, *_ = first.split(",")
    for bad in ("9", "-3", "0.99"):
        table.write_text("\n".join([header, f"{name},{reference},{bad},0", *rows]) + "\n")
        with pytest.raises(DatasetLayoutError, match=rf"has dmos {bad}, outside the dataset's "
                                                     r"scale 1\.\.5"):
            rated_datasets.load("kadid10k", str(kadid_folder))
    table.write_text("\n".join([header, f"{name},{reference},5,0", *rows]) + "\n")
    assert rated_datasets.load("kadid10k", str(kadid_folder))[0].score == 1.0  # the best
    (tmp_path / "distorted_images").mkdir()
    (tmp_path / "mos_with_names.txt").write_text("9.5 i01_01_1.bmp\n")
    with pytest.raises(DatasetLayoutError, match=r"has mos 9\.5, outside the dataset's scale "
                                                 r"0\.\.9"):
        rated_datasets.load("tid2013", str(tmp_path))


def test_a_csiq_level_that_is_not_a_whole_number_is_named(tmp_path):
    """A level of 2.7 read the image of level 2 under that row's DMOS."""
    (tmp_path / "dst_imgs" / "awgn").mkdir(parents=True)
    (tmp_path / "csiq.DMOS.csv").write_text("image,dst_idx,dst_type,dst_lev,dmos_std,dmos\n"
                                            "1600,1,noise,2.7,0.02,0.2\n")
    with pytest.raises(DatasetLayoutError, match=r"has dst_lev '2\.7', not a whole number"):
        rated_datasets.load("csiq", str(tmp_path))


def test_a_table_without_its_columns_or_fields_is_named(tmp_path, kadid_folder):
    table = kadid_folder / "dmos.csv"
    table.write_text(table.read_text().replace("dist_img", "distorted"))
    with pytest.raises(DatasetLayoutError, match="has no column 'dist_img'"):
        rated_datasets.load("kadid10k", str(kadid_folder))
    (tmp_path / "distorted_images").mkdir()
    (tmp_path / "mos_with_names.txt").write_text("4.5 a.bmp\n5.0 b.bmp extra\n")
    with pytest.raises(DatasetLayoutError, match=r"line 2: '5\.0 b\.bmp extra' is not"):
        rated_datasets.load("tid2013", str(tmp_path))


def test_a_row_past_its_header_or_a_table_that_is_not_text_is_named(tmp_path):
    for number in range(3):
        (tmp_path / f"{number}.png").write_bytes(_image(number))
    table = tmp_path / "scores.csv"  # a decimal comma: 3,5 would read as score 3, group 5
    table.write_text("path,score,group\n0.png,1,a\n1.png,3,5,b\n2.png,4,c\n")
    with pytest.raises(DatasetLayoutError, match=r"scores\.csv: line 3 has 4 fields, the "
                                                 r"header 3 \(a decimal comma\?"):
        rated_datasets.load("csv", str(table))
    table.write_bytes("path,score\n0.png,1\nd\xe9j\xe0.png,2\n".encode("latin-1"))
    with pytest.raises(DatasetLayoutError, match=r"scores\.csv is not a UTF-8 table "
                                                 r"\(UnicodeDecodeError"):
        rated_datasets.load("csv", str(table))


def test_split_by_reference_keeps_references_whole(kadid_folder):
    images = rated_datasets.load("kadid10k", str(kadid_folder))
    parts = split(images, "reference", seed=0)
    groups = [{i.group for i in part} for part in (parts.train, parts.val, parts.test)]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert sum(len(part) for part in (parts.train, parts.val, parts.test)) == len(images)
    by_image = split(images, "image", seed=0)
    assert {i.group for i in by_image.train} & {i.group for i in by_image.test}
    assert split(images, "reference", seed=0) == parts  # seeded


def test_a_split_holds_out_a_fifth_to_test_and_an_eighth_of_the_rest_to_validate():
    images = [LabelledImage(f"ref{i:02}_{v}", 0.1 * v, f"ref{i:02}")
              for i in range(40) for v in range(3)]
    parts = split(images, "reference", seed=0)
    references = [len({image.group for image in part})
                  for part in (parts.train, parts.val, parts.test)]
    assert references == [28, 4, 8]  # 40 x 4/5 x 7/8, 40 x 4/5 x 1/8, 40 / 5


def test_repeated_splits_test_on_disjoint_references_first():
    groups = np.repeat(np.array([f"ref{i}" for i in range(10)]), 3)
    blocks = [held_out_groups(groups, seed=7, repeat=r) for r in range(5)]
    assert all(len(block) == 2 for block in blocks)
    assert set().union(*blocks) == set(groups)  # five disjoint blocks cover every reference
    assert held_out_groups(groups, seed=7, repeat=5) != blocks[0]  # the next round reshuffles
    for count in (29, 81, 25, 30, 3):  # LIVE, KADID-10k, TID2013, CSIQ, a tiny set
        names = np.array([f"ref{i}" for i in range(count)])
        folds = [held_out_groups(names, seed=1, repeat=r) for r in range(min(5, count))]
        assert sorted(ref for fold in folds for ref in fold) == sorted(names)  # each once
        assert max(map(len, folds)) - min(map(len, folds)) <= 1
    with pytest.raises(ValueError, match="two groups"):
        held_out_groups(np.array(["only"] * 4), seed=0, repeat=0)


@pytest.mark.parametrize("share, tested", [(0.8, 16), (0.4, 8), (0.3, 6), (0.25, 5),
                                           (0.5, 10), (0.05, 1), (0.99, 19)])
def test_a_test_share_that_is_no_fold_is_drawn_as_asked(share, tested):
    """20 references: the test part holds round(share x 20) of them (at least one, never
    all), a fresh seeded draw each repeat; a share of 1/k stays a k-fold."""
    names = np.array([f"ref{i:02}" for i in range(20)])
    draws = [held_out_groups(names, seed=3, repeat=r, test_fraction=share) for r in range(4)]
    assert all(len(draw) == tested for draw in draws)
    assert draws == [held_out_groups(names, seed=3, repeat=r, test_fraction=share)
                     for r in range(4)]  # seeded
    if 1 < tested < 19:
        assert len({frozenset(draw) for draw in draws}) > 1  # each repeat its own
    if share in (0.25, 0.5, 0.05):  # 1/4, 1/2, 1/20: disjoint folds covering every reference
        folds = round(1 / share)
        rotation = [held_out_groups(names, 3, r, share) for r in range(folds)]
        assert sorted(ref for fold in rotation for ref in fold) == sorted(names)


def test_evaluation_views_are_seeded_random_crops(kadid_folder):
    images = rated_datasets.load("kadid10k", str(kadid_folder))
    views = ImageViews(images, Augment(crop=32), train=False, crops=10)
    stack, score = views[3]
    assert stack.shape == (10, 3, 32, 32)
    assert not np.allclose(stack[0].numpy(), stack[1].numpy())
    assert np.array_equal(stack.numpy(), views[3][0].numpy())
    assert float(score) == pytest.approx(images[3].score)


def test_the_shards_dataset_loads_from_a_uri_as_from_its_folder(tiny_dataset):
    """`--root` of a shards dataset may be a URI: its images are the folder's (a Path would
    have folded file:///... into file:/..., and s3:// into s3:/)."""
    from_folder = rated_datasets.load("shards", str(tiny_dataset), ("r0", "r1"))
    from_uri = rated_datasets.load("shards", tiny_dataset.as_uri(), ("r0", "r1"))
    assert [(i.name, i.score, i.group) for i in from_uri] == \
        [(i.name, i.score, i.group) for i in from_folder]
    assert {image.group for image in from_uri} == {"r0", "r1"}
    assert all(np.array_equal(a.pixels(), b.pixels()) for a, b in zip(from_uri, from_folder,
                                                                       strict=True))
    with pytest.raises(FileNotFoundError, match="absent does not exist"):
        rated_datasets.load("shards", (tiny_dataset.parent / "absent").as_uri(), ("r0",))


def test_names_in_another_unicode_normal_form_are_the_same_files(tmp_path):
    """A list written with composed accents (NFC) and files copied from macOS, which names
    them decomposed (NFD): the same text, other bytes. Each listed image is its file."""
    import unicodedata

    composed = [f"caf\u00e9{number}.png" for number in range(3)]
    for number, name in enumerate(composed):
        (tmp_path / unicodedata.normalize("NFD", name)).write_bytes(_image(number))
    assert not (tmp_path / composed[0]).exists()
    table = tmp_path / "scores.csv"
    table.write_text("path,score\n" + "".join(f"{name},{number}\n"
                                              for number, name in enumerate(composed)),
                     encoding="utf-8")
    images = rated_datasets.load("csv", str(table))
    assert [Path(image.path).name for image in images] == [
        unicodedata.normalize("NFD", name) for name in composed]
    assert [image.score for image in images] == [0.0, 0.5, 1.0]


def test_a_row_with_fewer_fields_than_its_header_is_named(tmp_path, kadid_folder):
    """It read as a row whose missing score was None ('has dmos None, not a finite number')."""
    table = kadid_folder / "dmos.csv"
    header, first, *rows = table.read_text().splitlines()
    table.write_text("\n".join([header, ",".join(first.split(",")[:2]), *rows]) + "\n")
    with pytest.raises(DatasetLayoutError, match=r"dmos\.csv: line 2 has 2 fields, the header "
                                                 r"4$"):
        rated_datasets.load("kadid10k", str(kadid_folder))


def test_scores_at_the_ends_of_their_scale_are_its_ends(tmp_path):
    """TID2013's MOS scale is 0..9: a MOS of 0 (the lowest an observer can give) is 0, 9 is 1."""
    (tmp_path / "distorted_images").mkdir()
    for seed, name in enumerate(("i01_01_1.bmp", "i02_01_1.bmp")):
        (tmp_path / "distorted_images" / name).write_bytes(_image(seed))
    (tmp_path / "mos_with_names.txt").write_text("0 i01_01_1.bmp\n9 i02_01_1.bmp\n")
    images = rated_datasets.load("tid2013", str(tmp_path))
    assert [(i.group, i.score) for i in images] == [("i01", 0.0), ("i02", 1.0)]
