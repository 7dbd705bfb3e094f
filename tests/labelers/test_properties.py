"""Properties every metric keeps: identical images score best, more noise scores worse, a batch
equals image-by-image scoring, reference reuse equals recomputation, CPU equals CUDA, and input
below the minimum size is a typed error. Deep metrics run with random backbone weights."""

import importlib.util
import math
import re
import threading

import numpy as np
import pytest
import torch

import labelers
from labelers.base import DEVICE_TOLERANCE
from labelers.errors import InputTooSmallError, InvalidPairError, LabelerError
from labelers.labeler import MEMORY_TRIES, batch_for_budget
from labelers.registry import METRIC_CLASSES
from tests.conftest import on_cuda
from tests.labelers.conftest import BEST, tensor

AVAILABLE = [key for key, target in METRIC_CLASSES.items()
             if importlib.util.find_spec(target.split(":")[0]) is not None]


@pytest.fixture
def metric_factory(random_weights):
    def build(key: str, device: str = "cpu"):
        return labelers.metric_class(key)(device)
    return build


@pytest.mark.parametrize("key", AVAILABLE)
def test_identical_images_give_the_best_value(metric_factory, noisy_versions, key):
    ref, _ = noisy_versions
    metric = metric_factory(key)
    value = metric.score(ref, ref).item()
    assert value == pytest.approx(BEST[key], abs=1e-6)
    assert metric.best == BEST[key]  # what the shipped ensembles' linear mappings start from


def test_ms_ssim_of_an_anti_correlated_pair_is_not_a_number(metric_factory, noisy_versions):
    # msssim.m raises each scale's mean contrast-structure term to its weight: for an inverted
    # image that term is negative and the score is complex, so no real value exists; NaN is
    # what the pipeline records as a failure with its reason (pipeline/worker._non_finite)
    ref, _ = noisy_versions
    assert np.isnan(metric_factory("ms_ssim").score(ref, 255 - ref).item())


@pytest.mark.parametrize("key", AVAILABLE)
def test_more_noise_gives_a_worse_value(metric_factory, noisy_versions, key):
    ref, dists = noisy_versions
    metric = metric_factory(key)
    values = metric.score(ref, dists).numpy()
    ordered = values if metric.higher_is_better else -values
    assert np.all(np.diff(ordered) < 0), values


@pytest.mark.parametrize("key", AVAILABLE)
def test_batch_equals_one_by_one_and_reuse_equals_recomputation(metric_factory, noisy_versions,
                                                                 key):
    ref, dists = noisy_versions
    metric = metric_factory(key)
    batched = metric.score(ref, dists)
    single = torch.cat([metric.score(ref, dists[i:i + 1]) for i in range(len(dists))])
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=1e-6)
    prepared = metric.prepare(ref)
    reused = torch.cat([metric.compare(prepared, dists[i:i + 1]) for i in range(len(dists))])
    torch.testing.assert_close(reused, batched, atol=1e-6, rtol=1e-6)


@on_cuda
@pytest.mark.parametrize("key", AVAILABLE)
def test_cpu_and_cuda_agree(metric_factory, noisy_versions, key):
    ref, dists = noisy_versions
    cpu = metric_factory(key, "cpu").score(ref, dists)
    cuda = metric_factory(key, "cuda").score(ref, dists).cpu()
    torch.testing.assert_close(cuda, cpu, atol=DEVICE_TOLERANCE, rtol=DEVICE_TOLERANCE)


def _convolution_weights(metric) -> list[torch.Tensor]:
    network = metric.stages if metric.key == "dists" else metric.network
    return [weight for weight in network.parameters() if weight.ndim == 4]


@pytest.mark.parametrize("key", ["dists", "lpips"])
def test_the_networks_keep_their_loaded_layout_on_a_cpu(metric_factory, key):
    weights = _convolution_weights(metric_factory(key, "cpu"))
    assert weights and all(weight.is_contiguous() for weight in weights)


@on_cuda
@pytest.mark.parametrize("key", ["dists", "lpips"])
def test_the_networks_run_in_channels_last_on_cuda_and_score_as_contiguous_ones(
        metric_factory, noisy_versions, key):
    ref, dists = noisy_versions
    metric = metric_factory(key, "cuda")
    weights = _convolution_weights(metric)
    assert all(weight.is_contiguous(memory_format=torch.channels_last) for weight in weights)
    nhwc = metric.score(ref, dists)
    for weight in weights:
        weight.data = weight.data.contiguous()
    torch.testing.assert_close(metric.score(ref, dists), nhwc, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("key", AVAILABLE)
def test_input_below_the_minimum_size_is_a_typed_error(metric_factory, key):
    metric = metric_factory(key)
    size = metric.min_size - 1
    if size < 1:
        pytest.skip(f"{key} is defined for any size")
    tiny = torch.zeros(1, 3, size, size + 8, dtype=torch.uint8)
    with pytest.raises(InputTooSmallError, match=key):
        metric.score(tiny, tiny)


def test_mismatched_pairs_are_typed_errors(metric_factory):
    metric = metric_factory("mae")
    with pytest.raises(InvalidPairError, match="reference is"):
        metric.score(torch.zeros(1, 3, 8, 8, dtype=torch.uint8),
                     torch.zeros(2, 3, 8, 9, dtype=torch.uint8))
    with pytest.raises(InvalidPairError, match="uint8"):
        metric.score(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    arrays = np.zeros((8, 8, 3), np.uint8)  # Labeler's layout, handed to a metric
    with pytest.raises(InvalidPairError, match=r"torch tensors.*got ndarray and ndarray"):
        metric.score(arrays, arrays[None])


def test_labeler_scores_every_available_metric(random_weights, noisy_versions):
    ref, dists = noisy_versions
    ref_np = ref[0].permute(1, 2, 0).numpy()
    dists_np = [d.permute(1, 2, 0).numpy() for d in dists]
    labeler = labelers.Labeler(metrics=AVAILABLE, device="cpu", batch_size=2)
    scores = labeler.score(ref_np, dists_np)
    assert list(scores) == AVAILABLE and scores.absent == ()
    for key in AVAILABLE:
        assert scores[key].shape == (3,) and scores[key].dtype == np.float64
        np.testing.assert_allclose(scores[key], labeler.metrics[key].score(ref, dists).numpy(),
                                   atol=1e-6)


def test_labeler_without_weights_refuses_or_reports_absent(tmp_path, monkeypatch, small_image):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(labelers.WeightsMissingError, match=r"alexnet-owt-7be5be79\.pth"):
        labelers.Labeler(metrics=["mae", "lpips"])
    labeler = labelers.Labeler(metrics=["mae", "lpips", "dists"], allow_missing=True)
    scores = labeler.score(small_image, [small_image])
    assert scores.absent == ("lpips", "dists") and list(scores) == ["mae"]
    with pytest.raises(labelers.WeightsMissingError):  # allowed to miss, but nothing is left
        labelers.Labeler(metrics=["lpips", "dists"], allow_missing=True)


def test_labeler_arguments_at_their_edges(small_image):
    assert labelers.Labeler(metrics="gmsd").keys == ("gmsd",)  # one key, not its letters
    for bad in ([], ()):
        with pytest.raises(LabelerError, match="at least one metric"):
            labelers.Labeler(metrics=bad)
    for size in (0, -1, 2.5, "4", True):
        with pytest.raises(LabelerError, match="batch_size must be a whole number of at least 1"):
            labelers.Labeler(metrics=["mae"], batch_size=size)
    with pytest.raises(LabelerError, match="memory_budget must be a whole number"):
        labelers.Labeler(metrics=["mae"], memory_budget="x")
    assert labelers.Labeler(metrics=["mae"], batch_size=np.int64(4)).batch_size == 4
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for device, said in (("mps", "run on cpu or cuda, not 'mps'"),
                         ("gpu", "is not a torch device"),
                         ("meta", "run on cpu or cuda, not 'meta'"),
                         (f"cuda:{cuda}", f"torch sees {cuda} CUDA device(s) here")):
        with pytest.raises(LabelerError, match=re.escape(said)):  # not torch's, at a tensor
            labelers.Labeler(metrics=["mae"], device=device)
    none = labelers.Labeler(metrics=["mae"]).score(small_image, np.empty((0, *small_image.shape),
                                                                         np.uint8))
    assert len(none["mae"]) == 0
    assert len(labelers.Labeler(metrics=["mae"]).score(small_image, [])["mae"]) == 0
    for empty in (np.empty((0, 5, 5, 3), np.uint8), np.empty((0, *small_image.shape))):
        with pytest.raises(InvalidPairError, match="no versions, but as"):  # not the ref's
            labelers.Labeler(metrics=["mae"]).score(small_image, empty)
    with pytest.raises(InputTooSmallError):  # no version, but the reference is still checked
        labelers.Labeler(metrics=["mad"]).score(small_image[:16, :16], [])
    with pytest.raises(InvalidPairError, match="differ in shape"):
        labelers.Labeler(metrics=["mae"]).score(small_image, [small_image, small_image[1:]])
    with pytest.raises(InvalidPairError, match="got object"):
        labelers.Labeler(metrics=["mae"]).score(small_image, None)


def test_labeler_rejects_unknown_metrics_and_bad_images(small_image):
    with pytest.raises(labelers.UnknownMetricError, match="no metric 'psnr'"):
        labelers.Labeler(metrics=["psnr"])
    with pytest.raises(InvalidPairError, match="uint8"):
        labelers.Labeler(metrics=["mae"]).score(small_image.astype(float), [small_image])


def test_metrics_are_the_ten_in_spec_order():
    assert labelers.METRICS == ("gmsd", "fsim", "vif", "cw_ssim", "nlpd", "mae", "ms_ssim",
                                "mad", "dists", "lpips")
    assert (*labelers.METRICS, "ssim", "mdsi", "vsi") == labelers.AVAILABLE_METRICS
    assert tensor(np.zeros((2, 2, 3), np.uint8)).shape == (1, 3, 2, 2)


@pytest.mark.parametrize("key", AVAILABLE)
def test_a_metrics_own_cpu_chunks_give_the_whole_batchs_scores(metric_factory, noisy_versions,
                                                              key, monkeypatch):
    ref, dists = noisy_versions
    metric = metric_factory(key)
    monkeypatch.setattr(metric, "cpu_chunk", len(dists))
    whole = metric.score(ref, dists)
    monkeypatch.setattr(metric, "cpu_chunk", 1)
    assert len(metric.passes(dists)) == len(dists)
    torch.testing.assert_close(metric.score(ref, dists), whole, atol=1e-12, rtol=1e-12)


def test_pass_sizes_follow_the_memory_budget():
    # the largest power of two of versions the budget allows, at least one, at most what is left
    assert batch_for_budget(per_image_bytes=100, budget_bytes=1000, remaining=165) == 8
    assert batch_for_budget(per_image_bytes=100, budget_bytes=1000, remaining=4) == 4
    assert batch_for_budget(per_image_bytes=5000, budget_bytes=1000, remaining=165) == 1
    assert batch_for_budget(per_image_bytes=0, budget_bytes=1000, remaining=165) == 165


@pytest.mark.parametrize("fit", [1, 2, 3, 7, 8, 63, 64, 92, 127, 128, 129, 1000])
def test_a_pass_is_the_power_of_two_below_what_the_budget_fits(fit):
    """2 ** floor(log2(fit)) versions, whatever the budget between fit and fit + 1 images: a
    labeler started with a little more or less free memory (another process, a resumed run's
    fresh actor) runs the same passes, and so scores the same bits."""
    expected = 2 ** math.floor(math.log2(fit))
    per_image = 1_000_003.0
    for budget in (fit * per_image, (fit + 0.999) * per_image):
        assert batch_for_budget(per_image, budget, remaining=10_000) == expected
    just_short = 2 * expected * per_image * (1 - 1e-6)  # of twice as many (a float's slack
    assert batch_for_budget(per_image, just_short, 10_000) == expected  # aside: FIT_ROUNDING)


def test_a_split_pass_halves_once_whatever_the_budgets_rounding():
    """A pass of `size` that runs out of memory sets its metric's bytes per pixel so that
    size / 2 fit in the budget (Labeler._compare): the next pass is size / 2, never size / 4
    because the quotient came out a hair under size / 2 (it did for 3% of budgets)."""
    rng = np.random.default_rng(3)
    for _ in range(20_000):
        budget, size = int(rng.integers(10**9, 10**11)), 2 ** int(rng.integers(1, 8))
        pixels = int(rng.choice([512 * 384, 4000 * 3000, 1000 * 777]))
        per_image = 2 * budget / (size * pixels) * pixels
        assert batch_for_budget(per_image, budget, remaining=10**6) == size // 2


class _OutOfMemoryAbove:
    """A metric that, like a GPU, cannot take passes larger than `limit` versions."""

    def __init__(self, metric, limit: int):
        self.metric, self.limit, self.sizes = metric, limit, []

    def __getattr__(self, name):
        return getattr(self.metric, name)

    def compare_in_passes(self, prepared, dist):  # the Labeler's call: one pass on a GPU
        self.sizes.append(len(dist))
        if len(dist) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return self.metric.compare(prepared, dist)


def test_a_pass_that_runs_out_of_memory_is_split_and_the_scores_are_unchanged(noisy_versions):
    ref, dists = noisy_versions
    dists = dists.repeat(4, 1, 1, 1)  # 12 versions
    labeler = labelers.Labeler(["mae"], "cpu")
    metric = labeler.metrics["mae"]
    with torch.inference_mode():
        prepared = metric.prepare(ref)
        expected = metric.compare(prepared, dists)
        labeler.device = torch.device("cuda")  # the GPU route's pass sizes; tensors stay here
        pixels = dists.shape[-2] * dists.shape[-1]
        labeler.memory_budget, labeler.bytes_per_pixel["mae"] = 12_000, 1_000 / pixels  # 12 fit
        tight = _OutOfMemoryAbove(metric, limit=3)
        scores = labeler._compare("mae", tight, prepared, dists)
    torch.testing.assert_close(scores, expected, rtol=0, atol=0)
    assert tight.sizes == [8, 4] + [2] * 6  # passes of 8 halved until they fit, then kept


def test_a_budget_shared_down_to_nothing_still_halves_a_pass_that_runs_out(noisy_versions):
    """A budget of one byte shared by two calls was none, and a pass that ran out of memory
    then set its metric's bytes to none: the next pass took every version again, for ever.
    It halves down to one version, which the metric can take, and the scores are unchanged."""
    ref, dists = noisy_versions
    dists = dists.repeat(4, 1, 1, 1)  # 12 versions
    labeler = labelers.Labeler(["mae"], "cpu", memory_budget=1)
    metric = labeler.metrics["mae"]
    labeler.share_among(2)
    with torch.inference_mode():
        prepared = metric.prepare(ref)
        expected = metric.compare(prepared, dists)
        labeler.device = torch.device("cuda")  # the GPU route's pass sizes; tensors stay here
        labeler.bytes_per_pixel["mae"] = 1e-9  # measured tiny: all 12 "fit" one byte
        tight = _OutOfMemoryAbove(metric, limit=1)
        scores = labeler._compare("mae", tight, prepared, dists)
    torch.testing.assert_close(scores, expected, rtol=0, atol=0)
    assert tight.sizes[:4] == [12, 4, 2, 1] and set(tight.sizes[4:]) == {1}  # (powers of two)


def test_pass_sizes_scale_with_the_pixels_of_each_call():
    """Memory is measured per pixel: a metric measured on small images takes proportionally
    fewer versions of a larger size in one pass (and more of a smaller), so a --size native
    run does not size its 4000 x 3000 passes by a 512 x 384 first image."""
    labeler = labelers.Labeler(["mae"], "cpu")
    labeler.device = torch.device("cuda")  # the GPU route's pass sizes; nothing runs
    labeler.memory_budget, labeler.bytes_per_pixel["mae"] = 12_000_000, 1.0
    small, large = 512 * 384, 4000 * 3000
    assert labeler._pass_size("mae", 165, small) == 32                   # 61 fit
    assert labeler._pass_size("mae", 165, large) == 1                    # 12e6 bytes each
    assert labeler._pass_size("mae", 165, 100 * 100) == 165              # all that is left


def test_calls_served_at_once_share_the_budget_so_their_passes_fit_it_together():
    labeler = labelers.Labeler(["mae"], "cpu")
    labeler.device = torch.device("cuda")  # the GPU route's pass sizes; nothing runs
    labeler.memory_budget, labeler.bytes_per_pixel["mae"] = 12_000, 1_000.0  # 12 fit
    assert labeler._pass_size("mae", 165, 1) == 8
    labeler.share_among(2)
    assert 2 * labeler._pass_size("mae", 165, 1) <= 12 and labeler._pass_size("mae", 165, 1) == 4
    labeler.share_among(1)
    assert labeler._pass_size("mae", 165, 1) == 4


def test_a_chosen_pass_size_that_runs_out_of_memory_is_an_error_not_retried_for_ever(
        noisy_versions):
    """batch_size fixes every pass's size: a pass of it that runs out of memory cannot get
    smaller, so after MEMORY_TRIES tries it is a DeviceMemoryError (a LabelerError: the
    pipeline leaves the reference out), not retried at the same size for ever."""
    ref, dists = noisy_versions
    labeler = labelers.Labeler(["mae"], "cpu", batch_size=3)
    metric = labeler.metrics["mae"]
    tight = _OutOfMemoryAbove(metric, limit=2)
    with torch.inference_mode(), pytest.raises(labelers.DeviceMemoryError,
                                               match=r"pass of 3 .*the batch size chosen"):
        labeler._compare("mae", tight, metric.prepare(ref), dists)
    assert tight.sizes == [3] * MEMORY_TRIES
    assert issubclass(labelers.DeviceMemoryError, labelers.LabelerError)


def test_one_version_that_does_not_fit_is_a_device_memory_error(noisy_versions):
    ref, dists = noisy_versions
    labeler = labelers.Labeler(["mae"], "cpu")
    labeler.device = torch.device("cuda")  # the GPU route's pass sizes; tensors stay here
    labeler.memory_budget, labeler.bytes_per_pixel["mae"] = 10**9, 1e-3
    metric = labeler.metrics["mae"]
    tight = _OutOfMemoryAbove(metric, limit=0)
    with torch.inference_mode(), pytest.raises(labelers.DeviceMemoryError,
                                               match=r"mae ran out of cuda memory on a pass "
                                                     r"of 1 \d+x\d+ version"):
        labeler._compare("mae", tight, metric.prepare(ref), dists)
    assert tight.sizes == [3, 1, 1, 1]  # halved to one version, then tried MEMORY_TRIES times


class _PrepareOutOfMemory:
    """A metric whose reference side runs out of memory its first `failures` times."""

    def __init__(self, metric, failures: int):
        self.metric, self.failures, self.tries = metric, failures, 0

    def __getattr__(self, name):
        return getattr(self.metric, name)

    def prepare(self, ref):
        self.tries += 1
        if self.tries <= self.failures:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return self.metric.prepare(ref)


def _brighter(image: np.ndarray, steps=(3, 9)) -> np.ndarray:
    return np.stack([np.clip(image.astype(int) + step, 0, 255).astype(np.uint8)
                     for step in steps])


@pytest.mark.parametrize("failures", [1, MEMORY_TRIES - 1])
def test_a_prepare_that_runs_out_of_memory_once_is_tried_again(small_image, failures):
    ref, dists = small_image, _brighter(small_image)
    labeler = labelers.Labeler(["mae"], "cpu")
    expected = labeler.score(ref, dists)["mae"]
    labeler.metrics["mae"] = _PrepareOutOfMemory(labeler.metrics["mae"], failures)
    np.testing.assert_array_equal(labeler.score(ref, dists)["mae"], expected)
    assert labeler.metrics["mae"].tries == failures + 1


def test_a_reference_that_never_fits_is_a_device_memory_error(small_image):
    ref, dists = small_image, _brighter(small_image)
    labeler = labelers.Labeler(["mae"], "cpu")
    labeler.metrics["mae"] = _PrepareOutOfMemory(labeler.metrics["mae"], MEMORY_TRIES)
    with pytest.raises(labelers.DeviceMemoryError,
                       match=rf"mae ran out of cpu memory preparing a {ref.shape[1]}x"
                             rf"{ref.shape[0]} reference"):
        labeler.score(ref, dists)
    assert labeler.metrics["mae"].tries == MEMORY_TRIES


@pytest.mark.parametrize(("before", "after"), [(2, 2), (5, 5), (7, 8), (0, 3), (9, 13), (10, 12),
                                               (0, 30)])  # pads past a side reflect again
def test_symmetric_pad_is_numpys_symmetric_padding(before, after):
    """The one padding SSIM's dense maps, NLPD's pyramid and MAD's local MSE share, against
    numpy.pad's 'symmetric' mode (MATLAB imfilter's, the edge sample repeated)."""
    from labelers.inputs import symmetric_pad

    image = np.random.default_rng(0).random((2, 1, 9, 13))
    expected = np.pad(image, ((0, 0), (0, 0), (before, after), (before, after)), "symmetric")
    np.testing.assert_array_equal(symmetric_pad(torch.from_numpy(image), before, after).numpy(),
                                  expected)


def test_the_gray_image_is_the_same_for_every_colour_on_a_cpu_as_the_device_expression():
    """All 2^24 colours: the CPU's gray (numpy, channels added in order) equals the expression
    a GPU runs (torch's float64 weighted sum over the channels, then rounded)."""
    from distortions.colorspace import GRAY_WEIGHTS
    from labelers.inputs import gray_rounded

    values = torch.arange(256, dtype=torch.uint8)
    colours = torch.stack(torch.meshgrid(values, values, values, indexing="ij")).reshape(
        1, 3, 4096, 4096)
    weights = torch.tensor(GRAY_WEIGHTS, dtype=torch.float64).view(1, 3, 1, 1)
    expected = torch.floor((colours.double() * weights).sum(dim=1, keepdim=True) + 0.5)
    assert torch.equal(gray_rounded(colours, torch.float64), expected)
    channels_last = colours.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # as loaded
    corner = channels_last[..., :64, :64]
    for images in (corner, corner.float()):  # strided, and float
        assert torch.equal(gray_rounded(images, torch.float64), expected[..., :64, :64])


def test_the_labeler_on_a_cpu_scores_in_each_metrics_own_passes(noisy_versions, random_weights,
                                                               monkeypatch):
    """Passes of `cpu_chunk` versions (cache-sized), not the Labeler's whole part of 16, the
    networks' too."""
    labeler = labelers.Labeler(["mae", "cw_ssim", "lpips", "dists"], "cpu")
    sizes: dict[str, list[int]] = {}
    for key, metric in labeler.metrics.items():
        def recording(prepared, dist, key=key, original=metric.compare):
            sizes.setdefault(key, []).append(len(dist))
            return original(prepared, dist)
        monkeypatch.setattr(metric, "compare", recording)
    ref, dists = (t.permute(0, 2, 3, 1).numpy() for t in noisy_versions)
    versions = np.concatenate([dists, dists[:2]])  # 5
    scores = labeler.score(ref[0], versions)
    assert {key: metric.cpu_chunk for key, metric in labeler.metrics.items()} == {
        "mae": 2, "cw_ssim": 4, "lpips": 2, "dists": 2}
    assert sizes == {"mae": [2, 2, 1], "cw_ssim": [4, 1], "lpips": [2, 2, 1], "dists": [2, 2, 1]}
    assert scores["mae"][3:].tolist() == scores["mae"][:2].tolist()  # the same pair, any pass


def test_other_gpu_work_waits_while_the_labeler_measures_its_memory():
    """The device's peak memory counts every tensor of the process: while a call measures the
    metrics' memory, other GPU work (the learned denoiser on the labeler actor) waits, or the
    passes sized from that peak would move from run to run; once measured, nothing waits."""
    labeler = labelers.Labeler(["mae"], "cpu")
    labeler.device = torch.device("cuda")  # the GPU route's gate; nothing runs on a device
    order = []

    def other_work() -> None:
        with labeler.apart_from_measuring():
            order.append("other")

    with labeler.apart_from_measuring():  # as the call that measures holds it
        waiting = threading.Thread(target=other_work)
        waiting.start()
        waiting.join(0.2)
        assert waiting.is_alive()
        order.append("measured")
    waiting.join(5)
    assert order == ["measured", "other"]
    labeler.bytes_per_pixel["mae"] = 1.0  # measured: calls and other work run together
    with labeler.apart_from_measuring():
        free = threading.Thread(target=other_work)
        free.start()
        free.join(5)
        assert not free.is_alive()


def test_progress_counts_each_version_once_with_a_chosen_pass_size():
    """5 versions in passes of 3: told 3, then the 2 left (never 3 + 3 = 6 of 5)."""
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    told: list[int] = []
    labelers.Labeler(["mae"], "cpu", batch_size=3).score(
        ref, rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8), on_progress=told.append)
    assert told == [3, 2]
