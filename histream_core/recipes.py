"""Inference recipes of the causal Wan checkpoints users have, as HiStream plans (chunk, steps, anchor + window).

Each family runs in three variants:
- `native`: the recipe the model was trained for (all steps at full resolution, its own cache window);
- `histream`: Dual-Resolution Caching on top: each chunk's first half of steps (rounded down) at low resolution;
  full-cache families get HiStream's bounded window (anchor 3 latent frames + 3 latent frames of window);
- `histream_plus`: also later chunks with half the steps (at least 1), as HiStream+.

Facts (public configs/cards; t = timesteps before the shift σ' = sσ/(1 + (s-1)σ), σ = t/1000, s = 5 everywhere):
- Causal Forcing chunkwise / framewise (thu-ml/Causal-Forcing): chunks of 3 / 1 latent frames, t = [1000, 750, 500,
  250] for every chunk, full cache over 81 frames (21 latent frames).
- Causal Forcing++ framewise 2-step (configs: `denoising_step_list_first_chunk` [1000, 750, 500, 250],
  `denoising_step_list` [1000, 500]): 4 steps on the first frame, then 2 per frame; the 1-step model: 4, then [1000].
- LongLive-1.3B (NVlabs/LongLive `longlive_inference.yaml`): chunks of 3, 4 steps, `local_attn_size` 12 latent frames
  counting the sink (`sink_size` 3) and the current chunk (3): 12 - 3 - 3 = 6 frames of window = 2 chunks, so
  anchor 3 + `window_chunks` 2. (A newer upstream config sets chunks of 6 with the same 12/3, a 3-frame window:
  not a whole chunk, so not offered.)
- Krea Realtime 14B (krea-ai/realtime-video): chunks of 3, 4 steps, shift 5, `kv_cache_num_frames` 3, with a KV
  recompute of the context every block and a KV attention bias. What runs here: anchor 1 latent frame (the first)
  + 1 chunk (3 frames) of window, each chunk's K/V written once by the clean t = 0 pass. What differs: Krea re-runs
  the context frames through the model before each block (frame 0 re-encoded from the decoded pixels) and biases
  attention to the cached keys; neither is implemented, so this is an approximation of Krea's sampler.
Positions: the native recipes keep absolute frame positions (the Self-Forcing code these models build on); the
HiStream variants use the pack's cache-relative positions (any length; equal to absolute until the first eviction).
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import ConfigError, HiStreamConfig
from .schedule import ChunkSchedule, StepPlan, shift_sigma

FOUR = (1000, 750, 500, 250)
VARIANTS = ("native", "histream", "histream_plus")
HISTREAM_ANCHOR, HISTREAM_WINDOW_FRAMES = 3, 3  # HiStream's bounded window, in latent frames


@dataclass(frozen=True)
class Recipe:
    label: str
    chunk_frames: int
    first: tuple[int, ...]  # timesteps of the first chunk
    later: tuple[int, ...]  # timesteps of every later chunk
    anchor_frames: int
    window_chunks: int | None  # None: full cache
    shift: float = 5.0
    position_mode: str = "absolute"
    licence: str = "Apache-2.0"
    note: str = ""


RECIPES = {
    "causal_forcing_chunkwise": Recipe("Causal Forcing chunkwise", 3, FOUR, FOUR, 3, None),
    "causal_forcing_framewise": Recipe("Causal Forcing framewise", 1, FOUR, FOUR, 1, None),
    "causal_forcing_pp_2step": Recipe("Causal Forcing++ framewise 2-step", 1, FOUR, (1000, 500), 1, None),
    "causal_forcing_pp_1step": Recipe("Causal Forcing++ framewise 1-step", 1, FOUR, (1000,), 1, None),
    "longlive": Recipe("LongLive-1.3B", 3, FOUR, FOUR, 3, 2, licence="CC-BY-NC-SA-4.0 (non-commercial)",
                       note="base + LoRA together are the model: pick lora.pt in the loader's lora input"),
    "krea_realtime_14b": Recipe("Krea Realtime 14B", 3, FOUR, FOUR, 1, 1,
                                note="approximation: no per-block KV recompute, no KV attention bias"),
}


def sigmas_of(timesteps, shift: float) -> tuple[float, ...]:
    return tuple(shift_sigma(t / 1000.0, shift) for t in timesteps)


def _drc(timesteps, shift: float) -> ChunkSchedule:
    return ChunkSchedule(sigmas_of(timesteps, shift), n_low=len(timesteps) // 2)


def _halved(timesteps) -> tuple[int, ...]:
    n = max(1, len(timesteps) // 2)
    return tuple(round(1000 * (1 - i / n)) for i in range(n))


def recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}") from None


def recipe_plan(name: str, variant: str = "native") -> dict:
    """The chunk plan and step plan of a recipe variant: HiStreamConfig keyword arguments."""
    r = recipe(name)
    if variant not in VARIANTS:
        raise ConfigError(f"unknown recipe variant {variant!r}; choose one of {list(VARIANTS)}")
    if variant == "native":
        steps = StepPlan(ChunkSchedule(sigmas_of(r.first, r.shift)), ChunkSchedule(sigmas_of(r.later, r.shift)))
        return dict(chunk_frames=r.chunk_frames, anchor_frames=r.anchor_frames, window_chunks=r.window_chunks,
                    position_mode=r.position_mode, steps=steps)
    later = r.later if variant == "histream" else _halved(r.later)
    steps = StepPlan(_drc(r.first, r.shift), _drc(later, r.shift))
    anchor, window = r.anchor_frames, r.window_chunks
    if window is None:  # full cache → HiStream's bounded window
        anchor, window = HISTREAM_ANCHOR, max(1, HISTREAM_WINDOW_FRAMES // r.chunk_frames)
    return dict(chunk_frames=r.chunk_frames, anchor_frames=anchor, window_chunks=window,
                position_mode="cache_relative", steps=steps)


def recipe_config(name: str, variant: str = "native", **video) -> HiStreamConfig:
    """A HiStreamConfig for a recipe variant; `video` sets width, height, num_frames, batch_size, ..."""
    return HiStreamConfig(**{**recipe_plan(name, variant), **video})


def step_counts(name: str, variant: str = "native") -> tuple[int, int, int, int]:
    """(first steps, first low, later steps, later low) of a recipe variant, for the Sparse Step Sampler: every
    recipe's timesteps are uniform (t = 1000·(1 - i/n)), which `schedule.build_step_plan` rebuilds from the counts."""
    from .schedule import uniform_sigmas

    steps, shift = recipe_plan(name, variant)["steps"], recipe(name).shift
    for s in (steps.first, steps.later):
        if s.sigmas != uniform_sigmas(s.steps, shift):
            raise ConfigError(f"recipe {name!r} has non-uniform timesteps: it cannot be given as step counts")
    return steps.first.steps, steps.first.n_low, steps.later.steps, steps.later.n_low


def label(name: str, variant: str = "native") -> str:
    return recipe(name).label + {"native": "", "histream": " + HiStream", "histream_plus": " + HiStream+"}[variant]
