"""histream_core.loading: checkpoint formats → canonical Wan2.1 names, config inference, clear errors.

Real 1.3B/14B shapes live on the `meta` device (no memory); on-disk round trips use the tiny/micro presets.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle

import pytest
import torch
from checkpoint_factory import (
    i2v_state_dict,
    lora_state_dict,
    prefixed,
    scaled_fp8,
    to_diffusers_names,
    vace_state_dict,
    vae_state_dict,
    wan_state_dict,
)
from safetensors.torch import save_file

from histream_core.checkpoint_files import read_state_dict
from histream_core.config import WanConfig
from histream_core.loading import (
    CheckpointError,
    dequantize_scaled_fp8,
    expected_wan_shapes,
    infer_wan_config,
    is_causal_ar,
    load_wan_state_dict,
    to_canonical_wan,
    unwrap_checkpoint,
    validate_t2v,
)

C13, C14, TINY, MICRO = (WanConfig.preset(n) for n in ("1.3B", "14B", "tiny", "micro"))


def same_shapes(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(tuple(a[k].shape) == tuple(b[k].shape) for k in a)


# ---- shapes and config inference (meta, real sizes) -------------------------------------------------------------
def test_expected_shapes_match_known_1_3b_totals():
    shapes = expected_wan_shapes(C13)
    assert len(shapes) == 825
    assert sum(torch.Size(s).numel() for s in shapes.values()) == 1_418_996_800  # Wan2.1-T2V-1.3B parameter count
    assert shapes["time_projection.1.weight"] == (6 * 1536, 1536)
    assert shapes["blocks.29.modulation"] == (1, 6, 1536)
    assert shapes["head.head.weight"] == (64, 1536) and shapes["head.modulation"] == (1, 2, 1536)


@pytest.mark.parametrize("preset", ["1.3B", "tiny", "micro"])
def test_expected_shapes_equal_the_model_state_dict(preset):
    from histream_core.model import CausalWanModel

    cfg = WanConfig.preset(preset)
    model_sd = CausalWanModel(cfg, device="meta").state_dict()
    assert {k: tuple(v.shape) for k, v in model_sd.items()} == expected_wan_shapes(cfg)


@pytest.mark.parametrize("preset", ["1.3B", "14B", "tiny"])
def test_infer_config_from_meta_weights(preset):
    cfg = WanConfig.preset(preset)
    assert infer_wan_config(wan_state_dict(cfg)) == cfg


def test_infer_config_dim_not_multiple_of_128(caplog):
    with caplog.at_level(logging.WARNING):
        cfg = infer_wan_config(wan_state_dict(MICRO))
    assert (cfg.dim, cfg.num_heads) == (64, 1) and "128" in caplog.text
    assert infer_wan_config(wan_state_dict(MICRO), num_heads=2) == MICRO


def test_infer_config_without_qk_norm_or_cross_attn_norm():
    cfg = WanConfig(dim=128, ffn_dim=256, freq_dim=32, num_heads=1, num_layers=2, qk_norm=False,
                    cross_attn_norm=False)
    assert infer_wan_config(wan_state_dict(cfg)) == cfg


# ---- prefixes, wrappers, diffusers names --------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", ["", "model.", "model.diffusion_model.", "diffusion_model.", "module.",
                                    "_orig_mod.", "model._orig_mod.", "model._fsdp_wrapped_module."])
def test_prefixes_are_stripped(prefix):
    sd = wan_state_dict(C13)
    assert same_shapes(to_canonical_wan(prefixed(sd, prefix)), sd)


def test_full_comfyui_checkpoint_keeps_only_the_diffusion_model():
    sd = wan_state_dict(C13)
    full = prefixed(sd, "model.diffusion_model.") | prefixed(vae_state_dict(), "first_stage_model.")
    full["text_encoders.umt5xxl.shared.weight"] = torch.empty(256384, 4096, device="meta")
    assert same_shapes(to_canonical_wan(full), sd)


def test_diffusers_names_one_block_hand_written():
    """The diffusers → Wan2.1 names for one block and the top level, written out in full."""
    expected = {
        "patch_embedding.weight": "patch_embedding.weight",
        "condition_embedder.time_embedder.linear_1.weight": "time_embedding.0.weight",
        "condition_embedder.time_embedder.linear_2.bias": "time_embedding.2.bias",
        "condition_embedder.text_embedder.linear_1.weight": "text_embedding.0.weight",
        "condition_embedder.text_embedder.linear_2.weight": "text_embedding.2.weight",
        "condition_embedder.time_proj.weight": "time_projection.1.weight",
        "proj_out.weight": "head.head.weight",
        "proj_out.bias": "head.head.bias",
        "scale_shift_table": "head.modulation",
        "blocks.7.attn1.to_q.weight": "blocks.7.self_attn.q.weight",
        "blocks.7.attn1.to_k.bias": "blocks.7.self_attn.k.bias",
        "blocks.7.attn1.to_v.weight": "blocks.7.self_attn.v.weight",
        "blocks.7.attn1.to_out.0.weight": "blocks.7.self_attn.o.weight",
        "blocks.7.attn1.norm_q.weight": "blocks.7.self_attn.norm_q.weight",
        "blocks.7.attn1.norm_k.weight": "blocks.7.self_attn.norm_k.weight",
        "blocks.7.attn2.to_q.weight": "blocks.7.cross_attn.q.weight",
        "blocks.7.attn2.to_out.0.bias": "blocks.7.cross_attn.o.bias",
        "blocks.7.attn2.norm_k.weight": "blocks.7.cross_attn.norm_k.weight",
        "blocks.7.norm2.weight": "blocks.7.norm3.weight",
        "blocks.7.norm2.bias": "blocks.7.norm3.bias",
        "blocks.7.ffn.net.0.proj.weight": "blocks.7.ffn.0.weight",
        "blocks.7.ffn.net.2.bias": "blocks.7.ffn.2.bias",
        "blocks.7.scale_shift_table": "blocks.7.modulation",
    }
    sd = {k: torch.empty(1, device="meta") for k in expected}
    assert set(to_canonical_wan(sd)) == set(expected.values())


def test_diffusers_full_1_3b_maps_to_canonical():
    sd = wan_state_dict(C13)
    assert same_shapes(to_canonical_wan(to_diffusers_names(sd)), sd)
    assert validate_t2v(to_canonical_wan(to_diffusers_names(sd))) == C13


def test_unwrap_prefers_generator_ema(caplog):
    ema, gen = {"a": torch.ones(1)}, {"a": torch.zeros(1)}
    with caplog.at_level(logging.INFO):
        assert unwrap_checkpoint({"generator": gen, "generator_ema": ema}) is not gen
    assert "generator_ema" in caplog.text
    assert unwrap_checkpoint({"generator": gen, "generator_ema": ema})["a"].item() == 1
    assert unwrap_checkpoint({"generator": gen, "step": 5})["a"].item() == 0
    assert unwrap_checkpoint({"state_dict": gen, "epoch": 3})["a"].item() == 0
    assert unwrap_checkpoint({"module": {"model": gen}})["a"].item() == 0
    assert unwrap_checkpoint(gen)["a"].item() == 0


# ---- on-disk round trips (tiny / micro values) ---------------------------------------------------------------------
def assert_values_equal(got: dict, want: dict):
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k


def test_wan_official_safetensors_bf16(tmp_path):
    sd = wan_state_dict(TINY, device="cpu", dtype=torch.bfloat16)
    save_file(sd | {"freqs": torch.zeros(4)}, tmp_path / "diffusion_pytorch_model.safetensors")
    out, cfg, info = load_wan_state_dict(tmp_path / "diffusion_pytorch_model.safetensors", expected="tiny")
    assert_values_equal(out, sd)
    assert cfg == TINY
    assert info["format"] == "wan_official" and info["dtypes"] == {"bfloat16": len(sd)} and info["source"] is None
    assert info["dropped"] == ["freqs"]


def test_comfyui_prefixed_fp16_and_causal_ar_metadata(tmp_path):
    sd = wan_state_dict(TINY, device="cpu", dtype=torch.float16)
    save_file(prefixed(sd, "model.diffusion_model."), tmp_path / "wan_fp16.safetensors")
    out, _, info = load_wan_state_dict(tmp_path / "wan_fp16.safetensors")
    assert_values_equal(out, sd)
    assert info["format"] == "comfyui" and info["prefix"] == "model.diffusion_model."

    meta = {"config": json.dumps({"transformer": {"causal_ar": True}})}
    save_file(sd, tmp_path / "wan_causal.safetensors", metadata=meta)
    out, _, info = load_wan_state_dict(tmp_path / "wan_causal.safetensors")
    assert_values_equal(out, sd)
    assert info["format"] == "comfyui_causal_ar" and info["metadata"] == meta


def test_is_causal_ar_reads_string_metadata():
    assert is_causal_ar({"config": '{"transformer": {"causal_ar": true}}'})
    assert is_causal_ar({"transformer": '{"causal_ar": true}'})
    assert not is_causal_ar({"config": '{"transformer": {}}'})
    assert not is_causal_ar({"config": "not json"}) and not is_causal_ar({})


def test_self_forcing_pt_uses_ema(tmp_path):
    ema = wan_state_dict(MICRO, device="cpu", dtype=torch.bfloat16, seed=1)
    gen = wan_state_dict(MICRO, device="cpu", dtype=torch.bfloat16, seed=2)
    torch.save({"generator": prefixed(gen, "model."), "generator_ema": prefixed(ema, "model.")},
               tmp_path / "self_forcing_dmd.pt")
    out, cfg, info = load_wan_state_dict(tmp_path / "self_forcing_dmd.pt", expected=MICRO)
    assert_values_equal(out, ema)
    assert cfg == MICRO  # num_heads (not in the weights) comes from `expected`
    assert info["format"] == "self_forcing" and info["source"] == "generator_ema" and info["prefix"] == "model."
    out, _, _ = load_wan_state_dict(tmp_path / "self_forcing_dmd.pt", expected=MICRO, meta=True)  # mmap
    assert_values_equal(out, ema)

    torch.save({"generator": prefixed(gen, "model.")}, tmp_path / "gen_only.pt")
    out, _, info = load_wan_state_dict(tmp_path / "gen_only.pt", expected=MICRO)
    assert_values_equal(out, gen)
    assert info["source"] == "generator"


def test_diffusers_safetensors_round_trip(tmp_path):
    sd = wan_state_dict(TINY, device="cpu", dtype=torch.float32)
    diff = to_diffusers_names(sd)
    assert "blocks.1.attn2.to_out.0.weight" in diff and "condition_embedder.time_proj.bias" in diff
    save_file(diff, tmp_path / "diffusion_pytorch_model.safetensors")
    out, cfg, info = load_wan_state_dict(tmp_path / "diffusion_pytorch_model.safetensors", expected="tiny")
    assert_values_equal(out, sd)
    assert info["format"] == "diffusers" and cfg == TINY


def test_sharded_safetensors_are_merged(tmp_path):
    sd = wan_state_dict(MICRO, device="cpu")
    keys = list(sd)
    save_file({k: sd[k] for k in keys[:10]}, tmp_path / "diffusion_pytorch_model-00001-of-00002.safetensors")
    save_file({k: sd[k] for k in keys[10:]}, tmp_path / "diffusion_pytorch_model-00002-of-00002.safetensors")
    out, _, _ = load_wan_state_dict(tmp_path / "diffusion_pytorch_model-00001-of-00002.safetensors", expected=MICRO)
    assert_values_equal(out, sd)
    (tmp_path / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="00002-of-00002.safetensors is missing"):
        read_state_dict(tmp_path / "diffusion_pytorch_model-00001-of-00002.safetensors")


@pytest.mark.skipif(not hasattr(torch, "float8_e4m3fn"), reason="torch without float8")
def test_scaled_fp8_keeps_scales(tmp_path):
    sd = wan_state_dict(TINY, device="cpu", dtype=torch.bfloat16)
    q = prefixed(scaled_fp8(sd), "model.diffusion_model.")
    save_file(q, tmp_path / "wan_fp8_scaled.safetensors")
    out, _, info = load_wan_state_dict(tmp_path / "wan_fp8_scaled.safetensors", expected="tiny")
    assert out["blocks.0.self_attn.q.weight"].dtype == torch.float8_e4m3fn
    assert "blocks.0.self_attn.q.scale_weight" in out and "scaled_fp8" in out
    assert info["quantization"] == "scaled_fp8" and info["format"] == "comfyui" and info["notes"]
    plain = dequantize_scaled_fp8(out)
    assert plain.keys() == sd.keys()
    w, ref = plain["blocks.1.ffn.0.weight"].float(), sd["blocks.1.ffn.0.weight"].float()
    assert (w - ref).abs().max() <= 0.07 * ref.abs().max()  # e4m3 keeps 3 mantissa bits


def test_meta_read_gives_shapes_without_data(tmp_path):
    sd = wan_state_dict(TINY, device="cpu", dtype=torch.bfloat16)
    save_file(sd, tmp_path / "w.safetensors")
    out, cfg, _ = load_wan_state_dict(tmp_path / "w.safetensors", meta=True)
    assert all(v.is_meta for v in out.values()) and same_shapes(out, sd) and cfg == TINY
    assert out["head.modulation"].dtype == torch.bfloat16


# ---- refusals ----------------------------------------------------------------------------------------------------
def refusal(sd: dict, expected: WanConfig | None = None) -> str:
    with pytest.raises(CheckpointError) as err:
        validate_t2v(to_canonical_wan(sd), expected)
    return str(err.value)


def test_refuses_image_to_video():
    msg = refusal(prefixed(i2v_state_dict(C14), "model.diffusion_model."))
    assert "image-to-video" in msg and "text-to-video 1.3B (Self-Forcing)" in msg
    only_channels = wan_state_dict(C13)
    only_channels["patch_embedding.weight"] = torch.empty(1536, 36, 1, 2, 2, device="meta")
    assert "image-to-video" in refusal(only_channels)


def test_refuses_vace_as_main_model():
    msg = refusal(vace_state_dict(C13))
    assert "VACE" in msg and "loaded separately" in msg
    module_only = {k: v for k, v in vace_state_dict(C13).items() if "vace" in k}
    assert "VACE" in refusal(prefixed(module_only, "diffusion_model."))


def test_refuses_14b_when_1_3b_expected_and_back():
    msg = refusal(wan_state_dict(C14), expected=C13)
    assert "14B" in msg and "1.3B" in msg and "5120" in msg and "1536" in msg
    msg = refusal(wan_state_dict(C13), expected=C14)
    assert msg.index("1.3B") < msg.index("14B")


def test_refuses_lora_vae_and_other_models():
    msg = refusal(lora_state_dict(TINY))
    assert "LoRA" in msg and "diffusion_model.blocks.0.self_attn" in msg
    msg = refusal(vae_state_dict())
    assert "VAE" in msg and "conv1.weight" in msg
    sd_unet = {"model.diffusion_model.input_blocks.0.0.weight": torch.empty(320, 4, 3, 3, device="meta"),
               "model.diffusion_model.out.2.weight": torch.empty(4, 320, 3, 3, device="meta")}
    msg = refusal(sd_unet)
    assert "Stable Diffusion (UNet) checkpoint" in msg and "model.diffusion_model.input_blocks.0.0.weight" in msg
    # a whole SD1.5 file (UNet + VAE + text encoder) is named as SD, not as "a VAE" for its first_stage_model keys
    sd15 = {**sd_unet, "first_stage_model.decoder.conv_in.weight": torch.empty(512, 4, 3, 3, device="meta"),
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight":
                torch.empty(49408, 768, device="meta")}
    assert "Stable Diffusion (UNet) checkpoint" in refusal(sd15)
    flux = {"double_blocks.0.img_attn.qkv.weight": torch.empty(9216, 3072, device="meta")}
    assert "Flux/SD3" in refusal(flux)
    assert "not a Wan2.1 diffusion model" in refusal({"foo.weight": torch.empty(2, device="meta")})
    assert "no tensors" in refusal({})


def test_refuses_missing_and_misshaped_tensors():
    sd = wan_state_dict(C13)
    partial = {k: v for k, v in sd.items() if not k.startswith("blocks.12.")}
    msg = refusal(partial)
    assert "incomplete" in msg and "blocks.12.self_attn.q.weight" in msg and "re-download" in msg
    bad = dict(sd)
    bad["blocks.3.ffn.2.weight"] = torch.empty(1536, 100, device="meta")
    msg = refusal(bad)
    assert "blocks.3.ffn.2.weight" in msg and "(1536, 100)" in msg and "(1536, 8960)" in msg


def test_refuses_other_config_fields():
    other = WanConfig(dim=1536, ffn_dim=8960, text_dim=2048, num_heads=12, num_layers=30)
    assert "text_dim 2048 (expected 4096)" in refusal(wan_state_dict(other), expected=C13)


# ---- broken files --------------------------------------------------------------------------------------------------
def test_truncated_safetensors(tmp_path):
    sd = wan_state_dict(MICRO, device="cpu")
    save_file(sd, tmp_path / "full.safetensors")
    data = (tmp_path / "full.safetensors").read_bytes()
    for name, cut in (("tail.safetensors", len(data) - 1000), ("head.safetensors", 100)):
        (tmp_path / name).write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=f"{name} could not be read .*truncated or corrupt.*re-download"):
            load_wan_state_dict(tmp_path / name)


def test_truncated_and_unsafe_pt(tmp_path):
    torch.save({"generator_ema": wan_state_dict(MICRO, device="cpu")}, tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    for name, cut in (("tail.pt", len(data) - 1000), ("head.pt", 100), ("tiny.pt", 3), ("empty.pt", 0)):
        (tmp_path / name).write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=f"{name} could not be read .*truncated or corrupt"):
            read_state_dict(tmp_path / name)
    torch.save({"generator": {}, "args": argparse.Namespace(lr=1)}, tmp_path / "objects.pt")
    with pytest.raises(CheckpointError, match="Python objects besides tensors"):
        read_state_dict(tmp_path / "objects.pt")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list"):
        read_state_dict(tmp_path / "list.pt")


class _RunsAShellCommand:
    """Unpickling this calls os.system (posix.system on Linux): the classic malicious checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("layout", ["zip", "legacy", "raw pickle"])
def test_malicious_pickle_is_named_as_code_and_never_run(tmp_path, layout):
    marker = tmp_path / "MARKER"
    obj = {"generator_ema": wan_state_dict(MICRO, device="cpu"), "x": _RunsAShellCommand(marker)}
    path = tmp_path / "evil.pt"
    if layout == "zip":
        torch.save(obj, path)
    elif layout == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(obj))
    with pytest.raises(CheckpointError, match=rf"evil.pt contains code \({os.system.__module__}.system\): not a "
                                              r"plain checkpoint; nothing was executed"):
        read_state_dict(path)
    assert not marker.exists()


def test_plain_legacy_pickle_still_loads(tmp_path):
    sd = wan_state_dict(MICRO, device="cpu")
    torch.save({"generator_ema": sd}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    loaded, _ = read_state_dict(tmp_path / "legacy.pt")
    assert all(torch.equal(loaded["generator_ema"][k], v) for k, v in sd.items())


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(CheckpointError, match="not found: .*nope.safetensors"):
        read_state_dict(tmp_path / "nope.safetensors")
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(CheckpointError, match=r"model.gguf has an unsupported extension '.gguf'"):
        read_state_dict(tmp_path / "model.gguf")
