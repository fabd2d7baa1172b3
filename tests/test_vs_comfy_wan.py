"""The full-sequence forward equals ComfyUI's own Wan2.1 `WanModel` on the same random weights (fp32)."""

import pytest
import torch
from comfy_host import import_comfy, require_comfyui
from core_helpers import rel_err, tiny_model


@pytest.fixture(scope="module")
def comfy_wan():
    require_comfyui()
    import_comfy()
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    return WanModel, comfy.ops.disable_weight_init


def host_wan(WanModel, ops, ours):
    c = ours.config
    host = WanModel(model_type="t2v", patch_size=c.patch_size, text_len=c.text_len, in_dim=c.in_dim, dim=c.dim,
                    ffn_dim=c.ffn_dim, freq_dim=c.freq_dim, text_dim=c.text_dim, out_dim=c.out_dim,
                    num_heads=c.num_heads, num_layers=c.num_layers, qk_norm=c.qk_norm,
                    cross_attn_norm=c.cross_attn_norm, eps=c.eps, operations=ops, dtype=torch.float32)
    missing, unexpected = host.load_state_dict(ours.state_dict(), strict=True)
    assert not missing and not unexpected
    return host.eval()


@pytest.mark.parametrize("preset", ["micro", "tiny"])
def test_full_forward_matches_comfyui_wanmodel(comfy_wan, preset):
    WanModel, ops = comfy_wan
    ours = tiny_model(preset, seed=4)
    host = host_wan(WanModel, ops, ours)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 5, 8, 12, generator=g)  # non-square, odd frame count
    t = torch.tensor([937.5, 250.0])
    ctx = torch.randn(2, 11, ours.config.text_dim, generator=g)
    with torch.no_grad():
        want = host(x, t, ctx)
        got = ours(x, t, ctx)
    assert got.shape == want.shape == x.shape
    assert rel_err(got, want) <= 1e-5


def test_per_frame_timesteps_match_comfyui(comfy_wan):
    """ComfyUI's WanModel also accepts per-frame timesteps [B, T]; without a mask both are bidirectional."""
    WanModel, ops = comfy_wan
    ours = tiny_model("micro", seed=5)
    host = host_wan(WanModel, ops, ours)
    x = torch.randn(1, 16, 6, 8, 8)
    t = torch.tensor([[0.0, 0.0, 0.0, 700.0, 700.0, 700.0]])
    ctx = torch.randn(1, 4, ours.config.text_dim)
    with torch.no_grad():
        assert rel_err(ours(x, t, ctx), host(x, t, ctx)) <= 1e-5
