"""Hostile sources: names taken as written, files too large to be images refused unread,
folders that cannot be listed named, list files that are not text named, ids short enough to
unpack."""

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labelers.ensemble import load as load_ensemble
from pipeline.duplicates import find_duplicates
from pipeline.plan import Plan, PlannedReference, chosen, persist_or_check
from pipeline.reachability import readable
from pipeline.sources import Source, byte_limit, list_sources, listing, load, unlisted_note
from pipeline.worker import produce_shard
from shards.decode import DecodeError
from shards.keys import MAX_BASE, ref_ids
from shards.layout import tar_path
from shards.storage import Location

ROOT = Path(__file__).resolve().parents[2]


def _save(path: Path, value: int) -> np.ndarray:
    pixels = np.full((24, 32, 3), value, np.uint8)
    Image.fromarray(pixels).save(path, "PNG")
    return pixels


def test_a_uri_in_a_list_file_names_its_file_as_written(tmp_path):
    """'#', '?' and '%' are parts of file names: a file:// line names the file of exactly
    that name, never the one before a '#' or '?', nor one with '%20' decoded."""
    folder = tmp_path / "odd"
    folder.mkdir()
    names = {"shot.png": 10, "shot.png#v2.png": 20, "q.png": 30, "q.png?x=1.png": 40,
             "photo x.png": 50, "photo%20x.png": 60}
    expected = {name: _save(folder / name, value) for name, value in names.items()}
    table = tmp_path / "list.txt"
    table.write_text("".join(f"file://{folder / name}\n" for name in names))
    sources = list_sources(str(table))
    assert len(sources) == len(names)
    for source in sources:
        name = source.uri.rsplit("/", 1)[1]
        np.testing.assert_array_equal(load(source).pixels, expected[name])


def test_a_file_uri_in_a_list_file_is_checked_for_changes_on_resume(tmp_path, fast_config,
                                                                    small_image, mae_ensemble):
    """A file:// line carries its file's size and time, as a plain path does: a source
    rewritten between an interruption and the resume is named, not mixed in."""
    from labelers import Labeler
    from pipeline.plan import PlanMismatchError
    from pipeline.source_changes import check_modified_sources
    from tests.conftest import local_scorer

    folder = tmp_path / "odd"
    folder.mkdir()
    for name, shift in (("a.png", 0), ("b#2.png", 40)):
        Image.fromarray(np.roll(small_image, shift, axis=1)).save(folder / name)
    table = tmp_path / "list.txt"
    table.write_text(f"file://{folder / 'a.png'}\nfile://{folder / 'b#2.png'}\n")
    sources = list_sources(str(table))
    assert [(s.size, s.mtime_ns) for s in sources] == [
        ((folder / n).stat().st_size, (folder / n).stat().st_mtime_ns)
        for n in ("a.png", "b#2.png")]
    config = fast_config(str(table), shard_refs=2, distortion_ids=(1,), levels=(1,),
                         metrics=("mae",))
    plan = Plan.make(sources, config)
    persist_or_check(plan, Location.parse(config.out))
    produce_shard(0, plan, config, local_scorer(Labeler(metrics=("mae",), device="cpu")),
                  mae_ensemble, Location.parse(config.out))
    Image.fromarray(small_image[::-1].copy()).save(folder / "b#2.png")
    with pytest.raises(PlanMismatchError, match=r"1 sources changed since their shards were "
                       rf"made \(file://{folder / 'b#2.png'} holds other pixels"):
        check_modified_sources(Location.parse(config.out),
                               Plan.make(list_sources(str(table)), config), config, done=[0])


def test_a_file_larger_than_any_image_within_the_limit_is_refused_unread(tmp_path):
    """A 1 TB file (sparse: it takes no disk) is refused as too_large at once, never read
    into memory; the duplicate check passes over two of them; the probe reads one byte."""
    folder = tmp_path / "huge"
    folder.mkdir()
    for name in ("a.tif", "b.tif"):
        with open(folder / name, "wb") as handle:
            handle.truncate(1 << 40)
    _save(folder / "c.png", 7)
    sources = list_sources(str(folder))
    assert byte_limit(1_000_000) == 8_000_000 + 64 * 2 ** 20  # 16-bit RGBA, and metadata
    for max_pixels in (1_000_000, 100_000_000):  # the default limit: 867 MB
        with pytest.raises(DecodeError) as refused:  # judged by its size, before any read
            load(sources[0], max_pixels=max_pixels)
        assert refused.value.reason == "too_large"
        assert (f"{1 << 40} bytes, more than an image within the pixel limit (--max-pixels) "
                f"takes ({byte_limit(max_pixels)})") in str(refused.value)
    assert find_duplicates(sources) == {}  # same size, too large to be read: not compared
    readable(sources[0].uri, "", "")
    assert load(sources[2]).pixels.shape == (24, 32, 3)


def test_a_folder_that_cannot_be_listed_is_named_not_passed_over(tmp_path):
    """os.walk passes over a folder it cannot read; the listing names it (the run warns of it
    at its start and in its summary, and report.json holds it). Root reads every folder: the
    listing then runs without the capabilities that let it."""
    folder = tmp_path / "sources"
    (folder / "open").mkdir(parents=True)
    (folder / "locked").mkdir()
    _save(folder / "open" / "a.png", 1)
    _save(folder / "locked" / "b.png", 2)
    (folder / "locked").chmod(0)
    code = ("import json, sys; from pipeline.sources import listing; "
            "found = listing(sys.argv[1]); "
            "print(json.dumps([[s.order_key for s in found.sources], found.unlisted]))")
    unprivileged = (["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
                    if os.geteuid() == 0 else [])
    try:
        done = subprocess.run([*unprivileged, sys.executable, "-c", code, str(folder)],
                              capture_output=True, text=True, cwd=ROOT, check=True)
    finally:
        (folder / "locked").chmod(0o755)
    keys, unlisted = json.loads(done.stdout)
    assert keys == ["open/a.png"]
    assert unlisted == {str(folder / "locked"): "Permission denied"}
    assert unlisted_note(unlisted) == f"1: {folder / 'locked'} (Permission denied)"


@pytest.mark.parametrize("suffix", [".txt", ".csv"])
def test_a_list_file_names_its_files_as_written_spaces_included(tmp_path, suffix):
    """' lead.png' is the file of that name, not 'lead.png' (a list with Windows line ends
    too); 'trail.png ' is trail.png, as no image name ends in a space (its extension would be
    none); blank lines are passed over."""
    expected = {name: _save(tmp_path / name, value)
                for name, value in ((" lead.png", 10), ("trail.png", 20), ("lead.png", 30))}
    table = tmp_path / f"list{suffix}"
    table.write_bytes(b"path\r\n" * (suffix == ".csv")
                      + "\r\n".join([" lead.png", "", "  ", "trail.png "]).encode() + b"\r\n")
    sources = list_sources(str(table))
    assert [source.uri for source in sources] == [str(tmp_path / " lead.png"),
                                                  str(tmp_path / "trail.png")]
    for source in sources:
        np.testing.assert_array_equal(load(source).pixels, expected[Path(source.uri).name])


def test_a_list_file_that_is_not_utf8_is_named(tmp_path):
    table = tmp_path / "list.txt"
    table.write_bytes("café.png\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"list.txt'?: not UTF-8 text .*save the list as UTF-8"):
        listing(str(table))


def test_a_long_name_gives_an_id_that_unpacks(tmp_path, small_image, fast_config):
    """Ids are cut to MAX_BASE characters with a hash of the whole name, so two long names
    that share their start stay apart and every member of a shard is a legal file name."""
    stems = ["L" * 250, "L" * 249 + "M", "short"]
    ids = ref_ids(stems)
    assert len(set(ids)) == 3 and ids[2] == "short"
    assert all(len(i) <= MAX_BASE for i in ids) and ids[0][:150] == "L" * 150
    folder = tmp_path / "long"
    folder.mkdir()
    Image.fromarray(small_image).save(folder / f"{stems[0]}.png")
    config = fast_config(str(folder), distortion_ids=(1,), levels=(1,), metrics=())
    plan = Plan.make(chosen(list_sources(config.sources), config), config)
    location = Location.parse(config.out)
    persist_or_check(plan, location)
    produce_shard(0, plan, config, None, load_ensemble(None), location)
    with tarfile.open(tar_path(location, 0, config.store)) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")  # OSError on a name too long
    unpacked = sorted(path.name for path in (tmp_path / "unpacked").iterdir())
    assert unpacked == sorted(f"{ids[0]}{suffix}" for suffix in (
        "_ref.png", "_ref.json", "_d01_l1.png", "_d01_l1.json"))


def test_a_name_of_200_characters_is_kept_whole_and_one_of_201_is_cut():
    """docs/shards-spec-notes.md: a stem longer than 200 characters is cut there, 8 hex digits
    of its SHA-256 in place of the rest; one of 200 is kept as it is."""
    whole, cut = ref_ids(["a" * 200, "b" * 201])
    assert whole == "a" * 200
    digest = hashlib.sha256(("b" * 201).encode()).hexdigest()[:8]
    assert len(cut) == 200 and cut.startswith("b" * 190) and cut.endswith(digest)


def _linked_tree(root: Path, link_first: bool) -> None:
    """A folder held by the tree and reached through links too (one beside it, one deeper
    in another folder), a folder reached only through a link, and a link back up the tree;
    the links made before or after what they name (a file system may list a folder's
    entries in the order they were made: tmpfs does)."""
    outside = root.parent / f"{root.name}_outside"
    outside.mkdir()
    _save(outside / "far.png", 5)
    (root / "b").mkdir(parents=True)

    def links():
        os.symlink("c/d", root / "a")
        os.symlink("../c/d", root / "b" / "l")
        os.symlink(outside, root / "e")

    if link_first:
        links()
    (root / "c" / "d").mkdir(parents=True)
    _save(root / "c" / "d" / "x.png", 1)
    _save(root / "b" / "y.png", 2)
    os.symlink("..", root / "c" / "up")
    if not link_first:
        links()


@pytest.mark.parametrize("place", ["tmp", "shm"])
def test_a_linked_folder_is_listed_once_under_its_own_path_whatever_the_listing_order(
        tmp_path, place):
    """The plan is a function of the sources: the same tree lists the same sources (the real
    path of a folder the tree holds, a folder outside it under its link) and the same plan,
    in whatever order the file system lists a folder's entries."""
    base = tmp_path
    if place == "shm":
        if not os.access("/dev/shm", os.W_OK):
            pytest.skip("no writable /dev/shm (tmpfs) here")
        base = Path(subprocess.check_output(["mktemp", "-d", "-p", "/dev/shm"], text=True).strip())
    try:
        listed = []
        for link_first in (True, False):
            root = base / f"tree_{link_first}"
            _linked_tree(root, link_first)
            sources = listing(str(root)).sources
            listed.append([source.order_key for source in sources])
            assert not find_duplicates(sources, str(root))
        assert listed[0] == listed[1] == ["b/y.png", "c/d/x.png", "e/far.png"]
    finally:
        if place == "shm":
            subprocess.run(["rm", "-rf", str(base)], check=True)


@pytest.mark.parametrize(("failure", "fails", "reads"), [
    (OSError(5, "Input/output error"), 1, 2),       # passes: read again
    (OSError(5, "Input/output error"), 9, 3),       # lasts: unreadable after three reads
    (TimeoutError("timed out"), 2, 3),
    (ConnectionResetError(104, "Connection reset by peer"), 1, 2),
    (PermissionError(13, "Permission denied"), 9, 1),  # lasting kinds: read once
    (FileNotFoundError(2, "No such file"), 9, 1),
    (OSError(40, "Too many levels of symbolic links"), 9, 1),  # ELOOP
    (OSError("AWS Error ACCESS_DENIED during GetObject"), 9, 1),  # a store's (no errno):
])                                                                # pyarrow's own retries
def test_a_read_that_may_pass_is_tried_again(tmp_path, small_image, monkeypatch, failure,
                                             fails, reads):
    """A source whose read fails with an error that may pass (EIO, a timeout, a reset
    connection) is read up to three times before it is recorded unreadable; a missing or
    denied file, a link loop or an object store's error (pyarrow retried it) only once."""
    import pipeline.sources as sources

    path = tmp_path / "a.png"
    Image.fromarray(small_image).save(path)
    opened, calls = sources._opened, []

    def failing(uri, key, store):  # the first `fails` reads fail
        calls.append(uri)
        if len(calls) <= fails:
            raise failure
        return opened(uri, key, store)
    waits = []
    monkeypatch.setattr(sources, "_opened", failing)
    monkeypatch.setattr(sources.time, "sleep", waits.append)
    if fails < reads:
        assert np.array_equal(sources.read_rgb(str(path)), small_image)
    else:
        with pytest.raises(DecodeError, match="unreadable"):
            sources.read_rgb(str(path))
    assert len(calls) == reads
    assert waits == [1.0, 4.0][:reads - 1]  # the README's "1 s and 4 s apart"


def test_a_fifo_named_by_a_file_uri_is_not_a_file_never_opened(tmp_path):
    """Opening a FIFO blocks until a writer comes: a file:// line of a list names one as a
    plain path does (not_a_file), at once (the read runs in a thread that must end)."""
    import threading

    from pipeline.sources import read_bytes

    os.mkfifo(tmp_path / "pipe.png")
    found = []
    reader = threading.Thread(daemon=True, target=lambda: found.append(_reason_of(
        lambda: read_bytes(f"file://{tmp_path}/pipe.png", "", "", 1 << 20))))
    reader.start()
    reader.join(timeout=20)
    assert found == ["not_a_file"]


def _reason_of(action) -> str | None:
    try:
        action()
    except DecodeError as error:
        return error.reason
    return None


def test_sources_that_name_nothing_are_refused_as_missing(tmp_path):
    """A list file or folder that is not there is said to be missing, not of another kind."""
    from pipeline.sources import listing

    for name in ("photos.txt", "photos"):
        with pytest.raises(ValueError, match=r"photos(\.txt)?': no such folder or file"):
            listing(str(tmp_path / name))
    (tmp_path / "photo.jpg").write_bytes(b"")  # there, but neither a folder nor a list
    with pytest.raises(ValueError, match=r"photo\.jpg': neither a folder nor a list file; "
                                         "sources are 'embedded', a folder, a list file"):
        listing(str(tmp_path / "photo.jpg"))


def test_a_plan_records_its_split_rule_only_where_an_id_is_not_its_name(tmp_path, small_image,
                                                                       fast_config):
    """plan.split_rule: the split drawn from each reference's name is 'recorded only where an
    id differs from its name (older plans keep their digest)'."""
    folder = tmp_path / "sources"
    (folder / "deeper").mkdir(parents=True)
    Image.fromarray(small_image).save(folder / "a.png")
    Image.fromarray(255 - small_image).save(folder / "b.png")
    config = fast_config(str(folder))
    assert "split_by" not in Plan.make(list_sources(str(folder)), config).inputs
    Image.fromarray(small_image[::-1]).save(folder / "deeper" / "a.png")  # the same name again
    plan = Plan.make(list_sources(str(folder)), config)
    assert [r.ref_id for r in plan.references] == ["a", "b", "a-1"]
    assert plan.inputs["split_by"] == "name"
    assert plan.references[2].split == plan.references[0].split  # drawn from its name, "a"


def test_a_planned_reference_without_a_listing_key_leaves_the_field_out():
    """PlannedReference.to_json: 'an empty key is left out, so plans without keys keep their
    digest' (plans made before object-store keys hold four fields)."""
    local = PlannedReference("a", "/data/a.png", "a.png", "train")
    assert local.to_json() == {"ref_id": "a", "uri": "/data/a.png", "order_key": "a.png",
                               "split": "train"}
    listed = PlannedReference("a", "s3://bucket", "a.png", "train", key="photos/a.png")
    assert listed.to_json()["key"] == "photos/a.png"
    assert [PlannedReference(**r.to_json()) for r in (local, listed)] == [local, listed]


def test_a_plan_keeps_the_sizes_and_times_the_listing_told_of_some_sources(fast_config):
    """Plan.source_bytes / source_mtimes: one value per reference where the listing told any
    (None for the ones it did not), so a resume checks those; () only where it told none."""
    sources = [Source("/data/a.png", "a.png", "a", size=10, mtime_ns=5),
               Source("https://host/b.png", "https://host/b.png", "b")]
    plan = Plan.make(sources, fast_config("/data"))
    assert (plan.source_bytes, plan.source_mtimes) == ((10, None), (5, None))
    untold = Plan.make([Source("https://host/b.png", "https://host/b.png", "b")],
                       fast_config("/data"))
    assert (untold.source_bytes, untold.source_mtimes) == ((), ())
    assert Plan.from_json(plan.to_json()) == plan
