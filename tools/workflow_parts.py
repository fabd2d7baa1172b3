"""What every shipped workflow is built from: the pack's node titles, the model catalogue (what the missing-models
dialog offers), the Notes' model lines, the stage columns and the chains of stage nodes. The graphs themselves are
in tools/make_workflows.py."""

from __future__ import annotations

import ast
from pathlib import Path

from tools.workflow_graph import Graph

ROOT = Path(__file__).resolve().parent.parent


def display_names() -> dict[str, str]:
    """The pack's display names (each node class's TITLE, which NODE_DISPLAY_NAME_MAPPINGS is built from), read from
    the sources of nodes/ without importing them (that needs the host): NODE_CLASS_MAPPINGS key → the class's TITLE."""
    titles: dict[str, str] = {}
    for path in sorted((ROOT / "nodes").glob("*.py")):
        for stmt in ast.parse(path.read_text()).body:
            if isinstance(stmt, ast.ClassDef):
                for item in stmt.body:
                    if isinstance(item, ast.Assign) and any(getattr(t, "id", None) == "TITLE" for t in item.targets):
                        titles[stmt.name] = ast.literal_eval(item.value)
    tree = ast.parse((ROOT / "nodes" / "__init__.py").read_text())
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and any(getattr(t, "id", None) == "NODE_CLASS_MAPPINGS" for t in stmt.targets):
            mapping = {ast.literal_eval(k): v.id for k, v in zip(stmt.value.keys, stmt.value.values)}
            missing = [cls for cls in mapping.values() if cls not in titles]
            if missing:
                raise RuntimeError(f"node classes without a literal TITLE: {missing}")
            return {name: titles[cls] for name, cls in mapping.items()}
    raise RuntimeError("nodes/__init__.py defines no literal NODE_CLASS_MAPPINGS")


TITLES = display_names()

# Files the missing-models dialog offers to download (properties.models: name, url, folder). A file of the user's
# choice (the LoRA) has no entry: the frontend's schema requires a url.
LORA_FILE = "your_wan21_t2v_1.3B_lora.safetensors"
HF_CF = "https://huggingface.co/zhuhz22/Causal-Forcing/resolve/main/"
HF_LONGLIVE = "https://huggingface.co/Efficient-Large-Model/LongLive-1.3B/resolve/main/models/"
MODELS = {
    "self_forcing": {"name": "self_forcing_dmd.pt", "directory": "diffusion_models",
                     "url": "https://huggingface.co/gdhe17/Self-Forcing/resolve/main/checkpoints/self_forcing_dmd.pt"},
    "umt5": {"name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "directory": "text_encoders",
             "url": "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/"
                    "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors"},
    "vae": {"name": "wan_2.1_vae.safetensors", "directory": "vae",
            "url": "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/vae/"
                   "wan_2.1_vae.safetensors"},
    # the Wan 2.1 tiny decoder (TAE) under the name ComfyUI >= v0.8.0 reads as Wan 2.1's (Wan21.taesd_decoder_name)
    "tae": {"name": "lighttaew2_1.safetensors", "directory": "vae_approx",
            "url": "https://huggingface.co/lightx2v/Autoencoders/resolve/main/lighttaew2_1.safetensors"},
    "vace": {"name": "wan2.1_vace_1.3B_fp16.safetensors", "directory": "diffusion_models",
             "url": "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/"
                    "diffusion_models/wan2.1_vace_1.3B_fp16.safetensors"},
    # the causal Wan families (histream_core/recipes.py), each to its own recipe
    "causal_forcing": {"name": "causal_forcing.pt", "directory": "diffusion_models",
                       "url": HF_CF + "chunkwise/causal_forcing.pt"},
    "causal_forcing_pp": {"name": "framewise-2step.pt", "directory": "diffusion_models",
                          "url": HF_CF + "causal-forcing%2B%2B/framewise-2step.pt"},
    "longlive_base": {"name": "longlive_base.pt", "directory": "diffusion_models", "url": HF_LONGLIVE + "longlive_base.pt"},
    "longlive_lora": {"name": "lora.pt", "directory": "loras", "url": HF_LONGLIVE + "lora.pt"},
    "krea": {"name": "krea-realtime-video-14b.safetensors", "directory": "diffusion_models",
             "url": "https://huggingface.co/krea/krea-realtime-video/resolve/main/krea-realtime-video-14b.safetensors"},
    # Causal Forcing framewise repackaged for the stock UNETLoader (the SamplerCustomAdvanced graph)
    "causal_forcing_repack": {
        "name": "causal_forcing-framewise.safetensors", "directory": "diffusion_models",
        "url": "https://huggingface.co/TalmajM/causal_forcing_framewise_ComfyUI_repackaged/resolve/main/split_files/"
               "diffusion_models/causal_forcing-framewise.safetensors"},
}

PROMPT = ("A golden retriever runs along a sunlit beach at sunset, waves rolling in, cinematic tracking shot, "
          "highly detailed, 4k")


def where_to_get(*keys: str) -> str:
    """The Note's model lines: each file, its folder, and for a file the frontend cannot download (it downloads
    only .safetensors/.sft) the address to get it from by hand."""
    lines = []
    for key in keys:
        m = MODELS[key]
        line = f"{m['name']} -> ComfyUI/models/{m['directory']}/"
        if not m["name"].endswith((".safetensors", ".sft")):
            line += f" (the missing-models dialog cannot download a .pt file: download it from {m['url']})"
        lines.append(line)
    return "Models:\n" + "\n".join(lines)


# the stage groups, named after the paper's three redundancies (arXiv 2512.21338: temporal = anchor-guided sliding
# window, timestep = sparse steps, spatial = dual-resolution caching, DRC), between where the data enters and leaves;
# a title must fit its group's width at GROUP_FONT
MODELS_COL = "Models and prompt"
TEMPORAL = "Temporal: Anchor Window"
TIMESTEP = "Timestep: Sparse Steps"
SPATIAL_1 = "Spatial 1: Low-Res (DRC)"
SPATIAL_2 = "Spatial 2: Refine (DRC)"
OUTPUT_COL = "Decode and save"


def sampler_stages(g: Graph, model: int, positive: int, chunker: list, steps: list, low: list,
                   negative: int | None = None, cfg: float = 1.0, cache_preset: str = "custom",
                   cache_dtype: str = "default", model_after_chunker=None) -> int:
    """Anchor Cache Chunker + Sparse Step Sampler + Low-Res Denoise → Cached Upsample Refine (returned), linked;
    with `negative`, Low-Res Denoise guides with it at `cfg`; `cache_preset`: the chunker's family preset;
    `model_after_chunker(chunker_id, model)` returns the node whose MODEL Low-Res Denoise takes (e.g. the start image
    node, which reads the chunker's size)."""
    chunker_id = g.add("AnchorCacheChunker", [*chunker, cache_dtype, cache_preset], TEMPORAL)  # definition order
    if model_after_chunker is not None:
        model = model_after_chunker(chunker_id, model)
    steps_id = g.add("SparseStepSampler", steps, TIMESTEP)
    low_id = g.add("LowResDenoise", [*low, cfg], SPATIAL_1)
    g.link(model, 0, low_id, "model")
    g.link(positive, 0, low_id, "positive")
    if negative is not None:
        g.link(negative, 0, low_id, "negative")
    g.link(chunker_id, 0, low_id, "cache")
    g.link(steps_id, 0, low_id, "steps")
    g.link(chunker_id, 1, low_id, "latent")
    refine = g.add("CachedUpsampleRefine", ["bilinear", "area", 1.0, "clean_pass"], SPATIAL_2)
    g.link(low_id, 0, refine, "low_res")
    return refine


def decode_to_video(g: Graph, refine: int, vae: int | None, prefix: str, decode_type: str = "VAEDecode") -> None:
    """VAE decode of the refine node's LATENT → CreateVideo at 16 fps → SaveVideo."""
    decode = g.add(decode_type, [], OUTPUT_COL)
    g.link(refine, 0, decode, "samples")
    if vae is not None:
        g.link(vae, 0, decode, "vae")
    save_video(g, decode, 0, prefix)


def save_video(g: Graph, images: int, slot: int, prefix: str) -> None:
    video = g.add("CreateVideo", [16.0], OUTPUT_COL)
    g.link(images, slot, video, "images")
    save = g.add("SaveVideo", [prefix, "auto", "auto"], OUTPUT_COL)
    g.link(video, 0, save, "video")


HISTREAM_STAGES = ([1920, 1088, 81, 1, 3, 3, 1, "cache_relative"], ["HiStream", 5.0, 4, 2, 2, 1, "renoise"],
                   [42, "randomize", 0.5])
