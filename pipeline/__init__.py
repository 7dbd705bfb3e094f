"""The generation pipeline: sources, size policy, shard plan, workers, Ray driver, command line."""
