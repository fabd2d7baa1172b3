"""Checkpoint files → canonical Wan2.1 state dicts, the model config read off the weights, and clear errors.

Formats handled (all end up with Wan2.1's own parameter names, e.g. `blocks.0.self_attn.q.weight`):
- Self-Forcing `.pt`: `{"generator": sd, "generator_ema": sd}`, keys prefixed `model.` (EMA preferred); the same
  layout for Causal Forcing(++) and LongLive's base (`{"generator", "critic"}`: the critic is never read);
  LongLive's LoRA (`generator_lora`) is merged by `lora_merge`, not loaded as a model;
- Wan2.1 official `diffusion_pytorch_model*.safetensors` (bare names; shards are merged);
- ComfyUI repacks: bare or `model.diffusion_model.` / `diffusion_model.` prefixed, fp16/bf16/fp8;
  causal (autoregressive) repacks carry safetensors metadata `config = '{"transformer": {"causal_ar": true}}'`;
- diffusers `WanTransformer3DModel` (`attn1.to_q`, `condition_embedder.*`, `scale_shift_table`, ...).

Scaled-fp8 repacks store per-layer `*.scale_weight` / `*.scale_input` tensors and a `scaled_fp8` marker next to
the fp8 weights. They are KEPT in the canonical dict (the host's fp8 ops need them to dequantize); use
`dequantize_scaled_fp8` to get plain weights for pure-PyTorch use.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .checkpoint_files import CheckpointError, read_state_dict
from .config import WAN_PRESETS, ConfigError, WanConfig

log = logging.getLogger(__name__)

ANCHOR = "patch_embedding.weight"  # present in Wan2.1 and diffusers layouts alike
WRAPPER_KEYS = ("generator_ema", "generator", "ema", "model_ema", "state_dict", "module", "model", "net")
WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
QUANT_SUFFIXES = (".scale_weight", ".scale_input", ".weight_scale", ".input_scale", ".comfy_quant")
QUANT_MARKER = "scaled_fp8"
WAN_HEAD_DIM = 128  # every released Wan2.1/2.2 model uses 128-wide heads

# ---- unwrapping and renaming -------------------------------------------------------------------------------------
def unwrap_checkpoint(obj: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict inside a training checkpoint (Self-Forcing `generator_ema` preferred over `generator`)."""
    return _unwrap(obj)[0]


def _unwrap(obj: dict[str, Any]) -> tuple[dict[str, torch.Tensor], str | None]:
    path = []
    for _ in range(4):  # wrappers nest at most a few levels
        if _tensor_fraction(obj) > 0.5:
            break
        key = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict) and obj[k]), None)
        if key is None:
            break
        path.append(key)
        obj = obj[key]
    source = ".".join(path) or None
    if source:
        log.info("using the %r state dict of the checkpoint", source)
    dropped = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if dropped:
        log.info("ignoring %d non-tensor entries (e.g. %s)", len(dropped), dropped[:3])
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}, source


def _tensor_fraction(d: dict) -> float:
    return sum(isinstance(v, torch.Tensor) for v in d.values()) / max(len(d), 1)


def _diffusers_tables() -> tuple[dict[str, str], dict[str, str]]:
    """diffusers `WanTransformer3DModel` module paths → Wan2.1 module paths (top level, inside `blocks.N.`)."""
    top = {
        "condition_embedder.time_embedder.linear_1": "time_embedding.0",
        "condition_embedder.time_embedder.linear_2": "time_embedding.2",
        "condition_embedder.text_embedder.linear_1": "text_embedding.0",
        "condition_embedder.text_embedder.linear_2": "text_embedding.2",
        "condition_embedder.time_proj": "time_projection.1",
        "condition_embedder.image_embedder.norm1": "img_emb.proj.0",  # image-to-video only
        "condition_embedder.image_embedder.ff.net.0.proj": "img_emb.proj.1",
        "condition_embedder.image_embedder.ff.net.2": "img_emb.proj.3",
        "condition_embedder.image_embedder.norm2": "img_emb.proj.4",
        "proj_out": "head.head",
        "scale_shift_table": "head.modulation",  # [1, 2, dim] in both
    }
    block = {
        "norm2": "norm3",  # the affine cross-attention LayerNorm (diffusers renumbers the norms)
        "ffn.net.0.proj": "ffn.0",
        "ffn.net.2": "ffn.2",
        "scale_shift_table": "modulation",  # [1, 6, dim] in both
    }
    for src, dst in (("attn1", "self_attn"), ("attn2", "cross_attn")):
        for a, b in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "o"), ("norm_q", "norm_q"),
                     ("norm_k", "norm_k"), ("add_k_proj", "k_img"), ("add_v_proj", "v_img"),
                     ("norm_added_k", "norm_k_img")):
            block[f"{src}.{a}"] = f"{dst}.{b}"
    return top, block


DIFFUSERS_TOP, DIFFUSERS_BLOCK = _diffusers_tables()
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


def _rename(rest: str, table: dict[str, str]) -> str | None:
    for src, dst in table.items():
        if rest == src or rest.startswith(src + "."):
            return dst + rest[len(src):]
    return None


def _from_diffusers(key: str) -> str:
    m = _BLOCK_RE.match(key)
    if m:
        new = _rename(m[2], DIFFUSERS_BLOCK)
        return key if new is None else f"blocks.{m[1]}.{new}"
    return _rename(key, DIFFUSERS_TOP) or key


def _is_diffusers(keys) -> bool:
    return any(k.startswith("condition_embedder.") or ".attn1." in k for k in keys)


def find_prefix(keys, anchor: str = ANCHOR) -> str | None:
    """The shortest key prefix (`""` or ending in `.`) in front of `anchor`, e.g. `model.diffusion_model.`."""
    cands = [k[: -len(anchor)] for k in keys if k.endswith(anchor)]
    cands = [p for p in cands if p == "" or p.endswith(".")]  # excludes `vace_patch_embedding`
    return min(cands, key=len) if cands else None


def strip_wrapper_segments(sd: dict[str, Any]) -> dict[str, Any]:
    """Keys without training-wrapper segments (`_fsdp_wrapped_module.`, `_orig_mod.`, ...)."""
    cleaned = {}
    for k, v in sd.items():
        for seg in WRAPPER_SEGMENTS:
            k = k.replace(seg, "")
        cleaned[k] = v
    return cleaned


def _canonicalize(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str | None, bool]:
    """→ (canonical dict, stripped prefix, was diffusers). A dict with no Wan anchor is returned unchanged."""
    cleaned = strip_wrapper_segments(sd)
    prefix = find_prefix(cleaned)
    if prefix is None:
        return sd, None, False
    out = {k[len(prefix):]: v for k, v in cleaned.items() if k.startswith(prefix)}
    if QUANT_MARKER in cleaned:  # some repacks leave the fp8 marker unprefixed
        out.setdefault(QUANT_MARKER, cleaned[QUANT_MARKER])
    if len(out) < len(cleaned) - (QUANT_MARKER in cleaned):
        log.info("ignoring %d keys outside %r (VAE, text encoder, ...)", len(cleaned) - len(out), prefix)
    diffusers = _is_diffusers(out)
    if diffusers:
        out = {_from_diffusers(k): v for k, v in out.items()}
    return out, prefix, diffusers


def to_canonical_wan(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes (`model.diffusion_model.`, `model.`, `module.`, `_orig_mod.`, ...) and convert
    diffusers names, so keys read `blocks.N.self_attn.q.weight` etc. A non-Wan dict is returned unchanged."""
    return _canonicalize(sd)[0]


# ---- config and shapes -------------------------------------------------------------------------------------------
def expected_wan_shapes(config: WanConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of a Wan2.1 text-to-video DiT of this config: canonical name → shape."""
    d, f = config.dim, config.ffn_dim
    shapes: dict[str, tuple[int, ...]] = {
        "patch_embedding.weight": (d, config.in_dim, *config.patch_size), "patch_embedding.bias": (d,),
        "text_embedding.0.weight": (d, config.text_dim), "text_embedding.0.bias": (d,),
        "text_embedding.2.weight": (d, d), "text_embedding.2.bias": (d,),
        "time_embedding.0.weight": (d, config.freq_dim), "time_embedding.0.bias": (d,),
        "time_embedding.2.weight": (d, d), "time_embedding.2.bias": (d,),
        "time_projection.1.weight": (6 * d, d), "time_projection.1.bias": (6 * d,),
    }
    for i in range(config.num_layers):
        b = f"blocks.{i}."
        for attn in ("self_attn", "cross_attn"):
            for proj in "qkvo":
                shapes[f"{b}{attn}.{proj}.weight"] = (d, d)
                shapes[f"{b}{attn}.{proj}.bias"] = (d,)
            if config.qk_norm:
                shapes[f"{b}{attn}.norm_q.weight"] = (d,)
                shapes[f"{b}{attn}.norm_k.weight"] = (d,)
        if config.cross_attn_norm:
            shapes[f"{b}norm3.weight"] = (d,)
            shapes[f"{b}norm3.bias"] = (d,)
        shapes.update({f"{b}ffn.0.weight": (f, d), f"{b}ffn.0.bias": (f,),
                       f"{b}ffn.2.weight": (d, f), f"{b}ffn.2.bias": (d,), f"{b}modulation": (1, 6, d)})
    shapes["head.head.weight"] = (config.out_dim * math.prod(config.patch_size), d)
    shapes["head.head.bias"] = (config.out_dim * math.prod(config.patch_size),)
    shapes["head.modulation"] = (1, 2, d)
    return shapes


def _need(sd: dict[str, torch.Tensor], key: str, name: str) -> torch.Tensor:
    if key not in sd:
        raise CheckpointError(f"{name} lacks {key!r}, which every Wan2.1 model has: the file looks truncated or "
                              f"partially converted; re-download it")
    return sd[key]


def infer_wan_config(sd: dict[str, torch.Tensor], num_heads: int | None = None, name: str = "the checkpoint",
                     ) -> WanConfig:
    """Read the WanConfig off canonical weights (shapes only: `meta` tensors work).

    num_heads is not stored in the weights: Wan's heads are 128 wide, so num_heads = dim // 128 unless given.
    """
    _refuse_non_wan(sd, name)
    pe = _need(sd, ANCHOR, name)
    if pe.ndim != 5:
        raise CheckpointError(f"{name}: patch_embedding.weight has shape {tuple(pe.shape)}, expected a 5-D Conv3d "
                              f"kernel [dim, in_dim, pt, ph, pw]; this is not a Wan2.1 video model")
    dim, in_dim, *patch = pe.shape
    blocks = {int(m[1]) for k in sd if (m := _BLOCK_RE.match(k))}
    if not blocks:
        raise CheckpointError(f"{name} has no transformer blocks (blocks.N.*): the file looks truncated or "
                              f"partial; re-download it")
    if num_heads is None:
        head_dim = WAN_HEAD_DIM if dim % WAN_HEAD_DIM == 0 else next(h for h in (64, 32, 16, 8, 4, 2, dim)
                                                                   if dim % h == 0)
        if head_dim != WAN_HEAD_DIM:
            log.warning("dim %d is not a multiple of Wan's 128-wide heads; assuming %d-wide heads "
                        "(pass num_heads to override)", dim, head_dim)
        num_heads = dim // head_dim
    try:
        return WanConfig(
            dim=dim, in_dim=in_dim, patch_size=tuple(patch), num_heads=num_heads, num_layers=max(blocks) + 1,
            ffn_dim=_need(sd, "blocks.0.ffn.0.weight", name).shape[0],
            freq_dim=_need(sd, "time_embedding.0.weight", name).shape[1],
            text_dim=_need(sd, "text_embedding.0.weight", name).shape[1],
            out_dim=_need(sd, "head.head.weight", name).shape[0] // math.prod(patch),
            qk_norm="blocks.0.self_attn.norm_q.weight" in sd,
            cross_attn_norm="blocks.0.norm3.weight" in sd,
        )
    except ConfigError as e:
        raise CheckpointError(f"{name}: the weights give an invalid Wan config ({e}); pass num_heads") from None


# ---- validation --------------------------------------------------------------------------------------------------
_VACE_RE = re.compile(r"(^|\.)vace_(blocks|patch_embedding)\.")
_SIZE_FIELDS = ("dim", "num_layers")
_SHAPE_FIELDS = ("dim", "num_layers", "ffn_dim", "freq_dim", "text_dim", "in_dim", "out_dim", "patch_size",
                 "qk_norm", "cross_attn_norm")


def _size_name(c: WanConfig) -> str:
    preset = next((n for n, p in WAN_PRESETS.items() if (p.dim, p.num_layers) == (c.dim, c.num_layers)), None)
    desc = f"dim {c.dim}, {c.num_layers} blocks"
    return f"the Wan2.1 {preset} model ({desc})" if preset else f"a Wan model with {desc}"


def _refuse_non_wan(sd: dict[str, torch.Tensor], name: str) -> None:
    keys = list(sd)
    if any(_VACE_RE.search(k) for k in keys):
        raise CheckpointError(f"{name} is a Wan2.1 VACE checkpoint (vace_blocks.*); HiStream needs the plain "
                              f"text-to-video 1.3B (Self-Forcing) weights as the main model: a VACE module is "
                              f"loaded separately")
    if ANCHOR in sd and "head.modulation" in sd:
        return
    if ANCHOR in sd and any(k.startswith("blocks.") for k in keys):
        return  # a Wan model with missing parts: reported as missing keys
    first = ", ".join(sorted(keys)[:4]) or "no tensors at all"
    low = [k.lower() for k in keys]
    if any("lora" in k or k.endswith((".alpha", ".diff", ".diff_b")) for k in low):
        kind = "a LoRA (apply it to the loaded model with a LoRA loader node instead)"
    elif any(".input_blocks." in f".{k}" or "conditioner.embedders." in k for k in low):
        kind = ("a Stable Diffusion (UNet) checkpoint (input_blocks.*; SD1.5/SDXL); load it with the stock "
                "checkpoint loader, it does not run with HiStream")
    elif any(".double_blocks." in f".{k}" or "joint_blocks." in k for k in low):
        kind = "an image model (Flux/SD3 blocks), not a Wan2.1 video model"
    elif any(k.startswith(("encoder.conv1", "decoder.conv1", "first_stage_model.", "encoder.down", "decoder.up"))
             for k in low):
        kind = "a VAE"
    elif any(k.startswith(("shared.", "encoder.block.", "text_model.", "token_embd")) for k in low):
        kind = "a text encoder"
    else:
        kind = "not a Wan2.1 diffusion model"
    raise CheckpointError(f"{name} looks like {kind}: it has no Wan2.1 'head.modulation'/'patch_embedding' "
                          f"tensors (first keys: {first}); load the Wan2.1 text-to-video 1.3B (Self-Forcing) weights")


def validate_t2v(sd: dict[str, torch.Tensor], expected: WanConfig | None = None, name: str = "the checkpoint",
                 ) -> WanConfig:
    """Refuse, with one clear CheckpointError, anything but a complete Wan2.1 text-to-video DiT (of the `expected`
    size, if given). `sd` must be canonical (see `to_canonical_wan`). Returns the checkpoint's WanConfig."""
    _refuse_non_wan(sd, name)
    i2v_keys = [k for k in sd if k.startswith("img_emb.") or ".k_img." in k]
    if i2v_keys:
        raise CheckpointError(f"{name} is a Wan2.1 image-to-video checkpoint ({i2v_keys[0]}); HiStream needs the "
                              f"text-to-video 1.3B (Self-Forcing) weights")
    dim = _need(sd, ANCHOR, name).shape[0]
    heads = expected.num_heads if expected is not None and expected.dim == dim else None
    cfg = infer_wan_config(sd, num_heads=heads, name=name)
    if cfg.in_dim in (36, 48):
        what = "image-to-video" if cfg.in_dim == 36 else "Wan2.2 TI2V (48 latent channels)"
        raise CheckpointError(f"{name} is a {what} checkpoint (patch_embedding takes {cfg.in_dim} channels); "
                              f"HiStream needs the Wan2.1 text-to-video 1.3B (Self-Forcing) weights")
    if expected is not None:
        if any(getattr(cfg, f) != getattr(expected, f) for f in _SIZE_FIELDS):
            raise CheckpointError(f"{name} is {_size_name(cfg)}, but HiStream is set up for {_size_name(expected)}: "
                                  f"load matching weights (the 1.3B Self-Forcing text-to-video model) or change "
                                  f"the model size")
        diff = [f"{f} {getattr(cfg, f)} (expected {getattr(expected, f)})"
                for f in _SHAPE_FIELDS if getattr(cfg, f) != getattr(expected, f)]
        if diff:
            raise CheckpointError(f"{name} does not match the expected Wan config: {', '.join(diff)}; load the "
                                  f"Wan2.1 text-to-video weights this config describes")
        cfg = replace(cfg, text_len=expected.text_len, eps=expected.eps)  # not stored in the weights
    shapes = expected_wan_shapes(cfg)
    missing = [k for k in shapes if k not in sd]
    if missing:
        raise CheckpointError(f"{name} is incomplete: {len(missing)} of {len(shapes)} Wan2.1 tensors are missing "
                              f"(first: {', '.join(missing[:3])}); the file looks truncated or partially "
                              f"converted, re-download it")
    wrong = [(k, tuple(sd[k].shape), s) for k, s in shapes.items() if tuple(sd[k].shape) != s]
    if wrong:
        k, got, want = wrong[0]
        raise CheckpointError(f"{name} has {len(wrong)} tensors with unexpected shapes (first: {k} is {got}, "
                              f"expected {want}); it is not a standard Wan2.1 text-to-video checkpoint")
    return cfg


# ---- metadata, fp8 -----------------------------------------------------------------------------------------------
def is_causal_ar(metadata: dict[str, str]) -> bool:
    """True for ComfyUI's causal (autoregressive) Wan repacks. safetensors metadata values are strings: ComfyUI
    stores `config = '{"transformer": {"causal_ar": true}}'` (a bare `transformer` entry is accepted too)."""
    def decoded(value):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                return {}
        return value if isinstance(value, dict) else {}

    transformer = decoded(decoded(metadata.get("config")).get("transformer")) or decoded(metadata.get("transformer"))
    return transformer.get("causal_ar") in (True, "true", "True", 1)


def _is_quant_aux(key: str) -> bool:
    return key == QUANT_MARKER or key.endswith(QUANT_SUFFIXES)


def dequantize_scaled_fp8(sd: dict[str, torch.Tensor], dtype: torch.dtype = torch.bfloat16,
                          ) -> dict[str, torch.Tensor]:
    """Plain weights from a scaled-fp8 repack: weight · scale_weight in `dtype`; the auxiliary keys are dropped."""
    out = {}
    for k, v in sd.items():
        if _is_quant_aux(k):
            continue
        scale = sd.get(k[: -len("weight")] + "scale_weight") if k.endswith(".weight") else None
        if scale is not None:
            v = v.to(torch.float32) * scale.to(torch.float32)
        out[k] = v.to(dtype) if v.is_floating_point() else v
    return out


# ---- everything together -----------------------------------------------------------------------------------------
def load_wan_state_dict(path: str | Path, expected: WanConfig | str | None = None, meta: bool = False,
                        ) -> tuple[dict[str, torch.Tensor], WanConfig, dict[str, Any]]:
    """Read, unwrap, rename and validate a Wan2.1 T2V checkpoint → (canonical state dict, WanConfig, info).

    info: format ("self_forcing", "wan_official", "comfyui", "comfyui_causal_ar", "diffusers"), source (the
    sub-dict used, e.g. "generator_ema"), prefix (stripped), dtypes, quantization, dropped (unknown keys), notes.
    """
    path = Path(path)
    if isinstance(expected, str):
        expected = WanConfig.preset(expected)
    raw, metadata = read_state_dict(path, meta=meta)
    if isinstance(raw.get("generator_lora"), dict):  # LongLive's LoRA (or its trainer's checkpoint)
        raise CheckpointError(f"{path.name} holds LoRA weights ('generator_lora'), not a full model: pick the base "
                              f"model as model_name (LongLive: longlive_base.pt) and this file as lora")
    sd, source = _unwrap(raw)
    canonical, prefix, diffusers = _canonicalize(sd)
    cfg = validate_t2v(canonical, expected, name=path.name)

    shapes = expected_wan_shapes(cfg)
    keep = {k: v for k, v in canonical.items()
            if k in shapes or (_is_quant_aux(k) and (k == QUANT_MARKER or k.rsplit(".", 1)[0] + ".weight" in shapes))}
    dropped = sorted(set(canonical) - set(keep))
    if dropped:
        log.warning("%s: ignoring %d tensors that a Wan2.1 T2V model does not use (e.g. %s)",
                    path.name, len(dropped), dropped[:3])

    if is_causal_ar(metadata):
        fmt = "comfyui_causal_ar"
    elif source and source.startswith("generator"):
        fmt = "self_forcing"
    elif diffusers:
        fmt = "diffusers"
    elif prefix in ("model.diffusion_model.", "diffusion_model.") or QUANT_MARKER in canonical:
        fmt = "comfyui"
    elif prefix == "model.":
        fmt = "self_forcing"
    else:
        fmt = "wan_official"

    dtypes = Counter(str(keep[k].dtype).removeprefix("torch.") for k in shapes)
    quant = "scaled_fp8" if any(_is_quant_aux(k) for k in keep) else None
    notes = []
    if quant:
        notes.append("scaled fp8 weights: keep the loader's weight dtype at 'default' so the per-tensor scales "
                     "are applied (pure PyTorch: dequantize_scaled_fp8)")
    elif any(d.startswith("float8") for d in dtypes):
        notes.append("fp8 weights without scales: they are upcast per layer at run time; pick a bf16/fp16 "
                     "weight dtype if quality matters more than memory")
    info = {"path": str(path), "format": fmt, "source": source, "prefix": prefix or "", "metadata": metadata,
            "dtypes": dict(dtypes), "quantization": quant, "dropped": dropped, "notes": notes}
    log.info("%s: %s format%s, %s, %s", path.name, fmt, f" ({source})" if source else "", _size_name(cfg),
             dict(dtypes))
    return keep, cfg, info
