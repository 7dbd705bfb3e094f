"""How models compute: bf16 autocast and channels_last on CUDA, float32 on a CPU unless asked,
the training loop's step under each, and its guard against non-finite losses."""

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import ON_CUDA
from training.distributed import Context
from training.loop import (
    NonFiniteError,
    Run,
    _loss_function,
    running_statistics,
    train_epoch,
)
from training.model import ModelConfig, build_model
from training.optim import OptimConfig, optimiser
from training.precision import FP32, Inputs, Precision


def test_auto_is_bf16_with_channels_last_on_cuda_and_float32_on_a_cpu():
    assert Precision.resolve("auto", torch.device("cuda")) == Precision(torch.bfloat16, True)
    assert Precision.resolve("auto", torch.device("cpu")) == FP32
    assert Precision.resolve("bf16", torch.device("cpu")) == Precision(torch.bfloat16, False)
    assert Precision.resolve("fp32", torch.device("cuda")) == FP32
    with pytest.raises(ValueError, match="precision must be one of"):
        Precision.resolve("fp8", torch.device("cpu"))
    with pytest.raises(ValueError, match="precision must be one of"):
        ModelConfig("resnet18", precision="half")


def test_channels_last_inputs_are_laid_out_for_the_matrix_units():
    images = torch.randn(2, 3, 8, 8)
    moved = Precision(torch.bfloat16, True).inputs(images, torch.device("cpu"))
    assert moved.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(moved, images)


def _uint8(*shape: int, generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)


def test_inputs_normalise_uint8_views_on_the_device_as_the_backbone_expects():
    """(x / 255 - mean) / std per channel, in float32, the loader's views left uint8."""
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    images = _uint8(2, 3, 5, 7)
    inputs = Inputs(mean, std, torch.device("cpu"), Precision(torch.bfloat16, True))
    normalised = inputs(images)
    expected = (images.numpy().astype(np.float32) / np.float32(255)
                - np.float32(mean)[:, None, None]) / np.float32(std)[:, None, None]
    assert normalised.dtype == torch.float32
    assert normalised.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_array_equal(normalised.numpy(), expected)
    with pytest.raises(TypeError, match="images must be uint8"):
        inputs(images.float())  # a view normalised on the CPU as well


CUDA = pytest.param("cuda", marks=ON_CUDA)  # the GPU's own run (`pytest -m gpu`)


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("name", ["bf16", "fp32"])
def test_the_training_step_computes_in_the_chosen_precision(name, device, tmp_path: Path):
    device = torch.device(device)
    precision = Precision.resolve(name, device)
    model = precision.prepare(build_model(ModelConfig("test_resnet", init="random")).model
                              .to(device))
    seen = []
    model.fc.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    run = Run(Context(0, 1, 0, device), model, OptimConfig(1e-3, 10, 1, 4), 0, tmp_path, {},
              precision=precision)
    optimizer, _ = optimiser(model, run.optim)
    batches = [(_uint8(4, 3, 32, 32), torch.rand(4)) for _ in range(2)]
    result = train_epoch(run, model, iter(batches), 2, _loss_function(run), optimizer)
    assert seen == [torch.float32] * 2  # the head's output: float32 under bf16 too (below)
    assert torch.isfinite(torch.tensor(result["loss"]))
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32


@pytest.mark.parametrize("heads", [None, {"quality": 1, "class": 3}])
def test_under_bf16_the_backbone_computes_in_bf16_and_the_heads_in_float32(heads):
    """bf16 scores would take at most 128 values in [0.5, 1): ties deciding SROCC. The heads
    compute in float32 from the backbone's bf16 features: F.linear of those features, by hand."""
    torch.manual_seed(0)
    model = build_model(ModelConfig("test_resnet", init="random"), heads=heads).model.eval()
    linears = ([model.fc] if heads is None else list(model.heads.values()))
    inputs, seen = [], []
    for linear in linears:
        linear.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
    backbone_layer = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    backbone_layer.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(torch.randn(64, 3, 32, 32))
    assert seen == [torch.bfloat16] and inputs[0].dtype == torch.bfloat16
    assert outputs.dtype == torch.float32
    by_hand = torch.cat([torch.nn.functional.linear(features.float(), linear.weight, linear.bias)
                         for features, linear in zip(inputs, linears, strict=True)], dim=1)
    torch.testing.assert_close(outputs, by_hand, rtol=0, atol=0)
    assert (outputs != outputs.bfloat16().float()).float().mean() > 0.9  # off bf16's grid


def test_a_head_with_batch_norm_runs_it_once_and_gives_float32():
    """LeViT's head is batch norm then linear (both of its distilled heads): only the linear
    layers are computed again in float32, so each batch norm counts one batch per forward."""
    model = build_model(ModelConfig("levit_128s", init="random")).model.train()
    norms = [layer for head in model.get_classifier() for layer in head.modules()
             if isinstance(layer, torch.nn.BatchNorm1d)]
    assert len(norms) == 2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(torch.randn(4, 3, 224, 224))
    assert [int(norm.num_batches_tracked) for norm in norms] == [1, 1]
    assert all(output.dtype == torch.float32
               for output in (outputs if isinstance(outputs, tuple) else (outputs,)))


def _step_run(tmp_path: Path, device: str = "cpu"):
    model = build_model(ModelConfig("test_resnet", init="random")).model.to(device)
    run = Run(Context(0, 1, 0, torch.device(device)), model, OptimConfig(1e-3, 10, 1, 4), 0,
              tmp_path, {})
    return run, optimiser(model, run.optim)[0]


def poisoning(model: torch.nn.Module, batches, poisoned) -> Iterator:
    """`batches`, the forward passes of those at the `poisoned` places turned NaN in the
    model's first layer (one sample's activation: a run diverging in bf16, say), so the batch
    norms see them too."""
    flag = [False]
    first = next(module for module in model.modules() if isinstance(module, torch.nn.Conv2d))

    def hook(module, args, output):
        if flag[0]:
            output = output.clone()
            output[0, 0, 0, 0] = float("nan")
        return output
    handle = first.register_forward_hook(hook)
    try:
        for place, batch in enumerate(batches):
            flag[0] = place in poisoned
            yield batch
    finally:
        handle.remove()


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_a_nan_batch_is_skipped_and_never_reaches_the_weights(device, tmp_path):
    run, optimizer = _step_run(tmp_path, device)
    batches = [(_uint8(4, 3, 32, 32), torch.rand(4)) for _ in range(3)]
    result = train_epoch(run, run.model, poisoning(run.model, batches, {1}), 3,
                         _loss_function(run), optimizer)
    assert result["skipped_nonfinite"] == 1 and result["rank_batches"] == [3]
    assert torch.isfinite(torch.tensor(result["loss"]))
    state = run.model.state_dict()  # weights and batch-norm statistics alike
    assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_an_epochs_loss_is_the_mean_over_the_batches_it_stepped_on(tmp_path):
    """Losses 0.3, NaN (skipped), 0.9: the epoch's loss is (0.3 + 0.9) / 2, the skipped batch
    counted neither in the sum nor in the number of batches."""
    run, optimizer = _step_run(tmp_path)
    weight = next(run.model.parameters())

    def fixed_loss(network, value):
        return weight.sum() * 0 + value

    result = train_epoch(run, run.model, iter([0.3, float("nan"), 0.9]), 3, fixed_loss,
                         optimizer)
    assert result["skipped_nonfinite"] == 1
    assert result["loss"] == pytest.approx(0.6, rel=1e-6)


def _two_rank_epochs(rank: int, folder: str) -> None:
    """One rank of a gloo process group: three DDP steps, the second batch poisoned on rank
    1 only; then an epoch of 25 batches, every one poisoned on rank 1 only. The results, the
    weights after the first epoch and how the second ended saved for the tests."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/store",
                                         rank=rank, world_size=2,
                                         timeout=timedelta(seconds=60))  # fail, never hang
    torch.manual_seed(0)  # the same initial weights on both ranks
    model = build_model(ModelConfig("test_resnet", init="random")).model
    run = Run(Context(rank, 2, rank, torch.device("cpu")), model, OptimConfig(1e-3, 10, 1, 4),
              0, Path(folder), {})
    network = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = optimiser(model, run.optim)[0]
    generator = torch.Generator().manual_seed(rank)

    def batches(count: int, poisoned: range) -> Iterator:
        made = [(_uint8(4, 3, 32, 32, generator=generator),
                 torch.rand(4, generator=generator)) for _ in range(count)]
        return poisoning(model, made, poisoned if rank == 1 else ())

    result = train_epoch(run, network, batches(3, range(1, 2)), 3, _loss_function(run),
                         optimizer)
    weights = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    fetched = []

    def counted(stream: list):
        for batch in stream:
            fetched.append(batch)
            yield batch

    try:
        train_epoch(run, network, counted(batches(25, range(25))), 25, _loss_function(run),
                    optimizer)
        stopped = None
    except NonFiniteError as error:
        stopped = str(error)
    torch.save({"result": result, "weights": weights, "stopped": stopped,
                "fetched": len(fetched)}, f"{folder}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    folder = tmp_path_factory.mktemp("two_ranks")
    torch.multiprocessing.spawn(_two_rank_epochs, args=(str(folder),), nprocs=2)
    return [torch.load(folder / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]


def test_a_batch_non_finite_on_one_rank_is_skipped_on_every_rank(two_ranks):
    assert [r["result"]["skipped_nonfinite"] for r in two_ranks] == [1, 1]  # rank 0's finite
    assert two_ranks[0]["result"]["rank_batches"] == [3, 3]
    first, second = (r["weights"] for r in two_ranks)  # (each rank's batch-norm stats its own)
    assert all(torch.equal(first[name], second[name]) for name in first)  # still in step
    assert all(torch.isfinite(t).all() for t in first.values())


def test_more_than_20_non_finite_batches_stop_every_rank_together(two_ranks):
    # rank 0's losses were all finite: it stops at the 21st batch (README: more than 20) too
    assert [(r["fetched"], "diverged" in (r["stopped"] or "")) for r in two_ranks] == \
        [(21, True), (21, True)]


def _nan_epoch(run: Run, optimizer, count: int) -> dict:
    batches = [(_uint8(4, 3, 32, 32), torch.rand(4))] * count
    return train_epoch(run, run.model, poisoning(run.model, batches, range(count)), count,
                       _loss_function(run), optimizer)


def test_more_than_20_non_finite_batches_in_an_epoch_stop_it_with_a_clear_error(tmp_path):
    run, optimizer = _step_run(tmp_path)
    assert _nan_epoch(run, optimizer, 20)["skipped_nonfinite"] == 20  # the README's limit
    with pytest.raises(NonFiniteError, match="more than 20 batches with a non-finite loss in "
                                             "one epoch: the run diverged"):
        _nan_epoch(run, optimizer, 21)


def test_only_normalisation_statistics_are_put_back_after_a_skipped_batch():
    """A non-finite batch restores what its forward pass moved (batch-norm running mean and
    variance, and its batch count: a cumulative average, momentum None, divides by it), not
    other buffers such as a contrastive queue (copying it every step)."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    model.register_buffer("queue", torch.zeros(1024, 8))
    found = running_statistics(model)
    assert [t.data_ptr() for t in found] == [model[1].running_mean.data_ptr(),
                                             model[1].running_var.data_ptr(),
                                             model[1].num_batches_tracked.data_ptr()]


def test_a_skipped_batch_leaves_the_batch_norm_statistics_as_if_never_seen(tmp_path):
    """Batch norm with a cumulative average (momentum None): a run with a non-finite batch
    skipped ends with the running statistics and count of a run that never read it."""
    runs = []
    for batches, poisoned in (((0, 1, 2), {1}), ((0, 2), set())):
        torch.manual_seed(0)
        run, optimizer = _step_run(tmp_path)
        for norm in run.model.modules():
            if isinstance(norm, torch.nn.BatchNorm2d):
                norm.momentum = None
        data = [(_uint8(4, 3, 32, 32, generator=torch.Generator().manual_seed(i)),
                 torch.rand(4, generator=torch.Generator().manual_seed(i))) for i in batches]
        train_epoch(run, run.model, poisoning(run.model, data, poisoned), len(data),
                    _loss_function(run), optimizer)
        runs.append({name: buffer.clone() for name, buffer in run.model.named_buffers()})
    skipped, never_read = runs
    assert skipped.keys() == never_read.keys() and any("num_batches" in k for k in skipped)
    for name in skipped:
        torch.testing.assert_close(skipped[name], never_read[name], rtol=0, atol=1e-6,
                                   msg=name)
