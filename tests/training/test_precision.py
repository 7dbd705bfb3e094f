"""How models compute: bf16 autocast and channels_last on CUDA, float32 on a CPU unless asked,
and the training loop's step under each."""

from pathlib import Path

import pytest
import torch

from training.distributed import Context
from training.loop import Run, _loss_function, train_epoch
from training.model import ModelConfig, build_model
from training.optim import OptimConfig, optimiser
from training.precision import FP32, Precision


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


@pytest.mark.parametrize("name", ["bf16", "fp32"])
def test_the_training_step_computes_in_the_chosen_precision(name, tmp_path: Path):
    device = torch.device("cpu")
    precision = Precision.resolve(name, device)
    model = build_model(ModelConfig("test_resnet", init="random")).model
    seen = []
    model.fc.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    run = Run(Context(0, 1, 0, device), model, OptimConfig(1e-3, 10, 1, 4), 0, tmp_path, {},
              precision=precision)
    optimizer, _ = optimiser(model, run.optim)
    batches = [(torch.randn(4, 3, 32, 32), torch.rand(4)) for _ in range(2)]
    result = train_epoch(run, model, iter(batches), 2, _loss_function(run), optimizer)
    assert seen == [torch.bfloat16 if name == "bf16" else torch.float32] * 2
    assert torch.isfinite(torch.tensor(result["loss"]))
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32
