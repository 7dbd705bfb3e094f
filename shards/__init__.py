"""The on-disk dataset format (shared/spec/shards.md): keys, the shard writer, the readers.

`shards.open_dataset(path)` is the reader (shards.dataset); imported on first use, so the
writer's users do not load webdataset."""


def __getattr__(name: str):
    if name in ("open_dataset", "Dataset", "Order"):
        from shards import dataset, order

        return getattr(order if name == "Order" else dataset, name)
    raise AttributeError(f"module 'shards' has no attribute {name!r}")
