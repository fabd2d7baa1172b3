"""Backend selection and the sageattention fast path's contract (emulated on CPU: no CUDA here)."""

import pytest
import torch
from core_helpers import context, tiny_model, video_config

from histream_core import HiStreamPipeline, attention


def smoothing_sage(q, k, v, tensor_layout="NHD", is_causal=False):
    """Behaves like sageattention 1.x: subtracts k's mean in place (softmax-invariant), then attends."""
    assert tensor_layout == "NHD" and not is_causal
    k.sub_(k.mean(dim=1, keepdim=True))
    return attention.sdpa(q, k, v)


def test_in_place_smoothing_backend_does_not_corrupt_the_kv_cache(monkeypatch):
    model = tiny_model()
    ctx = context(model)
    cfg = video_config("histream", num_frames=33)
    want = HiStreamPipeline(model, cfg).generate(ctx, seed=4)
    monkeypatch.setitem(attention._state, "sage", smoothing_sage)
    monkeypatch.setattr(attention, "_use_sage", lambda q, mask, backend=None: True)
    got = HiStreamPipeline(model, cfg).generate(ctx, seed=4)
    assert torch.allclose(got, want, atol=1e-5)


def test_failing_fast_backend_falls_back_for_the_session(monkeypatch, caplog):
    def broken(*a, **k):
        raise AssertionError("head_dim not supported")

    monkeypatch.setitem(attention._state, "sage", broken)
    monkeypatch.setitem(attention._state, "sage_failed", False)
    monkeypatch.setattr(attention, "_use_sage", lambda q, mask, backend=None: attention._state["sage"] is not None)
    q = torch.randn(1, 5, 2, 8)
    out = attention.attention(q, q, q)
    assert torch.allclose(out, attention.sdpa(q, q, q))
    assert attention._state["sage"] is None and "sageattention failed" in caplog.text


def test_backend_switch_validates_names(monkeypatch):
    with pytest.raises(ValueError, match="choose one of"):
        attention.set_backend("flash3")
    monkeypatch.setenv("HISTREAM_ATTENTION", "sdpa")
    attention.set_backend(None)
    assert attention.current_backend() == "sdpa"
    monkeypatch.setenv("HISTREAM_ATTENTION", "bogus")
    with pytest.raises(ValueError, match="HISTREAM_ATTENTION"):
        attention.current_backend()


def test_sage_is_never_used_on_cpu_or_with_masks():
    q = torch.randn(1, 4, 2, 8, dtype=torch.bfloat16)
    assert not attention._use_sage(q, None)
    assert not attention._use_sage(q, torch.ones(4, 4, dtype=torch.bool))


def test_the_model_carries_its_backend_into_every_attention_call(monkeypatch):
    """A model's backend reaches its cross-attention and its caches' self-attention; a model without one follows
    the process default, and one model's choice does not leak into another's."""
    asked = []
    monkeypatch.setattr(attention, "_use_sage", lambda q, mask, backend=None: asked.append(backend) or False)
    ctx, cfg = None, video_config("histream", num_frames=9)
    for backend in ("sageattention", None, "sdpa"):
        model = tiny_model()
        model.attention_backend = backend
        ctx = context(model)
        asked.clear()
        HiStreamPipeline(model, cfg).generate(ctx, seed=0)
        layers = model.config.num_layers
        assert len(asked) == 2 * layers * cfg.steps.total_steps(cfg.num_chunks)  # self + cross, every step
        assert set(asked) == {backend}
    with pytest.raises(ValueError, match="choose one of"):
        type(tiny_model())(tiny_model().config, attention_backend="flash3")
