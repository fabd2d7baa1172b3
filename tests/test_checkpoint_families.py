"""Causal Wan checkpoints users have — Causal Forcing(++), LongLive (base + LoRA), Krea Realtime 14B — in their real
layouts: real names and shapes on `meta`, tiny values on disk; the LongLive merge against a hand-merged W + (α/r)·B·A;
one clear error per malformed variant."""

from __future__ import annotations

import pytest
import torch
from checkpoint_factory import (
    LORA_MODULES,
    causal_forcing_pt,
    longlive_base_pt,
    longlive_lora_pt,
    peft_lora,
    prefixed,
    wan_state_dict,
)
from safetensors.torch import save_file

from histream_core.config import WanConfig
from histream_core.loading import CheckpointError, load_wan_state_dict, to_canonical_wan, validate_t2v
from histream_core.lora_merge import LoraPair, load_lora_pairs, lora_pairs, merge_lora, unwrap_lora
from histream_core.memory import InsufficientMemoryError, cache_bytes, cheaper_plans, check_fits, run_bytes
from histream_core.recipes import recipe_config

C13, C14, TINY = (WanConfig.preset(n) for n in ("1.3B", "14B", "tiny"))


def refusal(fn, *args, **kw) -> str:
    try:
        fn(*args, **kw)
    except CheckpointError as exc:
        return str(exc)
    raise AssertionError("expected a CheckpointError")


# ---- real names and shapes (meta) ----------------------------------------------------------------------------------
def test_causal_forcing_layouts_map_at_1_3b():
    sd = wan_state_dict(C13)
    for fsdp in (False, True):
        raw = causal_forcing_pt(sd, fsdp=fsdp)
        assert validate_t2v(to_canonical_wan(raw["generator_ema"])) == C13


def test_krea_14b_layouts_infer_the_14b_config():
    sd = wan_state_dict(C14)
    for prefix in ("", "model.diffusion_model."):
        cfg = validate_t2v(to_canonical_wan(prefixed(sd, prefix)))
        assert (cfg.dim, cfg.num_layers, cfg.num_heads, cfg.ffn_dim) == (5120, 40, 40, 13824)


def test_longlive_peft_lora_at_1_3b_rank_256():
    pairs = lora_pairs(unwrap_lora(longlive_lora_pt(peft_lora(C13, rank=256))))
    assert len(pairs) == C13.num_layers * len(LORA_MODULES) == 300
    assert {p.rank for p in pairs} == {256} and {p.scale for p in pairs} == {1.0}  # r = α: PEFT stores no alpha
    targets = {p.target for p in pairs}
    assert "blocks.29.ffn.2.weight" in targets and "blocks.0.cross_attn.o.weight" in targets
    base = wan_state_dict(C13)
    merged = merge_lora(base, pairs)  # on meta: checks every target and shape at the real size
    assert merged.keys() == base.keys()
    assert all(merged[k].shape == base[k].shape and merged[k].dtype == base[k].dtype for k in base)


def test_longlive_base_layout_maps_at_1_3b():
    from histream_core.loading import unwrap_checkpoint

    raw = longlive_base_pt(wan_state_dict(C13), critic=wan_state_dict(C13))
    assert validate_t2v(to_canonical_wan(unwrap_checkpoint(raw))) == C13


# ---- tiny values on disk -------------------------------------------------------------------------------------------
def test_causal_forcing_pt_uses_ema_with_the_fsdp_prefix(tmp_path):
    sd = wan_state_dict(TINY, device="cpu", dtype=torch.float32)
    torch.save(causal_forcing_pt(sd, fsdp=True), tmp_path / "causal_forcing.pt")
    got, cfg, info = load_wan_state_dict(tmp_path / "causal_forcing.pt")
    assert cfg == TINY and info["source"] == "generator_ema" and info["format"] == "self_forcing"
    assert all(torch.equal(got[k], sd[k]) for k in sd)


def test_causal_forcing_repack_with_causal_ar_metadata(tmp_path):
    sd = wan_state_dict(TINY, device="cpu", dtype=torch.bfloat16)
    save_file(sd, tmp_path / "causal_forcing-framewise.safetensors",
              metadata={"config": '{"transformer": {"causal_ar": true}}'})
    _, cfg, info = load_wan_state_dict(tmp_path / "causal_forcing-framewise.safetensors")
    assert info["format"] == "comfyui_causal_ar" and cfg == TINY


def test_longlive_base_takes_the_generator_never_the_critic(tmp_path):
    gen = wan_state_dict(TINY, device="cpu", dtype=torch.float32, seed=1)
    critic = wan_state_dict(TINY, device="cpu", dtype=torch.float32, seed=2)
    torch.save(longlive_base_pt(gen, critic), tmp_path / "longlive_base.pt")
    got, _, info = load_wan_state_dict(tmp_path / "longlive_base.pt")
    assert info["source"] == "generator"
    assert all(torch.equal(got[k], gen[k]) for k in gen)


def hand_merge(sd: dict, lora: dict, alpha: float | None = None) -> dict:
    """W + (α/r)·B·A written out per PEFT name (α = r when the file stores none)."""
    out = dict(sd)
    for k, down in lora.items():
        if not k.endswith(".lora_A.weight"):
            continue
        module = k[len("base_model.model."):-len(".lora_A.weight")]
        a, b = down.float(), lora[k.replace("lora_A", "lora_B")].float()
        r = a.shape[0]
        w = sd[module + ".weight"]
        out[module + ".weight"] = (w.float() + ((alpha or r) / r) * (b @ a)).to(w.dtype)
    return out


def test_longlive_base_plus_lora_equals_the_hand_merge(tmp_path):
    seed = 1801
    print("seed", seed)
    base = wan_state_dict(TINY, device="cpu", dtype=torch.float32, seed=seed)
    lora = peft_lora(TINY, rank=8, device="cpu", seed=seed + 1)
    torch.save(longlive_base_pt(base, critic=base), tmp_path / "longlive_base.pt")
    for trainer in (False, True):
        critic = {k: v * 0 + 1 for k, v in lora.items()}  # a different LoRA: must not be the one merged
        torch.save(longlive_lora_pt(lora, trainer=trainer, critic=critic), tmp_path / "lora.pt")
        sd, _, _ = load_wan_state_dict(tmp_path / "longlive_base.pt")
        merged = merge_lora(sd, load_lora_pairs(tmp_path / "lora.pt"))
        want = hand_merge(base, lora)
        changed = [k for k in base if not torch.equal(merged[k], base[k])]
        assert len(changed) == TINY.num_layers * len(LORA_MODULES)
        for k in base:
            assert torch.allclose(merged[k], want[k], rtol=0, atol=1e-6), k


def test_comfy_format_alpha_and_strength(tmp_path):
    base = wan_state_dict(TINY, device="cpu", dtype=torch.float32)
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(4, 128, generator=g), torch.randn(128, 4, generator=g)
    save_file({"diffusion_model.blocks.1.self_attn.k.lora_down.weight": a,
               "diffusion_model.blocks.1.self_attn.k.lora_up.weight": b,
               "diffusion_model.blocks.1.self_attn.k.alpha": torch.tensor(2.0)}, tmp_path / "l.safetensors")
    merged = merge_lora(base, load_lora_pairs(tmp_path / "l.safetensors"), strength=0.5)
    key = "blocks.1.self_attn.k.weight"
    assert torch.allclose(merged[key], base[key] + 0.5 * (2.0 / 4) * (b @ a), atol=1e-6)


def test_bf16_weights_merge_in_float32_and_keep_their_dtype():
    w = torch.randn(8, 8).to(torch.bfloat16)
    a, b = torch.randn(2, 8), torch.randn(8, 2)
    out = merge_lora({"x.weight": w}, [LoraPair("x.weight", a, b, None)])["x.weight"]
    assert out.dtype == torch.bfloat16 and torch.equal(out, (w.float() + b @ a).to(torch.bfloat16))


# ---- malformed variants: one clear error each ----------------------------------------------------------------------
def test_malformed_loras_are_refused(tmp_path):
    base = wan_state_dict(TINY)
    good = peft_lora(TINY, rank=4)
    assert "no LoRA tensors" in refusal(lora_pairs, {"blocks.0.ffn.0.weight": torch.empty(2, 2)})
    half = {k: v for k, v in good.items() if "lora_B" not in k}
    assert "no lora_B" in refusal(lora_pairs, half)
    ranks = dict(good, **{"base_model.model.blocks.0.ffn.0.lora_B.weight": torch.empty(256, 5, device="meta")})
    assert "ranks do not match" in refusal(lora_pairs, ranks)
    other = {k.replace("blocks.", "transformer_blocks."): v for k, v in good.items()}
    msg = refusal(merge_lora, base, lora_pairs(other), name="other.safetensors")
    assert "none of its targets" in msg and "other.safetensors" in msg
    partial = dict(good, **{"base_model.model.blocks.7.ffn.0.lora_A.weight": torch.empty(4, 128),
                            "base_model.model.blocks.7.ffn.0.lora_B.weight": torch.empty(256, 4)})
    assert "1 of its 21 targets" in refusal(merge_lora, base, lora_pairs(partial))
    big = peft_lora(C13, rank=4, modules=("self_attn.q",))
    big = {k: v for k, v in big.items() if ".blocks.0." in k}
    assert "another model size" in refusal(merge_lora, base, lora_pairs(big))
    fp8 = {k: v.to(torch.float8_e4m3fn) if v.ndim == 2 else v for k, v in base.items()}
    assert "fp8" in refusal(merge_lora, fp8, lora_pairs(good))
    assert "critic" in refusal(unwrap_lora, {"critic_lora": good, "step": 3})
    nan = peft_lora(TINY, rank=4, device="cpu")
    nan["base_model.model.blocks.0.self_attn.q.lora_A.weight"][0, 0] = float("nan")
    torch.save(longlive_lora_pt(nan), tmp_path / "nan.pt")
    assert "NaN" in refusal(load_lora_pairs, tmp_path / "nan.pt")


def test_a_lora_file_as_the_model_names_the_lora_input(tmp_path):
    torch.save(longlive_lora_pt(peft_lora(TINY, rank=4, device="cpu"), trainer=True), tmp_path / "lora.pt")
    msg = refusal(load_wan_state_dict, tmp_path / "lora.pt")
    assert "generator_lora" in msg and "longlive_base.pt" in msg


# ---- memory at 14B / 1080p -----------------------------------------------------------------------------------------
def test_krea_14b_at_1080p_is_refused_with_the_fix():
    cfg = recipe_config("krea_realtime_14b", width=1920, height=1088, num_frames=81)
    # anchor 1 + window 3 + current 3 frames, 8160 tokens each, K and V, 40 layers of 5120, bf16
    assert cache_bytes(C14, cfg) == {"high": 7 * 8160 * 2 * 40 * 5120 * 2}
    need, fixes = run_bytes(C14, cfg), cheaper_plans(C14, cfg)
    with pytest.raises(InsufficientMemoryError, match=r"960x544 \(≈ 12.5 GiB\)"):
        check_fits(need, 40 * 2**30, "cuda:0", fixes)  # an 80 GB card after 26.6 GiB of bf16 weights and more
    check_fits(need, 50 * 2**30, "cuda:0", fixes)
    full = recipe_config("causal_forcing_chunkwise", width=1920, height=1088, num_frames=81)
    assert "window_chunks 1" in dict(cheaper_plans(WanConfig.preset("1.3B"), full))  # a full cache has a fix too
