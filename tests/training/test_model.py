import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.data import IMAGENET_DEFAULT_MEAN

from training.model import (
    ModelConfig,
    ModelInitError,
    ScheduledDropPath,
    backbone_input,
    build_model,
)


def test_a_checkpoint_initialises_the_backbone_and_a_new_head_is_left_new(tmp_path):
    source = build_model(ModelConfig("test_resnet", init="random"), outputs=33).model
    path = tmp_path / "pretrained.pt"
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    built = build_model(ModelConfig("test_resnet", pretrained_file=str(path)))
    assert built.start == str(path)
    loaded = built.model.state_dict()
    for key, value in source.state_dict().items():
        if key.startswith("fc."):
            assert loaded[key].shape != value.shape  # 33 classes -> one output
        else:
            assert torch.equal(loaded[key], value)
    assert "skipped" in built.notices[0] and "fc.weight" in built.notices[0]


def test_unusable_files_and_names_are_refused(tmp_path):
    with pytest.raises(ModelInitError, match="does not exist"):
        build_model(ModelConfig("test_resnet", pretrained_file=str(tmp_path / "none.pt")))
    other = tmp_path / "other.pt"
    torch.save({"unrelated.weight": torch.zeros(3)}, other)
    with pytest.raises(ModelInitError, match="no tensor"):
        build_model(ModelConfig("test_resnet", pretrained_file=str(other)))
    with pytest.raises(ValueError, match="unknown timm backbone"):
        ModelConfig("resnet_nonexistent")
    resnet18 = tmp_path / "resnet18.pt"  # a checkpoint of this project, of another backbone
    model = build_model(ModelConfig("resnet18", init="random")).model
    torch.save({"model": model.state_dict(), "config": {"model": {"backbone": "resnet18"}}},
               resnet18)
    with pytest.raises(ModelInitError, match="holds a resnet18 backbone, not --backbone "
                                             "test_resnet"):
        build_model(ModelConfig("test_resnet", pretrained_file=str(resnet18)))
    assert build_model(ModelConfig("resnet18", pretrained_file=str(resnet18))).start == str(
        resnet18)


def test_scheduled_drop_path_rises_to_its_final_rate():
    model = build_model(ModelConfig("resnet18", init="random", drop_path=0.2)).model
    schedule = ScheduledDropPath(model)
    assert schedule.active and len(schedule.modules) > 0
    schedule.set_progress(0.5)
    assert max(m.drop_prob for m in schedule.modules) == pytest.approx(0.1)
    schedule.set_progress(1.0)
    assert max(m.drop_prob for m in schedule.modules) == pytest.approx(0.2)


# the backbones a user would name; inputs as small as each allows (a ViT takes only its own)
BACKBONES = [("nasnetalarge", 96), ("resnet50", 64), ("efficientnet_b0", 64),
             ("convnext_tiny", 64), ("vit_tiny_patch16_224", 224)]


def test_a_backbone_that_takes_no_drop_path_says_so():
    """timm's GhostNet takes no drop_path_rate and has no NASNet cells: it builds without
    drop-path, and the notice the run prints at start says so."""
    built = build_model(ModelConfig("ghostnet_050", init="random", drop_path=0.1))
    assert "ghostnet_050 takes no drop-path in timm: --drop-path 0.1 is NOT applied" in \
        built.notices
    assert not ScheduledDropPath(built.model).active


@pytest.mark.slow
@pytest.mark.parametrize(("backbone", "size"), BACKBONES)
def test_every_named_backbone_builds_and_takes_a_training_step(backbone, size):
    built = build_model(ModelConfig(backbone, init="random", drop_path=0.1))
    assert not [n for n in built.notices if "NOT applied" in n]  # drop-path reaches each one
    schedule = ScheduledDropPath(built.model)
    assert schedule.active
    schedule.set_progress(1.0)
    model = built.model.train()
    output = model(torch.randn(2, 3, size, size))
    assert output.shape == (2, 1)
    output.pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_each_backbone_has_its_own_input_size_and_normalisation():
    nasnet, resnet, vit = (backbone_input(name) for name in
                           ("nasnetalarge", "resnet50", "vit_tiny_patch16_224"))
    # timm's pretrained configs: NASNet's TF weights expect [-1, 1] inputs at 331 x 331
    assert (nasnet.size, nasnet.mean, nasnet.std) == (331, (0.5,) * 3, (0.5,) * 3)
    assert (resnet.size, resnet.mean) == (224, IMAGENET_DEFAULT_MEAN)
    assert vit.fixed_size and not resnet.fixed_size
    with pytest.raises(ValueError, match="only takes 224 x 224"):
        vit.check_crop("vit_tiny_patch16_224", 128)


def _nasnet_pair(rate: float):
    """nasnetalarge with NASNet's cell drop-path, and the same weights without it."""
    torch.manual_seed(0)
    with_drop = build_model(ModelConfig("nasnetalarge", init="random", drop_path=rate)).model
    plain = build_model(ModelConfig("nasnetalarge", init="random")).model
    plain.load_state_dict(with_drop.state_dict())  # the same keys: DropPath holds no tensors
    return with_drop, plain


@pytest.mark.slow
def test_nasnet_drop_path_grows_with_depth_and_ramps_over_training():
    with_drop, plain = _nasnet_pair(0.6)
    schedule = ScheduledDropPath(with_drop)
    cells = [name for name, _ in with_drop.named_children() if "cell_" in name
             and "stem" not in name]
    assert len(cells) == 20
    # rate * (k + 1) / 20 for the k-th cell: the first cell's operations 0.03, the last 0.6
    assert min(schedule.final) == pytest.approx(0.6 / 20)
    assert max(schedule.final) == pytest.approx(0.6)
    images = torch.randn(2, 3, 96, 96)
    schedule.set_progress(1.0)  # never at test time (before training moves the batch norms)
    torch.testing.assert_close(with_drop.eval()(images), plain.eval()(images))
    schedule.set_progress(0.0)  # no drop yet: the same function as without drop-path
    torch.testing.assert_close(with_drop.train()(images), plain.train()(images))
    schedule.set_progress(1.0)
    assert not torch.allclose(with_drop(images), plain(images))


ROOT = Path(__file__).resolve().parents[2]
# RFC 2606: a name under .invalid never resolves, so the hub is out of reach on any machine
UNREACHABLE_HUB = "https://hub.invalid"


def test_auto_starts_from_random_weights_with_a_notice_and_imagenet_insists(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", UNREACHABLE_HUB)  # huggingface_hub's (and timm's) host
    built = build_model(ModelConfig("test_resnet", init="auto"))
    assert built.start == "random"
    assert built.notices == ["ImageNet weights for test_resnet are out of reach (hub.invalid "
                             "does not resolve): starting from RANDOM weights; pass "
                             "--pretrained-file to start from a local checkpoint, or set "
                             "HF_HUB_OFFLINE=1 where timm's cache holds them"]
    with pytest.raises(ModelInitError, match=r"^cannot download ImageNet weights for "
                                             r"test_resnet: hub\.invalid does not resolve"):
        build_model(ModelConfig("test_resnet", init="imagenet"))


OFFLINE_BUILD = """
import os, torch
from safetensors.torch import load_file
from training.model import ModelConfig, build_model
built = build_model(ModelConfig("test_resnet", init="{init}"))
print(built.start)
if os.path.exists("{weights}"):
    first = built.model.state_dict()["conv1.0.weight"]
    print(torch.equal(first, load_file("{weights}")["conv1.0.weight"]))
"""


@pytest.mark.parametrize("cached", [True, False])
def test_offline_imagenet_weights_come_from_timms_cache(tmp_path, cached):
    """HF_HUB_OFFLINE=1 (a node without network, its cache filled beforehand): the unresolved
    hub is not the end, timm reads the weights from huggingface_hub's cache (in a child:
    huggingface_hub reads HF_HOME and HF_HUB_OFFLINE when imported)."""
    repo = tmp_path / "hub" / "models--timm--test_resnet.r160_in1k"  # timm's name for it
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    torch.manual_seed(5)
    state = timm.create_model("test_resnet").state_dict()
    weights = snapshot / "model.safetensors"
    save_file({name: torch.randn_like(value) if value.is_floating_point() else value
               for name, value in state.items()}, str(weights))
    if not cached:
        weights.unlink()
    environment = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
                   "HF_ENDPOINT": UNREACHABLE_HUB}
    for init in ("imagenet", "auto"):
        child = subprocess.run(
            [sys.executable, "-c", OFFLINE_BUILD.format(init=init, weights=weights)],
            capture_output=True, text=True, env=environment, cwd=ROOT)
        if cached:
            assert child.stdout.split() == ["imagenet", "True"], child.stderr
        elif init == "imagenet":
            assert "ModelInitError: cannot load ImageNet weights" in child.stderr
        else:
            assert child.stdout.split() == ["random"], child.stderr


@pytest.mark.parametrize(("backbone", "size"), [("mobilenetv3_small_050", 32),
                                                ("ghostnet_100", 32),
                                                ("deit_tiny_distilled_patch16_224", 224)])
def test_multi_head_models_fit_backbones_with_a_hidden_head_or_two_classifiers(backbone, size):
    """MobileNetV3 and GhostNet pool into a hidden layer wider than num_features (1024 after
    288): the heads take its width. A distilled DeiT has two classifiers, averaged when it
    evaluates: a multi-head checkpoint gives both the quality head, so the one-head model
    predicts what the quality head did."""
    from training.model import MultiHead, fit_layout, pooled_width

    torch.manual_seed(0)
    heads = MultiHead(timm.create_model(backbone, num_classes=0), {"quality": 1, "class": 5})
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        features = heads.backbone.eval()(images)
        outputs = heads.eval()(images)
    assert features.shape[1] == pooled_width(heads.backbone) and outputs.shape == (2, 6)
    one_head = timm.create_model(backbone, num_classes=1)
    one_head.load_state_dict(fit_layout(heads.state_dict(), one_head), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(one_head.eval()(images), outputs[:, :1])
