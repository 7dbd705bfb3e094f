"""The rooms' import direction (shared/design/architecture.md): pipeline calls distortions,
labelers and shards; training reads shards; shards may call distortions (replay) and labelers
(the SSIM map); nothing imports pipeline or training but the entry point above them. Every
import statement counts, those inside functions too."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAY_IMPORT = {
    "distortions": set(),
    "labelers": {"distortions"},  # colour weights and kernels
    "shards": {"distortions", "labelers"},
    "pipeline": {"distortions", "labelers", "shards"},
    "training": {"distortions", "labelers", "shards"},
    "iqa_factory": {"pipeline", "training"},
}


def _imported_rooms(path: Path) -> set[str]:
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            rooms |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            rooms.add(node.module.partition(".")[0])
    return rooms & set(MAY_IMPORT)


def test_no_room_imports_a_room_above_it():
    crossings = [f"{path.relative_to(ROOT)} imports {other}"
                 for room, allowed in MAY_IMPORT.items()
                 for path in sorted((ROOT / room).rglob("*.py"))
                 for other in sorted(_imported_rooms(path) - allowed - {room})]
    assert crossings == []


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from pipeline.sizing import cover_and_crop\n"
                      "    import training.cli\n")
    assert _imported_rooms(module) == {"pipeline", "training"}
