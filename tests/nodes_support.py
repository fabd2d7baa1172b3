"""Builders for the node-pack integration tests: tiny Wan checkpoints in real formats, API prompts, and the
direct core run that a node-pack result must equal."""

from __future__ import annotations

import uuid
from pathlib import Path

import torch
from comfy_test_nodes import fake_wan_text
from safetensors.torch import load_file, save_file

from histream_core import CausalWanModel, HiStreamConfig, HiStreamPipeline, WanConfig
from histream_core.schedule import build_step_plan
from histream_core.vace import VaceControl

TESTS = Path(__file__).resolve().parent
TEST_NODES = TESTS / "comfy_test_nodes"
TINY = WanConfig.preset("tiny")
PRESET_COUNTS = {"HiStream": (4, 2, 4, 2), "HiStream+": (4, 2, 2, 1), "Self-Forcing full-res": (4, 0, 4, 0)}


def tiny_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = CausalWanModel(TINY)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.normal_(0, 0.1)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def write_self_forcing_pt(path: Path, sd: dict) -> Path:
    """Self-Forcing's format: a pickle dict with `generator` and `generator_ema`, keys prefixed `model.`."""
    ema = {f"model.{k}": v for k, v in sd.items()}
    noisy = {f"model.{k}": v + 1.0 for k, v in sd.items()}  # the non-EMA weights must not be the ones used
    torch.save({"generator": noisy, "generator_ema": ema}, path)
    return path


def write_comfy_safetensors(path: Path, sd: dict) -> Path:
    save_file({f"model.diffusion_model.{k}": v for k, v in sd.items()}, str(path))
    return path


def write_lora(path: Path, sd: dict, rank: int = 4, alpha: float = 2.0, seed: int = 3) -> dict:
    """A LoRA on every self-attention q/v of every block; returns {wan key: (A, B)}."""
    g = torch.Generator().manual_seed(seed)
    tensors, pairs = {}, {}
    for k, w in sd.items():
        if k.endswith(("self_attn.q.weight", "self_attn.v.weight")):
            out_f, in_f = w.shape
            a = torch.randn(rank, in_f, generator=g) * 0.2
            b = torch.randn(out_f, rank, generator=g) * 0.2
            base = "diffusion_model." + k[: -len(".weight")]
            tensors[f"{base}.lora_A.weight"], tensors[f"{base}.lora_B.weight"] = a, b
            tensors[f"{base}.alpha"] = torch.tensor(alpha)
            pairs[k] = (a, b)
    save_file(tensors, str(path))
    return {"pairs": pairs, "rank": rank, "alpha": alpha}


def merge_lora(sd: dict, lora: dict, strength: float) -> dict:
    """W + s·(α/r)·B·A, by hand."""
    out = dict(sd)
    for k, (a, b) in lora["pairs"].items():
        out[k] = sd[k] + strength * (lora["alpha"] / lora["rank"]) * (b @ a)
    return out


def histream_prompt(model_name: str, *, preset: str = "HiStream", width: int = 64, height: int = 64, frames: int = 9,
                    batch: int = 1, seed: int = 7, window: int = 1, anchor: int = 3, lora: str | None = None,
                    lora_strength: float = 1.0, cond_seed: int = 1, tokens: int = 8, cond_batch: int = 1,
                    upsample: str = "bilinear", position_mode: str = "cache_relative", shift: float = 5.0,
                    counts=(4, 2, 2, 1), prefix: str | None = None) -> dict:
    """An API-format HiStream graph ending in stock SaveLatent."""
    p = {
        "1": {"class_type": "LoadHiStreamModel",
              "inputs": {"model_name": model_name, "weight_dtype": "default", "attention": "sdpa"}},
        "3": {"class_type": "HiStreamTestConditioning",
              "inputs": {"seed": cond_seed, "tokens": tokens, "batch": cond_batch}},
        "4": {"class_type": "AnchorCacheChunker",
              "inputs": {"width": width, "height": height, "frames": frames, "batch_size": batch, "chunk_frames": 3,
                         "anchor_frames": anchor, "window_chunks": window, "position_mode": position_mode}},
        "5": {"class_type": "SparseStepSampler",
              "inputs": {"preset": preset, "shift": shift, "first_chunk_steps": counts[0],
                         "first_chunk_low_steps": counts[1], "later_chunk_steps": counts[2],
                         "later_chunk_low_steps": counts[3]}},
        "6": {"class_type": "LowResDenoise",
              "inputs": {"model": ["1", 0], "positive": ["3", 0], "cache": ["4", 0], "steps": ["5", 0],
                         "latent": ["4", 1], "seed": seed, "low_res_scale": 0.5}},
        "7": {"class_type": "CachedUpsampleRefine",
              "inputs": {"low_res": ["6", 0], "upsample_method": upsample, "downsample_method": "area",
                         "rope_ntk_scale": 1.0, "cache_update": "clean_pass"}},
        "8": {"class_type": "SaveLatent",
              "inputs": {"samples": ["7", 0], "filename_prefix": prefix or f"histream_test/{uuid.uuid4().hex}"}},
    }
    if lora:
        p["2"] = {"class_type": "LoraLoaderModelOnly",
                  "inputs": {"model": ["1", 0], "lora_name": lora, "strength_model": lora_strength}}
        p["6"]["inputs"]["model"] = ["2", 0]
    return p


def saved_latent(server, entry: dict, node_id: str = "8") -> torch.Tensor:
    files = server.output_files(entry, node_id)
    assert len(files) == 1, files
    return load_file(str(files[0]))["latent_tensor"]


def core_reference(sd: dict, latent_format, *, preset="HiStream", width=64, height=64, frames=9, batch=1, seed=7,
                   window=1, anchor=3, cond_seed=1, tokens=8, cond_batch=1, upsample="bilinear",
                   position_mode="cache_relative", shift=5.0, counts=(4, 2, 2, 1)) -> torch.Tensor:
    """The same run through histream_core directly, mapped to ComfyUI's raw latent space by `process_out`."""
    model = CausalWanModel(TINY)
    model.load_state_dict(sd)
    model.eval()
    c = PRESET_COUNTS.get(preset, counts)
    cfg = HiStreamConfig(width=width, height=height, num_frames=frames, batch_size=batch, chunk_frames=3,
                         anchor_frames=anchor, window_chunks=window, position_mode=position_mode,
                         steps=build_step_plan(*c, shift=shift), upsample_method=upsample)
    ctx = fake_wan_text(cond_seed, tokens, cond_batch)
    x = HiStreamPipeline(model, cfg).generate(ctx, seed=seed)
    return latent_format.process_out(x)


def chunker_and_steps(pack, *, size: int = 64, frames: int = 9, preset: str = "HiStream", counts=(4, 2, 2, 1)):
    """AnchorCacheChunker (batch 1, chunks of 3, anchor 3, window 1) and SparseStepSampler, called in process."""
    m = pack.NODE_CLASS_MAPPINGS
    cache, latent = m["AnchorCacheChunker"]().plan(
        width=size, height=size, frames=frames, batch_size=1, chunk_frames=3, anchor_frames=3, window_chunks=1,
        position_mode="cache_relative")
    (steps,) = m["SparseStepSampler"]().build(
        preset=preset, shift=5.0, first_chunk_steps=counts[0], first_chunk_low_steps=counts[1],
        later_chunk_steps=counts[2], later_chunk_low_steps=counts[3])
    return cache, latent, steps


def run_pack_nodes(pack, patcher, positive, *, size: int = 64, frames: int = 9, preset: str = "HiStream",
                   counts=(4, 2, 2, 1), seed: int = 7, negative=None, cfg: float = 1.0) -> dict:
    """The four stage nodes called in process, by name, as a graph wires them; returns the LATENT."""
    m = pack.NODE_CLASS_MAPPINGS
    cache, latent, steps = chunker_and_steps(pack, size=size, frames=frames, preset=preset, counts=counts)
    (low,) = m["LowResDenoise"]().stage(model=patcher, positive=positive, cache=cache, steps=steps, latent=latent,
                                        seed=seed, low_res_scale=0.5, negative=negative, cfg=cfg)
    return m["CachedUpsampleRefine"]().run(low_res=low, upsample_method="bilinear", downsample_method="area",
                                           rope_ntk_scale=1.0, cache_update="clean_pass")[0]


def core_vace_run(api: dict, ids: dict, saved: dict, latent_format) -> torch.Tensor:
    """An API graph's HiStream settings (`ids`: class type → node id) and the conditioning its WanVaceToVideo made
    (`saved` by HiStreamTestSaveConditioning) through histream_core directly, on the test server's weights."""
    chunker, steps = api[ids["AnchorCacheChunker"]]["inputs"], api[ids["SparseStepSampler"]]["inputs"]
    low, refine = api[ids["LowResDenoise"]]["inputs"], api[ids["CachedUpsampleRefine"]]["inputs"]
    counts = PRESET_COUNTS.get(steps["preset"]) or tuple(steps[k] for k in (
        "first_chunk_steps", "first_chunk_low_steps", "later_chunk_steps", "later_chunk_low_steps"))
    cfg = HiStreamConfig(width=chunker["width"], height=chunker["height"], num_frames=chunker["frames"],
                         batch_size=chunker["batch_size"], chunk_frames=chunker["chunk_frames"],
                         anchor_frames=chunker["anchor_frames"], window_chunks=chunker["window_chunks"],
                         position_mode=chunker["position_mode"], low_res_scale=low["low_res_scale"],
                         steps=build_step_plan(*counts, shift=steps["shift"]), sampler=steps["sampler"],
                         upsample_method=refine["upsample_method"], downsample_method=refine["downsample_method"],
                         rope_ntk_scale=refine["rope_ntk_scale"], cache_update=refine["cache_update"])
    # the host's own mapping of WanVaceToVideo's raw latents: process_in per 16-channel group
    raw = saved["vace_frames.0"].float()
    frames = torch.cat([latent_format.process_in(raw[:, i:i + 16]) for i in range(0, raw.shape[1], 16)], dim=1)
    control = VaceControl([frames], [saved["vace_mask.0"].float()], saved["vace_strength"].tolist())
    model = CausalWanModel(TINY, vace_layers=2)
    from vace_helpers import tiny_vace_tensors

    model.load_state_dict({**tiny_state_dict(seed=0), **tiny_vace_tensors()})
    x = HiStreamPipeline(model.eval(), cfg).generate(saved["cond"], seed=low["seed"], control=control)
    return latent_format.process_out(x)
