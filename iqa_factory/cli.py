"""`iqa-factory COMMAND ...`: `train` goes to training.cli (its own parser, no Ray), every
other command to pipeline.cli."""

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        from training.cli import main as train_main

        return train_main(argv[1:])
    from pipeline.cli import main as pipeline_main

    return pipeline_main(argv)
