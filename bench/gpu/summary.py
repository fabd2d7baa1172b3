"""Ratios, memory, flatness, backend and end-to-end tables from the parts' results."""

from __future__ import annotations

from .common import (
    GIB,
    GOAL_RATIO,
    MEMORY_GOAL_GIB,
    PAPER_RATIO,
    PAPER_S_PER_FRAME,
    PARTS,
    WAN_STEPS,
    Scale,
    _gib,
    pixel_frames,
)


def all_configs(results: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for part in PARTS:
        for c in (results.get(part) or {}).get("configs", []):
            out.setdefault(c["id"], c)
    return out


def _ratio(num: dict | None, num_key: str, den: dict | None, den_key: str) -> float | None:
    if not num or not den or num.get(num_key) is None or not den.get(den_key):
        return None
    return num[num_key] / den[den_key]


def summarize(results: dict, scale: Scale) -> dict:
    c = all_configs(results)
    s, n = scale.short, scale.long
    wan = c.get(f"wan21@{scale.wan_frames}")
    sf = c.get(f"self_forcing@{s}")
    res = f"{scale.width}x{scale.height}"
    ratios = []
    for length in (s, n):
        for preset in ("histream", "histream_plus"):
            hs = c.get(f"{preset}@{length}")
            if hs is None:
                continue
            win = f"anchor {hs['anchor_frames']} + window {hs['window_chunks']} chunk(s) of {hs['chunk_frames']}"
            base_label = f"{preset} ({win}) @ {res}, {length} latent / {pixel_frames(length)} px frames"
            sf_same = c.get(f"self_forcing@{length}")
            ratios.append({
                "name": f"{preset} vs self_forcing", "preset": preset, "baseline": "self_forcing",
                "latent_frames": length, "value": _ratio(sf_same, "s_per_frame", hs, "s_per_frame"),
                "baseline_s_per_frame": (sf_same or {}).get("s_per_frame"), "s_per_frame": hs.get("s_per_frame"),
                "baseline_status": None if sf_same is None else sf_same["status"],
                "label": (f"{base_label} vs self_forcing (unbounded cache, full res only) at the same length; "
                          "whole-video denoising s/frame"),
                "paper": PAPER_RATIO.get((preset, "self_forcing")) if length == s else None,
                "goal": GOAL_RATIO.get((preset, "self_forcing")) if length == s else None})
            ratios.append({
                "name": f"{preset} vs wan21", "preset": preset, "baseline": "wan21", "latent_frames": length,
                "value": _ratio(wan, "s_per_frame_extrapolated", hs, "s_per_frame"),
                "baseline_s_per_frame": (wan or {}).get("s_per_frame_extrapolated"),
                "s_per_frame": hs.get("s_per_frame"),
                "label": (f"{base_label} vs Wan2.1 bidirectional ({scale.wan_frames} latent frames, {WAN_STEPS} "
                          f"steps x CFG, EXTRAPOLATED from one forward); per pixel frame"),
                "paper": PAPER_RATIO.get((preset, "wan21")) if length == s else None,
                "goal": GOAL_RATIO.get((preset, "wan21")) if length == s else None})
    for r in ratios:
        r["meets_goal"] = None if r["value"] is None or r["goal"] is None else r["value"] >= r["goal"]
    sf_vs_wan = _ratio(wan, "s_per_frame_extrapolated", sf, "s_per_frame")

    hs_s = c.get(f"histream@{s}")
    memory = {"goal_gib": MEMORY_GOAL_GIB}
    if hs_s:
        memory.update(histream_short_id=hs_s["id"], peak_allocated_gib=_gib(hs_s["peak_allocated_bytes"]),
                      peak_reserved_gib=_gib(hs_s["peak_reserved_bytes"]),
                      planned_cache_gib=_gib(hs_s["cache_bytes_planned_total"]),
                      planned_run_gib_plus_weights=_gib(hs_s["run_bytes_planned"] + hs_s["weights_bytes"]))
        pk = hs_s["peak_allocated_bytes"]
        memory["meets_goal"] = None if pk is None else pk / GIB <= MEMORY_GOAL_GIB
    growth = []
    for preset in ("histream", "histream_plus"):
        a, bb = c.get(f"{preset}@{s}"), c.get(f"{preset}@{n}")
        if a and bb and a.get("peak_allocated_bytes") is not None and bb.get("peak_allocated_bytes") is not None:
            growth.append({"preset": preset, "short": s, "long": n, "peak_short_bytes": a["peak_allocated_bytes"],
                           "peak_long_bytes": bb["peak_allocated_bytes"],
                           "growth_bytes": bb["peak_allocated_bytes"] - a["peak_allocated_bytes"],
                           "label": f"{preset} peak @ {n} minus @ {s} latent frames, {res}"})
    memory["growth_with_length"] = growth

    flat = []
    for preset in ("histream", "histream_plus", "self_forcing"):
        for length in (n, s):
            r = c.get(f"{preset}@{length}")
            secs = (r or {}).get("chunk_seconds") or []
            if len(secs) < 4:
                continue
            far = min(20, len(secs) - 1)
            full = r["chunks"] - 2 if len(secs) == r["chunks"] else len(secs) - 1  # the last chunk has no cache pass
            flat.append({"id": r["id"], "chunk_2_s": secs[2], f"chunk_{far}_s": secs[far], "far_chunk": far,
                         "far_over_2": secs[far] / secs[2], "last_full_chunk": full,
                         "last_full_over_2": secs[full] / secs[2],
                         "far_is_last_chunk": far == r["chunks"] - 1,
                         "label": (f"{r['id']} chunk {far} / chunk 2 per-chunk seconds"
                                   + (f" (chunk {far} is the last: no cache pass)"
                                      if far == r["chunks"] - 1 else ""))})
            break
    bk = results.get("backends") or {}
    backends = None
    if bk.get("configs"):
        bc = {x["id"]: x for x in bk["configs"]}
        ref, sage = bc.get(f"histream@{s}[sdpa]"), bc.get(f"histream@{s}[sageattention]")
        backends = {"sage_available": bk.get("sage_available"), "sage_version": bk.get("sage_version"),
                    "sage_error": bk.get("sage_error"), "sdpa_s_per_frame": (ref or {}).get("s_per_frame"),
                    "sage_s_per_frame": (sage or {}).get("s_per_frame"),
                    "sage_used": (sage or {}).get("sage_used"),
                    "speedup_sage_over_sdpa": _ratio(ref, "s_per_frame", sage, "s_per_frame"),
                    "diff_vs_sdpa": bk.get("diff_vs_sdpa"), "attention_op": bk.get("attention_op"),
                    "label": f"histream @ {res}, {s} latent frames: SDPA vs sageattention, same seed"}
    vae = (c.get(f"vae_decode@{scale.vae_frames}") or {})
    e2e = []
    if vae.get("s_per_frame") is not None:
        for preset in ("histream", "histream_plus", "self_forcing"):
            r = c.get(f"{preset}@{s}")
            if r and r.get("s_per_frame") is not None:
                e2e.append({"preset": preset, "denoise_s_per_frame": r["s_per_frame"],
                            "decode_s_per_frame": vae["s_per_frame"],
                            "end_to_end_s_per_frame": r["s_per_frame"] + vae["s_per_frame"],
                            "decode_share": vae["s_per_frame"] / (r["s_per_frame"] + vae["s_per_frame"]),
                            "label": (f"{preset} @ {res}, {s} latent / {pixel_frames(s)} px frames: denoise + "
                                      f"VAE decode ({scale.vae_frames} latent frames, timed separately, summed; "
                                      "text encoder not included)")})
    sf_pred = (results.get("self_forcing") or {}).get("prediction")
    sf_long = c.get(f"self_forcing@{n}")
    return {"ratios": ratios, "self_forcing_vs_wan21": sf_vs_wan, "memory": memory, "flatness": flat,
            "backends": backends, "end_to_end": e2e, "self_forcing_long": None if sf_long is None else {
                "status": sf_long["status"], "oom": sf_long.get("oom"), "chunks_done": sf_long["chunks_done"],
                "stopped_after_s": sf_long.get("stopped_after_s"),
                "cache_gib_planned": _gib(sf_long["cache_bytes_planned_total"]), "prediction": sf_pred},
            "paper_s_per_frame": PAPER_S_PER_FRAME}

