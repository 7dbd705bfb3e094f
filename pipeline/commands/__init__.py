"""User commands that are not the generation run itself (materialize, ...)."""
