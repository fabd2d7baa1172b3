"""bench/bench_gpu.py at --scale tiny on the CPU: the same code path the GPU run takes, checked for structure and
for numbers that must follow from the recorded times (no timing thresholds).

One process runs `--part all` with an injected OOM in the long Self-Forcing run (chunk 2), as a GPU run meets a
real one; the other configurations must run on after it.
"""

from __future__ import annotations

import contextlib
import io
import json
import statistics

import pytest
import torch

from bench import bench_gpu
from histream_core import WanConfig
from histream_core.memory import cache_bytes

OOM_CONFIG, OOM_CHUNK = "self_forcing@63", 2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_gpu")
    printed, logged = io.StringIO(), []
    with contextlib.redirect_stdout(printed):
        rc = bench_gpu.main(["--scale", "tiny", "--device", "cpu", "--part", "all", "--out", str(out),
                             "--comfyui", "none", "--threads", "1", "--inject-oom", f"{OOM_CONFIG}:{OOM_CHUNK}"],
                            log=logged.append)
    data = json.loads((out / "tiny_all.json").read_text())
    data["_rc"], data["_printed"], data["_out"], data["_log"] = rc, printed.getvalue(), out, logged
    return data


def configs(run) -> dict[str, dict]:
    return bench_gpu.all_configs(run["results"])


def timed(run) -> list[dict]:
    return [c for c in configs(run).values() if "chunk_seconds" in c]


def test_every_part_ran(run):
    assert run["_rc"] == 0
    status = {p: s["status"] for p, s in run["parts"].items()}
    assert status == {**dict.fromkeys(bench_gpu.PARTS, "ok"), "vae": "skipped"}  # --comfyui none
    assert set(configs(run)) >= {"histream@21", "histream_plus@21", "histream_absolute@21", "self_forcing@21",
                                 "self_forcing@63", "histream@63", "histream_plus@63", "wan21@21",
                                 "histream@21[sdpa]", "histream@21[sageattention]"}
    assert run["meta"]["scale"] == "tiny" and run["meta"]["device"] == "cpu"


def test_one_entry_per_chunk_and_pixel_frame_convention(run):
    for c in timed(run):
        if c["status"] != "ok":
            continue
        n = c["chunks"]
        assert n == -(-c["latent_frames"] // 3)
        assert len(c["chunk_seconds"]) == len(c["chunk_pixel_frames"]) == len(c["chunk_memory"]) == n
        assert c["chunk_pixel_frames"] == [9] + [12] * (n - 1)  # first latent frame decodes to 1 pixel frame
        assert sum(c["chunk_pixel_frames"]) == c["pixel_frames"] == 1 + 4 * (c["latent_frames"] - 1)
        assert min(c["chunk_seconds"]) > 0 and c["s_per_frame"] > 0
        assert c["total_seconds"] == pytest.approx(sum(c["chunk_seconds"]))
        assert c["s_per_frame"] == pytest.approx(c["total_seconds"] / c["pixel_frames"])
        for s, px, spf in zip(c["chunk_seconds"], c["chunk_pixel_frames"], c["chunk_s_per_frame"]):
            assert spf == pytest.approx(s / px)
        assert c["steady_s_per_frame"] == pytest.approx(statistics.median(c["chunk_s_per_frame"][1:n - 1]))
        assert c["peak_allocated_bytes"] is None and c["rss_bytes"] > 0  # CPU: no CUDA stats, RSS instead


def test_windowed_caches_are_fixed_and_self_forcing_holds_the_video(run):
    c = configs(run)
    wan = WanConfig.preset("tiny")
    for cid in ("histream@21", "histream@63"):
        assert c[cid]["cache_bytes_planned"] == c["histream@21"]["cache_bytes_planned"]
    sf21, sf63 = c["self_forcing@21"], c["self_forcing@63"]
    assert sf63["cache_bytes_planned_total"] == 3 * sf21["cache_bytes_planned_total"]
    assert sf21["window_chunks"] is None and sf21["position_mode"] == "absolute"
    assert sf21["steps"] == {"first_chunk": {"low": 0, "high": 4}, "later_chunks": {"low": 0, "high": 4}}
    assert c["histream_plus@21"]["steps"]["later_chunks"] == {"low": 1, "high": 1}
    hs = bench_gpu.Bench("tiny", "cpu", None, run["_out"], print).video("histream", 21)
    assert sum(cache_bytes(wan, hs, 4).values()) == c["histream@21"]["cache_bytes_planned_total"]  # fp32


def test_injected_oom_is_reported_and_the_run_goes_on(run):
    sf = configs(run)[OOM_CONFIG]
    assert sf["status"] == "oom" and sf["oom"]["injected"]
    assert sf["oom"]["at_chunk"] == OOM_CHUNK and f"chunk {OOM_CHUNK}" in sf["oom"]["where"]
    assert len(sf["chunk_seconds"]) == sf["chunks_done"] == OOM_CHUNK
    assert sf["s_per_frame"] is None
    assert sf["s_per_frame_partial"] == pytest.approx(sum(sf["chunk_seconds"]) / (9 + 12 * (OOM_CHUNK - 1)))
    assert configs(run)["histream@63"]["status"] == "ok"  # later configurations still ran
    assert f"OOM at chunk {OOM_CHUNK}" in " ".join(run["_log"])
    long = run["summary"]["self_forcing_long"]
    assert long["status"] == "oom" and long["chunks_done"] == OOM_CHUNK
    assert "oom at chunk 2" in run["_printed"]


def test_ratios_follow_from_the_recorded_times(run):
    c = configs(run)
    wan = c["wan21@21"]
    assert wan["extrapolated"] and wan["forwards"] == 100 and wan["tokens"] == 21 * 8 * 8
    assert wan["forward_s"] == min(wan["forward_seconds"]) > 0
    assert wan["s_per_frame_extrapolated"] == pytest.approx(wan["forward_s"] * 100 / 81)
    ratios = {(r["name"], r["latent_frames"]): r for r in run["summary"]["ratios"]}
    assert len(ratios) == 8
    for (name, frames), r in ratios.items():
        preset, base = r["preset"], r["baseline"]
        hs = c[f"{preset}@{frames}"]
        assert str(frames) in r["label"] and "window 1" in r["label"] and preset in r["label"]
        if base == "wan21":
            assert "EXTRAPOLATED" in r["label"]
            assert r["value"] == pytest.approx(wan["s_per_frame_extrapolated"] / hs["s_per_frame"])
        elif frames == 63:  # the long Self-Forcing run ran out of memory: no ratio, and the table says why
            assert r["value"] is None and r["baseline_status"] == "oom"
        else:
            assert r["value"] == pytest.approx(c[f"self_forcing@{frames}"]["s_per_frame"] / hs["s_per_frame"])
        assert (r["meets_goal"] is None) == (r["goal"] is None or r["value"] is None)
    assert ratios[("histream vs self_forcing", 21)]["paper"] == 2.5 and ratios[("histream vs wan21", 21)]["goal"] == 100
    assert ratios[("histream_plus vs wan21", 21)]["paper"] == 107.5
    assert "| histream vs self_forcing | 21 latent / 81 px |" in run["_printed"]
    assert "— (baseline oom)" in run["_printed"]


def test_flatness_compares_chunk_20_with_chunk_2(run):
    flat = {f["id"]: f for f in run["summary"]["flatness"]}
    f, hs = flat["histream@63"], configs(run)["histream@63"]
    assert f["far_chunk"] == 20 and f["far_is_last_chunk"] and f["last_full_chunk"] == 19
    assert f["far_over_2"] == pytest.approx(hs["chunk_seconds"][20] / hs["chunk_seconds"][2])
    assert f["last_full_over_2"] == pytest.approx(hs["chunk_seconds"][19] / hs["chunk_seconds"][2])
    assert "no cache pass" in f["label"]
    assert "self_forcing@63" not in flat or flat["self_forcing@63"]["far_chunk"] < 20  # only its chunks done


def test_backends_diff_and_profile(run):
    bk = run["results"]["backends"]
    sage = {c["id"]: c for c in bk["configs"]}["histream@21[sageattention]"]
    assert sage["sage_used"] is False and "NOT used" in sage["label"]  # CPU: SDPA ran again
    diff = bk["diff_vs_sdpa"]
    assert set(diff) == {"chunk_0", "chunk_6"}
    for d in diff.values():  # the same kernels on the same noise: identical
        assert d["max_abs_diff"] == 0 and d["finite"] and d["ref_max_abs"] > 0
    op = bk["attention_op"]  # keys a view of a buffer, as KVCache.attend passes them
    assert (op["queries"], op["keys"]) == (3 * 64, 9 * 64)  # 128x128: 64 tokens per frame; anchor + window + chunk
    assert op["sage_used"] is False and op["modifies_k_in_place"] is False and op["max_abs_diff"] == 0
    assert op["speedup_sage_over_sdpa"] == pytest.approx(op["sdpa_seconds"] / op["sage_seconds"])
    prof = run["results"]["profile"]["configs"][0]
    assert prof["chunk"] == 2 and prof["top_ops"] and prof["time_kind"] == "self CPU time"
    assert sum(r["share"] for r in prof["top_ops"]) <= 1 + 1e-9
    assert sum(prof["by_category"].values()) == pytest.approx(1.0)
    assert prof["by_category"]["attention"] > 0 and prof["by_category"]["matmul (linear)"] > 0
    for name in prof["files"]:
        assert (run["_out"] / name).stat().st_size > 0


def test_summary_merges_part_files(run, tmp_path):
    with contextlib.redirect_stdout(io.StringIO()):
        assert bench_gpu.main(["--scale", "tiny", "--part", "summary", "--merge", str(run["_out"] / "tiny_all.json"),
                               "--out", str(tmp_path)]) == 0
    merged = json.loads((tmp_path / "tiny_summary.json").read_text())["summary"]
    assert merged["ratios"] == run["summary"]["ratios"]


def _record(cid, frames, peak, cache, base=3 * 2 ** 30, status="ok"):
    return {"id": cid, "latent_frames": frames, "chunks": frames // 3, "chunk_frames": 3, "status": status,
            "peak_allocated_bytes": peak, "peak_reserved_bytes": peak, "base_allocated_bytes": base,
            "cache_bytes_planned_total": cache, "run_bytes_planned": 0, "weights_bytes": base,
            "anchor_frames": 3, "window_chunks": 1, "s_per_frame": 1.0, "chunk_seconds": [1.0] * (frames // 3)}


def test_memory_summary_and_self_forcing_prediction_with_cuda_like_numbers():
    gib = 2 ** 30
    short = _record("self_forcing@21", 21, peak=3 * gib + 21 * 1.5 * gib + 4 * gib, cache=int(21 * 1.5 * gib))
    long = _record("self_forcing@63", 63, peak=None, cache=int(63 * 1.5 * gib), status="oom")
    pred = bench_gpu.predict_sf_oom(short, long, available=int(70 * gib))
    assert pred["working_bytes_besides_cache"] == pytest.approx(4 * gib, rel=1e-6)
    assert pred["cache_frames_that_fit"] == 44  # (70 - 4) / 1.5
    assert pred["grown_cache_runs_out_at_chunk"] == 14 and "PREDICTED" in pred["label"]
    results = {"histream": {"configs": [_record("histream@21", 21, peak=20 * gib, cache=17 * gib)]},
               "histream_long": {"configs": [_record("histream@63", 63, peak=20 * gib + 2 ** 20, cache=17 * gib)]}}
    mem = bench_gpu.summarize(results, bench_gpu.SCALES["real"])["memory"]
    assert mem["peak_allocated_gib"] == 20 and mem["meets_goal"]
    (g,) = mem["growth_with_length"]
    assert g["growth_bytes"] == 2 ** 20 and g["short"] == 21 and g["long"] == 63


def test_real_scale_plan():
    """The configurations a GPU run times, without running them: 1080p, the lengths, the cache sizes."""
    b = bench_gpu.Bench("real", "cpu", None, None, print)
    wan = WanConfig.preset("1.3B")
    sf21, sf63 = b.video("self_forcing", 21), b.video("self_forcing", 63)
    hs = b.video("histream", 21)
    assert (hs.width, hs.height, hs.num_frames, hs.num_chunks) == (1920, 1088, 81, 7)
    assert b.video("histream", 63).num_chunks == 21  # chunk 20 exists
    assert sum(cache_bytes(wan, sf21).values()) == 21 * 8160 * 2 * 30 * 1536 * 2  # ~31.6 GB
    assert sum(cache_bytes(wan, sf63).values()) > 80 * 10 ** 9  # cannot fit an 80 GB card
    assert sum(cache_bytes(wan, hs).values()) < 24 * 2 ** 30
    assert bench_gpu.pixel_frames(63) == 249 and bench_gpu.chunk_pixel_frames(0, 3) == 9


@pytest.mark.comfy
def test_vae_part_with_the_host(comfy_modules, tmp_path):
    with contextlib.redirect_stdout(io.StringIO()):
        assert bench_gpu.main(["--scale", "tiny", "--device", "cpu", "--part", "vae", "--out", str(tmp_path),
                               "--threads", "1"], log=lambda s: None) == 0
    data = json.loads((tmp_path / "tiny_vae.json").read_text())
    (rec,) = data["results"]["vae"]["configs"]
    assert rec["status"] == "ok" and rec["output_shape"] == [1, 3, 9, 128, 128]
    assert rec["s_per_frame"] == pytest.approx(rec["decode_seconds"] / 9)


def test_oom_while_allocating_the_cache_frees_the_first_buffer(monkeypatch, tmp_path):
    """As on an 80 GB card at 63 latent frames: K fits, V does not. stream() allocates outside its try/finally,
    so the benchmark must release the half-allocated cache itself."""
    from histream_core.cache import KVCache

    seen = []
    real_allocate = KVCache.allocate

    def allocate(self):
        if self.window_chunks is None and self.capacity_frames == 63:
            seen.append(self)
            self.k = torch.empty(self.shape)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake): the V buffer does not fit")
        return real_allocate(self)

    monkeypatch.setattr(KVCache, "allocate", allocate)
    b = bench_gpu.Bench("tiny", "cpu", torch.float32, tmp_path, lambda s: None)
    rec = bench_gpu.run_stream(b, "self_forcing@63", b.video("self_forcing", 63))
    assert rec["status"] == "oom" and rec["oom"]["at_chunk"] == 0 and not rec["oom"]["injected"]
    assert "allocating" in rec["oom"]["where"] and rec["chunk_seconds"] == []
    assert len(seen) == 1 and seen[0].k is None  # released
    ok = bench_gpu.run_stream(b, "histream@21", b.video("histream", 21))
    assert ok["status"] == "ok" and len(ok["chunk_seconds"]) == 7
