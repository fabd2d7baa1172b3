"""The Anchor Cache Chunker's cache_dtype on a host-loaded MODEL: the loop runs on fp8 caches, the memory it asks
the host for is the fp8 plan, and the result stays close to the default cache's."""

from __future__ import annotations

import pytest
import torch
from comfy_test_nodes import fake_wan_text

from histream_core.kv_quant import FP8

pytestmark = pytest.mark.comfy


def run(pack, patcher, comfy_modules, monkeypatch, cache_dtype):
    import importlib

    host_model = importlib.import_module(pack.__name__ + ".nodes.host_model")
    denoise_nodes = importlib.import_module(pack.__name__ + ".nodes.denoise_nodes")
    asked, dtypes = [], set()
    real_load = host_model.load_for_sampling
    monkeypatch.setattr(host_model, "load_for_sampling", lambda p, need: (asked.append(need), real_load(p, need)))

    class RecordingPipeline(denoise_nodes.HiStreamPipeline):  # the caches the node's run allocates
        def allocate(self):
            super().allocate()
            dtypes.update(c.k.dtype for c in self.plan_caches())

    monkeypatch.setattr(denoise_nodes, "HiStreamPipeline", RecordingPipeline)
    m = pack.NODE_CLASS_MAPPINGS
    cache, latent = m["AnchorCacheChunker"]().plan(64, 64, 25, 1, 3, 3, 1, "cache_relative", cache_dtype)
    (steps,) = m["SparseStepSampler"]().build("HiStream+", 5.0, 4, 2, 2, 1)
    (low,) = m["LowResDenoise"]().stage(patcher, [[fake_wan_text(1, 8, 1), {}]], cache, steps, latent, 7, 0.5)
    out = m["CachedUpsampleRefine"]().run(low, "bilinear", "area", 1.0, "clean_pass")[0]["samples"]
    monkeypatch.undo()
    return out, asked, dtypes, cache


def test_chunker_fp8_cache_dtype_runs_on_fp8_caches(pack, patcher, comfy_modules, monkeypatch):
    ref, ref_need, ref_dtypes, _ = run(pack, patcher, comfy_modules, monkeypatch, "default")
    got, need, dtypes, cache = run(pack, patcher, comfy_modules, monkeypatch, "fp8_e4m3fn")
    assert dtypes == {FP8} and FP8 not in ref_dtypes
    cfg = cache.core_kwargs()
    assert cfg["cache_dtype"] == "fp8_e4m3fn"
    assert need[0] < ref_need[0]  # the preflight counts the fp8 plan
    assert torch.isfinite(got).all() and not torch.equal(got, ref)
    assert ((got - ref).norm() / ref.norm()).item() < 0.05
