"""The `iqa-factory` command, above the rooms: it hands `train ...` to the training stage and
everything else to the pipeline, so neither room imports the other."""
