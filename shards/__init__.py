"""The on-disk dataset format (shared/spec/shards.md): keys, the shard writer, the readers."""
