"""bench/bench_cpu.py --quick: the counted FLOPs against independent hand counts (no timing assertions).

Hand counts here are written from the Wan2.1 shapes alone (histream_core/config.py WanConfig): per block, per token, q/k/v/o and the
cross-attention q/o are d×d matmuls (the text K/V are computed once), the FFN is d×ffn and ffn×d; attention costs
2·Sq·Sk·d for q·kᵀ and as much for p·v. A matmul of m×k by k×n is 2·m·k·n FLOPs.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json

import pytest

from bench import bench_cpu

D, FFN, TEXT_DIM = 1536, 8960, 4096  # Wan2.1-1.3B
TEXT = 512
TOK_HI = (1088 // 16) * (1920 // 16)  # 1080p: 8x VAE, 2x2 patches → 68 x 120 = 8,160 tokens per latent frame
TOK_LO = (544 // 16) * (960 // 16)  # half width and height: 2,040
CHUNK = 3


def hand_linear(tokens: int, layers: int) -> int:
    per_block = 2 * tokens * (4 * D * D) + 2 * tokens * (2 * D * D) + 2 * tokens * (2 * D * FFN)
    return layers * per_block


def hand_attention(queries: int, keys: int, layers: int) -> int:
    return layers * (2 * queries * keys * D + 2 * queries * keys * D)


@pytest.fixture(scope="module")
def res(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "cpu.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
        # 1 thread: a 2-thread OpenMP pool stalls badly when another process shares the 2 cores (no timing is
        # asserted here; the committed numbers come from the 2-thread default)
        assert bench_cpu.main(["--quick", "--threads", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    data["_printed"] = printed.getvalue()
    return data


def configs(res, preset):
    return [c for c in res["flops"]["configs"] if c["preset"] == preset]


def test_one_full_res_chunk_forward_of_the_real_1_3b_matches_hand_count(res):
    one = res["flops"]["one_chunk_30_blocks"]
    assert one["num_layers"] == 30
    first = one["passes"][0]  # chunk 0, first step: 3 latent frames attend only themselves
    n = CHUNK * TOK_HI
    assert first["query_tokens"] == n == 24_480 and first["key_tokens"] == n
    f = first["flops"]
    assert f["attn_self"] == hand_attention(n, n, 30)
    assert f["attn_cross"] == hand_attention(n, TEXT, 30)
    assert f["linear"] == pytest.approx(hand_linear(n, 30), rel=0.01)  # + head, timestep MLP
    hand_total = hand_linear(n, 30) + hand_attention(n, n, 30) + hand_attention(n, TEXT, 30)
    assert f["total"] == pytest.approx(hand_total, rel=0.01)
    # a 1-chunk video: 4 denoising passes, and no cache pass after the last chunk
    assert [p["kind"] for p in one["passes"]] == ["denoise"] * 4
    assert all(p["flops"] == f for p in one["passes"])


def test_text_kv_computed_once(res):
    one = res["flops"]["one_chunk_30_blocks"]
    text_mlp = 2 * TEXT * TEXT_DIM * D + 2 * TEXT * D * D
    cross_kv = 30 * 2 * (2 * TEXT * D * D)
    assert one["text_setup"]["total"] == text_mlp + cross_kv


def test_windowed_passes_attend_anchor_plus_window(res):
    layers = res["flops"]["model"]["num_layers"]
    hs = configs(res, "histream")[0]
    assert hs["window"] == 1
    chunk5 = [p for p in hs["passes"] if p["chunk"] == 5]
    # 2 low + 2 high denoising steps, then a clean pass into each cache
    assert [(p["kind"], p["stage"]) for p in chunk5] == [("denoise", "low")] * 2 + [("denoise", "high")] * 2 + [
        ("cache", "low"), ("cache", "high")]
    for p in chunk5:
        tok = TOK_LO if p["stage"] == "low" else TOK_HI
        frames = CHUNK + CHUNK * 1 + CHUNK  # anchor (first chunk) + 1 window chunk + the chunk itself
        assert p["query_tokens"] == CHUNK * tok and p["key_tokens"] == frames * tok
        assert p["flops"]["attn_self"] == hand_attention(CHUNK * tok, frames * tok, layers)
        assert p["flops"]["linear"] == pytest.approx(hand_linear(CHUNK * tok, layers), rel=0.01)


def test_histream_uses_fewer_flops_than_self_forcing(res):
    (sf,), (hs,), (hp,) = configs(res, "self_forcing"), configs(res, "histream"), configs(res, "histream_plus")
    assert sf["latent_frames"] == hs["latent_frames"] == hp["latent_frames"]
    assert hp["total"]["total"] < hs["total"]["total"] < sf["total"]["total"]
    assert hs["vs_self_forcing"] == pytest.approx(sf["total"]["total"] / hs["total"]["total"])
    assert hs["vs_self_forcing"] > 2 and hp["vs_self_forcing"] > hs["vs_self_forcing"]
    assert hp["vs_wan21"] > hs["vs_wan21"] > sf["vs_wan21"] > 10


def test_flops_per_chunk_flat_with_window_growing_without(res):
    (sf,), (hs,), (hp,) = configs(res, "self_forcing"), configs(res, "histream"), configs(res, "histream_plus")
    n = len(hs["chunks"])
    assert n == 9
    for c in (hs, hp):  # window 1 is full from chunk 2 on; the last chunk skips its cache passes
        assert c["chunks"][2] == c["chunks"][7]
        assert all(c["chunks"][k] == c["chunks"][2] for k in range(2, n - 1))
        assert c["chunks"][n - 1]["total"] < c["chunks"][2]["total"]
    totals = [c["total"] for c in sf["chunks"][: n - 1]]
    assert all(a < b for a, b in itertools.pairwise(totals))  # every chunk attends a longer cache
    # growth is exactly the attention over one more chunk of keys, 5 passes of 3 frames each
    layers = res["flops"]["model"]["num_layers"]
    step = 5 * hand_attention(CHUNK * TOK_HI, CHUNK * TOK_HI, layers)
    assert sf["chunks"][7]["total"] - sf["chunks"][2]["total"] == 5 * step
    # and the caches' memory: Self-Forcing holds the whole video, the window a fixed anchor + 1 + current
    assert sf["cache_capacity_frames"]["high-res cache"] == 27
    assert hs["cache_capacity_frames"] == {"low-res cache": 9, "high-res cache": 9}


def test_wan21_bidirectional_baseline(res):
    layers = res["flops"]["model"]["num_layers"]
    wan = res["flops"]["wan21_bidirectional"]
    n = 21 * TOK_HI
    assert wan["tokens"] == n and wan["forwards"] == 100
    assert wan["forward"]["attn_self"] == hand_attention(n, n, layers)
    assert wan["total"]["total"] == 100 * wan["forward"]["total"]


def test_counts_add_up_and_match_the_analytic_model(res):
    for c in res["flops"]["configs"]:
        t = c["total"]
        assert t["total"] == t["linear"] + t["attn_self"] + t["attn_cross"] + t["conv"] + t["other"]
        assert t["other"] == 0
        assert sum(p["flops"]["total"] for p in c["passes"]) + c["text_setup"]["total"] == t["total"]
        assert t["total"] == pytest.approx(c["analytic"], rel=1e-9)
        assert c["per_latent_frame"] == pytest.approx(t["total"] / c["latent_frames"])
        assert c["per_pixel_frame"] == pytest.approx(t["total"] / c["pixel_frames"])
        assert str(c["latent_frames"]) in c["vs_self_forcing_label"]


def test_report_and_timing_sections(res):
    printed = res["_printed"]
    assert "| histream | 1 | 27 / 105 |" in printed and "chunk 10 / chunk 2" in printed
    runs = {r["preset"]: r for r in res["timing"]["runs"]}
    assert set(runs) == {"histream", "self_forcing"}
    for r in runs.values():
        assert r["chunks"] >= 12 and len(r["seconds"]) == r["chunks"] and min(r["seconds"]) > 0
