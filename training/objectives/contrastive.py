"""Re-IQA's quality-aware contrastive objective on MoCo-v2 (He et al. 2020, Chen et al. 2020;
Saha et al. 2023): a query encoder (the backbone and a 2-layer MLP projection), a key encoder
that is its momentum copy, a queue of past keys as negatives, InfoNCE with the positive at
index 0. Positives are the two overlapping views of one image (the reference, or one of its
distorted versions: a chunk gives 1 + n images), at full and at half scale; every other image
and distortion is a negative through the queue. Keys are gathered from every rank before they
are enqueued, so every rank holds the same queue.

Shuffling BN (MoCo, section 3.3): with batch statistics the keys of a batch computed together
with their queries' batch would let the model find its positives through those statistics; the
key batch of every rank is gathered, shuffled, cut into one part per rank (times `key_splits`
parts on each rank, which emulates that many devices on one), each part encoded alone, and the
keys put back in order. On one rank with `key_splits` 1 there is nothing to shuffle."""

import copy
from collections.abc import Callable
from itertools import chain

import torch
import torch.nn.functional as F
from torch import distributed as dist
from torch import nn

from training.distributed import Context, gather_rows
from training.model import pooled_width
from training.objectives.base import (
    GroupRequest,
    Objective,
    ObjectiveConfig,
    flatten_members,
)
from training.precision import Inputs

CHUNK_VERSIONS = 11  # Re-IQA's n: the versions of a chunk where --versions is not given


def check_queue(config: ObjectiveConfig, batch_size: int) -> None:
    """A ValueError, before any data is read, where the keys one step enqueues (one for every
    image of the global batch's chunks, the reference and its versions, at each scale) would
    not fit the queue."""
    images, scales = 1 + (config.versions or CHUNK_VERSIONS), 1 + config.half_scale
    keys = batch_size * images * scales
    if keys > config.queue_size:
        raise ValueError(
            f"--queue-size {config.queue_size} is smaller than the keys one step enqueues: "
            f"{keys} ({batch_size} chunks of --batch-size x {images} images (the reference "
            f"and --versions) x {scales} scale(s)): raise --queue-size to at least {keys} or "
            "lower --batch-size or --versions")


def projection_head(width: int, dim: int) -> nn.Sequential:
    """MoCo-v2's MLP: features -> width -> ReLU -> dim."""
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, dim))


def info_nce(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor,
             temperature: float) -> torch.Tensor:
    """The mean over the batch of -log(exp(q.k+ / T) / (exp(q.k+ / T) + sum_queue exp(q.n / T)))
    for unit vectors q (B, d), their positive keys k+ (B, d) and the queue's negatives (K, d)."""
    positive = (query * key).sum(dim=1, keepdim=True)
    logits = torch.cat([positive, query @ queue.T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(query), dtype=torch.long,
                                               device=query.device))


def in_chunk_info_nce(query: torch.Tensor, key: torch.Tensor, members: int,
                      temperature: float) -> torch.Tensor:
    """InfoNCE of each query against the keys of its own chunk (`members` rows in a row: the
    reference and its versions of other types), its own the positive: the validation figure,
    which depends neither on the training queue's contents nor on how the chunks fall into
    batches and ranks."""
    queries, keys = query.view(-1, members, query.shape[1]), key.view(-1, members, key.shape[1])
    logits = queries @ keys.transpose(1, 2) / temperature  # chunk x query x key
    own = torch.arange(members, device=query.device).repeat(len(queries))
    return F.cross_entropy(logits.reshape(-1, members), own)


def shuffled_keys(encode: Callable[[torch.Tensor], torch.Tensor], views: torch.Tensor,
                  context: Context, splits: int = 1) -> torch.Tensor:
    """encode(views) with MoCo's shuffling BN: every rank's views gathered (rank order), put in
    rank 0's random order, cut into world size x `splits` parts, this rank's parts encoded one
    by one, every rank's keys gathered and put back in the original order; this rank's rows
    returned. The keys depend on the global batch, rank 0's generator and world size x splits
    only: two ranks with 1 split give what one rank with 2 gives."""
    parts = context.world_size * splits
    if parts == 1:
        return encode(views)
    everyone = gather_rows(context, views)
    if len(everyone) < 2 * parts:
        raise ValueError(f"shuffling BN cuts {len(everyone)} keys into {parts} parts "
                         "(ranks x --key-splits): each needs at least 2; raise the batch")
    order = torch.randperm(len(everyone)).to(everyone.device)
    if context.distributed:
        dist.broadcast(order, src=0)
    mine = torch.tensor_split(everyone[order], parts)[context.rank * splits:
                                                      (context.rank + 1) * splits]
    shuffled = gather_rows(context, torch.cat([encode(part) for part in mine]))
    keys = torch.empty_like(shuffled)
    keys[order] = shuffled
    owner = gather_rows(context, torch.full((len(views),), context.rank, device=views.device))
    return keys[owner == context.rank]


class MoCo(nn.Module):
    """backbone + projection (trained), momentum.backbone + momentum.projection (their
    exponential moving average), the queue of unit keys and its write position (buffers:
    checkpointed, so a run resumes with them)."""

    def __init__(self, backbone: nn.Module, dim: int, queue_size: int):
        super().__init__()
        self.backbone = backbone
        self.projection = projection_head(pooled_width(backbone), dim)
        self.momentum = nn.ModuleDict({"backbone": copy.deepcopy(backbone),
                                       "projection": copy.deepcopy(self.projection)})
        self.momentum.requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long))

    def forward(self, *views: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Unit queries of each batch of views (one forward for all, as DDP wants)."""
        return tuple(F.normalize(self.projection(self.backbone(view)), dim=1)
                     for view in views)

    @torch.no_grad()
    def keys(self, views: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.momentum["projection"](self.momentum["backbone"](views)), dim=1)

    @torch.no_grad()
    def shuffled_keys(self, views: torch.Tensor, context: Context, splits: int) -> torch.Tensor:
        """The keys with shuffling BN while training; plain in eval mode (running
        statistics, and validation may run on one rank alone)."""
        if not self.training:
            return self.keys(views)
        return shuffled_keys(self.keys, views, context, splits)

    def _pairs(self):
        own = chain(self.backbone.parameters(), self.projection.parameters())
        copies = chain(self.momentum["backbone"].parameters(),
                       self.momentum["projection"].parameters())
        return zip(copies, own, strict=True)

    @torch.no_grad()
    def momentum_update(self, momentum: float) -> None:
        """theta_k <- m theta_k + (1 - m) theta_q, for every weight of the key encoder."""
        for key_weight, query_weight in self._pairs():
            key_weight.mul_(momentum).add_(query_weight.detach(), alpha=1 - momentum)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write the keys over the oldest ones, from the pointer on, wrapping at the end."""
        size = len(self.queue)
        if len(keys) > size:
            raise ValueError(f"{len(keys)} keys per step do not fit a queue of {size}: raise "
                             "--queue-size or lower the batch")
        index = (self.queue_pointer + torch.arange(len(keys), device=keys.device)) % size
        self.queue[index] = keys.to(self.queue.dtype)
        self.queue_pointer.copy_((self.queue_pointer + len(keys)) % size)


def query_and_key_views(images: torch.Tensor, members: int
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(queries, keys) of chunks' images' two views (N x 2 x ..., each chunk's `members`
    images in a row): the first view is the query of a chunk's even members and the key of
    its odd ones, so half of a chunk swaps its two crops (Re-IQA) and the query is not always
    the upper one (by place in the chunk: the same whichever rank holds it)."""
    place = torch.arange(len(images), device=images.device) % members
    odd = (place % 2 == 1).view(-1, 1, 1, 1)
    first, second = images[:, 0], images[:, 1]
    return torch.where(odd, second, first), torch.where(odd, first, second)


def unshuffled_notice(backbone: nn.Module, context: Context, splits: int) -> tuple[str, ...]:
    """Where shuffling BN does nothing (one rank, one key part) on a backbone with batch
    norm: its keys and queries are normalised with the statistics of one same batch, the leak
    MoCo's shuffling closes (a query can find its key through them)."""
    if context.world_size * splits > 1 or not any(
            isinstance(module, nn.modules.batchnorm._BatchNorm) for module in backbone.modules()):
        return ()
    return ("one rank and --key-splits 1: keys are encoded with the batch-norm statistics "
            "of their queries' batch (MoCo's shuffling BN does nothing); --key-splits 2 to 8 "
            "shuffles them into that many parts",)


class Contrastive(Objective):
    name = "contrastive"
    rank_batch_norm = True  # MoCo's shuffling BN: each rank's keys apart

    def __init__(self, backbone: nn.Module, config: ObjectiveConfig, crop: int, inputs: Inputs,
                 context: Context):
        self.config, self.inputs, self.context = config, inputs, context
        self.model = MoCo(backbone, config.projection_dim, config.queue_size)
        # Re-IQA's chunk: the reference and versions of as many DIFFERENT types (n = 11)
        self.request = GroupRequest("chunk", crop, config.versions or CHUNK_VERSIONS, views=2,
                                    half_scale=config.half_scale, distinct_types=True)
        self.pending: list[torch.Tensor] = []  # this step's keys, one tensor per scale
        self.notices = unshuffled_notice(backbone, context, config.key_splits)

    def loss(self, network: nn.Module, batch: dict) -> torch.Tensor:
        """InfoNCE of each image's query view against its key view and the queue,
        averaged over the images of both scales; the keys wait for `after_step`. In eval
        mode (validation) the negatives are the other keys of the image's chunk instead."""
        scales = [flatten_members(batch)]
        if self.config.half_scale:
            scales.append(flatten_members(batch, "_half"))
        members = 1 + batch["distorted"].shape[1]  # the reference and its versions
        views = [query_and_key_views(images, members) for images in scales]
        with self.inputs.autocast():
            queries = network(*(self.inputs(query) for query, _ in views))
            keys = [self.model.shuffled_keys(self.inputs(key), self.context,
                                             self.config.key_splits) for _, key in views]
        queries, keys = [q.float() for q in queries], [k.float() for k in keys]
        if self.model.training:
            queue = self.model.queue.clone().detach()
            losses = [info_nce(q, k, queue, self.config.temperature) * len(q)
                      for q, k in zip(queries, keys, strict=True)]
            self.pending = keys
        else:  # validation: against the chunk's own keys; nothing is enqueued
            losses = [in_chunk_info_nce(q, k, members, self.config.temperature) * len(q)
                      for q, k in zip(queries, keys, strict=True)]
        return sum(losses) / sum(len(q) for q in queries)

    def after_step(self) -> None:
        """MoCo's key-encoder update and enqueue (done after the step: the next keys see the
        same encoder as MoCo's update-then-encode). Each scale's keys of every rank in rank
        order, full scale first: the queue one process with the global batch would hold."""
        self.model.momentum_update(self.config.moco_momentum)
        self.model.enqueue(torch.cat([gather_rows(self.context, keys)
                                      for keys in self.pending]))
        self.pending = []

    def summary(self) -> dict:
        return {"objective": self.name, "temperature": self.config.temperature,
                "queue_size": self.config.queue_size,
                "moco_momentum": self.config.moco_momentum,
                "half_scale": self.config.half_scale, "key_splits": self.config.key_splits,
                "chunk_versions": self.request.versions}
