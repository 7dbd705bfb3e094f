"""`torchrun ... -m tests.training.counting_ranks LOG TRAIN-ARGS...`: `iqa-factory train` with
each read of a dataset's distorted index (training.shard_data.distorted_index, as pretraining
and label-free pretraining call it) written to LOG as the reading rank's number, one line each."""

import os
import sys

from training import label_free, pretrain
from training.cli import main


def counted(read, log: str):
    def reading(*args, **kwargs):
        with open(log, "a") as file:
            file.write(f"{os.environ['RANK']}\n")
        return read(*args, **kwargs)
    return reading


if __name__ == "__main__":
    for module in (pretrain, label_free):
        module.distorted_index = counted(module.distorted_index, sys.argv[1])
    sys.exit(main(sys.argv[2:]))
