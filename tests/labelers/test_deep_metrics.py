"""LPIPS and DISTS: equal to the official packages given the same (random) backbone weights;
missing weights are a clear error; official calibration where the real weights exist."""

import hashlib
import io
import warnings
from pathlib import Path

import pytest
import torch

from labelers import weights
from labelers.dists_metric import DISTS
from labelers.lpips_metric import LPIPS

# I03 and I08: the spec's; I04, I06 and I19: the same source's other pairs, to 4 decimals
# (IQA-PyTorch's ResultsCalibra/calibration_summary.csv, the rows without "(ours)")
OFFICIAL = {"dists": {"I03": 0.4742007, "I08": 0.0286735,
                      "I04": 0.1424, "I06": 0.0683, "I19": 0.3123},
            "lpips": {"I03": 0.72369796, "I08": 0.05205423,
                      "I04": 0.2572, "I06": 0.0508, "I19": 0.4253}}


@pytest.fixture
def pair():
    generator = torch.Generator().manual_seed(1)
    ref = torch.randint(0, 256, (1, 3, 64, 96), dtype=torch.uint8, generator=generator)
    dist = torch.randint(0, 256, (3, 3, 64, 96), dtype=torch.uint8, generator=generator)
    return ref, dist


def test_lpips_equals_the_lpips_package(pair):
    import lpips

    network = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
    ref, dist = pair
    expected = network(ref.float().div(255).expand(3, -1, -1, -1), dist.float() / 255,
                       normalize=True).flatten().double()
    torch.testing.assert_close(LPIPS(network=network).score(ref, dist), expected,
                               atol=1e-7, rtol=0)


def test_lpips_loads_alexnet_from_the_hub_cache_like_the_package(random_weights, pair):
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's `pretrained=` deprecation
        package = lpips.LPIPS(net="alex", version="0.1", verbose=False)  # reads the hub cache
    ref, dist = pair
    expected = package(ref.float().div(255).expand(3, -1, -1, -1), dist.float() / 255,
                       normalize=True).flatten().double()
    torch.testing.assert_close(LPIPS().score(ref, dist), expected, atol=1e-7, rtol=0)


def test_dists_equals_the_dists_pytorch_reference(random_weights, pair):
    import DISTS_pytorch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        reference = DISTS_pytorch.DISTS()  # VGG16 from the (random) hub cache, official alpha/beta
    ref, dist = pair
    with torch.no_grad():
        expected = reference(ref.float().div(255).expand(3, -1, -1, -1), dist.float() / 255)
    torch.testing.assert_close(DISTS().score(ref, dist), expected.double(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("metric", [LPIPS, DISTS])
def test_missing_weights_name_files_directory_and_commands(tmp_path, monkeypatch, metric):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(weights.WeightsMissingError) as error:
        metric()
    message = str(error.value)
    assert metric.key in message and str(tmp_path / "hub" / "checkpoints") in message
    assert "iqa-factory weights fetch" in message and "iqa-factory weights import" in message


@pytest.mark.parametrize("metric", [LPIPS, DISTS])
def test_an_unreadable_cached_file_names_itself_its_hash_and_the_fix(random_hub, tmp_path,
                                                                      monkeypatch, metric):
    """A download cut short or another file under the backbone's name: present to `missing`,
    but building the metric says which file, that its SHA-256 is not the published one, and
    how to replace it (torch's own zip or unpickling error otherwise)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    name = weights.BACKBONES[metric.key].filename
    whole = (random_hub / "hub" / "checkpoints" / name).read_bytes()
    another_network = {"features.0.weight": torch.zeros(2, 3, 3, 3)}  # torch reads it
    for content in (whole[: len(whole) // 2], b"<html>Access denied</html>",
                    _saved(torch.zeros(3)), b"", b"abc",  # b"": a download cut at once
                    _saved(another_network)):
        (folder / name).write_bytes(content)
        assert weights.missing([metric.key]) == []
        with pytest.raises(weights.WeightsUnreadableError) as error:
            metric()
        message = str(error.value)
        assert str(folder / name) in message and "iqa-factory weights fetch" in message
        assert f"is not the published {weights.BACKBONES[metric.key].sha256[:16]}" in message


def _saved(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def test_missing_lists_only_absent_backbones(random_weights, tmp_path, monkeypatch):
    assert weights.missing(["lpips", "dists", "gmsd"]) == []
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert weights.missing(["lpips", "dists", "gmsd"]) == ["lpips", "dists"]


def test_pinned_hashes_are_whole_sha256_digests_that_the_file_names_begin():
    for backbone in weights.BACKBONES.values():
        assert len(backbone.sha256) == 64 and int(backbone.sha256, 16) >= 0
        prefix = backbone.filename.rsplit("-", 1)[1].split(".")[0]
        assert backbone.sha256.startswith(prefix)  # torchvision's naming rule


def _published(monkeypatch, payload: bytes) -> str:
    """Pretend `payload` is the published AlexNet file; returns its file name."""
    digest = hashlib.sha256(payload).hexdigest()
    name = f"alexnet-owt-{digest[:8]}.pth"
    monkeypatch.setitem(weights.BACKBONES, "lpips", weights.Backbone("lpips", name, 1, digest))
    return name


def test_import_refuses_a_file_whose_whole_hash_differs(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    source = tmp_path / "downloads"
    source.mkdir()
    (source / weights.BACKBONES["lpips"].filename).write_bytes(b"not the real file")
    with pytest.raises(weights.WeightsHashError, match="is not 7be5be791159472b"):
        weights.import_from(source)
    name = _published(monkeypatch, b"published")
    # same first 8 hex digits in the name, other bytes: a prefix check would let it in
    (source / name).write_bytes(b"published, then truncated or tampered with")
    with pytest.raises(weights.WeightsHashError):
        weights.import_from(source)
    assert not (weights.checkpoint_dir() / name).exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(weights.WeightsMissingError, match="none of"):
        weights.import_from(tmp_path / "empty")
    with pytest.raises(weights.WeightsMissingError, match="nowhere: no such folder"):
        weights.import_from(tmp_path / "nowhere")


def test_import_copies_a_file_whose_hash_matches(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    payload = b"x"
    name = _published(monkeypatch, payload)
    source = tmp_path / "downloads"
    source.mkdir()
    (source / name).write_bytes(payload)
    copied = weights.import_from(source)
    assert copied == [weights.checkpoint_dir() / name]
    assert copied[0].read_bytes() == payload


def test_fetch_keeps_the_published_file_and_refuses_another(tmp_path, monkeypatch):
    """`weights fetch` from a mirror (a file:// root here: no network): the published bytes
    land in the cache; other bytes under the published name raise and leave nothing."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    name = _published(monkeypatch, b"published")
    monkeypatch.setattr(weights, "BACKBONES", {"lpips": weights.BACKBONES["lpips"]})
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setattr(weights, "DOWNLOAD_ROOT", mirror.as_uri() + "/")
    (mirror / name).write_bytes(b"tampered with")
    with pytest.raises(weights.WeightsHashError, match=name):
        weights.fetch()
    assert not (weights.checkpoint_dir() / name).exists()
    (mirror / name).write_bytes(b"published")
    assert weights.fetch() == [weights.checkpoint_dir() / name]
    assert (weights.checkpoint_dir() / name).read_bytes() == b"published"
    assert weights.fetch() == []  # nothing missing: nothing downloaded
    (weights.checkpoint_dir() / name).write_bytes(b"publ")  # cut short: present, not it
    assert weights.unpublished() == ["lpips"]
    assert weights.fetch() == [weights.checkpoint_dir() / name]  # replaced
    assert (weights.checkpoint_dir() / name).read_bytes() == b"published"
    assert list(weights.checkpoint_dir().iterdir()) == [weights.checkpoint_dir() / name]


def test_an_import_cut_short_leaves_nothing_under_the_published_name(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    name = _published(monkeypatch, b"published")
    monkeypatch.setattr(weights, "BACKBONES", {"lpips": weights.BACKBONES["lpips"]})
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / name).write_bytes(b"published")

    def interrupted(source, target):  # Ctrl-C half way through the copy
        Path(target).write_bytes(Path(source).read_bytes()[:4])
        raise KeyboardInterrupt
    monkeypatch.setattr(weights.shutil, "copyfile", interrupted)
    with pytest.raises(KeyboardInterrupt):
        weights.import_from(tmp_path / "downloads")
    assert list(weights.checkpoint_dir().iterdir()) == []
    with pytest.raises(weights.WeightsMissingError, match="is a file: name the folder"):
        weights.import_from(tmp_path / "downloads" / name)


@pytest.mark.weights
@pytest.mark.parametrize("metric", [LPIPS, DISTS])
@pytest.mark.parametrize("name", ["I03", "I04", "I06", "I08", "I19"])
def test_official_calibration_with_the_real_weights(calibration_pair, metric, name):
    if weights.missing([metric.key]):
        pytest.skip(weights.missing_message([metric.key]))
    value = metric().score(*calibration_pair(name)).item()
    assert value == pytest.approx(OFFICIAL[metric.key][name], abs=1e-3)


def _random_pair(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return (torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8, generator=generator),
            torch.randint(0, 256, (2, 3, height, width), dtype=torch.uint8, generator=generator))


def test_the_smallest_inputs_are_those_the_packages_score(random_weights):
    """LPIPS's package scores a 31-pixel side and fails below it (AlexNet's pools leave no
    map), DISTS_pytorch scores any size: each metric takes what its package takes, with the
    package's value, and names its minimum below it."""
    import DISTS_pytorch
    import lpips

    from labelers.errors import InputTooSmallError

    package = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
    ref, dist = _random_pair(LPIPS.min_size, LPIPS.min_size + 9)
    expected = package(ref.float().div(255).expand(2, -1, -1, -1), dist.float() / 255,
                       normalize=True).flatten().double()
    torch.testing.assert_close(LPIPS(network=package).score(ref, dist), expected,
                               atol=1e-7, rtol=0)
    smaller = _random_pair(LPIPS.min_size - 1, LPIPS.min_size + 9)
    with pytest.raises(RuntimeError):
        package(smaller[0].float() / 255, smaller[0].float() / 255, normalize=True)
    with pytest.raises(InputTooSmallError, match="lpips needs a short side of at least 31"):
        LPIPS(network=package).score(*smaller)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        reference = DISTS_pytorch.DISTS()
    for height, width in ((1, 1), (2, 5), (31, 33)):
        ref, dist = _random_pair(height, width)
        with torch.no_grad():
            expected = reference(ref.float().div(255).expand(2, -1, -1, -1), dist.float() / 255)
        torch.testing.assert_close(DISTS().score(ref, dist), expected.double(), atol=1e-6,
                                   rtol=0)
