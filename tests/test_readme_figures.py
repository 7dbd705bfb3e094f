"""The README's headline figures are those the benchmarks last wrote (docs/bench-*.json): a
benchmark run that moves a figure fails here until the README says the new one."""

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_storage  # noqa: E402  (the model the README's costs are)


def _bench(name: str) -> dict:
    return json.loads((ROOT / "docs" / f"bench-{name}.json").read_text())


def _one(pattern: str) -> re.Match:
    found = list(re.finditer(pattern, README))
    assert len(found) == 1, f"README holds {len(found)} matches of {pattern!r}"
    return found[0]


def _as_stated(stated: str, value: float) -> bool:
    """Whether `stated` is `value` to the decimals it is written with."""
    decimals = len(stated.partition(".")[2])
    return float(stated) == round(value, decimals)


def _storage_row(mode: str) -> list[str]:
    """The cells of the README's storage table row of `mode` (its first cell's code span)."""
    row = _one(rf"\n\| `{re.escape(mode)}`[^\n]*").group(0)
    return [cell.strip() for cell in row.strip().strip("|").split(" | ")]


def test_the_embedded_runs_time_is_the_pipeline_benchmarks():
    wall = _bench("pipeline")["runs"][0]["wall_seconds"]
    assert float(_one(r"\(([\d.]+) s in `make bench-pipeline`").group(1)) == wall


def test_the_projected_node_rate_and_hours_are_the_pipeline_benchmarks():
    projection = _bench("pipeline")["projection"]
    assert _as_stated(_one(r"\*\*([\d.]+) labelled images/s\*\*").group(1),
                      projection["node_rate"])
    on_eight = next(row["hours"] for row in projection["rows"] if row["nodes"] == 8)
    assert float(_one(r"\*\*([\d.]+) hours on 8 such nodes\*\*").group(1)) == on_eight
    # the goal, 23.1M images in 3 hours on 8 nodes, as a node's rate, and how far short it is
    goal = _one(r"= ([\d.]+), about 270 per node: ([\d.]+) falls ([\d.]+)% short of ([\d.]+)")
    needed = 23_100_000 / (8 * 3 * 3600)
    assert _as_stated(goal.group(1), needed) and goal.group(4) == goal.group(1)
    assert _as_stated(goal.group(2), projection["node_rate"])
    assert _as_stated(goal.group(3), 100 * (1 - float(goal.group(2)) / needed))


def test_the_overlap_figures_are_the_overlap_benchmarks():
    bench = _bench("overlap")
    speed_up = _one(r"it labels \*\*([\d.]+) times\*\*\nas fast as one reference at a time "
                    r"\(([\d.]+) against ([\d.]+) images/s")
    assert float(speed_up.group(1)) == bench["speed_up"]
    rates = bench["median_images_per_s"]
    assert (float(speed_up.group(2)), float(speed_up.group(3))) == (
        rates["next made meanwhile"], rates["one reference at a time"])


def test_the_all_ten_gpu_rate_is_the_device_benchmarks():
    measured = _bench("gpu")["labelers"]["all_ten"]["images_per_s"]
    assert _as_stated(_one(r"\*\*all ten together ([\d.]+) images/s\*\*").group(1), measured)


@pytest.mark.parametrize("mode, key", [("images", "images"), ("recipes", "recipes"),
                                       ("hybrid", "hybrid"), ("hybrid --keep-pngs", "hybrid_kept")])
def test_the_storage_table_is_the_storage_benchmarks(mode, key):
    bench = _bench("storage")
    if key == "hybrid_kept":
        mode += " " + ",".join(map(str, bench["keep_pngs"]))
    cells = _storage_row(mode)
    loader = bench["loader_samples_per_s"][key]["2"]
    assert _as_stated(cells[-1].removesuffix(" samples/s"), loader)
    sizes = bench["sizes"]
    assert _as_stated(re.match(r"([\d.]+) MB", cells[2]).group(1), sizes[key]["total"] / 1e6)
    if key != "images":
        smaller = re.search(r"\(([\d.]+) times smaller\)", cells[2]).group(1)
        assert _as_stated(smaller, sizes["images"]["total"] / sizes[key]["total"])
    paper = re.fullmatch(r"([\d.]+) TB(?: \(([\d.]+) times\))?", cells[3])
    assert _as_stated(paper.group(1), sizes[key]["paper_scale_tb"])
    assert key == "images" or _as_stated(paper.group(2), sizes[key]["paper_times_smaller"])


def test_the_kept_sets_share_of_the_images_loader_is_the_storage_benchmarks():
    share = round(100 * _bench("storage")["measured_share"]["hybrid_kept"], 1)
    assert float(_one(r"types' PNGs, [\d.]+ times at ([\d.]+)%").group(1)) == share
    assert float(_one(r"it reaches ([\d.]+)% at").group(1)) == share


def test_the_distortion_benchmarks_median_and_slowest_scenarios():
    summary = _bench("distortions")["summary"]
    assert int(_one(r"median scenario (\d+) ms").group(1)) == round(summary["median_total_ms"])
    slowest = int(_one(r"slowest non-learned (\d+) ms").group(1))
    assert slowest == round(summary["max_classic_total_ms"])


def test_the_cpu_labelling_figures_are_the_labeler_benchmarks():
    cpu = _bench("labelers")["runs"][0]
    assert cpu["device"] == "cpu"
    together = _one(r"all\nten together ([\d.]+) images/s against pyiqa's ([\d.]+) for the nine "
                    r"it has \(([\d.]+)x\)")
    for stated, value in zip(together.groups(), (cpu["all_ten_batch_16"],
                                                 cpu["pyiqa_all_available"],
                                                 cpu["all_ten_ratio"]), strict=True):
        assert _as_stated(stated, value)
    passes = _one(r"label \*\*([\d.]+) images/s\*\* in\ntheir own passes against ([\d.]+) in "
                  r"passes of 16")
    assert _as_stated(passes.group(1), cpu["cpu_passes"]["labeler"]["own"])
    assert _as_stated(passes.group(2), cpu["cpu_passes"]["labeler"]["16"])


def test_the_object_store_read_figures_are_the_reads_benchmarks():
    bench = _bench("reads")
    s3 = next(figures for store, figures in bench["stores"].items() if store.startswith("S3"))
    threads = bench["read_threads"]
    stated = _one(r"a resume's check\nprojects to ([\d.]+) minutes at the paper's ([\d,]+) "
                  r"shards where one read at a time took ([\d.]+), and\nopening a dataset to "
                  r"([\d.]+) where it took ([\d.]+)")
    check, opening = s3["resume check"], s3["open for reading (shard_states)"]
    assert int(stated.group(2).replace(",", "")) == bench["paper_shards"]
    for text, value in zip(stated.group(1, 3, 4, 5),
                           (check[f"paper_minutes_{threads}_threads"],
                            check["paper_minutes_1_thread"],
                            opening[f"paper_minutes_{threads}_threads"],
                            opening["paper_minutes_1_thread"]), strict=True):
        assert _as_stated(text, value)
    assert f"run {threads} at once" in README and f"{bench['latency_ms']:g} ms" in README


def test_the_training_figures_are_the_device_benchmarks():
    gpu = _bench("gpu")
    rate = {(run["backbone"], run["precision"]): run["images_per_s"]
            for run in gpu["training"]["runs"]}
    stated = _one(r"resnet50 at 224 trains at \*\*([\d.]+)\nimages/s\*\* in bf16 with "
                  r"channels_last \(([\d.]+) in float32\), nasnetalarge at 331 at \*\*([\d.]+)"
                  r"\nimages/s\*\* in bf16 \(([\d.]+) GiB at batch 64; ([\d.]+) images/s and "
                  r"([\d.]+) GiB in float32\)")
    peak = {run["precision"]: run["peak_mb"] for run in gpu["training"]["runs"]  # MiB
            if run["backbone"] == "nasnetalarge"}
    for text, value in zip(stated.groups(), (
            rate["resnet50", "bf16"], rate["resnet50", "fp32"], rate["nasnetalarge", "bf16"],
            peak["bf16"] / 1024, rate["nasnetalarge", "fp32"], peak["fp32"] / 1024), strict=True):
        assert _as_stated(text, value)
    loader = gpu["loader"]["images_per_s"]
    assert _as_stated(_one(r"shard loader feeds \*\*([\d.]+) images/s\*\*").group(1), loader)
    half = 0.4 <= loader / rate["resnet50", "bf16"] <= 0.6  # "about half the rate"
    assert half, "README calls the loader about half a resnet50's rate in bf16"


def test_the_storage_goals_paragraph_is_the_storage_benchmarks():
    bench = _bench("storage")
    sizes, measured = bench["sizes"], bench["measured_share"]
    times = {key: sizes["images"]["total"] / sizes[key]["total"] for key in sizes}
    hybrid = _one(r"plain hybrid is ([\d.]+) times smaller at (\d+)%")
    assert _as_stated(hybrid.group(1), times["hybrid"])
    assert int(hybrid.group(2)) == round(100 * measured["hybrid"])
    recipes = _one(r"\(recipes: ([\d.]+) times, ([\d.]+)%\)")
    assert _as_stated(recipes.group(1), times["recipes"])
    assert _as_stated(recipes.group(2), 100 * measured["recipes"])
    paper = _one(r"`recipes` is (\d+) times smaller than\n`images` at the paper's scale")
    assert int(paper.group(1)) == round(sizes["recipes"]["paper_times_smaller"])


def test_the_storage_loader_model_is_the_storage_benchmarks():
    bench = _bench("storage")
    model = bench_storage.loader_model(bench)
    costs = _one(r"A replay costs ([\d.]+) ms on\naverage, a PNG decode ([\d.]+) ms, and the "
                 r"loader's other work ([\d.]+) ms")
    for text, value in zip(costs.groups(), (model["replay_ms"], model["decode_ms"],
                                            model["other_ms"]), strict=True):
        assert _as_stated(text, value)
    stated = _one(r"within ([\d.]+) points of the measured one \(recipes\n([\d.]+)% of the "
                  r"images loader's rate against ([\d.]+)% measured, hybrid ([\d.]+) against "
                  r"([\d.]+), kept\n([\d.]+) against ([\d.]+)\)")
    modes = ("recipes", "hybrid", "hybrid_kept")
    pairs = [(bench["predicted_share"][key], bench["measured_share"][key]) for key in modes]
    for (predicted, measured), (said_predicted, said_measured) in zip(
            pairs, zip(stated.groups()[1::2], stated.groups()[2::2], strict=True), strict=True):
        assert _as_stated(said_predicted, 100 * predicted)
        assert _as_stated(said_measured, 100 * measured)
    assert round(max(abs(p - m) for p, m in pairs) * 100, 1) <= float(stated.group(1))
    notes = (ROOT / "docs" / "shards-spec-notes.md").read_text()
    said = re.search(r"the prediction is within ([\d.]+) points of the measured rates", notes)
    assert float(said.group(1)) == float(stated.group(1))  # the spec notes say the same


def test_the_pretrain_demo_table_is_the_demo_summarys():
    """Every row of docs/pretrain-demo.json (make pretrain-demo-summary) stands in the README's
    table as written, and the table holds no other row."""
    rows = json.loads((ROOT / "docs" / "pretrain-demo.json").read_text())
    stated = re.findall(r"\n\| `(\w+)` \| (probe|fine-tune) \| ([^\n]+) \|", README)
    assert len(stated) == len(rows)
    for row, (objective, read_out, cells) in zip(rows, stated, strict=True):
        assert (objective, read_out) == (row["objective"], row["read_out"])
        *figures, won = cells.split(" | ")
        for text, key in zip(figures, ("srocc", "plcc", "krcc", "rmse", "baseline_srocc"),
                             strict=True):
            assert _as_stated(text, row[key])
        assert won == f"{row['splits_won']} of {row['splits']}"


def test_the_learned_denoisers_replay_cost_is_the_storage_benchmarks():
    """The README's range of a learned-denoiser version's replay (types 8-12) is the
    storage benchmark's least and most, to the millisecond."""
    stated = _one(r"\((\d+)-(\d+) ms each on this CPU in docs/bench-storage\.json")
    replays = [row["replay_ms"] for row in _bench("storage")["replay"] if 8 <= row["id"] <= 12]
    assert len(replays) == 5
    assert (int(stated.group(1)), int(stated.group(2))) == (round(min(replays)),
                                                            round(max(replays)))


def test_a_shards_spill_is_its_versions_tar_bytes_in_the_storage_benchmarks():
    """The spill's size the README gives is 16 references x 165 versions of the storage
    benchmark's images-mode tar bytes a version."""
    stated = _one(r"about its tar's\n([\d.]+) GB at 16 references of 512x384: ([\d,]+) bytes a "
                  r"version in\n\[docs/bench-storage\.md\]")
    per_version = _bench("storage")["sizes"]["images"]["tar_bytes_per_version"]
    assert int(stated.group(2).replace(",", "")) == per_version
    assert _as_stated(stated.group(1), 16 * 165 * per_version / 1e9)
