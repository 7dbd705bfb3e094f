"""`train compare`: the median test figures of several fine-tuning runs side by side (a
pretrained start against an ImageNet or random one, say)."""

import json
from pathlib import Path

from training.finetune import FIGURES


def table(results: dict[str, Path]) -> str:
    """A text table, one row per run (label -> its results.json)."""
    header = f"{'run':<24}{'start':<40}" + "".join(f"{name.upper():>10}" for name in FIGURES)
    rows = [header, "-" * len(header)]
    for label, path in results.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: run `train finetune` first")
        summary = json.loads(path.read_text())
        start = str(summary.get("start", "?"))[-38:]
        rows.append(f"{label:<24}{start:<40}" + "".join(
            f"{summary['median'][name]:>10.4f}" for name in FIGURES))
    return "\n".join(rows)
