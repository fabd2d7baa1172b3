"""The embedded toy DiT: its Wan config, its HiStream plans, generation from a prompt and the prompt-accuracy check.

The toy model was trained by flow matching, teacher-forced and then on its own rollouts (train_dit, train_rollout),
not distilled, so it needs more than Self-Forcing's four distilled steps: every chunk gets `TOY_STEPS` = 8 steps of the shift-`TOY_SHIFT` flow
schedule; `histream` runs the first half of them at half resolution (4 low + 4 high), `histream_plus` gives later
chunks 4 steps (2 low + 2 high), `self_forcing` runs all 8 at full resolution with an unbounded cache.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from ._engine import CausalWanModel, ChunkSchedule, HiStreamConfig, HiStreamPipeline, StepPlan, WanConfig

# in its own folder, registered with ComfyUI's diffusion_models by nodes/toy_nodes.py
TOY_DIT_PATH = Path(__file__).resolve().parent / "weights" / "diffusion_models" / "histream_toy_dit.safetensors"
# loadable by ComfyUI as a Wan2.1 T2V model: one 128-wide head, text_dim 4096, freq_dim 256, 16 latent channels
TOY_WAN_CONFIG = WanConfig(dim=128, ffn_dim=512, num_heads=1, num_layers=4)
TOY_CHUNK = 1  # latent frames per chunk (the model was trained block-causal with this chunk size)
TOY_ANCHOR = 1  # latent frames kept forever (the first chunk)
TOY_WINDOW = 3  # most recent chunks kept besides the anchor (trained with this window, see train_dit)
TOY_STEPS = 8
TOY_SHIFT = 3.0
# flow matching without distillation: steps follow the ODE (the pipeline's "euler" sampler); the pipeline's default
# "renoise" (fresh noise per step, Self-Forcing's distilled sampler) collapses such a model to the mean
TOY_SAMPLER = "euler"
# classifier-free guidance against the empty prompt (train_dit --cond-drop): without it the object fades away
TOY_GUIDANCE = 3.0
NEGATIVE_PROMPT = ""  # the empty prompt (all-zero context), what train_dit's --cond-drop trains on
PRESETS = ("histream", "histream_plus", "self_forcing", "low_res_only")


def toy_step_plan(preset: str = "histream", steps: int = TOY_STEPS, shift: float = TOY_SHIFT) -> StepPlan:
    """Per-chunk schedules for the toy model (see the module docstring)."""
    if preset == "histream":
        return StepPlan.uniform(ChunkSchedule.split(steps, steps // 2, shift))
    if preset == "histream_plus":
        later = max(2, steps // 2)
        return StepPlan(ChunkSchedule.split(steps, steps // 2, shift), ChunkSchedule.split(later, later // 2, shift))
    if preset == "self_forcing":
        return StepPlan.uniform(ChunkSchedule.split(steps, 0, shift))
    if preset == "low_res_only":  # every step at half resolution, then a naive latent upsample
        return StepPlan.uniform(ChunkSchedule.split(steps, steps, shift))
    raise ValueError(f"unknown toy preset {preset!r}; choose one of {PRESETS}")


def toy_config(frames: int, size: int = 128, preset: str = "histream", steps: int = TOY_STEPS,
               shift: float = TOY_SHIFT, **overrides) -> HiStreamConfig:
    """A HiStreamConfig for the toy model: `frames` pixel frames (1 + 4k) of size×size, chunks of 1 latent frame,
    anchor 1 + window 3 (self_forcing: unbounded cache, as its preset)."""
    base = dict(width=size, height=size, num_frames=frames, chunk_frames=TOY_CHUNK, anchor_frames=TOY_ANCHOR,
                window_chunks=None if preset == "self_forcing" else TOY_WINDOW,
                steps=toy_step_plan(preset, steps, shift), guidance_scale=TOY_GUIDANCE)
    base.update(overrides)
    return HiStreamConfig(**base)


def load_toy_dit(path=None) -> CausalWanModel:
    """The committed toy DiT (float32, eval mode), read through the pack's own Wan loader."""
    from ._engine import load_wan_state_dict

    sd, cfg, _ = load_wan_state_dict(path or TOY_DIT_PATH)
    model = CausalWanModel(cfg)
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    return model.eval()


_CACHE: dict = {}


def _models(model=None, ae=None, need_ae: bool = True):
    """The given models, else the committed ones (loaded once per process)."""
    if model is None:
        if "dit" not in _CACHE:
            _CACHE["dit"] = load_toy_dit()
        model = _CACHE["dit"]
    if ae is None and need_ae:
        from .autoencoder import load_toy_ae

        if "ae" not in _CACHE:
            _CACHE["ae"] = load_toy_ae()
        ae = _CACHE["ae"]
    return model, ae


@torch.no_grad()
def generate_latent(prompt: str, frames: int, seed: int = 0, preset: str = "histream", size: int = 128,
                    model=None, steps: int = TOY_STEPS, sampler: str = TOY_SAMPLER, **overrides) -> torch.Tensor:
    """The normalised latent [1, 16, T, size/8, size/8] of a prompt, through HiStreamPipeline."""
    from .text import encode_prompt

    model, _ = _models(model, need_ae=False)
    cfg = toy_config(frames, size, preset, steps, sampler=sampler, **overrides)
    negative = encode_prompt(NEGATIVE_PROMPT) if cfg.guided else None
    return HiStreamPipeline(model, cfg).generate(encode_prompt(prompt), seed=seed, negative=negative)


@torch.no_grad()
def generate_toy(prompt: str, frames: int = 33, seed: int = 0, preset: str = "histream", size: int = 128,
                 model=None, ae=None, steps: int = TOY_STEPS, sampler: str = TOY_SAMPLER, **overrides) -> torch.Tensor:
    """A video [3, frames, size, size] in [-1, 1] from a toy prompt ("red circle moving right, fast")."""
    model, ae = _models(model, ae)
    latent = generate_latent(prompt, frames, seed, preset, size, model, steps, sampler, **overrides)
    return ae.decode(latent)[0]


def held_out_pairs(n: int, seed: int, frames=(17, 33)) -> list[tuple]:
    """n (VideoSpec, noise seed, pixel frames) triples; specs come from their own rng, so they are not the
    training specs (train_dit draws from `random.Random(seed)` with the training seed)."""
    from .data import random_spec

    rng = random.Random(f"toy-eval-{seed}")
    return [(random_spec(rng), rng.randrange(2**31), 1 + 4 * rng.randint((frames[0] - 1) // 4, (frames[1] - 1) // 4))
            for _ in range(n)]


@torch.no_grad()
def prompt_accuracy(pairs, preset: str = "histream", size: int = 128, model=None, ae=None,
                    steps: int = TOY_STEPS, sampler: str = TOY_SAMPLER) -> dict:
    """Fraction of generated videos whose detected colour / motion direction match the prompt."""
    from .data import centroid_track, detect_color, detect_direction

    model, ae = _models(model, ae)
    color = direction = 0
    misses = []
    for spec, seed, frames in pairs:
        video = generate_toy(spec.prompt, frames, seed, preset, size, model, ae, steps, sampler)
        c, d = detect_color(video), detect_direction(centroid_track(video))
        color += c == spec.color
        direction += d == spec.direction
        if c != spec.color or d != spec.direction:
            misses.append(f"{spec.prompt!r} seed {seed}: got {c}, {d}")
    n = max(1, len(pairs))
    return {"color": color / n, "direction": direction / n, "n": len(pairs), "misses": misses}
