"""The one tar reader under the older entry points: tar_members (inspect --deep), inspect's
verified_listing (a truncated or malformed tar is a problem inspect reports, never an
exception; a changed one is named as changed), the contact sheet's shard reading; and a
dataset read from S3 (moto's server)."""

import gzip
import io
import re
import tarfile
from pathlib import Path

import pytest

from pipeline.commands.contact_sheet import first_reference, shard_samples
from pipeline.commands.inspect_dataset import verified_listing
from shards import open_dataset
from shards.layout import tar_path
from shards.reader import read_index, shard_stats, tar_members
from shards.records import SampleError
from shards.storage import HashingStream, Location
from shards.tar_stream import TAR_CHANGED, ShardReadError, _check_against_stats, read_tar
from tests.conftest import stats_agree


def _index_keys(location: Location, shard: int) -> list[str]:
    return read_index(location, [shard], ["key"])["key"].to_pylist()


def test_tar_members_and_the_contact_sheet_read_every_member(generated, generated_images):
    location = Location.parse(str(generated))
    tar = tar_path(location, 1, "images")
    members = tar_members(location, tar)
    assert list(members) == _index_keys(location, 1)
    assert all(sorted(parts) == ["json", "png"] for parts in members.values())
    listing = tar_members(location, tar, read=False)
    assert list(listing) == list(members)
    assert all(value is None for parts in listing.values() for value in parts.values())
    sheet = shard_samples(tar)
    assert list(sheet) == list(members)
    for key, (record, png) in sheet.items():
        assert record == generated_images[key][1] and png == members[key]["png"]
    rows = read_index(location, [1], ["key", "ref_id", "kind"]).to_pylist()
    first = next(row["ref_id"] for row in rows if row["kind"] == "reference")
    assert first_reference(tar) == first
    for ref_id in {row["ref_id"] for row in rows}:  # a sheet holds one reference's members
        mine = [row["key"] for row in rows if row["ref_id"] == ref_id]
        assert list(shard_samples(tar, ref_id)) == mine
        assert list(tar_members(location, tar, keys=set(mine[:2]))) == mine[:2]


def test_a_gzipped_shard_is_inflated_whatever_the_case_of_its_extension(generated, tmp_path):
    """...and so the CRC and length its gzip trailer records are checked: a .TAR.GZ cut
    short is damage, never read as the members tarfile alone inflates of it."""
    tar = tar_path(Location.parse(str(generated)), 1, "images")
    gzipped = gzip.compress(Path(tar).read_bytes())
    for name in ("copy.tar.gz", "COPY.TAR.GZ"):
        (tmp_path / name).write_bytes(gzipped)
        assert shard_samples(str(tmp_path / name)) == shard_samples(tar)
        (tmp_path / name).write_bytes(gzipped[:-6])  # the trailer cut
        with pytest.raises(ShardReadError, match="ended before the end-of-stream marker"):
            shard_samples(str(tmp_path / name))


@pytest.mark.parametrize(("trailer_byte", "cause"), [
    (-8, "CRC check failed"), (-4, "Incorrect length of data produced")])
def test_a_gzipped_shard_whose_trailer_fails_names_that_not_the_end_of_its_stream(
        tmp_path, trailer_byte, cause):
    """A .tar.gz whose trailer (CRC-32, then the inflated length) no longer agrees: where gzip
    raises that while the members are still read, it is the error named, not the "ended
    before the end-of-stream marker" of inflating its broken stream again."""
    damaged = bytearray(gzip.compress(_tar_of({"a_ref.json": b"{}", "a_ref.png": b"png"})))
    damaged[trailer_byte] ^= 0x01
    (tmp_path / "a.tar.gz").write_bytes(bytes(damaged))
    with pytest.raises(ShardReadError, match=rf"a\.tar\.gz is unreadable: {cause}"):
        list(read_tar(Location.parse(str(tmp_path)), str(tmp_path / "a.tar.gz")))


def _verified_listing(location: Location, shard: int) -> tuple[list, dict] | str:
    sha256 = shard_stats(location, shard)["tar_sha256"]
    return verified_listing(location, shard, "images", sha256)


def test_the_verified_listing_lists_the_indexed_keys_and_names_a_changed_tar(generated,
                                                                            tmp_path):
    import shutil

    location = Location.parse(str(generated))
    for shard in range(3):
        listing, records = _verified_listing(location, shard)
        assert [key for key, _ in listing] == _index_keys(location, shard)
        assert {members for _, members in listing} == {("json", "png")}
        assert [record["key"] for record in records.values()] == _index_keys(location, shard)
    original = Path(tar_path(location, 0, "images")).read_bytes()
    root = tmp_path / "changed"
    shutil.copytree(generated, root)
    copied = Location.parse(str(root))
    for where in (len(original) // 2, 100):  # inside a PNG (still a tar), in the first header
        changed = bytearray(original)
        changed[where] ^= 0xFF
        Path(tar_path(copied, 0, "images")).write_bytes(bytes(changed))
        assert _verified_listing(copied, 0) == TAR_CHANGED
    Path(tar_path(copied, 0, "images")).write_bytes(original)
    assert _verified_listing(copied, 0) == _verified_listing(location, 0)


def _damage(location: Location, shard: int, data: bytes) -> None:
    """Shard `shard`'s tar replaced by `data`, its stats agreeing (damage done before they
    were written, which the reader alone can see)."""
    path = tar_path(location, shard, "images")
    with location.fs.open_output_stream(path) as stream:
        stream.write(data)
    stats_agree(Path(path))


def test_a_truncated_or_malformed_tar_raises_a_tar_error_naming_it(tmp_path, hand_made):
    import shutil

    root = tmp_path / "damaged"
    shutil.copytree(hand_made, root)
    location = Location.parse(str(root))
    original = location.read_bytes(tar_path(location, 0, "images"))
    _damage(location, 0, original[:len(original) // 2 + 100])  # inside a member
    assert re.fullmatch(r"tar unreadable \(ShardReadError: .*00000\.tar is unreadable: "
                        r"unexpected end of data\)", _verified_listing(location, 0))
    with pytest.raises(ShardReadError, match=r"00000\.tar is unreadable: unexpected end") as raised:
        list(open_dataset(str(root)).samples())
    assert str(raised.value).count("is unreadable") == 1
    from pipeline.commands.contact_sheet import render_shard_sheet

    refused = []
    for percent in range(2, 100, 2):  # wherever it is cut: one line, never the tuple of
        _damage(location, 0, original[:len(original) * percent // 100])  # args webdataset
        try:                                                              # adds to it
            render_shard_sheet(tar_path(location, 0, "images"))
        except ShardReadError as error:
            refused.append(str(error))
        except ValueError:
            pass  # cut past the reference's members: a sheet of what is there, or none
    assert len(refused) >= 5
    for message in refused:
        assert re.fullmatch(rf"{re.escape(tar_path(location, 0, 'images'))} is unreadable: "
                            r"(unexpected end of data|truncated header)", message), message
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("a_ref.png", "a_ref.png"):  # one member twice
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"png"))
    _damage(location, 0, buffer.getvalue())
    assert "duplicate file name" in _verified_listing(location, 0)


def test_a_sample_written_twice_is_refused_not_read_twice(tmp_path, generated):
    """One sample's members appended again at the tar's end, its stats agreeing (its count of
    distinct keys too): readers would yield that key twice; they name it instead."""
    import shutil

    root = tmp_path / "twice"
    shutil.copytree(generated, root)
    location = Location.parse(str(root))
    with tarfile.open(tar_path(location, 0, "images")) as tar:
        members = [(info, tar.extractfile(info).read()) for info in tar.getmembers()]
    first = members[0][0].name.partition(".")[0]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in [*members, *(m for m in members if m[0].name.startswith(first + "."))]:
            tar.addfile(info, io.BytesIO(data))
    _damage(location, 0, buffer.getvalue())
    with pytest.raises(ShardReadError, match=rf"is unreadable: sample {first} appears twice, "
                                             r"its members apart \(written otherwise\)$"):
        list(open_dataset(str(root)).samples(kind="all", decode=False))  # (no " @ " stream)


@pytest.fixture(scope="module")
def s3_copy(generated, s3_bucket):
    """The generated dataset uploaded to moto's S3 server: its s3:// URI."""
    for path in generated.rglob("*"):
        if path.is_file():
            s3_bucket.client.put_object(Bucket=s3_bucket.name,
                                        Key=f"run/{path.relative_to(generated)}",
                                        Body=path.read_bytes())
    return s3_bucket.uri("run")


def test_a_file_written_in_parts_on_s3_appears_whole_or_not_at_all(s3_bucket):
    """An upload completes even when its writer fails: staged_output keeps the parts until
    the block ends, so a failed write leaves the earlier object (merge's sources.parquet)."""
    location = Location.parse(s3_bucket.uri("staged"))
    path = location.path("sources.parquet")
    location.write_bytes(path, b"the earlier file")
    with pytest.raises(RuntimeError), location.staged_output(path) as stream:
        stream.write(b"half of a new file")
        raise RuntimeError("the merge failed here")
    assert location.read_bytes(path) == b"the earlier file"
    with location.staged_output(path) as stream:
        stream.write(b"a new file, ")
        stream.write(b"whole")
    assert location.read_bytes(path) == b"a new file, whole"


def test_a_dataset_on_s3_reads_as_the_local_one(s3_copy, generated):
    remote, local = open_dataset(s3_copy), open_dataset(str(generated))
    assert remote.location.fs.type_name == "s3" and remote.shards == local.shards

    def summary(dataset):
        return ([(s["key"], s["image"].sum()) for s in dataset.samples("train", kind="all")],
                [(g["ref_id"], g["box"], [m["key"] for m in g["meta"]]) for g in
                 dataset.groups("chunk", crop=32, seed=1, versions=2)])

    assert summary(remote) == summary(local)


def test_a_shard_on_s3_is_read_in_a_few_requests_not_one_per_tar_block(s3_copy, s3_bucket,
                                                                        generated):
    """tarfile reads 10 KiB at a time; each read of an unbuffered S3 stream is a ranged GET of
    its own (about 100,000 for a 1 GB shard). Read through the store's buffer, a tar takes a
    GET per STORE_READ_BUFFER bytes (counted as the moto server's WSGI app receives them)."""
    import math

    from shards.storage import STORE_READ_BUFFER

    wsgi = s3_bucket.server._server  # werkzeug's server: it calls its .app for each request
    app, requests = wsgi.app, []

    def counted(environ, start_response):
        requests.append(f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}")
        return app(environ, start_response)
    wsgi.app = counted
    try:
        count = sum(1 for _ in open_dataset(s3_copy).samples(kind="all", decode=False))
    finally:
        wsgi.app = app
    assert count == sum(1 for _ in open_dataset(str(generated)).samples(kind="all",
                                                                        decode=False))
    for tar in sorted((generated / "shards").glob("*.tar")):
        gets = [line for line in requests if line == f"GET /iqa-test/run/shards/{tar.name}"]
        assert tar.stat().st_size > 4 * 10240  # (a tar of many 10 KiB blocks)
        assert 1 <= len(gets) <= math.ceil(tar.stat().st_size / STORE_READ_BUFFER) + 1, gets


def _tar_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize(("members", "why"), [
    ({"a_ref.png": b"png"}, r"sample a_ref has no \.json record"),
    ({"a_ref.json": b"{not json", "a_ref.png": b"png"}, "its .json record is not JSON"),
    ({"a_ref.json": b"[" * 100_000 + b"]" * 100_000, "a_ref.png": b"png"},  # past recursion
     "its .json record is not JSON"),
    ({"a_ref.json": b"[]", "a_ref.png": b"png"}, "its .json record names no ref_id"),
    ({"a_ref.json": b'{"ref_id": "a", "kind": "reference"}', "a_ref.png": b"png"},
     "sample a_ref: its 3 image bytes do not decode"),
    # an images dataset stores every version's pixels: one without is damage, not a recipe
    ({"a_d01_l1.json": b'{"ref_id": "a", "kind": "distorted", "distortion_id": 1, '
                       b'"level": 1}'},
     r"sample a_d01_l1 has members \[\], not one image and its .json"),
])
def test_a_bad_sample_is_a_sample_error_naming_it(tmp_path, hand_made, members, why):
    import shutil

    root = tmp_path / "bad"
    shutil.copytree(hand_made, root)
    location = Location.parse(str(root))
    _damage(location, 0, _tar_of(members))
    with pytest.raises(SampleError, match=why):
        list(open_dataset(str(root)).samples(kind="all"))


@pytest.mark.parametrize("held", [["a"], ["a", "b", "c"]])
def test_a_shard_read_to_its_end_holds_the_samples_its_stats_count_no_fewer_no_more(held):
    """each_shard's rule: a shard read to its end must hold the samples its stats count (an
    archive of more is as damaged as one of fewer; stats of an older shard lack its SHA-256)."""
    read = HashingStream(io.BytesIO(b""))
    _check_against_stats("s.tar", {"a", "b"}, read, {"samples": 2})  # as counted: no error
    with pytest.raises(ShardReadError, match=rf"s\.tar is unreadable: its archive holds "
                                             rf"{len(held)} samples, its stats 2"):
        _check_against_stats("s.tar", set(held), read, {"samples": 2})


def _tar_zeroed_after_its_first_member(last_size: int) -> bytes:
    """A tar of a small member and one of `last_size` bytes, the second zeroed in place (its
    header too): tarfile reads the zero block as the end of the archive."""
    written = io.BytesIO()
    with tarfile.open(fileobj=written, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in (("a.json", b"{}"), ("b.bin", bytes(last_size))):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    data = bytearray(written.getvalue())
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as archive:
        start = archive.getmembers()[-1].offset
    data[start:] = bytes(len(data) - start)
    return bytes(data)


@pytest.mark.parametrize("name", ["a.tar", "a.tar.gz"])
def test_a_tar_with_two_records_left_after_its_end_is_refused(tmp_path, name):
    """tarfile pads an archive to whole records (tarfile.RECORDSIZE): the end-of-archive
    marker and that padding are one record at most. Here the zeroed member leaves nearly two
    records unread after the archive's end: damage, named, not a short read."""
    data = _tar_zeroed_after_its_first_member(25600)
    assert len(data) == 3 * tarfile.RECORDSIZE
    (tmp_path / name).write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz")
                                  else data)
    with pytest.raises(ShardReadError, match=rf"{re.escape(name)} is unreadable: its archive "
                                             "ends after"):
        list(read_tar(Location.parse(str(tmp_path)), str(tmp_path / name)))
