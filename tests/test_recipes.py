"""Recipes of the causal Wan families: each preset with the low-res stage off equals Self-Forcing sampling written
over the full-sequence forward, with the recipe's own per-chunk step list and its anchor + window as the attention
mask (step lists and windows written out here from the public configs, independently of recipes.py)."""

from __future__ import annotations

import pytest
import torch
from core_helpers import context, reference_self_forcing, rel_err, tiny_model

from histream_core import ConfigError, HiStreamPipeline
from histream_core.masks import anchor_window_mask
from histream_core.recipes import RECIPES, VARIANTS, recipe_config, step_counts
from histream_core.schedule import ChunkSchedule, StepPlan

F4 = (1000, 750, 500, 250)
# name → chunk, first-chunk t, later t (native), anchor, window chunks (None: full cache)
SOURCES = {
    "causal_forcing_chunkwise": (3, F4, F4, 3, None),
    "causal_forcing_framewise": (1, F4, F4, 1, None),
    "causal_forcing_pp_2step": (1, F4, (1000, 500), 1, None),
    "causal_forcing_pp_1step": (1, F4, (1000,), 1, None),
    "longlive": (3, F4, F4, 3, 2),  # local attention 12 = sink 3 + 2 chunks + current 3
    "krea_realtime_14b": (3, F4, F4, 1, 1),
}
HALF = {F4: (1000, 500), (1000, 500): (1000,), (1000,): (1000,)}  # HiStream+: later chunks get half the steps


def warped(ts, shift=5.0):
    return tuple(shift * (t / 1000) / (1 + (shift - 1) * (t / 1000)) for t in ts)


def expected(name, variant):
    chunk, first, later, anchor, window = SOURCES[name]
    if variant == "histream_plus":
        later = HALF[later]
    if variant != "native" and window is None:
        anchor, window = 3, 3 // chunk
    return chunk, first, later, anchor, window


def test_every_recipe_has_its_source_row():
    assert set(RECIPES) == set(SOURCES)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_recipe_without_low_res_equals_full_sequence_reference(name, variant):
    seed = 18
    print("seed", seed)
    chunk, first, later, anchor, window = expected(name, variant)
    # windows evict: framewise 9 latent frames (anchor 3 + 3), chunkwise 16 (LongLive's anchor + 2 chunks)
    frames = 33 if chunk == 1 else 61
    cfg = recipe_config(name, variant, width=32, height=32, num_frames=frames)
    assert (cfg.chunk_frames, cfg.anchor_frames, cfg.window_chunks) == (chunk, anchor, window)
    drc = (cfg.steps.first.n_low, cfg.steps.later.n_low)
    assert drc == ((0, 0) if variant == "native" else (len(first) // 2, len(later) // 2))
    # low-res stage off; the reference is written in absolute positions
    cfg = cfg.with_(steps=StepPlan(ChunkSchedule(cfg.steps.first.sigmas), ChunkSchedule(cfg.steps.later.sigmas)),
                    position_mode="absolute")
    model = tiny_model(seed=4)
    ctx = context(model, seed=2)

    def velocity(seq, t, start, frames):
        mask = anchor_window_mask(start + frames, chunk, anchor, window)
        return model(seq, t, ctx, frame_mask=mask)[:, :, start:]

    with torch.no_grad():
        got = HiStreamPipeline(model, cfg).generate(ctx, seed=seed)
        want = reference_self_forcing(cfg, seed, velocity, sigmas=lambda k: warped(first if k == 0 else later))
    assert got.shape[2] == 1 + (frames - 1) // 4
    assert rel_err(got, want) <= 1e-5


def test_the_window_and_the_first_chunk_steps_matter():
    """Negative controls: LongLive's window and Causal Forcing++'s 4-step first frame change the video."""
    model = tiny_model(seed=4)
    ctx = context(model, seed=2)
    with torch.no_grad():
        ll = recipe_config("longlive", width=32, height=32, num_frames=61)
        a = HiStreamPipeline(model, ll).generate(ctx, seed=1)
        b = HiStreamPipeline(model, ll.with_(window_chunks=None)).generate(ctx, seed=1)
        pp = recipe_config("causal_forcing_pp_2step", width=32, height=32, num_frames=13)
        c = HiStreamPipeline(model, pp).generate(ctx, seed=1)
        d = HiStreamPipeline(model, pp.with_(steps=StepPlan.uniform(pp.steps.later))).generate(ctx, seed=1)
    assert rel_err(a, b) > 1e-3 and rel_err(c, d) > 1e-3


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_step_counts_rebuild_the_same_plan(name, variant):
    from histream_core.schedule import build_step_plan

    counts = step_counts(name, variant)
    assert build_step_plan(*counts) == recipe_config(name, variant, width=64, height=64).steps


def test_unknown_recipe_or_variant_names_the_choices():
    with pytest.raises(ConfigError, match="longlive"):
        recipe_config("long_live")
    with pytest.raises(ConfigError, match="histream_plus"):
        recipe_config("longlive", "turbo")
