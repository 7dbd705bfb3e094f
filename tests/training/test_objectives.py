"""The label-free pretraining objectives (training.objectives): InfoNCE against a hand
computation, MoCo's momentum update and queue exactly, each objective's loss falling on real
groups of a tiny dataset, and their checkpoints giving finetune's model its backbone."""

import math
from dataclasses import replace

import cv2
import numpy as np
import pytest
import timm
import torch
from torch.utils.data import DataLoader

from training.distributed import Context
from training.group_data import collate_groups, group_dataset
from training.objectives import ObjectiveConfig, build_objective
from training.objectives.base import flatten_members
from training.objectives.contrastive import (
    MoCo,
    check_queue,
    in_chunk_info_nce,
    info_nce,
    query_and_key_views,
    shuffled_keys,
)
from training.precision import FP32, Inputs
from training.pretrain import PretrainConfig
from training.shard_data import Target

from .conftest import SPLITS, reference_image

CPU = Context(0, 1, 0, torch.device("cpu"))
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def test_info_nce_equals_a_hand_computation_on_three_samples():
    query = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    key = np.array([[0.8, 0.6], [0.6, 0.8], [-1.0, 0.0]])
    queue = np.array([[0.0, 1.0], [-0.6, -0.8]])
    temperature = 0.5
    by_hand = []
    for q, k in zip(query, key, strict=True):
        positive = math.exp(float(q @ k) / temperature)
        negatives = sum(math.exp(float(q @ n) / temperature) for n in queue)
        by_hand.append(-math.log(positive / (positive + negatives)))
    loss = info_nce(*(torch.tensor(a) for a in (query, key, queue)), temperature)
    assert float(loss) == pytest.approx(np.mean(by_hand), rel=1e-12)


def _moco(queue_size: int = 5) -> MoCo:
    torch.manual_seed(0)
    return MoCo(timm.create_model("test_resnet", num_classes=0), 4, queue_size)


def test_the_momentum_update_is_theta_k_m_theta_k_plus_one_minus_m_theta_q():
    moco = _moco()
    with torch.no_grad():  # query and key encoders apart, as after some training
        for weight in moco.backbone.parameters():
            weight.add_(torch.randn_like(weight))
    keys_before = {n: w.clone() for n, w in moco.momentum.named_parameters()}
    queries = dict(moco.backbone.named_parameters(prefix="backbone")) | dict(
        moco.projection.named_parameters(prefix="projection"))
    moco.momentum_update(0.9)
    for name, weight in moco.momentum.named_parameters():
        expected = 0.9 * keys_before[name] + (1 - 0.9) * queries[name]
        assert torch.allclose(weight, expected, rtol=0, atol=1e-6), name
    assert not any(w.requires_grad for w in moco.momentum.parameters())


def test_the_queue_replaces_its_oldest_keys_and_wraps_around():
    moco = _moco(queue_size=5)
    first, second = torch.full((3, 4), 1.0), torch.full((3, 4), 2.0)
    initial = moco.queue.clone()
    moco.enqueue(first)
    assert int(moco.queue_pointer) == 3
    assert torch.equal(moco.queue[:3], first) and torch.equal(moco.queue[3:], initial[3:])
    moco.enqueue(second)  # rows 3, 4, then 0
    assert int(moco.queue_pointer) == 1
    assert torch.equal(moco.queue, torch.stack([second[0], first[1], first[2], second[1],
                                                second[2]]))
    with pytest.raises(ValueError, match="6 keys per step do not fit a queue of 5"):
        moco.enqueue(torch.zeros(6, 4))


def fixed_batch(dataset, objective, size: int = 2) -> dict:
    stream = group_dataset(str(dataset), objective.request.kind, "train", rank=0,
                           world_size=1, **objective.request.arguments())
    return next(iter(DataLoader(stream, batch_size=size, collate_fn=collate_groups)))


def objective_of(name: str, crop: int, **settings):
    torch.manual_seed(0)
    backbone = timm.create_model("test_resnet", num_classes=0)
    config = ObjectiveConfig(name, versions=2, queue_size=64, **settings)
    return build_objective(config, backbone, crop, Inputs(MEAN, STD, CPU.device, FP32), CPU)


@pytest.mark.parametrize(("name", "crop"), [("contrastive", 16), ("reconstruction", 32),
                                            ("restoration", 32)])
def test_each_objective_lowers_its_loss_on_a_fixed_batch(square_dataset, name, crop):
    objective = objective_of(name, crop)
    batch = fixed_batch(square_dataset, objective)
    trainable = [w for w in objective.model.parameters() if w.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-3)
    objective.model.train()
    losses = []
    for _ in range(12):
        loss = objective.loss(objective.model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(value) for value in losses)
    assert losses[-1] < 0.8 * losses[0], losses


def test_contrastive_batches_hold_both_views_at_both_scales(square_dataset):
    objective = objective_of("contrastive", 16)
    batch = fixed_batch(square_dataset, objective)
    # 2 chunks of a reference and 2 versions, two 16-pixel views of each, full and half scale
    assert batch["distorted"].shape == (2, 2, 2, 3, 16, 16)
    assert batch["reference_half"].shape == (2, 2, 3, 16, 16)
    objective.loss(objective.model, batch)
    # a key per image, at each scale
    assert [keys.shape for keys in objective.pending] == [(2 * 3, 128)] * 2


def test_contrastive_chunks_hold_versions_of_different_types(square_dataset):
    # every reference has 2 types x 3 levels: a chunk of 2 versions is one of each type
    objective = objective_of("contrastive", 16)
    stream = group_dataset(str(square_dataset), "chunk", None, rank=0, world_size=1,
                           **objective.request.arguments())
    chunks = [[meta["distortion_id"] for meta in chunk["meta"]] for chunk in stream]
    assert len(chunks) == 6 and all(sorted(types) == [9, 10] for types in chunks), chunks


def test_a_contrastive_chunk_has_re_iqas_eleven_versions_unless_told():
    backbone = timm.create_model("test_resnet", num_classes=0)
    inputs = Inputs(MEAN, STD, CPU.device, FP32)
    for versions, expected in ((None, 11), (4, 4)):  # seed-methods: n = 11
        config = ObjectiveConfig("contrastive", versions=versions, queue_size=64)
        request = build_objective(config, backbone, 16, inputs, CPU).request
        assert (request.kind, request.versions, request.distinct_types) == ("chunk", expected,
                                                                            True)


def test_half_of_a_chunk_swaps_its_query_and_key_views():
    images = torch.arange(6 * 2 * 3 * 2 * 2, dtype=torch.uint8).view(6, 2, 3, 2, 2)
    queries, keys = query_and_key_views(images, members=3)  # two chunks of three
    for index in range(6):  # Re-IQA: half of the chunk swaps its two crops
        first, second = (0, 1) if index % 3 in (0, 2) else (1, 0)
        assert torch.equal(queries[index], images[index, first])
        assert torch.equal(keys[index], images[index, second])


def test_a_vision_transformer_is_refused_by_the_encoder_decoders():
    with pytest.raises(ValueError, match=r"convolutional backbone.*\(1, \d+, 64\)"):
        build_objective(ObjectiveConfig("reconstruction"),
                        timm.create_model("test_vit", num_classes=0), 160,
                        Inputs(MEAN, STD, CPU.device, FP32), CPU)


def test_bad_objective_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="objective must be one of"):
        ObjectiveConfig("jigsaw")
    with pytest.raises(ValueError, match="--moco-momentum"):
        ObjectiveConfig("contrastive", moco_momentum=1.0)
    with pytest.raises(ValueError, match="--temperature"):
        ObjectiveConfig("contrastive", temperature=0)
    with pytest.raises(ValueError, match="do not apply to --objective contrastive"):
        PretrainConfig("data", "out", targets=(Target("distortion"),),
                       objective=ObjectiveConfig("contrastive"))


def test_half_scale_members_are_the_bicubic_half_image_under_their_own_views(square_dataset):
    stream = group_dataset(str(square_dataset), "chunk", "train", rank=0, world_size=1,
                           crop=16, versions=1, views=2, half_scale=True)
    chunk = next(iter(stream))
    number = sorted(SPLITS).index(chunk["ref_id"])
    half = cv2.resize(reference_image(number, (64, 64)), (32, 32), interpolation=cv2.INTER_CUBIC)
    boxes = chunk["box_half"]
    for view, (y, x, h, w) in zip(chunk["reference_half"], boxes, strict=True):
        assert (h, w) == (16, 16) and y + h <= 32 and x + w <= 32
        assert np.array_equal(view, half[y:y + h, x:x + w])
    (top, left, _, _), (lower, other, _, _) = boxes
    shared = max(0, 16 - abs(lower - top)) * max(0, 16 - abs(other - left)) / 256
    assert 0.10 <= shared <= 0.30  # Re-IQA's overlap, at half scale too
    assert len(chunk["distorted_half"]) == 1 and chunk["distorted_half"][0].shape == \
        (2, 16, 16, 3)


def test_a_half_scale_too_small_for_two_views_is_named(square_dataset):
    stream = group_dataset(str(square_dataset), "chunk", "train", rank=0, world_size=1,
                           crop=24, versions=1, views=2, half_scale=True)
    with pytest.raises(ValueError, match=r"r\d at half scale: two overlapping 24 x 24 views"):
        next(iter(stream))


@pytest.mark.parametrize("kind, views", [("chunk", 2), ("pair", 1), ("triplet", 1)])
def test_a_full_scale_crop_too_large_is_named_with_its_reference(square_dataset, kind, views):
    """64 x 64 images: two overlapping 40-pixel views need 68 rows, one 80-pixel box 80."""
    crop = 40 if views == 2 else 80
    stream = group_dataset(str(square_dataset), kind, "train", rank=0, world_size=1,
                           crop=crop, versions=1, views=views)
    with pytest.raises(ValueError, match=rf"r\d at full scale: .*{crop} x {crop}"):
        next(iter(stream))


def test_the_validation_figure_is_in_chunk_info_nce_by_hand():
    """Two chunks of two members: each query against its own chunk's keys only, so the figure
    is the same however the chunks are batched or spread over ranks."""
    rng = np.random.default_rng(0)
    query, key = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    by_hand = []
    for i in range(4):
        chunk = key[2 * (i // 2): 2 * (i // 2) + 2]
        by_hand.append(-math.log(math.exp(query[i] @ key[i] / 0.5)
                                 / sum(math.exp(query[i] @ other / 0.5) for other in chunk)))
    loss = in_chunk_info_nce(torch.tensor(query), torch.tensor(key), 2, 0.5)
    assert float(loss) == pytest.approx(np.mean(by_hand), rel=1e-12)
    halves = [in_chunk_info_nce(torch.tensor(query[part]), torch.tensor(key[part]), 2, 0.5)
              for part in (slice(0, 2), slice(2, 4))]  # one chunk a batch (or a rank)
    assert float(sum(halves) / 2) == pytest.approx(float(loss), rel=1e-12)


def test_shuffling_bn_encodes_shuffled_parts_and_puts_the_keys_back_in_order():
    torch.manual_seed(0)
    views = torch.randn(10, 4)
    per_row = torch.nn.Linear(4, 3)  # no batch statistics: shuffling changes nothing
    assert torch.allclose(shuffled_keys(per_row, views, CPU, 3), per_row(views), atol=1e-6)
    batch_norm = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)).train()
    torch.manual_seed(5)
    keys = shuffled_keys(batch_norm, views, CPU, 2)
    torch.manual_seed(5)
    order = torch.randperm(10)  # the same draw: rows order[:5] and order[5:] encoded apart
    for part in (order[:5], order[5:]):
        assert torch.allclose(keys[part], batch_norm(views[part]), atol=1e-6)
    assert not torch.allclose(keys, batch_norm(views), atol=1e-3)
    assert torch.equal(shuffled_keys(batch_norm, views, CPU, 1), batch_norm(views))
    with pytest.raises(ValueError, match="each needs at least 2; raise the batch"):
        shuffled_keys(batch_norm, views[:5], CPU, 3)


def test_moco_keys_are_shuffled_only_while_training():
    moco = MoCo(timm.create_model("test_resnet", num_classes=0), 8, 16)
    views = torch.randn(4, 3, 32, 32)
    torch.manual_seed(2)
    shuffled = moco.shuffled_keys(views, CPU, 2)
    assert not torch.allclose(shuffled, moco.keys(views), atol=1e-4)  # batch norm, 2 parts
    moco.eval()
    assert torch.equal(moco.shuffled_keys(views, CPU, 2), moco.keys(views))


def test_info_nce_takes_the_own_key_as_the_positive():
    """One query, q.k+ = 0.8 and q.n = 0 at T = 0.5: -log(e^1.6 / (e^1.6 + e^0)). (Over several
    queries the index of the positive can cancel out of the mean.)"""
    query, key, queue = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.8, 0.6]]), torch.tensor(
        [[0.0, 1.0]])
    assert float(info_nce(query, key, queue, 0.5)) == pytest.approx(math.log(1 + math.exp(-1.6)))


@pytest.mark.parametrize(("half_scale", "queue_size"), [(True, 15), (False, 7)])
def test_the_queue_must_hold_a_steps_keys_at_every_scale(half_scale, queue_size):
    """4 chunks x (the reference + 1 version) x 2 scales = 16 keys a step (8 at one scale):
    one fewer is refused."""
    config = ObjectiveConfig("contrastive", versions=1, queue_size=queue_size,
                             half_scale=half_scale)
    with pytest.raises(ValueError, match=f"smaller than the keys one step enqueues: "
                                         f"{queue_size + 1}"):
        check_queue(config, 4)
    check_queue(replace(config, queue_size=queue_size + 1), 4)


def test_the_contrastive_loss_is_the_mean_of_its_images_infonce(square_dataset):
    """Each scale's 6 images (2 chunks of a reference and 2 versions) against the queue: the
    loss is the mean of the 12 images' InfoNCE, so of the two scales' means (not their sum)."""
    objective = objective_of("contrastive", 16)
    objective.model.train()
    batch = fixed_batch(square_dataset, objective)
    loss = objective.loss(objective.model, batch)
    queries = [objective.model(objective.inputs(query))[0] for query, _ in (
        query_and_key_views(flatten_members(batch, suffix), 3) for suffix in ("", "_half"))]
    by_scale = [info_nce(q, k, objective.model.queue, objective.config.temperature)
                for q, k in zip(queries, objective.pending, strict=True)]
    assert float(loss) == pytest.approx(float(sum(by_scale)) / 2, rel=1e-5)


class _Fixed(torch.nn.Module):
    """A network whose outputs are given: the losses are then functions of them alone."""

    def __init__(self, *outputs: torch.Tensor):
        super().__init__()
        self.outputs = outputs

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        assert len(images) == len(self.outputs[0])
        return self.outputs


def _uint8(generator: np.random.Generator, *shape: int) -> torch.Tensor:
    return torch.from_numpy(generator.integers(0, 256, shape, dtype=np.uint8))


def test_restorations_loss_is_l1_to_each_versions_reference_plus_l1_to_its_ssim_map():
    """MT-IRN: L1 between the restored image and the reference (in [0, 1]) plus L1 between
    the predicted and the true SSIM map; two references of two versions each."""
    generator = np.random.default_rng(0)
    batch = {"reference": _uint8(generator, 2, 3, 8, 8),
             "distorted": _uint8(generator, 2, 2, 3, 8, 8),
             "ssim_map": torch.from_numpy(generator.random((2, 2, 8, 8), dtype=np.float32))}
    restored = torch.from_numpy(generator.random((4, 3, 8, 8), dtype=np.float32))
    ssim = torch.from_numpy(generator.random((4, 1, 8, 8), dtype=np.float32))
    loss = objective_of("restoration", 32).loss(_Fixed(restored, ssim), batch)
    references = np.repeat(batch["reference"].numpy() / 255.0, 2, axis=0)  # r0 r0 r1 r1
    expected = (np.abs(restored.numpy() - references).mean()
                + np.abs(ssim.numpy()[:, 0] - batch["ssim_map"].numpy().reshape(4, 8, 8)).mean())
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_reconstructions_loss_without_lpips_is_l1_to_the_input_in_unit_range():
    """CoAE: each member (references, then their versions) rebuilt, L1 in [0, 1]."""
    generator = np.random.default_rng(1)
    batch = {"reference": _uint8(generator, 2, 3, 8, 8),
             "distorted": _uint8(generator, 2, 2, 3, 8, 8)}
    rebuilt = torch.from_numpy(generator.random((6, 3, 8, 8), dtype=np.float32))
    objective = objective_of("reconstruction", 32)
    if objective.lpips is not None:
        pytest.skip("LPIPS weights present: the loss adds their term")
    members = np.concatenate([batch["reference"].numpy(),
                              batch["distorted"].numpy().reshape(4, 3, 8, 8)]) / 255.0
    expected = np.abs(rebuilt.numpy() - members).mean()
    assert float(objective.loss(_Fixed(rebuilt), batch)) == pytest.approx(expected, rel=1e-5)
