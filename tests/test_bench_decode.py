"""bench/bench_decode.py --tiny runs end to end and reports what it claims (no timing assertions)."""

from __future__ import annotations

import json

import pytest

from bench import bench_decode

pytestmark = pytest.mark.comfy


def test_tiny_decode_benchmark_runs(comfy_modules, tmp_path):
    out = tmp_path / "decode.json"
    report = bench_decode.main(["--tiny", "--inline", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    rows = {r["method"]: r for r in report["results"]}
    assert set(rows) == {"stream", "stock", "tiled"}
    for r in rows.values():
        assert r["pixel_frames"] == 9  # 3 latent frames → 1 + 4 + 4
        assert r["total_s"] > 0 and r["peak_rss_above_start_bytes"] >= 0
    assert rows["stream"]["bitwise_equal_to_stock"] and rows["stream"]["max_abs_diff_to_stock"] == 0.0
    assert rows["stream"]["time_to_first_frame_s"] <= rows["stream"]["total_s"]  # first chunk before the whole
    assert rows["stock"]["time_to_first_frame_s"] == rows["stock"]["total_s"]  # stock returns all frames at once
    assert report["setup"]["frames"] == 3 and report["setup"]["chunk"] == 2
