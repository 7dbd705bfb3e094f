import pytest
import torch

from training.model import ModelConfig, ModelInitError, ScheduledDropPath, build_model


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


def test_scheduled_drop_path_rises_to_its_final_rate():
    model = build_model(ModelConfig("resnet18", init="random", drop_path=0.2)).model
    schedule = ScheduledDropPath(model)
    assert schedule.active and len(schedule.modules) > 0
    schedule.set_progress(0.5)
    assert max(m.drop_prob for m in schedule.modules) == pytest.approx(0.1)
    schedule.set_progress(1.0)
    assert max(m.drop_prob for m in schedule.modules) == pytest.approx(0.2)
