"""bench/bench_decode.py --tiny runs end to end and reports what it claims (no timing assertions)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from bench import bench_decode

pytestmark = pytest.mark.comfy


def test_tiny_decode_benchmark_runs(comfy_modules, tmp_path):
    out = tmp_path / "decode.json"
    report = bench_decode.main(["--tiny", "--inline", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    rows = {r["method"]: r for r in report["results"]}
    has_tae = importlib.util.find_spec("comfy.taesd.taehv") is not None  # ComfyUI >= v0.8.0
    assert set(rows) == {"stream", "stock", "tiled"} | ({"tae_stream", "tae_stock"} if has_tae else set())
    for r in rows.values():
        assert r["pixel_frames"] == 9  # 3 latent frames → 1 + 4 + 4
        assert r["total_s"] > 0 and r["peak_rss_above_start_bytes"] >= 0
        assert r["time_per_frame_s"] == pytest.approx(r["total_s"] / 9)
    for stream, stock in (("stream", "stock"), ("tae_stream", "tae_stock"))[:2 if has_tae else 1]:
        assert rows[stream]["bitwise_equal_to_stock"] and rows[stream]["max_abs_diff_to_stock"] == 0.0
        assert rows[stream]["time_to_first_frame_s"] <= rows[stream]["total_s"]  # first chunk before the whole
        assert rows[stock]["time_to_first_frame_s"] == rows[stock]["total_s"]  # stock returns all frames at once
        # the host's own estimates, as the memory table evaluates them: one chunk never above the whole video
        assert 0 < rows[stream]["estimate_1080p_chunk3_bytes"] <= rows[stream]["estimate_1080p_whole81_bytes"]
    if has_tae:
        from tools.memory_table import BF16, tae_decode_estimate

        assert rows["tae_stream"]["estimate_1080p_chunk3_bytes"] == tae_decode_estimate((1, 16, 3, 136, 240), BF16)
        assert report["ratios"]["tae_stream/stream time_per_frame_s"] == pytest.approx(
            rows["tae_stream"]["time_per_frame_s"] / rows["stream"]["time_per_frame_s"])
    assert report["setup"]["frames"] == 3 and report["setup"]["chunk"] == 2
