"""Writes the shipped UI-format workflows in workflows/ (run: python -m tools.make_workflows).

Graphs are described once here so that every workflow stays consistent (links, types, widget order); the JSON
files are what users drag onto the canvas. Each node goes into a stage column (a titled group); positions, group
boxes and the saved view are computed from the node sizes, which follow the frontend's own sizing rule (see
tools/workflow_graph.py), so that nothing overlaps and the whole graph is in view when a file opens (tests/test_workflows_browser.py
checks this in the real frontend).
"""

from __future__ import annotations

import json
from functools import partial

from histream_core.recipes import label, recipe_plan, step_counts
from histream_toy.sampling import NEGATIVE_PROMPT, TOY_GUIDANCE, TOY_SAMPLER, TOY_SHIFT, TOY_STEPS, TOY_WINDOW
from tools.workflow_graph import Graph
from tools.workflow_parts import (
    HISTREAM_STAGES,
    LORA_FILE,
    MODELS,
    MODELS_COL,
    PROMPT,
    ROOT,
    SPATIAL_2,
    TEMPORAL,
    TIMESTEP,
    TITLES,
    decode_to_video,
    sampler_stages,
    save_video,
    where_to_get,
)

OUT = ROOT / "workflows"


def histream_note(*models: str) -> str:
    return NOTE_TEMPLATE.replace("{models}", where_to_get(*models))


NOTE_TEMPLATE = f"""HiStream (arXiv 2512.21338) — 1080p autoregressive video on a causal (Self-Forcing) Wan2.1-T2V-1.3B.
The groups, left to right, follow the paper's three redundancies: temporal (Anchor-Guided Sliding Window), timestep (sparse steps), spatial (Dual-Resolution Caching, DRC: low-res steps, then upsample and refine).

{TITLES["AnchorCacheChunker"]}: the video is made chunk by chunk (3 latent frames) against a fixed anchor (the first chunk) + a sliding window of recent chunks, so time and memory per chunk stay constant for any length.
{TITLES["SparseStepSampler"]}: HiStream = 2 low-res + 2 high-res steps per chunk; HiStream+ = later chunks 1 + 1.
{TITLES["LowResDenoise"]}: each chunk's first steps run at half width/height (960x544) against the low-res cache.
{TITLES["CachedUpsampleRefine"]}: upsamples that chunk, re-noises, finishes at 1920x1088 against the high-res cache, writes both caches, and runs the whole loop (progress and previews per step; Stop works).

{{models}}
Window 1 at 1080p needs ~16 GB of KV cache (bf16): with fp8 weights it fits a 24 GB card. The public Self-Forcing weights were trained at 832x480: expect softer detail at 1080p than the paper's tuned weights."""

NOTE = histream_note("self_forcing", "umt5", "vae")

NOTE_STREAM = f"""

Streaming decode: the VAE is connected to {TITLES["CachedUpsampleRefine"]}, which decodes each chunk as soon as it is finished (before the next chunk starts) and outputs the frames as IMAGE, equal to VAEDecode of its LATENT. Previews show each finished chunk's frames. The Wan VAE's own memory budget is reserved next to the model; on cards under ~48 GB at 1080p, prefer the other workflows (decode after generation)."""
SCHEDULE_PROMPTS = (
    "A red fox trots through a snowy pine forest at dawn, soft light, cinematic tracking shot, highly detailed",
    "The red fox reaches a frozen lake and walks onto the ice, mist rising, cinematic tracking shot",
    "The red fox sits on the ice under a starry night sky, aurora overhead, cinematic wide shot",
)

SCHEDULE_NOTE = f"""HiStream prompt schedule: a 15 s video (241 frames) whose prompt changes at 5 s and 10 s.

{TITLES["HiStreamPromptSchedule"]}: each connected conditioning drives the video from its start on (unit second: 16 fps; the switch happens at the chunk holding that frame; unit chunk: chunk index, 12 frames per chunk). The first must start at 0 and starts must increase.
At a switch the text cache is replaced and the recent window of the KV cache is re-encoded under the new prompt (LongLive-style), so the motion carries on smoothly; the anchor (the first chunk) is kept, so the subject's identity holds.
Memory does not grow with the video length or the number of switches. HiStream+ steps keep long videos fast."""





NOTE_FAST = f"""

Fast decode (ComfyUI 0.8.0 or newer): the Wan 2.1 tiny decoder (TAE, lighttaew2_1) is connected to {TITLES["CachedUpsampleRefine"]}'s vae: each chunk is decoded as soon as it is finished, by a 10 M-parameter 2-D decoder instead of the 127 M-parameter Wan VAE (about a tenth of its time per frame, measured on CPU), and its IMAGE output equals VAEDecode of the LATENT with this TAE: a draft, softer than the Wan VAE's frames. Its decode reservation at 1080p is ~3.1 GiB per chunk (the Wan VAE's: ~8.6 GiB).
Fast previews with the exact final video instead: connect this TAE to preview_vae and the Wan VAE (wan_2.1_vae.safetensors -> models/vae) to vae. A TAE of another latent format (taehv in fp16, Wan 2.2's) is refused."""


def build(preset: str, window: int = 1, lora: bool = False, prefix: str = "histream/t2v_1080p",
          stream_decode: bool = False, schedule: bool = False, frames: int = 81, tae: bool = False) -> dict:
    """`tae`: the Wan 2.1 tiny decoder instead of the Wan VAE (with `stream_decode`: on the sampler's vae)."""
    g = Graph(MODELS)
    model = g.add("LoadHiStreamModel", ["self_forcing_dmd.pt", "default", "auto", "none", "none"], MODELS_COL,
                  models=["self_forcing"])
    if lora:  # the LoRA is the user's own file: no properties.models entry (nothing to download)
        lora_id = g.add("LoraLoaderModelOnly", [LORA_FILE, 1.0], MODELS_COL)
        g.link(model, 0, lora_id, "model")
        model = lora_id
    clip = g.add("CLIPLoader", [MODELS["umt5"]["name"], "wan", "default"], MODELS_COL, models=["umt5"])
    vae_key = "tae" if tae else "vae"
    vae = g.add("VAELoader", [MODELS[vae_key]["name"]], MODELS_COL, models=[vae_key])
    prompts = SCHEDULE_PROMPTS if schedule else (PROMPT,)
    texts = []
    for prompt in prompts:
        texts.append(g.add("CLIPTextEncode", [prompt], "Prompt schedule" if schedule else MODELS_COL,
                           size=[300, 110] if schedule else None))
        g.link(clip, 0, texts[-1], "clip")
    positive = texts[0]
    if schedule:
        positive = g.add("HiStreamPromptSchedule", ["second", 0.0, 5.0, 10.0, 15.0], "Prompt schedule")
        for i, text in enumerate(texts, 1):
            g.link(text, 0, positive, f"conditioning_{i}")
    chunker, steps, low = HISTREAM_STAGES
    chunker = [*chunker[:2], frames, *chunker[3:6], window, chunker[7]]
    refine = sampler_stages(g, model, positive, chunker, [preset, *steps[1:]], low)
    if stream_decode:  # the VAE decodes each chunk inside the loop: frames come out of the sampler itself
        g.link(vae, 0, refine, "vae")
        save_video(g, refine, 1, prefix)
    else:
        decode_to_video(g, refine, vae, prefix)
    note = histream_note("self_forcing", "umt5", vae_key) + (NOTE_FAST if tae else NOTE_STREAM if stream_decode else "")
    if schedule:
        note = SCHEDULE_NOTE + "\n\n" + note
    g.add_note(note, "HiStream: how the stages map to the paper", under=[TEMPORAL, SPATIAL_2])
    return g.to_json()


VACE_NOTE = f"""HiStream + VACE control (the "ControlNet" of Wan) through the stock WanVaceToVideo node.

{TITLES["LoadHiStreamModel"]}: vace_model attaches only the vace_* tensors of the chosen file (a Wan2.1 VACE module, or the full wan2.1_vace_1.3B checkpoint whose main blocks are NOT used) to the causal Self-Forcing model.
Control: Load Video -> Get Video Components -> Canny (or any depth/pose preprocessor) -> WanVaceToVideo.control_video; optional control_masks. reference_image is not supported (one clear error). WanVaceToVideo's width/height/length must equal the {TITLES["AnchorCacheChunker"]}'s; its latent output is not used (the chunker makes the latent); negative is unused (no CFG).
Per chunk the VACE blocks run causally with their own anchor + window KV cache at both resolutions (the control resized for the low-res stage) and add their hints, times strength, to the main blocks. Without WanVaceToVideo the VACE blocks are skipped entirely.

{where_to_get("self_forcing", "vace", "umt5", "vae")}
Your control video -> ComfyUI/input/.
The VACE KV caches add half the main caches' memory (15 of 30 blocks) per control video."""


def build_vace(prefix: str = "histream/vace_control_1080p") -> dict:
    """HiStream with VACE control from stock nodes: LoadVideo → Canny → WanVaceToVideo → LowResDenoise."""
    g = Graph(MODELS)
    model = g.add("LoadHiStreamModel", ["self_forcing_dmd.pt", "default", "auto", MODELS["vace"]["name"], "none"],
                  MODELS_COL, models=["self_forcing", "vace"])
    clip = g.add("CLIPLoader", [MODELS["umt5"]["name"], "wan", "default"], MODELS_COL, models=["umt5"])
    vae = g.add("VAELoader", [MODELS["vae"]["name"]], MODELS_COL, models=["vae"])
    text = g.add("CLIPTextEncode", [PROMPT], MODELS_COL)
    g.link(clip, 0, text, "clip")
    control = "Control video (VACE)"
    video_in = g.add("LoadVideo", ["control_video.mp4", "image"], control)
    parts = g.add("GetVideoComponents", [], control)
    g.link(video_in, 0, parts, "video")
    canny = g.add("Canny", [0.4, 0.8], control)
    g.link(parts, 0, canny, "image")
    vace = g.add("WanVaceToVideo", [1920, 1088, 81, 1, 1.0], control)
    g.link(text, 0, vace, "positive")
    g.link(text, 0, vace, "negative")
    g.link(vae, 0, vace, "vae")
    g.link(canny, 0, vace, "control_video")
    refine = sampler_stages(g, model, vace, *HISTREAM_STAGES)
    decode_to_video(g, refine, vae, prefix)
    g.add_note(VACE_NOTE, "HiStream + VACE control", under=[TEMPORAL, SPATIAL_2])
    return g.to_json()


WORKFLOWS = {
    "histream_t2v_1080p.json": dict(preset="HiStream"),
    "histream_plus_1080p.json": dict(preset="HiStream+", prefix="histream/plus_1080p"),
    "histream_lora_1080p.json": dict(preset="HiStream", lora=True, prefix="histream/lora_1080p"),
    "histream_stream_decode_1080p.json": dict(preset="HiStream", prefix="histream/stream_decode_1080p",
                                              stream_decode=True),
    # the Wan 2.1 tiny decoder streaming on the sampler: drafts whose decode keeps up with generation
    "histream_fast_decode_1080p.json": dict(preset="HiStream", prefix="histream/fast_decode_1080p",
                                            stream_decode=True, tae=True),
    # the baseline: full-res Self-Forcing with an unbounded cache (window ≥ chunk count)
    "self_forcing_fullres_1080p.json": dict(preset="Self-Forcing full-res", window=10000,
                                            prefix="histream/self_forcing_1080p"),
    # HiStream+ at 1080p for 15 s with three prompts through HiStream Prompt Schedule (seconds 0, 5, 10)
    "histream_prompt_schedule_long.json": dict(preset="HiStream+", prefix="histream/prompt_schedule_long",
                                               schedule=True, frames=241),
}


TOY_PROMPT = "red circle moving right, fast"
TOY_NOTE = """HiStream with the embedded toy model: runs on any machine, nothing to download.

The toy model is a 1.8 M-parameter causal Wan2.1-named DiT trained in the repository on procedural videos (one coloured shape moving over a dark background) with a tiny video autoencoder (Wan's 8x/4x strides). Prompt words: red green blue yellow magenta cyan orange white / circle square triangle / moving left right up down / slow fast.

It was trained by flow matching only (not distilled), so it uses the 'euler' sampler with 8 steps per chunk (4 at 64x64, 4 at 128x128), chunks of one latent frame, anchor 1 + window 3, and classifier-free guidance (cfg 3 against the empty prompt: without it the object fades). Frames can be any 1 + 4k: memory stays flat. See histream_toy/MODEL_CARD.md for what it can and cannot do."""


def build_toy(prefix: str = "histream/toy_demo") -> dict:
    """The embedded toy model through the five HiStream nodes (runs anywhere, nothing downloaded)."""
    g = Graph(MODELS)
    model = g.add("LoadHiStreamModel", ["histream_toy_dit.safetensors", "default", "auto", "none", "none"],
                  MODELS_COL)
    text = g.add("HiStreamToyPrompt", [TOY_PROMPT], MODELS_COL)
    negative = g.add("HiStreamToyPrompt", [NEGATIVE_PROMPT], MODELS_COL,
                     title="Negative prompt (empty)")
    refine = sampler_stages(g, model, text, [128, 128, 65, 1, 1, 1, TOY_WINDOW, "cache_relative"],
                            ["custom", TOY_SHIFT, TOY_STEPS, TOY_STEPS // 2, TOY_STEPS, TOY_STEPS // 2, TOY_SAMPLER],
                            [7, "fixed", 0.5], negative=negative, cfg=TOY_GUIDANCE)
    decode_to_video(g, refine, None, prefix, decode_type="HiStreamToyDecode")
    g.add_note(TOY_NOTE, "HiStream toy demo", under=[TEMPORAL, SPATIAL_2])
    return g.to_json()


# ---- the causal Wan families, each to its own recipe with HiStream's DRC on top (histream_core/recipes.py) ---------

FAMILY_NOTES = {
    "causal_forcing": """Causal Forcing chunkwise (github.com/thu-ml/Causal-Forcing; weights Apache-2.0) with HiStream on top.

Its own recipe: chunks of 3 latent frames, 4 steps (t = 1000/750/500/250, shift 5) on every chunk, the full cache over 81 frames: chunker preset 'Causal Forcing chunkwise', sampler preset 'Causal Forcing chunkwise'. This workflow: HiStream's bounded window (anchor 3 + 1 chunk) and 2 low-res + 2 full-res steps per chunk. The framewise model (framewise/causal_forcing.pt): the 'Causal Forcing framewise' presets.""",
    "causal_forcing_pp": """Causal Forcing++ framewise 2-step (github.com/thu-ml/Causal-Forcing; weights Apache-2.0) with HiStream on top.

Its own recipe: one latent frame per chunk; 4 steps on the first frame (t = 1000/750/500/250), then 2 per frame (t = 1000/500), shift 5, full cache: presets 'Causal Forcing++ framewise 2-step'. This workflow: anchor 3 + 3 frames of window; the first frame 2 low-res + 2 full-res steps, later frames 1 + 1. The 1-step model (causal-forcing++/framewise-1step.pt): the '... 1-step' presets.""",
    "longlive_base": """LongLive-1.3B (github.com/NVlabs/LongLive) with HiStream on top. LICENCE: the weights are CC-BY-NC-SA-4.0, for non-commercial use only.

The model is the base (longlive_base.pt) and its LoRA (lora.pt) together: Load HiStream Model merges the LoRA at strength 1 through its 'lora' input. Stock LoraLoaderModelOnly does not map lora.pt's PEFT names: it applies nothing (the video is the base model's).
Its own recipe: chunks of 3, 4 steps (shift 5), local attention of 12 latent frames counting the sink (3) and the current chunk (3) = anchor 3 + window 2 chunks, absolute positions: chunker preset 'LongLive-1.3B', sampler preset 'LongLive-1.3B'. This workflow adds 2 low-res + 2 full-res steps per chunk.
Memory at 1920x1088 (bf16): KV caches and activations ~ 23 GiB (~ 19 GiB with the native steps) besides the 2.6 GiB of weights: a 32 GB card; on 24 GB use 1280x704 (~ 10 GiB) or the native steps with fp8 weights.""",
    "krea": """Krea Realtime 14B (github.com/krea-ai/realtime-video; licence: see the model card) with HiStream on top.

Recipe: chunks of 3, 4 steps, shift 5, kv_cache_num_frames 3 -> here anchor 1 (the first frame) + 1 chunk. Krea's KV recompute before every block and its KV attention bias are NOT implemented: this approximates Krea's sampler.
Memory at 1920x1088 (bf16): weights 26.6 GiB, KV caches and activations ~ 60 GiB with HiStream (~ 49 GiB with the native 'Krea Realtime 14B' steps): a card with ~ 96 GB. The sampler refuses a run that cannot fit and names what does (960x544: ~ 15 GiB besides the weights).""",
}
FAMILIES = {  # workflow → (model key, LoRA key, recipe, cache variant)
    "causal_forcing_histream_1080p.json": ("causal_forcing", None, "causal_forcing_chunkwise", "histream"),
    "causal_forcing_pp_histream_1080p.json": ("causal_forcing_pp", None, "causal_forcing_pp_2step", "histream"),
    "longlive_histream_1080p.json": ("longlive_base", "longlive_lora", "longlive", "native"),
    "krea_realtime_14b_histream_1080p.json": ("krea", None, "krea_realtime_14b", "native"),
}


def build_family(name: str) -> dict:
    """A family's model (+ its LoRA) through the five nodes: its chunker preset and its '+ HiStream' steps."""
    key, lora, recipe, cache_variant = FAMILIES[name]
    g = Graph(MODELS)
    models = [key] + ([lora] if lora else [])
    model = g.add("LoadHiStreamModel", [MODELS[key]["name"], "default", "auto", "none",
                                        MODELS[lora]["name"] if lora else "none"], MODELS_COL, models=models)
    clip = g.add("CLIPLoader", [MODELS["umt5"]["name"], "wan", "default"], MODELS_COL, models=["umt5"])
    vae = g.add("VAELoader", [MODELS["vae"]["name"]], MODELS_COL, models=["vae"])
    text = g.add("CLIPTextEncode", [PROMPT], MODELS_COL)
    g.link(clip, 0, text, "clip")
    plan = recipe_plan(recipe, cache_variant)  # the chunker shows the values its preset uses
    chunker = [1920, 1088, 81, 1, plan["chunk_frames"], plan["anchor_frames"], plan["window_chunks"] or 10000,
               plan["position_mode"]]
    cache_preset = label(recipe) + ("" if cache_variant == "native" else " + HiStream window")
    steps = [label(recipe, "histream"), 5.0, *step_counts(recipe, "histream"), "renoise"]
    refine = sampler_stages(g, model, text, chunker, steps, HISTREAM_STAGES[2], cache_preset=cache_preset)
    decode_to_video(g, refine, vae, "histream/" + name.removesuffix(".json"))
    g.add_note(FAMILY_NOTES[key] + "\n\n" + where_to_get(*models, "umt5", "vae"),
               f"{label(recipe)}: recipe and licence", under=[TEMPORAL, SPATIAL_2])
    return g.to_json()


START_IMAGE = "start_image.png"
PREVIOUS_LATENT = "histream_previous.latent"
PREFIX_COL = "Start frames (prefix)"
I2V_PROMPT = ("The golden retriever from the picture runs along the sunlit beach towards the camera, waves rolling in, "
              "cinematic tracking shot, highly detailed")
EXTEND_PROMPT = ("The golden retriever slows down, turns and walks into the shallow waves as the sun touches the "
                 "horizon, cinematic tracking shot")
PREFIX_NOTE = """The clean prefix: its frames start the output as given, are written into both KV caches (full res, and downsampled for the low-res cache) at t = 0 before the first chunk, and are the anchor (RoPE positions 0..k-1; chunking starts after them; the chunker's anchor_frames does not apply). The chunker's frames count the prefix: frames 81 = the prefix + the new frames. The MODEL carries it (transformer_options ar_config initial_latent), as core ComfyUI's ARVideoI2V does: a MODEL from ARVideoI2V (ComfyUI v0.21+) works here the same way."""
I2V_NOTE = f"""HiStream image to video: the start image is the video's first frame.

Load Image -> {TITLES["HiStreamStartImage"]}: the first image, resized to the chunker's size (bilinear, center crop, as ARVideoI2V does), VAE-encoded into the first latent frame.
{PREFIX_NOTE}
Your start image -> ComfyUI/input/."""
EXTEND_NOTE = f"""HiStream video extension and resume: continue a latent you made with a new prompt.

Load Latent reads a .latent from ComfyUI/input/: a previous run saved with SaveLatent, or the finished chunks that a stopped or failed run saved to output/histream_partial/ (copy the file to input/ to resume).
{TITLES["HiStreamVideoPrefix"]}: its last `frames` latent frames (3 = one chunk = 12 video frames) start the new video. Latent Cut then drops them from the new output (index = the same number) and Latent Concat puts the whole loaded latent in front: the decoded video is the old one followed by the new frames.
{PREFIX_NOTE}
Extension is not one long run: the new chunks attend the prefix and the window, never the frames before the prefix (their KV cache is gone), so the join is smooth but what only the older frames showed can drift. A resumed run continues exactly as extension from the same frames."""


def prefix_stages(g: Graph, text_prompt: str) -> tuple[int, int, int]:
    """The model, text and VAE of a prefix workflow: (model, positive, vae)."""
    model = g.add("LoadHiStreamModel", ["self_forcing_dmd.pt", "default", "auto", "none", "none"], MODELS_COL,
                  models=["self_forcing"])
    clip = g.add("CLIPLoader", [MODELS["umt5"]["name"], "wan", "default"], MODELS_COL, models=["umt5"])
    vae = g.add("VAELoader", [MODELS["vae"]["name"]], MODELS_COL, models=["vae"])
    text = g.add("CLIPTextEncode", [text_prompt], MODELS_COL)
    g.link(clip, 0, text, "clip")
    return model, text, vae


def build_i2v(prefix: str = "histream/i2v_1080p") -> dict:
    """Image to video: Load Image → HiStream Start Image (the chunker's size) → Low-Res Denoise's MODEL."""
    g = Graph(MODELS)
    model, text, vae = prefix_stages(g, I2V_PROMPT)

    def start_image(chunker, model_in):
        image = g.add("LoadImage", [START_IMAGE, "image"], PREFIX_COL)
        node = g.add("HiStreamStartImage", [], PREFIX_COL)
        g.link(model_in, 0, node, "model")
        g.link(vae, 0, node, "vae")
        g.link(image, 0, node, "start_image")
        g.link(chunker, 0, node, "cache")
        return node

    refine = sampler_stages(g, model, text, *HISTREAM_STAGES, model_after_chunker=start_image)
    decode_to_video(g, refine, vae, prefix)
    g.add_note(I2V_NOTE + "\n\n" + where_to_get("self_forcing", "umt5", "vae"), "HiStream: image to video",
               under=[TIMESTEP, SPATIAL_2])  # right of the (tall) start image column
    return g.to_json()


def build_extend(prefix: str = "histream/extend_video", prefix_frames: int = 3) -> dict:
    """Extension / resume: Load Latent → HiStream Video Prefix → the stages; Latent Cut + Latent Concat join."""
    g = Graph(MODELS)
    model, text, vae = prefix_stages(g, EXTEND_PROMPT)
    loaded = g.add("LoadLatent", [PREVIOUS_LATENT], PREFIX_COL)
    video_prefix = g.add("HiStreamVideoPrefix", [prefix_frames], PREFIX_COL)
    g.link(model, 0, video_prefix, "model")
    g.link(loaded, 0, video_prefix, "latent")
    refine = sampler_stages(g, video_prefix, text, *HISTREAM_STAGES)
    cut = g.add("LatentCut", ["t", prefix_frames, 4096], PREFIX_COL)
    g.link(refine, 0, cut, "samples")
    joined = g.add("LatentConcat", ["t"], PREFIX_COL)
    g.link(loaded, 0, joined, "samples1")
    g.link(cut, 0, joined, "samples2")
    decode_to_video(g, joined, vae, prefix)
    g.add_note(EXTEND_NOTE + "\n\n" + where_to_get("self_forcing", "umt5", "vae"), "HiStream: extend or resume",
               under=[TEMPORAL, SPATIAL_2])
    return g.to_json()


# ---- core's AR video template (EmptyARVideoLatent → SamplerARVideo → SamplerCustomAdvanced) from nodes every tested
# host has: the chunker's latent and HiStream Sampler in their places
SAMPLER_COL, STOCK_COL = "HiStream Sampler", "Stock sampling"
SAMPLER_NOTE = f"""HiStream through stock SamplerCustomAdvanced: the graph shape of ComfyUI's autoregressive video template, with the same loop as the five HiStream stage nodes.

Causal Forcing framewise (core's repack, loaded by the stock UNETLoader; github.com/thu-ml/Causal-Forcing, weights Apache-2.0) with HiStream on top: chunker preset 'Causal Forcing framewise + HiStream window' (1 latent frame per chunk, anchor 3 + window 3 frames), steps 'Causal Forcing framewise + HiStream' (2 low-res + 2 full-res per frame).
{TITLES["HiStreamSampler"]}: a SAMPLER running the whole HiStream loop (dual-resolution caching, window, per-chunk steps, previews, Stop). Its step plan wins: the SIGMAS from BasicScheduler are ignored unless step_plan is SIGMAS (then they run on every chunk, sigmas_low_steps of them at low res). A Sparse Step Sampler connected to its steps input wins over both.
RandomNoise: only its seed is used (HiStream draws each chunk's noise on the CPU from it): the same seed gives the same video as the five-node workflows. CFGGuider cfg 1: distilled weights need no guidance (its negative is unused at cfg 1).
The latent comes from {TITLES["AnchorCacheChunker"]} (width, height, frames); SamplerCustomAdvanced's output goes to VAEDecode as usual.

{where_to_get("causal_forcing_repack", "umt5", "vae")}"""


def build_sampler_custom_advanced(prefix: str = "histream/sampler_custom_advanced") -> dict:
    g = Graph(MODELS)
    model = g.add("UNETLoader", [MODELS["causal_forcing_repack"]["name"], "default"], MODELS_COL,
                  models=["causal_forcing_repack"])
    clip = g.add("CLIPLoader", [MODELS["umt5"]["name"], "wan", "default"], MODELS_COL, models=["umt5"])
    vae = g.add("VAELoader", [MODELS["vae"]["name"]], MODELS_COL, models=["vae"])
    positive = g.add("CLIPTextEncode", [PROMPT], MODELS_COL)
    negative = g.add("CLIPTextEncode", [""], MODELS_COL, title="Negative prompt (unused at cfg 1)", size=[320, 110])
    for text in (positive, negative):
        g.link(clip, 0, text, "clip")
    recipe = "causal_forcing_framewise"
    plan = recipe_plan(recipe, "histream")
    chunker = g.add("AnchorCacheChunker", [1920, 1088, 81, 1, plan["chunk_frames"], plan["anchor_frames"],
                                           plan["window_chunks"], plan["position_mode"], "default",
                                           label(recipe) + " + HiStream window"], TEMPORAL)
    sampler = g.add("HiStreamSampler", [label(recipe, "histream"), 5.0, 2, "renoise", 0.5, "bilinear", "area", 1.0,
                                        "clean_pass"], SAMPLER_COL)
    g.link(chunker, 0, sampler, "cache")
    guider = g.add("CFGGuider", [1.0], STOCK_COL)
    g.link(model, 0, guider, "model")
    g.link(positive, 0, guider, "positive")
    g.link(negative, 0, guider, "negative")
    noise = g.add("RandomNoise", [42, "randomize"], STOCK_COL)
    sigmas = g.add("BasicScheduler", ["simple", 4, 1.0], STOCK_COL, title="BasicScheduler (ignored)")
    g.link(model, 0, sigmas, "model")
    run = g.add("SamplerCustomAdvanced", [], STOCK_COL)
    for src, name in ((noise, "noise"), (guider, "guider"), (sampler, "sampler"), (sigmas, "sigmas")):
        g.link(src, 0, run, name)
    g.link(chunker, 1, run, "latent_image")
    decode_to_video(g, run, vae, prefix)
    g.add_note(SAMPLER_NOTE, "HiStream Sampler in SamplerCustomAdvanced", under=[TEMPORAL, STOCK_COL])
    return g.to_json()


BUILDERS = {  # graphs of their own shape
    "histream_i2v_1080p.json": build_i2v,
    "histream_extend_video.json": build_extend,
    "histream_vace_control_1080p.json": build_vace,
    "histream_toy_demo.json": build_toy,
    **{name: partial(build_family, name) for name in FAMILIES},
    "histream_sampler_custom_advanced.json": build_sampler_custom_advanced,
}


def main():
    OUT.mkdir(exist_ok=True)
    for name, kw in WORKFLOWS.items():
        (OUT / name).write_text(json.dumps(build(**kw), indent=1) + "\n")
        print("wrote", OUT / name)
    for name, builder in BUILDERS.items():
        (OUT / name).write_text(json.dumps(builder(), indent=1) + "\n")
        print("wrote", OUT / name)


if __name__ == "__main__":
    main()
