"""Byte duplicates among the sources, found before the plan: the same bytes once, whatever the
name; files of one size but other bytes are not duplicates; the plan lists what it left out."""

import shutil

import numpy as np
from PIL import Image

from pipeline.duplicates import find_duplicates
from pipeline.plan import Plan, chosen
from pipeline.sources import list_sources


def _ppm(path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels).save(path, "PPM")  # raw: the byte size depends only on the shape


def test_the_same_bytes_under_other_names_are_duplicates_of_the_first(tmp_path, small_image,
                                                                     fast_config):
    folder = tmp_path / "sources"
    (folder / "deeper").mkdir(parents=True)
    _ppm(folder / "a.ppm", small_image)
    shutil.copyfile(folder / "a.ppm", folder / "deeper" / "z_copy.ppm")
    _ppm(folder / "b.ppm", 255 - small_image)          # the same size, other bytes
    _ppm(folder / "c.ppm", small_image[:100])          # another size
    sources = list_sources(str(folder))
    names = [s.order_key for s in sources]
    assert len({s.size for s in sources[:2]}) == 1     # a and b share a size
    assert find_duplicates(sources) == {names.index("deeper/z_copy.ppm"): names.index("a.ppm")}

    plan = Plan.make(sources, fast_config(str(folder)), duplicates=find_duplicates(sources))
    assert [r.ref_id for r in plan.references] == ["a", "b", "c"]
    assert [(d.ref_id, d.of) for d in plan.duplicates] == [("z_copy", "a")]
    assert Plan.from_json(plan.to_json()) == plan


def test_a_link_to_a_source_is_the_duplicate_not_the_file_it_names(tmp_path, small_image,
                                                                   fast_config):
    folder = tmp_path / "sources"
    folder.mkdir()
    _ppm(folder / "real.ppm", small_image)
    (folder / "a_link.ppm").symlink_to(folder / "real.ppm")  # listed first
    (folder / "b_link.ppm").symlink_to(folder / "real.ppm")
    sources = list_sources(str(folder))
    names = [s.order_key for s in sources]
    assert names == ["a_link.ppm", "b_link.ppm", "real.ppm"]
    assert find_duplicates(sources) == {0: 2, 1: 2}
    plan = Plan.make(sources, fast_config(str(folder)), duplicates=find_duplicates(sources))
    assert [(d.ref_id, d.of) for d in plan.duplicates] == [("a_link", "real"),
                                                          ("b_link", "real")]
    (folder / "real.ppm").rename(tmp_path / "outside.ppm")  # only links in the folder:
    for link in ("a_link.ppm", "b_link.ppm"):                # the first is kept
        (folder / link).unlink()
        (folder / link).symlink_to(tmp_path / "outside.ppm")
    assert find_duplicates(list_sources(str(folder))) == {1: 0}


def test_a_list_naming_one_file_twice_plans_it_once(tmp_path, small_image, fast_config):
    _ppm(tmp_path / "a.ppm", small_image)
    listing = tmp_path / "list.txt"
    listing.write_text("a.ppm\nmissing.ppm\na.ppm\n")  # an unreadable one is left to its shard
    config = fast_config(str(listing))
    sources = chosen(list_sources(str(listing)), config)
    assert find_duplicates(sources) == {1: 0}  # sorted: a.ppm, a.ppm, missing.ppm
    plan = Plan.make(sources, config, duplicates=find_duplicates(sources))
    assert [r.ref_id for r in plan.references] == ["a", "missing"]
    assert [(d.ref_id, d.of) for d in plan.duplicates] == [("a-1", "a")]


def test_sources_without_a_known_size_are_not_compared():
    assert find_duplicates(list_sources("embedded")) == {}


def test_sources_equal_in_their_first_64_kib_are_read_whole_before_they_are_duplicates(
        tmp_path, small_image):
    """Sources of one size are compared by their first 64 KiB, then read whole where those
    agree: a photo edited below its top rows is no duplicate; files under 64 KiB compare
    whole at once."""
    folder = tmp_path / "sources"
    folder.mkdir()
    _ppm(folder / "a.ppm", small_image)                   # 101 kB: past the first 64 KiB
    edited = small_image.copy()
    edited[-1, -1] ^= 0xFF                                # its last pixel, past 64 KiB
    _ppm(folder / "b.ppm", edited)
    shutil.copyfile(folder / "a.ppm", folder / "c.ppm")
    _ppm(folder / "d.ppm", small_image[:40])              # 23 kB: under 64 KiB
    shutil.copyfile(folder / "d.ppm", folder / "e.ppm")
    _ppm(folder / "f.ppm", edited[:40] ^ 1)               # d's size, other bytes
    sources = list_sources(str(folder))
    names = [s.order_key for s in sources]
    assert (folder / "a.ppm").stat().st_size > 1 << 16 > (folder / "d.ppm").stat().st_size
    assert find_duplicates(sources) == {names.index("c.ppm"): names.index("a.ppm"),
                                        names.index("e.ppm"): names.index("d.ppm")}


def test_sources_of_exactly_the_byte_limit_are_compared_and_larger_ones_not(tmp_path,
                                                                           small_image):
    """find_duplicates: 'sources of more than `max_bytes` ... are not read': one of exactly
    `max_bytes` is (the limit is the most a source is read for, byte_limit)."""
    _ppm(tmp_path / "a.ppm", small_image)
    shutil.copyfile(tmp_path / "a.ppm", tmp_path / "b.ppm")
    sources = list_sources(str(tmp_path))
    size = sources[0].size
    assert find_duplicates(sources, max_bytes=size) == {1: 0}
    assert find_duplicates(sources, max_bytes=size - 1) == {}


def test_a_plan_is_the_same_whatever_order_its_duplicates_are_given_in(tmp_path, small_image,
                                                                       fast_config):
    """`duplicates` is a mapping: the plan (and its digest, which a resume compares) does not
    depend on the order its entries were found in."""
    for name in ("a", "b", "c", "d"):
        _ppm(tmp_path / f"{name}.ppm", small_image)
    sources, config = list_sources(str(tmp_path)), fast_config(str(tmp_path))
    one, other = ({3: 0, 1: 0, 2: 0}, {1: 0, 2: 0, 3: 0})
    plans = [Plan.make(sources, config, duplicates=found) for found in (one, other)]
    assert plans[0] == plans[1] and plans[0].digest == plans[1].digest
    assert [d.ref_id for d in plans[0].duplicates] == ["b", "c", "d"]  # in listing order
