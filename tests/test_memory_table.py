"""The memory planner against independent counts (the caches' own planned sizes, real module parameter counts, a
hand count of the fp8 layout), the streaming-decode reservation, and the README table generated from it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from histream_core import CausalWanModel, HiStreamConfig, HiStreamPipeline, WanConfig
from histream_core.memory import (
    cache_bytes,
    chunk_decode_reserve,
    read_buffer_bytes,
    run_bytes,
    vace_weight_bytes,
    weight_bytes,
)
from histream_core.vace import build_vace_modules
from tools import memory_table

MODEL = WanConfig.preset("1.3B")
README = Path(__file__).resolve().parent.parent / "README.md"


def meta_model(dtype=torch.bfloat16) -> CausalWanModel:
    return CausalWanModel(MODEL, device="meta").to(dtype)


def test_fp8_cache_at_1080p_counted_by_hand():
    hi = HiStreamConfig(cache_dtype="fp8_e4m3fn")  # 1920×1088, window 1: anchor 3 + 2 chunks of 3 = 9 frames
    per_token = 2 * 30 * (1536 * 1 + 12 * 4)  # K and V, 30 layers, fp8 values + a float32 scale per head
    assert cache_bytes(MODEL, hi) == {"high": 9 * 136 // 2 * 240 // 2 * per_token,
                                      "low": 9 * 68 // 2 * 120 // 2 * per_token}
    assert read_buffer_bytes(MODEL, hi) == 9 * (8160 + 2040) * 2 * 1536 * 2  # one layer's K and V, bf16
    bf16 = cache_bytes(MODEL, hi.with_(cache_dtype="default"))
    assert cache_bytes(MODEL, hi)["high"] * 256 == bf16["high"] * (128 + 4)


@pytest.mark.parametrize("cache_dtype", ["default", "fp8_e4m3fn"])
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_planner_equals_the_caches_own_planned_sizes(cache_dtype, guidance):
    hi = HiStreamConfig(window_chunks=2, cache_dtype=cache_dtype, guidance_scale=guidance)
    pipe = HiStreamPipeline(meta_model(), hi, device="meta")
    caches = pipe.plan_caches()
    assert [c.planned_nbytes() for c in caches] == [cache_bytes(MODEL, hi)[k] for k in ("low", "high")]
    assert sum(c.planned_read_nbytes(torch.bfloat16) for c in caches) == read_buffer_bytes(MODEL, hi)
    fp8, default = hi.with_(cache_dtype="fp8_e4m3fn"), hi.with_(cache_dtype="default")
    assert run_bytes(MODEL, fp8) < 0.6 * run_bytes(MODEL, default)


def test_weight_counts_equal_the_modules_parameters():
    n = sum(p.numel() for p in CausalWanModel(MODEL, device="meta").parameters())
    assert weight_bytes(MODEL, 2) == 2 * n and weight_bytes(MODEL, 1) == n
    assert abs(n - 1.419e9) < 0.01e9  # Wan2.1-T2V-1.3B: 1.42 B parameters
    vace = build_vace_modules(MODEL, 15, device="meta")
    nv = sum(p.numel() for m in vace.values() for p in m.parameters())
    assert vace_weight_bytes(MODEL, 15, bytes_per_elem=2) == 2 * nv


def test_decode_reservation_is_the_host_estimate_for_one_chunk():
    seen = []

    def estimate(shape, dtype):  # a host's memory_used_decode
        seen.append((shape, dtype))
        return 1234.5

    got = chunk_decode_reserve(estimate, torch.bfloat16, batch=2, chunk_frames=3, latent_hw=(136, 240))
    assert got == 1234 and seen == [((2, 16, 3, 136, 240), torch.bfloat16)]
    hi = HiStreamConfig()
    one_chunk = chunk_decode_reserve(lambda s, _d: memory_table.wan_vae_decode_estimate(s, 2), None, 1,
                                     hi.chunk_frames, hi.latent_size)
    whole = memory_table.wan_vae_decode_estimate((1, 16, hi.latent_frames, *hi.latent_size), 2)
    assert one_chunk == 2200 * 136 * 240 * 64 * 2 and whole == 7000 * 136 * 240 * 64 * 2


def test_readme_table_is_the_generated_one():
    text = README.read_text()
    body = text.split(memory_table.MARK_BEGIN, 1)[1].split(memory_table.MARK_END, 1)[0]
    assert body.strip() == memory_table.table().strip(), "run: python -m tools.memory_table --write"


def test_table_rows_cover_every_combination_and_mark_fits():
    rows = [r for r in memory_table.table().splitlines() if r.startswith("| ") and r[2].isdigit()]
    assert len(rows) == 3 * 2 * 2 * 2 and all(r.count("|") == 11 for r in rows)
    first = rows[0].split("|")[5].strip()  # window 1, bf16 cache, no VACE, cfg 1, bf16 weights, no decoder
    peak = memory_table.peak_bytes(1, "bf16", "bf16", 0, 1.0, "none") / 2**30
    assert first == f"**{peak:.1f}** ✓"
    assert peak == pytest.approx((weight_bytes(MODEL) + run_bytes(MODEL, HiStreamConfig())) / 2**30)
