"""The parallel bytes benchmark: its counted bytes (a real pipeline run on meta) equal the analytic formulas, for
both the head-sharded design and the whole-cache all-to-all design, with an uneven token split."""

import pytest
from core_helpers import video_config
from parallel_helpers import SIX_HEADS

from bench.bench_parallel import count_run, ours_gather, ours_per_layer, whole_cache_per_layer


@pytest.mark.parametrize("n", [2, 3])
def test_counted_bytes_equal_the_analytic_model(n):
    cfg = video_config("histream", num_frames=45, window_chunks=1)  # 64x64: 16 tokens/frame full, 4 low; 4 chunks
    rows = count_run(SIX_HEADS, cfg, n, layers=2)
    dim, e, f = SIX_HEADS.dim, 2, cfg.chunk_frames
    low, high = 4, 16
    head_out = SIX_HEADS.out_dim * 4
    sched = cfg.steps.for_chunk(1)
    assert (sched.n_low, sched.n_high) == (2, 2)
    for row in rows:
        k = row["chunk"]
        writes = 1 if k < cfg.num_chunks - 1 else 0  # the t = 0 pass of each resolution (not after the last chunk)
        passes = {low: 2 + writes, high: 2 + writes}
        ours = sum(c * sum(ours_per_layer(1, f, hw, dim, n, e).values()) for hw, c in passes.items())
        split = {hw: ours_per_layer(1, f, hw, dim, n, e) for hw in passes}
        assert row["qkv_per_layer"] == sum(c * split[hw]["qkv"] for hw, c in passes.items())
        assert row["ours_per_layer"] == ours
        assert row["gather"] == sum(c * ours_gather(1, f, hw, head_out, n, e) for hw, c in passes.items())
        # what each call attends: anchor (3) + the window (at most 1 chunk of 3) + the chunk itself
        attended = f * (min(k, 2) + 1)
        whole = sum(c * whole_cache_per_layer(1, f * hw, attended * hw, dim, n, e) for hw, c in passes.items())
        assert row["whole_cache_per_layer"] == whole
    if n == 2:  # even split: with nothing cached both designs send the same; with anchor + window full, twice
        assert rows[0]["whole_cache_per_layer"] == rows[0]["ours_per_layer"]
        assert rows[2]["whole_cache_per_layer"] == 2 * rows[2]["ours_per_layer"]
