"""The training stage: pretrain no-reference IQA models on the shards, fine-tune and evaluate
them on human-rated benchmarks. Launched with torchrun (DDP) or as one process; it reads only
the shard format (shared/spec/shards.md)."""
