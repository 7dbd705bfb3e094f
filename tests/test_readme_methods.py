"""The README's section per method: every generate command parses with the real command line
into a valid configuration, and every loader example runs, as written, on a small dataset
made with the first command's modes (two embedded photos, both in the train split)."""

import dataclasses
import re
import shlex
from pathlib import Path

import pytest

from labelers import Labeler
from labelers.ensemble import load as load_ensemble
from pipeline import cli
from pipeline.plan import Plan, persist_or_check, split_of
from pipeline.report import merge
from pipeline.sources import list_sources
from pipeline.worker import produce_shard
from shards.storage import Location
from tests.conftest import local_scorer

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = re.compile(r"<!-- method: (\w+) -->\s*```bash\n(.*?)```\s*```python\n(.*?)```",
                     re.DOTALL)
LOOP_VARIABLE = re.compile(r"^for (\w+) in", re.MULTILINE)


def _sections() -> dict[str, tuple[list[str], str]]:
    found = {name: (commands.strip().splitlines(), code)
             for name, commands, code in SECTION.findall(README.read_text())}
    assert set(found) == {"reiqa", "coae", "mtirn"}, "a method section is missing"
    return found


def _config(command: str):
    words = shlex.split(command)
    assert words[:2] == ["iqa-factory", "generate"]
    return cli.run_config(cli.build_parser().parse_args(words[1:]))


def _train_seed() -> int:
    """A seed that puts the first two embedded photos in the train split."""
    first = [source.stem for source in list_sources("embedded")[:2]]
    return next(seed for seed in range(1000)
                if all(split_of(ref_id, seed) == "train" for ref_id in first))


def _make(config, tmp_path: Path, score_images=None) -> str:
    """A two-reference dataset with `config`'s modes, made without Ray (label-free runs need
    no labeler: `score_images` labels the others)."""
    out = str(tmp_path / "dataset")
    config = dataclasses.replace(config, sources="embedded", out=out, limit=2, shard_refs=1,
                                 seed=_train_seed())
    plan = Plan.make(list_sources("embedded"), config)
    location = Location.parse(out)
    persist_or_check(plan, location)
    for index in range(plan.shard_count):
        produce_shard(index, plan, config, score_images, load_ensemble(None), location)
    merge(location, plan)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("method", ["reiqa", "coae", "mtirn"])
def test_the_methods_commands_parse_and_their_loaders_run(method, tmp_path):
    commands, code = _sections()[method]
    configs = [_config(command) for command in commands]
    assert all(not config.labelled for config in configs)  # these methods need no labels
    out = _make(configs[0], tmp_path)
    namespace: dict = {}
    exec(compile(code.replace(configs[0].out, out), f"README:{method}", "exec"), namespace)
    for variable in LOOP_VARIABLE.findall(code):  # every loop of the example ran
        assert variable in namespace, f"the {method} example's `{variable}` loop never ran"



@pytest.mark.slow
def test_the_plain_webdataset_example_reads_every_sample_of_a_dataset(tmp_path):
    """The README's reader without this project: every sample of a finished images dataset,
    each image the H x W x 3 uint8 its record hashes, the distorted ones with their labels."""
    import hashlib

    import pyarrow.parquet as pq

    code = re.search(r"<!-- plain webdataset -->\s*```python\n(.*?)```", README.read_text(),
                     re.DOTALL).group(1)
    config = cli.run_config(cli.build_parser().parse_args(
        ["generate", "--out", "unused", "--distortions", "1,3", "--levels", "2,4",
         "--metrics", "mae,gmsd", "--allow-missing-metrics"]))
    out = _make(config, tmp_path, local_scorer(Labeler(config.metrics, device="cpu")))
    recording = re.sub(r'^(    image = sample\["png"\].*)$',
                       r"\1\n    seen.append((meta, image))", code, flags=re.MULTILINE)
    assert recording != code
    namespace: dict = {"seen": []}
    exec(compile(recording.replace("out/demo", out), "README:plain webdataset", "exec"),
         namespace)
    rows = [row for index in sorted((Path(out) / "shards").glob("*.parquet"))
            for row in pq.read_table(index).to_pylist()]
    assert len(rows) == 2 * (1 + 2 * 2)  # two references, each with 2 types x 2 levels
    assert sorted(meta["key"] for meta, _ in namespace["seen"]) == sorted(
        row["key"] for row in rows)
    for meta, image in namespace["seen"]:
        assert image.dtype.name == "uint8" and image.ndim == 3 and image.shape[2] == 3
        assert hashlib.sha256(image.tobytes()).hexdigest() == meta["sha256"]
    assert namespace["label"][1] in ("jpeg", "white_noise")
    assert all(0 <= meta["quality"] <= 1 for meta, _ in namespace["seen"]
               if meta["kind"] == "distorted")
