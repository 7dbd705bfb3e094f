"""`make pretrain-demo OBJECTIVE=...`: every command it runs parses with the real command line,
pretrains the asked objective and probes it against a random start at the same crop (the
figures in the README come from these commands)."""

import shlex
import subprocess
from pathlib import Path

import pytest

from training.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def _demo(objective: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-n", "pretrain-demo", f"OBJECTIVE={objective}",
                           "OUT=/data/demo"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def _train_commands(objective: str) -> list:
    printed = _demo(objective).stdout.replace("\\\n", " ")
    parser = build_parser()
    return [parser.parse_args(words[words.index("train") + 1:])
            for words in map(shlex.split, printed.splitlines())
            if "iqa-factory" in words[0] if len(words) > 1 and words[1] == "train"]


@pytest.mark.parametrize("objective", ["regression", "contrastive", "reconstruction",
                                       "restoration"])
def test_each_objectives_demo_pretrains_it_and_probes_it_against_a_random_start(objective):
    commands = _train_commands(objective)
    kinds = [args.command for args in commands]
    finetunes = ["finetune", "finetune"] if objective == "regression" else []
    assert kinds == ["pretrain", "probe", "probe", *finetunes, "compare"]
    pretrain, probed, baseline = commands[:3]
    assert pretrain.objective == objective and pretrain.dataset == ["/data/demo"]
    assert set(pretrain.exclude_refs.split(",")) == {"astronaut", "coffee"}
    assert probed.checkpoint == f"{pretrain.out}/best.pt" and probed.init is None
    assert baseline.init == "random" and baseline.backbone == pretrain.backbone
    assert baseline.crop == pretrain.crop  # the random start is read out at the same size
    for probe in (probed, baseline):
        assert probe.refs == pretrain.exclude_refs and probe.root == "/data/demo"
    assert commands[-1].results[:2] == [f"{probed.out}/results.json",
                                        f"{baseline.out}/results.json"]


def test_an_unknown_objective_is_refused_before_anything_runs():
    result = subprocess.run(["make", "pretrain-demo", "OBJECTIVE=jigsaw", "OUT=."], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "OBJECTIVE must be regression, contrastive" in result.stdout + result.stderr
