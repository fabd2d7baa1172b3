"""The Markdown report of a run (per-config table, Wan2.1, VAE, profile, summary tables)."""

from __future__ import annotations

from .common import GIB, _env_line, _gib, pixel_frames
from .summary import all_configs


def _f(x, fmt=".3f", none="—") -> str:
    return none if x is None else format(x, fmt)


def markdown(results: dict, summary: dict | None, meta: dict) -> str:
    out = [f"### GPU benchmark — {meta.get('device_name')} — scale {meta.get('scale')} — {meta.get('date')}", "",
           (f"torch {meta.get('torch')}, dtype {meta.get('dtype')}, attention sdpa unless named; "
           "s/frame = seconds / pixel frames (1 + 4·(latent−1)); denoising only unless labelled."), ""]
    rows = [c for c in all_configs(results).values() if "chunk_seconds" in c]
    if rows:
        out += [("| config | window | latent / px frames | chunks | status | chunk 0 s | steady chunk s | "
                "s/frame (whole) | steady s/frame | peak alloc GiB | peak reserved GiB | KV cache GiB (planned) |"),
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            st = r["status"] + (f" at chunk {r['oom']['at_chunk']}" if r["status"] == "oom" else "") + (
                f" after {r['chunks_done']} chunks ({r['stopped_after_s']} s budget)" if r["status"] == "stopped"
                else "")
            win = "∞" if r["window_chunks"] is None else f"A{r['anchor_frames']}+{r['window_chunks']}"
            c0 = r["chunk_seconds"][0] if r["chunk_seconds"] else None
            note = " (diagnostic)" if r.get("diagnostic") else ""
            if r.get("sage_used") is False:
                note = " (sage unavailable: SDPA ran)"
            out.append(f"| {r['id']}{note} | {win} | "
                       f"{r['latent_frames']} / {r['pixel_frames']} | {r['chunks']} | {st} | {_f(c0)} | "
                       f"{_f(r['steady_chunk_seconds'])} | {_f(r['s_per_frame'], '.4f')} | "
                       f"{_f(r['steady_s_per_frame'], '.4f')} | {_f(_gib(r.get('peak_allocated_bytes')), '.2f')} | "
                       f"{_f(_gib(r.get('peak_reserved_bytes')), '.2f')} | "
                       f"{r['cache_bytes_planned_total'] / GIB:.2f} |")
        out.append("")
    for c in all_configs(results).values():
        if c["id"].startswith("wan21"):
            out += [(f"Wan2.1: {c['label']}: one forward {_f(c.get('forward_s'), '.2f')} s → "
                    f"{_f(c.get('total_seconds_extrapolated'), '.0f')} s total, "
                    f"{_f(c.get('s_per_frame_extrapolated'), '.2f')} s/frame (extrapolated), peak "
                    f"{_f(_gib(c.get('peak_allocated_bytes')), '.2f')} GiB, status {c['status']}"), ""]
        if c["id"].startswith("vae_decode"):
            out += [(f"VAE: {c['label']}: {_f(c.get('decode_seconds'), '.2f')} s, {_f(c.get('s_per_frame'), '.4f')} "
                    f"s/frame, peak {_f(_gib(c.get('peak_allocated_bytes')), '.2f')} GiB, status {c['status']}"), ""]
    vae_part = results.get("vae") or {}
    if vae_part.get("status") == "skipped":
        out += [f"VAE: skipped — {vae_part.get('reason')}", ""]
    for c in all_configs(results).values():
        if "top_ops" in c:
            cats = ", ".join(f"{k} {100 * v:.0f}%" for k, v in c["by_category"].items())
            out += [(f"Profile: {c['label']} ({c['chunk_seconds_under_profiler']:.3f} s under the profiler), "
                    f"{c['time_kind']} by family: {cats}"), "",
                    "| op | calls | self time ms | share |", "|---|---|---|---|"]
            out += [f"| {r['name'][:70]} | {r['count']} | {r['self_time_us'] / 1e3:.2f} | {100 * r['share']:.1f}% |"
                    for r in c["top_ops"][:15]]
            out += ["", f"(full table: {c['files'][0]}; chrome trace: {c['files'][1]})", ""]
    if not summary:
        return "\n".join(out) + "\n"
    if summary["ratios"]:
        out += ["#### Ratios (s/frame of the baseline / s/frame of HiStream)", "",
                "| comparison | length | value | paper | goal | meets goal | label |", "|---|---|---|---|---|---|---|"]
    for r in summary["ratios"]:
        val = _f(r["value"], ".2f") + "×" if r["value"] is not None else (
            f"— (baseline {r.get('baseline_status')})" if r.get("baseline_status") not in (None, "ok") else "—")
        out.append(f"| {r['name']} | {r['latent_frames']} latent / {pixel_frames(r['latent_frames'])} px | {val} | "
                   f"{_f(r['paper'], '.1f')} | {_f(r['goal'], '.0f')} | {_f(r['meets_goal'], '')} | "
                   f"{_env_line(r['label'])} |")
    if summary["self_forcing_vs_wan21"] is not None:
        out.append(f"\nself_forcing vs Wan2.1 (extrapolated): {summary['self_forcing_vs_wan21']:.1f}×\n")
    m = summary["memory"]
    if "histream_short_id" in m:
        out += ["#### Memory", "",
                (f"- histream defaults peak allocated {_f(m.get('peak_allocated_gib'), '.2f')} GiB, reserved "
                 f"{_f(m.get('peak_reserved_gib'), '.2f')} GiB (goal ≤ {m['goal_gib']} GiB: "
                 f"{_f(m.get('meets_goal'), '')}); planned KV {_f(m.get('planned_cache_gib'), '.2f')} GiB, "
                 f"planned run + weights {_f(m.get('planned_run_gib_plus_weights'), '.2f')} GiB "
                 "(histream_core.memory)")]
    for g in m["growth_with_length"]:
        out.append(f"- {g['label']}: {g['growth_bytes'] / 2 ** 20:+.1f} MiB "
                   f"({g['peak_short_bytes'] / GIB:.2f} → {g['peak_long_bytes'] / GIB:.2f} GiB)")
    sl = summary.get("self_forcing_long")
    if sl:
        oom = sl.get("oom") or {}
        out.append(f"- self_forcing long: {sl['status']}"
                   + (f" at chunk {oom.get('at_chunk')} ({oom.get('where')})" if sl["status"] == "oom" else "")
                   + f"; planned cache {sl['cache_gib_planned']:.1f} GiB"
                   + (f"; {sl['prediction']['label']}" if sl.get("prediction") else ""))
    if summary["flatness"]:
        out += ["", "#### Flatness", ""]
    for f in summary["flatness"]:
        out.append(f"- {f['label']}: {f['far_over_2']:.3f} (chunk {f['last_full_chunk']} / chunk 2, both full: "
                   f"{f['last_full_over_2']:.3f})")
    bk = summary.get("backends")
    if bk:
        out += ["", "#### Attention backend", "",
                f"- {bk['label']}: SDPA {_f(bk['sdpa_s_per_frame'], '.4f')} s/frame, sageattention "
                f"{_f(bk['sage_s_per_frame'], '.4f')} s/frame (used: {bk['sage_used']}, version "
                f"{bk['sage_version']}), speedup {_f(bk['speedup_sage_over_sdpa'], '.2f')}×"
                + (f"; error: {bk['sage_error']}" if bk.get("sage_error") else "")]
        op = bk.get("attention_op") or {}
        if "error" in op:
            out.append(f"- attention op probe failed: {op['error']}")
        elif op:
            out.append(f"- {op['label']}: SDPA {1e3 * op['sdpa_seconds']:.2f} ms, sageattention "
                       f"{1e3 * op['sage_seconds']:.2f} ms (used: {op['sage_used']}), speedup "
                       f"{op['speedup_sage_over_sdpa']:.2f}×, max |Δ| {op['max_abs_diff']:.3g}, rel L2 "
                       f"{op['rel_l2_error']:.3g}; **writes into k (the KV cache) in place: "
                       f"{op['modifies_k_in_place']}** (max change {op['k_max_change']:.3g})")
        for k, d in (bk.get("diff_vs_sdpa") or {}).items():
            why = (" (no cache read yet: the backend's numerics only)" if k == "chunk_0" else
                   " (reads the cache: includes any in-place edit of cached keys)")
            out.append(f"- {k} output latent vs SDPA{why}: max |Δ| {d['max_abs_diff']:.4g}, mean |Δ| "
                       f"{d['mean_abs_diff']:.4g} (reference max |x| {d['ref_max_abs']:.3g}, std {d['ref_std']:.3g})")
    if summary["end_to_end"]:
        out += ["", "#### End to end (denoise + VAE decode)", ""]
        for e in summary["end_to_end"]:
            out.append(f"- {e['label']}: {e['denoise_s_per_frame']:.4f} + {e['decode_s_per_frame']:.4f} = "
                       f"{e['end_to_end_s_per_frame']:.4f} s/frame (decode {100 * e['decode_share']:.0f}%)")
    return "\n".join(out) + "\n"

