"""Write Wan2.1 state dicts the way real checkpoints name and store them (for tests of histream_core.loading).

The diffusers names below are written out by hand from diffusers' `WanTransformer3DModel` (module attributes) and
its `convert_wan_transformer_to_diffusers`, independently of the loader's own table.
"""

from __future__ import annotations

import torch

from histream_core.config import WanConfig
from histream_core.loading import expected_wan_shapes


def wan_state_dict(cfg: WanConfig, device: str = "meta", dtype: torch.dtype = torch.bfloat16, seed: int = 0,
                   ) -> dict[str, torch.Tensor]:
    """Canonical Wan2.1 names; `meta` tensors (shapes only) or small random values on CPU."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in expected_wan_shapes(cfg).items():
        if device == "meta":
            out[k] = torch.empty(shape, dtype=dtype, device="meta")
        else:
            out[k] = torch.randn(shape, generator=gen).to(dtype)
    return out


def prefixed(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in sd.items()}


_TOP = {
    "patch_embedding": "patch_embedding",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "head.head": "proj_out",
}
_BLOCK = {
    "self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0", "self_attn.norm_q": "attn1.norm_q", "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k", "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0", "cross_attn.norm_q": "attn2.norm_q", "cross_attn.norm_k": "attn2.norm_k",
    "norm3": "norm2", "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2",
}


def to_diffusers_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Canonical Wan2.1 names → diffusers `WanTransformer3DModel` names (T2V keys only)."""
    out = {}
    for k, v in sd.items():
        if k == "head.modulation":
            out["scale_shift_table"] = v
            continue
        if k.startswith("blocks."):
            _, idx, rest = k.split(".", 2)
            if rest == "modulation":
                out[f"blocks.{idx}.scale_shift_table"] = v
                continue
            module, param = rest.rsplit(".", 1)
            out[f"blocks.{idx}.{_BLOCK[module]}.{param}"] = v
            continue
        module, param = k.rsplit(".", 1)
        out[f"{_TOP[module]}.{param}"] = v
    return out


def i2v_state_dict(cfg: WanConfig) -> dict[str, torch.Tensor]:
    """Wan2.1 image-to-video layout (meta): 36 input channels, CLIP image projection, extra k/v per block."""
    sd = wan_state_dict(cfg)
    d = cfg.dim
    sd["patch_embedding.weight"] = torch.empty(d, 36, *cfg.patch_size, device="meta")
    sd.update({"img_emb.proj.0.weight": torch.empty(1280, device="meta"),
               "img_emb.proj.1.weight": torch.empty(1280, 1280, device="meta"),
               "img_emb.proj.3.weight": torch.empty(d, 1280, device="meta")})
    for i in range(cfg.num_layers):
        for name in ("k_img", "v_img"):
            sd[f"blocks.{i}.cross_attn.{name}.weight"] = torch.empty(d, d, device="meta")
        sd[f"blocks.{i}.cross_attn.norm_k_img.weight"] = torch.empty(d, device="meta")
    return sd


def vace_state_dict(cfg: WanConfig) -> dict[str, torch.Tensor]:
    """A Wan2.1 VACE checkpoint (meta): the base model plus `vace_blocks.*` and `vace_patch_embedding`."""
    sd = wan_state_dict(cfg)
    sd["vace_patch_embedding.weight"] = torch.empty(cfg.dim, 96, *cfg.patch_size, device="meta")
    for i in range(2):
        sd[f"vace_blocks.{i}.after_proj.weight"] = torch.empty(cfg.dim, cfg.dim, device="meta")
    return sd


def lora_state_dict(cfg: WanConfig, rank: int = 4) -> dict[str, torch.Tensor]:
    """A Wan LoRA as ComfyUI/diffusers-trainers write it."""
    sd = {}
    for i in range(cfg.num_layers):
        for proj in "qkvo":
            base = f"diffusion_model.blocks.{i}.self_attn.{proj}"
            sd[f"{base}.lora_A.weight"] = torch.zeros(rank, cfg.dim)
            sd[f"{base}.lora_B.weight"] = torch.zeros(cfg.dim, rank)
    return sd


def vae_state_dict() -> dict[str, torch.Tensor]:
    """The first keys of a Wan2.1 VAE (meta)."""
    return {
        "conv1.weight": torch.empty(32, 32, 1, 1, 1, device="meta"),
        "decoder.conv1.weight": torch.empty(384, 16, 3, 3, 3, device="meta"),
        "decoder.head.2.weight": torch.empty(3, 96, 3, 3, 3, device="meta"),
        "encoder.conv1.weight": torch.empty(96, 3, 3, 3, 3, device="meta"),
        "encoder.downsamples.0.residual.0.gamma": torch.empty(96, 1, 1, 1, device="meta"),
    }


def scaled_fp8(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ComfyUI scaled-fp8 repack: linear weights in float8_e4m3fn with a per-tensor `scale_weight`."""
    out = {}
    for k, v in sd.items():
        if k.endswith(".weight") and v.ndim == 2:
            scale = v.float().abs().amax() / 448.0
            out[k] = (v.float() / scale).to(torch.float8_e4m3fn)
            out[k[: -len("weight")] + "scale_weight"] = scale.reshape(())
        else:
            out[k] = v
    out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return out


# ---- causal Wan families (layouts from their public repos and model cards) -----------------------------------------
LORA_MODULES = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k",
                "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2")  # the blocks' Linear layers


def causal_forcing_pt(sd: dict[str, torch.Tensor], fsdp: bool = False) -> dict:
    """Causal Forcing(++) `.pt`: Self-Forcing's layout (`generator_ema` is the one to use), `model.` keys; some
    releases keep FSDP's `model._fsdp_wrapped_module.` segment."""
    prefix = "model._fsdp_wrapped_module." if fsdp else "model."
    return {"generator_ema": prefixed(sd, prefix), "generator": {prefix + k: v + 1 for k, v in sd.items()}}


def longlive_base_pt(sd: dict[str, torch.Tensor], critic: dict[str, torch.Tensor] | None = None) -> dict:
    """LongLive `longlive_base.pt`: `{"generator": model.-prefixed}`; trainer bases add a `critic` of the same
    names (a different network that must never be loaded)."""
    out = {"generator": prefixed(sd, "model.")}
    if critic is not None:
        out["critic"] = prefixed(critic, "model.")
    return out


def peft_lora(cfg: WanConfig, rank: int, device: str = "meta", seed: int = 0, modules=LORA_MODULES,
              ) -> dict[str, torch.Tensor]:
    """PEFT names as LongLive saves them: `base_model.model.blocks.N.<module>.lora_{A,B}.weight`, no alpha."""
    gen = torch.Generator().manual_seed(seed)
    shapes = expected_wan_shapes(cfg)
    out = {}
    for i in range(cfg.num_layers):
        for mod in modules:
            o, n = shapes[f"blocks.{i}.{mod}.weight"]
            base = f"base_model.model.blocks.{i}.{mod}"
            for half, shape in (("lora_A", (rank, n)), ("lora_B", (o, rank))):
                out[f"{base}.{half}.weight"] = (torch.empty(shape, dtype=torch.bfloat16, device="meta")
                                                if device == "meta" else
                                                (torch.randn(shape, generator=gen) * 0.05).to(torch.bfloat16))
    return out


def longlive_lora_pt(lora: dict[str, torch.Tensor], trainer: bool = False, critic: dict | None = None) -> dict:
    """LongLive `lora.pt` = `{"generator_lora": ...}`; its trainer writes `{generator_lora, critic_lora, step}`."""
    if not trainer:
        return {"generator_lora": lora}
    return {"generator_lora": lora, "critic_lora": critic if critic is not None else lora, "step": 1000}
