"""Host APIs whose signatures grew between releases get the newer keywords only where the host has them; the
pack's loader calls the real `load_diffusion_model_state_dict` of each matrix host that way."""

from __future__ import annotations

import importlib
import inspect

import pytest

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def compat(pack):
    return importlib.import_module(f"{pack.__name__}.nodes.host_compat")


def test_only_accepted_keywords_are_passed(compat):
    def old(sd, model_options=None):  # v0.3.64's load_diffusion_model_state_dict
        return ("old", model_options)

    def newer(sd, model_options=None, metadata=None, disable_dynamic=False):  # ≈ v0.16+
        return ("newer", model_options, metadata, disable_dynamic)

    def open_ended(sd, **kwargs):
        return ("open", kwargs)

    optional = {"metadata": {"a": "1"}, "disable_dynamic": True}
    assert compat.call_accepting(old, {}, model_options={"x": 1}, optional=optional) == ("old", {"x": 1})
    assert compat.call_accepting(newer, {}, model_options={}, optional=optional) == ("newer", {}, {"a": "1"}, True)
    assert compat.call_accepting(open_ended, {}, optional=optional) == ("open", optional)


def test_the_real_host_loader_gets_what_it_accepts(compat, comfy_modules):
    """On each matrix host: the keywords the pack's loader would pass are exactly the host function's own."""
    real = comfy_modules.sd.load_diffusion_model_state_dict
    names = set(inspect.signature(real).parameters)
    passed = compat.accepted_keywords(real, metadata={}, disable_dynamic=True)
    assert set(passed) == {"metadata", "disable_dynamic"} & names


def test_force_full_load_reaches_only_the_vae_patcher(pack, comfy_modules, monkeypatch):
    """Newer dynamic-VRAM model patchers assert on force_full_load: only the VAE's own load may carry it."""
    import types

    stream_decode = importlib.import_module(f"{pack.__name__}.nodes.stream_decode")
    calls = []
    monkeypatch.setattr(comfy_modules.model_management, "load_models_gpu",
                        lambda models, **kw: calls.append((list(models), kw)))
    model, vae_patcher = object(), object()
    vae = types.SimpleNamespace(patcher=vae_patcher, disable_offload=True)
    stream_decode.load_with_vae(model, vae, extra_bytes=100, decode_bytes=10)
    assert [kw.get("force_full_load", False) for models, kw in calls if model in models] == [False]
    assert any(models == [vae_patcher] and kw.get("force_full_load") for models, kw in calls)
    assert any(model in models and kw["memory_required"] == 110 for models, kw in calls)  # run + decode budget
