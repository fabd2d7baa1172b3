"""Sequence-parallel test runs: a 6-head tiny model, the scenarios, and N gloo ranks spawned from a test.

Each scenario is built the same way in every process (seeded weights, contexts, control), so the parent's
single-process run and the ranks' sharded runs see identical inputs. A rank returns its latent, a snapshot of
every cache's written region at the run's last step, its cache bytes and the bytes its collectives sent.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from core_helpers import context, video_config
from vace_helpers import random_control, vace_model

from histream_core import CausalWanModel, HiStreamPipeline, PromptSchedule, WanConfig

SIX_HEADS = WanConfig(dim=96, ffn_dim=128, freq_dim=32, text_dim=32, num_heads=6, num_layers=2)
SIX_HEADS_VACE = WanConfig(dim=96, ffn_dim=128, freq_dim=32, text_dim=32, num_heads=6, num_layers=4)
SEED = 7
# 64x64 video: 4x4 = 16 patch tokens per frame at full res, 2x2 = 4 at low res (3 ranks split them 6/5/5, 2/1/1)
SCENARIOS = ("self_forcing", "histream", "histream_plus", "prompt_switch", "vace", "batch2_cfg", "histream_fp8",
             "prefix")


def six_head_model(seed: int = 0) -> CausalWanModel:
    torch.manual_seed(seed)
    model = CausalWanModel(SIX_HEADS).eval()
    with torch.no_grad():  # larger-than-default biases so every path matters numerically
        for p in model.parameters():
            if p.ndim == 1:
                p.normal_(0, 0.1)
    return model


def scenario(name: str):
    """(model, config, generate() keyword arguments) of one scenario."""
    if name == "vace":
        model = vace_model(SIX_HEADS_VACE, vace_layers=2, seed=3)
        cfg = video_config("histream", num_frames=45, window_chunks=1)  # 12 latent frames: eviction at chunk 3
        return model, cfg, {"context": context(model), "control": random_control(12, cfg.latent_size, entries=2,
                                                                                   strengths=[0.7, 1.3], seed=4)}
    model = six_head_model()
    if name == "self_forcing":  # unbounded cache, full res only
        return model, video_config("self_forcing", num_frames=33), {"context": context(model)}
    if name in ("histream", "histream_plus"):
        return model, video_config(name, num_frames=45, window_chunks=1), {"context": context(model)}
    if name == "histream_fp8":  # the fp8 cache: e4m3 with a scale per token and head, so head-local too
        cfg = video_config("histream", num_frames=45, window_chunks=1, cache_dtype="fp8_e4m3fn")
        return model, cfg, {"context": context(model)}
    if name == "prompt_switch":
        sched = PromptSchedule(((0, context(model, seed=1)), (2, context(model, seed=2))))
        return model, video_config("histream", num_frames=45, window_chunks=1), {"context": sched}
    if name == "prefix":  # image to video / extension: 2 clean latent frames written into both sharded caches first
        cfg = video_config("histream", num_frames=45, window_chunks=1, prefix_frames=2)
        prefix = torch.randn(1, 16, 2, *cfg.latent_size, generator=torch.Generator().manual_seed(5))
        return model, cfg, {"context": context(model), "prefix_latent": prefix}
    if name == "batch2_cfg":  # batch 2 with guidance: 4 model rows
        cfg = video_config("histream_plus", num_frames=45, window_chunks=1, batch_size=2, guidance_scale=2.5)
        return model, cfg, {"context": context(model, batch=2), "negative": context(model, seed=9)}
    raise KeyError(name)


def _written(cache) -> tuple[torch.Tensor, torch.Tensor]:
    frames = cache.committed_frames + (cache.current.frames if cache.current is not None else 0)
    end = frames * cache.tokens_per_frame
    return cache.k[:, :, :end].clone(), cache.v[:, :, :end].clone()


def run_scenario(name: str, parallel=None) -> dict:
    """One run: the latent, each cache's written K/V at the last step, the cache bytes, the bytes sent."""
    model, cfg, kw = scenario(name)
    pipe = HiStreamPipeline(model, cfg, parallel=parallel)
    snap, nbytes = {}, {}

    def record(_info):
        for c in pipe.plan_caches():
            snap[c.name] = _written(c)
            nbytes[c.name] = c.nbytes

    with torch.no_grad():
        latent = pipe.generate(seed=SEED, callback=record, **kw)
    sent = dict(parallel.sent) if parallel is not None else {}
    return {"latent": latent, "caches": snap, "nbytes": nbytes, "sent": sent,
            "calls": dict(parallel.calls) if parallel is not None else {}}


# ---- spawning ranks ----------------------------------------------------------------------------------------------
def _rank_main(rank: int, size: int, init_file: str, out_dir: str, job: str) -> None:
    import torch.distributed as dist

    from histream_core.parallel import SequenceParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size)
    try:
        results = {}
        if job == "scenarios" or job.startswith("scenarios:"):  # all, or "scenarios:a,b"
            for name in SCENARIOS if job == "scenarios" else job.split(":", 1)[1].split(","):
                results[name] = run_scenario(name, SequenceParallel.over())
        elif job == "exchange":
            results = exchange_check(SequenceParallel.over())
            results["environment"] = environment_check()
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def spawn_ranks(size: int, job: str) -> list[dict]:
    """Run `job` on `size` gloo ranks (CPU) and return each rank's results, rank order."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.spawn(_rank_main, args=(size, init_file, tmp, job), nprocs=size, join=True)
        return [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=False) for r in range(size)]


def exchange_inputs(seed: int = 11) -> dict:
    """The full-size tensors every rank draws identically: q/k/v-like [3, B, F·hw, H, d], an attention output
    [B, F·hw, H, d] and head-output tokens [B, F·hw, D], at 16 tokens per frame (uneven over 3 ranks)."""
    g = torch.Generator().manual_seed(seed)
    b, f, hw, h, d = 2, 3, 16, 6, 4
    return {"frames": f, "hw": hw, "qkv": torch.randn(3, b, f * hw, h, d, generator=g),
            "out": torch.randn(b, f * hw, h, d, generator=g), "tokens": torch.randn(b, f * hw, 40, generator=g)}


def exchange_check(sp) -> dict:
    """What this rank's exchanges return for `exchange_inputs` (the parent checks them against slicing)."""
    x = exchange_inputs()
    f, hw = x["frames"], x["hw"]
    shard = sp.shard_tokens(x["tokens"], f)
    qkv_shard = torch.stack([sp.shard_tokens(t.flatten(2), f).unflatten(2, t.shape[2:]) for t in x["qkv"]])
    hs = sp.head_slice(6)
    return {"shard": shard, "gathered": sp.gather_tokens(shard, f, hw),
            "to_heads": sp.tokens_to_heads(qkv_shard, f, hw),
            "to_tokens": sp.heads_to_tokens(x["out"][:, :, hs].contiguous(), f), "sent": dict(sp.sent)}


def environment_check() -> dict:
    """What `parallel_from_environment` finds in an initialised world: nothing registered, a registered group,
    a yunchang-style Ulysses group (a stand-in module with yunchang's attribute names), the env flag."""
    import sys
    import types

    import torch.distributed as dist

    from histream_core.parallel import ENV_FLAG, parallel_from_environment, use_sequence_parallel_group

    def seen():
        sp = parallel_from_environment()
        return None if sp is None else (sp.rank, sp.size)

    out = {"nothing": seen()}
    use_sequence_parallel_group(dist.group.WORLD)
    out["registered"] = seen()
    use_sequence_parallel_group(None)
    stub = types.ModuleType("yunchang.globals")
    stub.PROCESS_GROUP = types.SimpleNamespace(ULYSSES_PG=dist.group.WORLD, RING_PG=dist.new_group([dist.get_rank()]))
    sys.modules["yunchang.globals"] = stub
    try:
        out["yunchang"] = seen()
        stub.PROCESS_GROUP.RING_PG = dist.group.WORLD
        try:
            seen()
            out["ring_refused"] = None
        except ValueError as e:
            out["ring_refused"] = str(e)
    finally:
        del sys.modules["yunchang.globals"]
    os.environ[ENV_FLAG] = "world"
    try:
        out["env_flag"] = seen()
    finally:
        del os.environ[ENV_FLAG]
    return out
