"""The stage nodes called in-process on a host-loaded MODEL: progress over all chunks, per-step previews, Stop,
and a MODEL from the stock "Load Diffusion Model" path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from comfy_test_nodes import fake_wan_text
from nodes_support import run_pack_nodes

pytestmark = pytest.mark.comfy


def run_graph(pack, patcher, preset="HiStream+", frames=13):
    return run_pack_nodes(pack, patcher, [[fake_wan_text(1, 8, 1), {}]], frames=frames, preset=preset)


def stop_at_step(pack, patcher, comfy_modules, step: int) -> list[int]:
    """Run a 33-frame HiStream graph and press Stop when the progress bar reaches `step`; returns the steps seen."""
    mm, seen = comfy_modules.model_management, []

    def hook(v, total, preview, node_id=None):
        seen.append(v)
        if v == step:
            mm.interrupt_current_processing(True)

    comfy_modules.utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run_graph(pack, patcher, "HiStream", frames=33)
    finally:
        comfy_modules.utils.set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)
    return seen


def test_progress_and_previews_over_all_chunks(pack, patcher, comfy_modules):
    from comfy.cli_args import LatentPreviewMethod, args

    events = []
    old = args.preview_method
    args.preview_method = LatentPreviewMethod.Latent2RGB
    comfy_modules.utils.set_progress_bar_global_hook(lambda v, total, preview, node_id=None: events.append(
        (v, total, preview)))
    try:
        out = run_graph(pack, patcher, "HiStream+", frames=13)  # 4 latent frames: chunks of 3 + 1
    finally:
        comfy_modules.utils.set_progress_bar_global_hook(None)
        args.preview_method = old
    assert out["samples"].shape == (1, 16, 4, 8, 8)
    # 4 + 2 steps on one bar; each finished chunk adds one preview of all its frames at the same position
    assert [(v, t) for v, t, _ in events] == [(1, 6), (2, 6), (3, 6), (4, 6), (4, 6), (5, 6), (6, 6), (6, 6)]
    assert all(p is not None and p[0] == "JPEG" for _, _, p in events)


def test_stop_button_interrupts_and_releases(pack, patcher, comfy_modules):
    seen = stop_at_step(pack, patcher, comfy_modules, 2)
    assert seen == [1, 2]  # stopped at the next step
    out = run_graph(pack, patcher, "HiStream", frames=9)
    assert torch.isfinite(out["samples"]).all()


def test_cfg_needs_a_negative_and_guides_like_the_core(pack, patcher, comfy_modules):
    pos, neg = [[fake_wan_text(1, 8, 1), {}]], [[fake_wan_text(2, 8, 1), {}]]
    with pytest.raises(ValueError, match="cfg 2.5 needs a negative prompt: connect the negative input"):
        run_pack_nodes(pack, patcher, pos, cfg=2.5)

    def refine(negative, cfg):
        return run_pack_nodes(pack, patcher, pos, negative=negative, cfg=cfg)["samples"]

    plain, same, guided = refine(None, 1.0), refine(pos, 2.5), refine(neg, 2.5)
    assert torch.allclose(same, plain, atol=1e-5, rtol=1e-5)  # negative == positive: guidance is a no-op
    assert (guided - plain).norm() > 1e-2 * plain.norm()


def test_an_interrupt_that_derives_from_base_exception_still_releases(pack, patcher, comfy_modules, monkeypatch,
                                                                       caplog):
    """Newer hosts derive InterruptProcessingException from BaseException: no `except Exception` may swallow it,
    and the caches are released in `finally` all the same."""
    mm = comfy_modules.model_management

    class NewStyleInterrupt(BaseException):
        pass

    calls = []

    def interrupted():
        calls.append(1)
        if len(calls) == 2:
            raise NewStyleInterrupt

    monkeypatch.setattr(mm, "throw_exception_if_processing_interrupted", interrupted)
    with caplog.at_level("INFO", logger="histream"), pytest.raises(NewStyleInterrupt):
        run_graph(pack, patcher, "HiStream", frames=33)
    assert len(calls) == 2  # it propagated at once, unwrapped
    assert "released the KV caches" in caplog.text
    monkeypatch.undo()
    out = run_graph(pack, patcher, "HiStream", frames=9)
    assert torch.isfinite(out["samples"]).all()


def test_a_stop_at_chunk_k_keeps_exactly_chunks_before_it(pack, patcher, comfy_modules):
    """Stop during chunk 2 (of 3): a .latent in the output folder holds exactly chunks 0 and 1, equal to the same
    chunks of an uninterrupted run, in stock SaveLatent's layout; a successful run leaves no such file."""
    from safetensors.torch import load_file

    out_dir = comfy_modules.folder_paths.get_output_directory()
    partial = lambda: set(Path(out_dir).rglob("*.latent"))
    before = partial()
    full = run_graph(pack, patcher, "HiStream", frames=33)["samples"]  # 9 latent frames: 3 chunks of 3
    assert partial() == before  # success leaves nothing behind
    steps_per_chunk = 4
    stop_at_step(pack, patcher, comfy_modules, 2 * steps_per_chunk + 1)  # the first step of chunk 2
    (path,) = partial() - before
    saved = load_file(str(path))
    assert "chunks-2-of-3" in path.name and "latent_format_version_0" in saved  # LoadLatent reads it unscaled
    assert torch.equal(saved["latent_tensor"], full[:, :, :6])


def test_a_zero_token_conditioning_is_refused(pack, patcher):
    with pytest.raises(ValueError, match="the positive CONDITIONING has 0 text tokens"):
        run_pack_nodes(pack, patcher, [[torch.zeros(1, 0, 4096), {}]])


def test_a_non_finite_vace_control_is_refused_where_it_enters(pack):
    import importlib
    import types

    from histream_core import HiStreamConfig

    conditioning = importlib.import_module(f"{pack.__name__}.nodes.conditioning")
    patcher = types.SimpleNamespace(model=types.SimpleNamespace(diffusion_model=types.SimpleNamespace(
        vace_blocks=[object()])))
    cfg = HiStreamConfig(width=64, height=64, num_frames=9)
    frames = torch.zeros(1, 32, cfg.latent_frames, *cfg.latent_size)
    frames[0, 5, 1, 2, 3] = float("nan")
    positive = [[fake_wan_text(1, 8, 1), {"vace_frames": [frames], "vace_strength": [1.0]}]]
    with pytest.raises(ValueError, match=r"VACE control video 1 \(WanVaceToVideo\) holds 1 NaN/inf value"):
        conditioning.vace_control(patcher, positive, cfg)
