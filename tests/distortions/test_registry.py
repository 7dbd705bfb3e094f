import functools
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

import distortions
from distortions.errors import InvalidLevelError, UnknownDistortionError

SPEC_NAMES = [
    "jpeg", "jpeg2000", "white_noise", "chroma_noise", "mono_noise", "impulse_noise",
    "speckle_noise", "denoise_white", "denoise_chroma", "denoise_mono", "denoise_impulse",
    "denoise_speckle", "gaussian_blur", "lens_blur", "motion_blur", "brighten", "darken",
    "mean_shift", "unsharp_mask", "contrast_change", "contrast_stretch", "jitter",
    "non_eccentricity", "pixelate", "quantization", "color_block", "color_diffusion",
    "color_shift", "color_quantization", "saturation_hsv", "saturation_lab", "jpeg_noisy",
    "jpeg2000_noisy",
]


def test_bank_is_exactly_33_by_5_in_id_order():
    bank = distortions.all()
    assert [d.id for d in bank] == list(range(1, 34))
    assert [d.name for d in bank] == SPEC_NAMES
    assert all(len(d.levels) == 5 for d in bank)
    assert sum(len(d.levels) for d in bank) == 165


ADDED_NAMES = [
    "resize_bicubic", "resize_bilinear", "resize_lanczos", "resize_nearest", "denoise_blur",
    "pink_noise", "overexposure", "underexposure", "rgb_shift", "contrast_reduction",
]


def test_registered_is_the_33_then_the_added_types_from_id_34():
    registered = distortions.registered()
    assert registered[:33] == distortions.all()
    assert [d.id for d in registered] == list(range(1, 44))
    assert [d.name for d in registered[33:]] == ADDED_NAMES
    assert all(len(d.levels) == 5 and not d.learned and d.kadid_id is None
               and d.identity_level is None and not d.two_sided for d in registered[33:])


SPEC_NOTES = Path(__file__).resolve().parents[2] / "docs" / "distortions-spec-notes.md"
# each added type's level parameter: the key of its registry levels
ADDED_PARAMETER = {"f": "factor", "v": "variance", "EV": "ev", "a": "amount", "c": "amount"}


def _notes_levels() -> dict[int, tuple[str, str, list[float]]]:
    """The spec notes' table of the added types: {id: (name, registry key, L1..L5)}."""
    rows = {}
    for line in SPEC_NOTES.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 6 and cells[0].isdigit() and int(cells[0]) >= 34:
            symbol, _, values = cells[4].partition(" = ")
            numbers = [float(value.split()[0].lstrip("+")) for value in values.split(", ")]
            rows[int(cells[0])] = (cells[1], ADDED_PARAMETER[symbol], numbers)
    return rows


def test_added_level_tables_follow_the_spec_notes():
    """The level columns of docs/distortions-spec-notes.md's table, read from the notes, are
    the registry's, type by type (the docs and the code cannot drift apart unseen)."""
    table = _notes_levels()
    assert sorted(table) == list(range(34, 44))
    for distortion_id, (name, key, values) in table.items():
        distortion = distortions.get(distortion_id)
        assert distortion.name == name
        assert [level[key] for level in distortion.levels] == values, name
    assert {d.name: d.fixed.get("filter") for d in distortions.registered()[33:37]} == {
        "resize_bicubic": "bicubic", "resize_bilinear": "bilinear",
        "resize_lanczos": "lanczos", "resize_nearest": "nearest"}


def test_named_banks_list_their_types():
    def names(bank):
        return [distortions.get(i).name for i in distortions.bank_ids(bank)]

    assert distortions.bank_ids("all") == tuple(range(1, 34))
    assert distortions.bank_ids("registered") == tuple(range(1, 44))
    # Re-IQA's iqa_transformations choices 1-26 (imblurgauss, imblurlens, imcolordiffuse,
    # imcolorshift, imcolorsaturate, imsaturate, imcompressjpeg, imnoisegauss,
    # imnoisecolormap, imnoiseimpulse, imnoisemultiplicative, imdenoise, imbrighten, imdarken,
    # immeanshift, imresizedist, imsharpenHi, imcontrastc, imcolorblock, impixelate,
    # imnoneccentricity, imjitter, imresizedist_bilinear/_nearest/_lanczos, imblurmotion) as
    # this bank's ids: no JPEG 2000 (2), learned denoise (8), quantizations (25, 29)
    assert distortions.bank_ids("reiqa") == (1, 3, 4, 6, 7, 13, 14, 15, 16, 17, 18, 19, 20, 22,
                                             23, 24, 26, 27, 28, 30, 31, 34, 35, 36, 37, 38)
    assert names("dbcnn") == [
        "jpeg", "jpeg2000", "white_noise", "gaussian_blur", "contrast_change",
        "color_quantization", "pink_noise", "overexposure", "underexposure"]
    assert names("dbcnn_authentic") == [  # seed-methods.md's seven of the authentic mode
        "jpeg", "gaussian_blur", "motion_blur", "overexposure", "underexposure", "rgb_shift",
        "contrast_reduction"]


@pytest.mark.parametrize("bank", sorted(distortions.banks.BANK_TYPE_LEVELS))
def test_no_level_a_bank_of_classes_makes_leaves_the_photo_as_it_is(bank, small_image):
    """The multi-task method's banks (those with levels of their own) make its classes and
    multihot bits: a level that changes no pixel (an identity level, such as gaussian_blur's
    sigma 0.1), its own or the run's five, would name a distortion the sample does not hold.
    Checked on the photo, for three seeds, not by the registry's flag alone."""
    own = distortions.banks.bank_type_levels(bank)
    for distortion_id in distortions.bank_ids(bank):
        levels = own.get(distortion_id, distortions.LEVELS)
        assert distortions.get(distortion_id).identity_level not in levels
        for level, seed in itertools.product(levels, (1, 2, 3)):
            output, _ = distortions.apply(small_image, distortion_id, level, seed)
            assert not np.array_equal(output, small_image), (bank, distortion_id, level)


def test_categories_follow_the_spec():
    by_category = {}
    for d in distortions.all():
        by_category.setdefault(d.category, []).append(d.id)
    assert by_category == {
        "compression": [1, 2], "noise": list(range(3, 13)), "blur": [13, 14, 15],
        "brightness": [16, 17, 18], "sharpness": [19], "contrast": [20, 21],
        "spatial": list(range(22, 27)), "color": list(range(27, 32)), "multiple": [32, 33],
    }


def test_spec_level_values_spot_check():
    assert [lv["quality"] for lv in distortions.get("jpeg").levels] == [43, 36, 24, 7, 4]
    assert [lv["ratio"] for lv in distortions.get(2).levels] == [16, 32, 45, 120, 400]
    assert [lv["thresholds"] for lv in distortions.get(25).levels] == [20, 16, 13, 10, 7]
    assert distortions.get(33).levels[4] == {"variance": 0.005, "ratio": 80}
    assert [d.id for d in distortions.all() if d.two_sided] == [18, 20]
    assert [d.name for d in distortions.all() if d.worst_level_only] == ["pixelate"]
    assert [d.name for d in distortions.registered() if d.order_follows_draw] == ["denoise_blur"]
    assert {d.id: d.identity_level for d in distortions.all() if d.identity_level} == {
        13: 1, 15: 1, 18: 3, 31: 1}
    assert [d.id for d in distortions.all() if d.learned] == [8, 9, 10, 11, 12]


def test_get_by_id_and_name_agree():
    for d in distortions.registered():
        assert distortions.get(d.id) is distortions.get(d.name) is d


@pytest.mark.parametrize("bad", [0, 44, "blurry", "1", None, 3.0])
def test_unknown_distortion_is_a_typed_error(bad):
    with pytest.raises(UnknownDistortionError, match="no distortion"):
        distortions.get(bad)


@pytest.mark.parametrize("level", [0, 6, -1, True, 2.5, "3"])
def test_bad_level_is_a_typed_error(small_image, level):
    with pytest.raises(InvalidLevelError, match=r"level must be one of 1\.\.5"):
        distortions.apply(small_image, "jpeg", level, seed=0)


def test_sample_params_are_json_and_reproducible():
    for d in distortions.registered():
        if d.learned:
            continue
        for level in distortions.LEVELS:
            first = d.sample_params(level, np.random.default_rng(5))
            second = d.sample_params(level, np.random.default_rng(5))
            assert first == second
            assert json.loads(json.dumps(first)) == first


# --- README's level table ------------------------------------------------------------------------
README = Path(__file__).resolve().parents[2] / "README.md"
TABLE_HEADER = "| id | name | category | parameter | L1 | L2 | L3 | L4 | L5 |"


@functools.cache
def readme_level_table() -> dict[int, list[str]]:
    """The README's level table: {id: [name, category, parameter, L1, ..., L5]}."""
    lines = README.read_text().splitlines()
    start = lines.index(TABLE_HEADER) + 2  # past the header and its |---| line
    rows = {}
    for line in itertools.takewhile(lambda text: text.startswith("|"), lines[start:]):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == 9, f"README level table row {line!r}"
        rows[int(cells[0])] = cells[1:]
    return rows


def test_readme_level_table_lists_the_papers_33_types():
    assert list(readme_level_table()) == [d.id for d in distortions.all()]


@pytest.mark.parametrize("distortion", distortions.all(), ids=lambda d: f"{d.id}-{d.name}")
def test_readme_level_table_row_is_the_registry(distortion):
    name, category, parameter, *cells = readme_level_table()[distortion.id]
    row = f"README level table, row {distortion.id} ({name})"
    assert (name, category) == (distortion.name, distortion.category), row
    keys = [key.removesuffix("_count") for key in distortion.levels[0]]
    assert parameter.split(", ") == keys, row
    for level, (cell, table) in enumerate(zip(cells, distortion.levels, strict=True), 1):
        where, values = f"{row}, L{level}", cell.removesuffix(" (identity)").split(", ")
        assert [float(value) for value in values] == list(table.values()), where
        assert cell.endswith("(identity)") == (level == distortion.identity_level), where
