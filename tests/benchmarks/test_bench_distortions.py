"""The distortion benchmark's report says where the learned denoiser's network ran."""

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_report_says_where_the_learned_denoiser_ran(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    # the module sets OMP_NUM_THREADS where unset: kept to this test
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    from bench_distortions import markdown

    result = json.loads((ROOT / "docs" / "bench-distortions.json").read_text())
    assert {r["device"] for r in result["rows"] if r["learned"]} == {"cpu"}
    on_cpu = markdown(result)
    assert "image on one CPU thread, mean over" in on_cpu
    assert "ms on average on this CPU; they belong on the GPU workers" in on_cpu
    for row in result["rows"]:
        if row["learned"]:
            row["device"] = "cuda"
    result["machine"]["gpu"] = "NVIDIA H100"
    on_gpu = markdown(result)
    assert "this CPU" not in on_gpu
    assert "image on one CPU thread (the learned denoiser's network on cuda), mean" in on_gpu
    assert "ms on average with their network on cuda (NVIDIA H100), as on the GPU workers" \
        in on_gpu
