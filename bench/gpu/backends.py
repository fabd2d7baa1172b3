"""The backends part: SDPA vs sageattention, end to end and one attention call."""

from __future__ import annotations

import torch

from histream_core import HiStreamConfig
from histream_core import attention as attn

from .state import Bench, set_backend
from .stream import run_stream


def _diff(a: torch.Tensor, ref: torch.Tensor) -> dict:
    d = (a - ref).abs()
    return {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()), "ref_max_abs": float(ref.abs().max()),
            "ref_std": float(ref.std()), "finite": bool(torch.isfinite(a).all() and torch.isfinite(ref).all())}


def _time_op(b: Bench, fn, args: tuple, repeats: int) -> float:
    fn(*args)  # warm-up (Triton JIT for sageattention)
    t0 = b.now()
    for _ in range(repeats):
        fn(*args)
    return (b.now() - t0) / repeats


def attention_probe(b: Bench, hs: HiStreamConfig, repeats: int = 5) -> dict:
    """One self-attention call at the steady histream high-res shape (a chunk's queries over anchor + window +
    chunk keys), keys passed as a VIEW of a larger cache-like buffer, exactly as `KVCache.attend` does: time and
    error of `attention()` under sageattention vs SDPA, and whether the backend writes into the keys (a backend
    that edits k in place edits the KV cache)."""
    wan = b.model.config
    p = wan.patch_size
    h, w = hs.latent_size
    tpf = (h // p[1]) * (w // p[2])
    frames = min(hs.latent_frames, hs.anchor + ((hs.window_chunks or 0) + 1) * hs.chunk_frames)
    nq, nk = hs.chunk_frames * tpf, frames * tpf
    g = torch.Generator("cpu").manual_seed(b.seed + 7)
    shape = (1, nk + hs.chunk_frames * tpf, wan.num_heads, wan.head_dim)  # a buffer with room beyond the view

    def rnd(*sh, offset=0.0):
        return (torch.randn(*sh, generator=g) + offset).to(b.device, b.dtype)

    q = rnd(1, nq, wan.num_heads, wan.head_dim)
    kbuf = rnd(*shape, offset=0.5)  # real keys have a mean: what sageattention's smooth_k subtracts
    vbuf = rnd(*shape)
    k, v = kbuf[:, :nk], vbuf[:, :nk]
    k_before = k.clone()
    ref = attn.sdpa(q, k, v)
    rec = {"label": (f"one attention call, {nq:,} queries x {nk:,} keys (histream high-res steady shape, "
                     f"{hs.width}x{hs.height}), {wan.num_heads} heads x {wan.head_dim}, keys a view of a buffer"),
           "queries": nq, "keys": nk, "repeats": repeats,
           "sdpa_seconds": _time_op(b, attn.sdpa, (q, k, v), repeats)}
    with set_backend("sageattention"):
        out = attn.attention(q, k, v)
        rec["sage_used"] = attn.sage_available()
        rec["modifies_k_in_place"] = bool((k.float() - k_before.float()).abs().max() > 0)
        rec["k_max_change"] = float((k.float() - k_before.float()).abs().max())
        k.copy_(k_before)
        rec["sage_seconds"] = _time_op(b, attn.attention, (q, k, v), repeats)
    d = (out.float() - ref.float())
    rec.update(max_abs_diff=float(d.abs().max()), rel_l2_error=float(d.norm() / ref.float().norm()),
               speedup_sage_over_sdpa=rec["sdpa_seconds"] / rec["sage_seconds"])
    del q, kbuf, vbuf, k, v, k_before, ref, out, d
    b.free_memory()
    return rec


def part_backends(b: Bench) -> dict:
    s = b.scale.short
    hs = b.video("histream", s)
    ref = run_stream(b, f"histream@{s}[sdpa]", hs, backend="sdpa", keep=(0, -1))
    attn.set_backend("sageattention")
    before = attn.sage_available()
    attn.set_backend("sdpa")
    res = {"configs": [ref], "sage_available": before, "sage_version": _sage_version()}
    if before or not b.cuda:
        try:
            res["attention_op"] = attention_probe(b, hs)
        except Exception as exc:  # noqa: BLE001 - report and go on to the end-to-end comparison
            res["attention_op"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        b.log(f"  attention op: {res['attention_op']}")
    if not before and b.cuda:  # (on CPU the sage run is SDPA again: it only checks this code path)
        res["sage_error"] = f"sageattention not usable here: {_sage_import_error()}"
        b.log(f"  {res['sage_error']}")
        return res
    try:
        sage = run_stream(b, f"histream@{s}[sageattention]", hs, backend="sageattention", keep=(0, -1))
    except Exception as exc:  # noqa: BLE001 - e.g. a Triton compile error or a sage assertion: report, go on
        res["sage_error"] = f"{type(exc).__name__}: {exc}"[:500]
        b.log(f"  sageattention run failed: {res['sage_error']}")
        b.free_memory()
        return res
    used = before and attn.sage_available()  # a runtime failure turns sage off (falls back to SDPA)
    sage["sage_used"] = used
    if not used:
        sage["label"] += " — sageattention NOT used (unavailable or failed): this is SDPA again"
    res["configs"].append(sage)
    last = ref["chunks"] - 1
    res["diff_vs_sdpa"] = {}
    for k, name in ((0, "chunk_0"), (last, f"chunk_{last}")):
        if k in ref["kept_latents"] and k in sage["kept_latents"]:
            res["diff_vs_sdpa"][name] = _diff(sage["kept_latents"][k], ref["kept_latents"][k])
    return res


def _sage_import_error() -> str:
    try:
        import sageattention  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError, OSError, a CUDA/Triton error at import
        return f"{type(exc).__name__}: {exc}"[:300]
    return "imports, but histream_core.attention.sage_available() is False (no CUDA device?)"


def _sage_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("sageattention")
    except Exception:  # noqa: BLE001
        return None
