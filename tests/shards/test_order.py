"""shards.order's documented rules, checked on its stages alone (no dataset): a rank lies in
[0, world_size); one pass gives each shard to exactly one rank; the shard list is shuffled per
(seed, epoch); interleaved shards mix item by item, each keeping its own order; the share that
spreads an epoch is per_worker / (interleave x items per shard); each rank shuffles its items with
its own draws."""

from itertools import pairwise

import pytest
import webdataset as wds

from shards.order import Order, interleaving, pipeline, shard_stages, share_to_spread

URLS = [f"shard-{number:02d}.tar" for number in range(8)]


def _shards_read(seed: int, order: Order) -> list[str]:
    return [source["url"] for source in wds.DataPipeline(*shard_stages(URLS, seed, order))]


@pytest.mark.parametrize(("rank", "world_size"), [(1, 1), (2, 2), (-1, 2)])
def test_a_rank_outside_its_world_is_refused(rank, world_size):
    with pytest.raises(ValueError, match=r"is not in \[0, "):
        Order(rank=rank, world_size=world_size)


@pytest.mark.parametrize("world_size", [2, 3])
def test_one_pass_gives_each_shard_to_exactly_one_rank(world_size):
    read = [_shards_read(0, Order(rank=rank, world_size=world_size))
            for rank in range(world_size)]
    assert sorted(url for urls in read for url in urls) == URLS
    assert all(len(urls) in (len(URLS) // world_size, -(-len(URLS) // world_size))
               for urls in read)


def test_the_shard_list_is_shuffled_anew_each_epoch():
    """Order: 'the shard list shuffled per (seed, epoch)': 8 shards over 5 epochs are not read
    in one order every epoch (8! orders), each epoch every shard once."""
    epochs = [_shards_read(3, Order(epoch=epoch, shuffle=1)) for epoch in range(5)]
    assert all(sorted(urls) == URLS for urls in epochs)
    assert len({tuple(urls) for urls in epochs}) > 1
    assert epochs[0] == _shards_read(3, Order(epoch=0, shuffle=1))  # (seeded: the same again)


def test_interleaved_shards_mix_item_by_item_each_in_its_own_order():
    shards = [[f"{name}{number}" for number in range(20)] for name in "abc"]
    merged = list(interleaving(5, Order(interleave=2))(iter(map(iter, shards))))
    assert sorted(merged) == sorted(item for shard in shards for item in shard)
    for shard in shards:
        assert [item for item in merged if item in shard] == shard
    switches = sum(first[0] != second[0] for first, second in pairwise(merged))
    assert switches > len(shards)  # read shard after shard, they would switch twice


def test_the_spreading_share_of_one_shard_is_the_epoch_over_its_items():
    """share_to_spread: per_worker / (interleave x items per shard); one shard holds them all."""
    assert share_to_spread(10, 1, 100, 1) == pytest.approx(10 / 100)
    assert share_to_spread(10, 2, 100, 1) == pytest.approx(10 / (2 * 100))


def _numbered_items(sources):
    """Each shard's 10 items numbered by their place in the rank's stream (0, 1, ...)."""
    place = 0
    for _ in sources:
        for _ in range(10):
            yield place
            place += 1


def test_each_rank_shuffles_its_items_with_its_own_draws():
    """Order: 'every random choice is a function of (seed, epoch, rank, worker)': two ranks
    each reading 40 items through a 6-item shuffle buffer, seeded alike, send them in unlike
    orders (one seed for every rank would move item n of each rank alike)."""
    orders = [list(pipeline(URLS, [_numbered_items], 7, Order(shuffle=6, rank=rank,
                                                                  world_size=2)))
              for rank in (0, 1)]
    assert all(sorted(order) == list(range(40)) for order in orders)
    assert orders[0] != list(range(40)) and orders[0] != orders[1]
