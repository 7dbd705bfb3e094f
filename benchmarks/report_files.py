"""Where a benchmark leaves its result: `<stem>.json` (the figures) and `<stem>.md` (for people)."""

import json
from pathlib import Path


def write_report(out: Path, stem: str, result, markdown: str) -> None:
    """Write `result` as out/<stem>.json and `markdown` as out/<stem>.md (making `out`)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown)
