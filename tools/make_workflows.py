"""Writes the shipped UI-format workflows in workflows/ (run: python -m tools.make_workflows).

Graphs are described once here so that every workflow stays consistent (links, types, widget order); the JSON
files are what users drag onto the canvas.
"""

from __future__ import annotations

import json
from pathlib import Path

from histream_toy.sampling import NEGATIVE_PROMPT, TOY_GUIDANCE, TOY_SAMPLER, TOY_SHIFT, TOY_STEPS, TOY_WINDOW

OUT = Path(__file__).resolve().parent.parent / "workflows"

MODELS = {
    "self_forcing": {"name": "self_forcing_dmd.pt", "directory": "diffusion_models",
                     "url": "https://huggingface.co/gdhe17/Self-Forcing/resolve/main/checkpoints/self_forcing_dmd.pt"},
    "umt5": {"name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "directory": "text_encoders",
             "url": "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/"
                    "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors"},
    "vae": {"name": "wan_2.1_vae.safetensors", "directory": "vae",
            "url": "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/vae/"
                   "wan_2.1_vae.safetensors"},
    "lora": {"name": "your_wan21_t2v_1.3B_lora.safetensors", "directory": "loras"},
    "vace": {"name": "wan2.1_vace_1.3B_fp16.safetensors", "directory": "diffusion_models",
             "url": "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/"
                    "diffusion_models/wan2.1_vace_1.3B_fp16.safetensors"},
}

PROMPT = ("A golden retriever runs along a sunlit beach at sunset, waves rolling in, cinematic tracking shot, "
          "highly detailed, 4k")

NOTE = """HiStream (arXiv 2512.21338) — 1080p autoregressive video on a causal (Self-Forcing) Wan2.1-T2V-1.3B.

Anchor Cache Chunker (temporal): the video is made chunk by chunk (3 latent frames) against a fixed anchor (the first chunk) + a sliding window of recent chunks, so time and memory per chunk stay constant for any length.
Sparse Step Sampler (timestep): HiStream = 2 low-res + 2 high-res steps per chunk; HiStream+ = later chunks 1 + 1.
Low-Res Denoise (spatial 1): each chunk's first steps run at half width/height (960x544) against the low-res cache.
Cached Upsample Refine (spatial 2): upsamples that chunk, re-noises, finishes at 1920x1088 against the high-res cache, writes both caches, and runs the whole loop (progress and previews per step; Stop works).

Models: self_forcing_dmd.pt -> models/diffusion_models, umt5_xxl -> models/text_encoders, wan_2.1_vae -> models/vae.
Window 1 at 1080p needs ~16 GB of KV cache (bf16): with fp8 weights it fits a 24 GB card. The public Self-Forcing weights were trained at 832x480: expect softer detail at 1080p than the paper's tuned weights."""

NOTE_STREAM = """

Streaming decode: the VAE is connected to Cached Upsample Refine, which decodes each chunk as soon as it is finished (before the next chunk starts) and outputs the frames as IMAGE, equal to VAEDecode of its LATENT. Previews show each finished chunk's frames. The Wan VAE's own memory budget is reserved next to the model; on cards under ~48 GB at 1080p, prefer the other workflows (decode after generation)."""

# node type → (input slots [(name, type)], output slots [(name, type)])
SLOTS = {
    "LoadHiStreamModel": ([], [("MODEL", "MODEL")]),
    "LoraLoaderModelOnly": ([("model", "MODEL")], [("MODEL", "MODEL")]),
    "CLIPLoader": ([], [("CLIP", "CLIP")]),
    "CLIPTextEncode": ([("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")]),
    "AnchorCacheChunker": ([], [("cache", "HISTREAM_CACHE"), ("latent", "LATENT")]),
    "SparseStepSampler": ([("sigmas", "SIGMAS")], [("steps", "HISTREAM_STEPS")]),
    "LowResDenoise": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("cache", "HISTREAM_CACHE"),
                       ("steps", "HISTREAM_STEPS"), ("latent", "LATENT")], [("low_res", "HISTREAM_LOWRES")]),
    "LowResDenoise+negative": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("cache", "HISTREAM_CACHE"),
                                ("steps", "HISTREAM_STEPS"), ("latent", "LATENT"), ("negative", "CONDITIONING")],
                               [("low_res", "HISTREAM_LOWRES")]),
    "CachedUpsampleRefine": ([("low_res", "HISTREAM_LOWRES")], [("LATENT", "LATENT")]),
    "VAELoader": ([], [("VAE", "VAE")]),
    # with streaming decode: the optional vae input and the IMAGE output in use
    "CachedUpsampleRefine+vae": ([("low_res", "HISTREAM_LOWRES"), ("vae", "VAE")],
                                 [("LATENT", "LATENT"), ("IMAGE", "IMAGE")]),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")]),
    "CreateVideo": ([("images", "IMAGE"), ("audio", "AUDIO")], [("VIDEO", "VIDEO")]),
    "SaveVideo": ([("video", "VIDEO")], []),
    "Note": ([], []),
    "HiStreamToyPrompt": ([], [("CONDITIONING", "CONDITIONING")]),
    "HiStreamToyDecode": ([("samples", "LATENT")], [("IMAGE", "IMAGE")]),
    "LoadVideo": ([], [("VIDEO", "VIDEO")]),
    "GetVideoComponents": ([("video", "VIDEO")], [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")]),
    "Canny": ([("image", "IMAGE")], [("IMAGE", "IMAGE")]),
    "WanVaceToVideo": ([("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("vae", "VAE"),
                        ("control_video", "IMAGE"), ("control_masks", "MASK"), ("reference_image", "IMAGE")],
                       [("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent", "LATENT"),
                        ("trim_latent", "INT")]),
    "HiStreamPromptSchedule": ([(f"conditioning_{i}", "CONDITIONING") for i in range(1, 5)],
                               [("positive", "CONDITIONING")]),
}


class Graph:
    def __init__(self):
        self.nodes, self.links = [], []

    def add(self, type_, widgets, pos, size=(320, 130), models=None, title=None, slots=None):
        ins, outs = SLOTS[slots or type_]
        node = {"id": len(self.nodes) + 1, "type": type_, "pos": list(pos), "size": list(size), "flags": {},
                "order": len(self.nodes), "mode": 0,
                "inputs": [{"name": n, "type": t, "link": None} for n, t in ins],
                "outputs": [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(outs)],
                "properties": {"Node name for S&R": type_}, "widgets_values": list(widgets)}
        if models:
            node["properties"]["models"] = [MODELS[m] for m in models]
        if title:
            node["title"] = title
        self.nodes.append(node)
        return node["id"]

    def link(self, src, src_slot, dst, dst_name):
        s, d = self.nodes[src - 1], self.nodes[dst - 1]
        slot = next(i for i, inp in enumerate(d["inputs"]) if inp["name"] == dst_name)
        type_ = s["outputs"][src_slot]["type"]
        assert d["inputs"][slot]["type"] == type_, (s["type"], d["type"], dst_name)
        lid = len(self.links) + 1
        self.links.append([lid, src, src_slot, dst, slot, type_])
        s["outputs"][src_slot]["links"].append(lid)
        d["inputs"][slot]["link"] = lid

    def to_json(self):
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {},
                "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}


def sampler_stages(g: Graph, model: int, positive: int, chunker: list, steps: list, low: list,
                   refine_slots: str | None = None, negative: int | None = None, cfg: float = 1.0) -> int:
    """Anchor Cache Chunker + Sparse Step Sampler + Low-Res Denoise → Cached Upsample Refine (returned), linked;
    with `negative`, Low-Res Denoise guides with it at `cfg`."""
    chunker_id = g.add("AnchorCacheChunker", chunker, (450, 0), size=(330, 250))
    steps_id = g.add("SparseStepSampler", steps, (450, 290), size=(330, 220))
    low_id = g.add("LowResDenoise", [*low, cfg], (830, 0), size=(330, 200),
                   slots=None if negative is None else "LowResDenoise+negative")
    g.link(model, 0, low_id, "model")
    g.link(positive, 0, low_id, "positive")
    if negative is not None:
        g.link(negative, 0, low_id, "negative")
    g.link(chunker_id, 0, low_id, "cache")
    g.link(steps_id, 0, low_id, "steps")
    g.link(chunker_id, 1, low_id, "latent")
    refine = g.add("CachedUpsampleRefine", ["bilinear", "area", 1.0, "clean_pass"], (830, 250), size=(330, 170),
                   slots=refine_slots)
    g.link(low_id, 0, refine, "low_res")
    return refine


def decode_to_video(g: Graph, refine: int, vae: int) -> int:
    """Stock VAEDecode of the refine node's LATENT → CreateVideo at 16 fps (returned)."""
    decode = g.add("VAEDecode", [], (1210, 0))
    g.link(refine, 0, decode, "samples")
    g.link(vae, 0, decode, "vae")
    video = g.add("CreateVideo", [16.0], (1210, 170))
    g.link(decode, 0, video, "images")
    return video


def build(preset: str, window: int = 1, lora: bool = False, prefix: str = "histream/t2v_1080p",
          stream_decode: bool = False) -> dict:
    g = Graph()
    model = g.add("LoadHiStreamModel", ["self_forcing_dmd.pt", "default", "auto", "none"], (0, 0), models=["self_forcing"])
    if lora:
        lora_id = g.add("LoraLoaderModelOnly", [MODELS["lora"]["name"], 1.0], (0, 170), models=["lora"])
        g.link(model, 0, lora_id, "model")
        model = lora_id
    clip = g.add("CLIPLoader", [MODELS["umt5"]["name"], "wan", "default"], (0, 330), models=["umt5"])
    text = g.add("CLIPTextEncode", [PROMPT], (0, 480), size=(400, 180))
    g.link(clip, 0, text, "clip")
    stages = ([1920, 1088, 81, 1, 3, 3, window, "cache_relative"], [preset, 5.0, 4, 2, 2, 1, "renoise"],
              [42, "randomize", 0.5])
    vae = g.add("VAELoader", [MODELS["vae"]["name"]], (830, 470), models=["vae"])
    if stream_decode:  # the VAE decodes each chunk inside the loop: frames come out of the sampler itself
        refine = sampler_stages(g, model, text, *stages, refine_slots="CachedUpsampleRefine+vae")
        g.link(vae, 0, refine, "vae")
        video = g.add("CreateVideo", [16.0], (1210, 170))
        g.link(refine, 1, video, "images")
    else:
        video = decode_to_video(g, sampler_stages(g, model, text, *stages), vae)
    save = g.add("SaveVideo", [prefix, "auto", "auto"], (1210, 340), size=(400, 420))
    g.link(video, 0, save, "video")
    note = NOTE + (NOTE_STREAM if stream_decode else "")
    g.add("Note", [note], (450, 540), size=(700, 300), title="HiStream: how the stages map to the paper")
    return g.to_json()


VACE_NOTE = """HiStream + VACE control (the "ControlNet" of Wan) through the stock WanVaceToVideo node.

Load HiStream Model: vace_model attaches only the vace_* tensors of the chosen file (a Wan2.1 VACE module, or the full wan2.1_vace_1.3B checkpoint whose main blocks are NOT used) to the causal Self-Forcing model.
Control: Load Video -> Get Video Components -> Canny (or any depth/pose preprocessor) -> WanVaceToVideo.control_video; optional control_masks. reference_image is not supported (one clear error). WanVaceToVideo's width/height/length must equal the Anchor Cache Chunker's; its latent output is not used (the chunker makes the latent); negative is unused (no CFG).
Per chunk the VACE blocks run causally with their own anchor + window KV cache at both resolutions (the control resized for the low-res stage) and add their hints, times strength, to the main blocks. Without WanVaceToVideo the VACE blocks are skipped entirely.

Models: self_forcing_dmd.pt and wan2.1_vace_1.3B_fp16 -> models/diffusion_models, umt5_xxl -> models/text_encoders, wan_2.1_vae -> models/vae; your control video -> input/.
The VACE KV caches add half the main caches' memory (15 of 30 blocks) per control video."""


def build_vace(prefix: str = "histream/vace_control_1080p") -> dict:
    """HiStream with VACE control from stock nodes: LoadVideo → Canny → WanVaceToVideo → LowResDenoise."""
    g = Graph()
    model = g.add("LoadHiStreamModel", ["self_forcing_dmd.pt", "default", "auto", MODELS["vace"]["name"]], (0, 0),
                  models=["self_forcing", "vace"])
    clip = g.add("CLIPLoader", [MODELS["umt5"]["name"], "wan", "default"], (0, 170), models=["umt5"])
    text = g.add("CLIPTextEncode", [PROMPT], (0, 320), size=(400, 180))
    g.link(clip, 0, text, "clip")
    vae = g.add("VAELoader", [MODELS["vae"]["name"]], (0, 540), models=["vae"])
    video_in = g.add("LoadVideo", ["control_video.mp4", "image"], (0, 690), size=(320, 320))
    parts = g.add("GetVideoComponents", [], (0, 1050))
    g.link(video_in, 0, parts, "video")
    canny = g.add("Canny", [0.4, 0.8], (370, 1050))
    g.link(parts, 0, canny, "image")
    vace = g.add("WanVaceToVideo", [1920, 1088, 81, 1, 1.0], (450, 540), size=(330, 300))
    g.link(text, 0, vace, "positive")
    g.link(text, 0, vace, "negative")
    g.link(vae, 0, vace, "vae")
    g.link(canny, 0, vace, "control_video")
    refine = sampler_stages(g, model, vace, [1920, 1088, 81, 1, 3, 3, 1, "cache_relative"],
                            ["HiStream", 5.0, 4, 2, 2, 1, "renoise"], [42, "randomize", 0.5])
    video = decode_to_video(g, refine, vae)
    save = g.add("SaveVideo", [prefix, "auto", "auto"], (1210, 340), size=(400, 420))
    g.link(video, 0, save, "video")
    g.add("Note", [VACE_NOTE], (830, 800), size=(700, 320), title="HiStream + VACE control")
    return g.to_json()


WORKFLOWS = {
    "histream_t2v_1080p.json": dict(preset="HiStream"),
    "histream_plus_1080p.json": dict(preset="HiStream+", prefix="histream/plus_1080p"),
    "histream_lora_1080p.json": dict(preset="HiStream", lora=True, prefix="histream/lora_1080p"),
    "histream_stream_decode_1080p.json": dict(preset="HiStream", prefix="histream/stream_decode_1080p",
                                              stream_decode=True),
    # the baseline: full-res Self-Forcing with an unbounded cache (window ≥ chunk count)
    "self_forcing_fullres_1080p.json": dict(preset="Self-Forcing full-res", window=10000,
                                            prefix="histream/self_forcing_1080p"),
}


TOY_PROMPT = "red circle moving right, fast"
TOY_NOTE = """HiStream with the embedded toy model: runs on any machine, nothing to download.

The toy model is a 1.8 M-parameter causal Wan2.1-named DiT trained in the repository on procedural videos (one coloured shape moving over a dark background) with a tiny video autoencoder (Wan's 8x/4x strides). Prompt words: red green blue yellow magenta cyan orange white / circle square triangle / moving left right up down / slow fast.

It was trained by flow matching only (not distilled), so it uses the 'euler' sampler with 8 steps per chunk (4 at 64x64, 4 at 128x128), chunks of one latent frame, anchor 1 + window 3, and classifier-free guidance (cfg 3 against the empty prompt: without it the object fades). Frames can be any 1 + 4k: memory stays flat. See histream_toy/MODEL_CARD.md for what it can and cannot do."""


def build_toy(prefix: str = "histream/toy_demo") -> dict:
    """The embedded toy model through the five HiStream nodes (runs anywhere, nothing downloaded)."""
    g = Graph()
    model = g.add("LoadHiStreamModel", ["histream_toy_dit.safetensors", "default", "auto", "none"], (0, 0))
    text = g.add("HiStreamToyPrompt", [TOY_PROMPT], (0, 120), size=(400, 90))
    negative = g.add("HiStreamToyPrompt", [NEGATIVE_PROMPT], (0, 240), size=(400, 90),
                     title="HiStream Toy Prompt (negative: empty)")
    refine = sampler_stages(g, model, text, [128, 128, 65, 1, 1, 1, TOY_WINDOW, "cache_relative"],
                            ["custom", TOY_SHIFT, TOY_STEPS, TOY_STEPS // 2, TOY_STEPS, TOY_STEPS // 2, TOY_SAMPLER],
                            [7, "fixed", 0.5], negative=negative, cfg=TOY_GUIDANCE)
    decode = g.add("HiStreamToyDecode", [], (1210, 0))
    g.link(refine, 0, decode, "samples")
    video = g.add("CreateVideo", [16.0], (1210, 120))
    g.link(decode, 0, video, "images")
    save = g.add("SaveVideo", [prefix, "auto", "auto"], (1210, 290), size=(400, 420))
    g.link(video, 0, save, "video")
    g.add("Note", [TOY_NOTE], (0, 360), size=(420, 400), title="HiStream toy demo")
    return g.to_json()



SCHEDULE_PROMPTS = (
    "A red fox trots through a snowy pine forest at dawn, soft light, cinematic tracking shot, highly detailed",
    "The red fox reaches a frozen lake and walks onto the ice, mist rising, cinematic tracking shot",
    "The red fox sits on the ice under a starry night sky, aurora overhead, cinematic wide shot",
)

SCHEDULE_NOTE = """HiStream prompt schedule: a 15 s video (241 frames) whose prompt changes at 5 s and 10 s.

HiStream Prompt Schedule: each connected conditioning drives the video from its start on (unit second: 16 fps; the switch happens at the chunk holding that frame; unit chunk: chunk index, 12 frames per chunk). The first must start at 0 and starts must increase.
At a switch the text cache is replaced and the recent window of the KV cache is re-encoded under the new prompt (LongLive-style), so the motion carries on smoothly; the anchor (the first chunk) is kept, so the subject's identity holds.
Memory does not grow with the video length or the number of switches. HiStream+ steps keep long videos fast."""


def build_prompt_schedule(prefix: str = "histream/prompt_schedule_long") -> dict:
    """HiStream+ at 1080p for 15 s with three prompts through HiStream Prompt Schedule (seconds 0, 5, 10)."""
    wf = build("HiStream+", prefix=prefix)
    g = Graph()
    g.nodes, g.links = wf["nodes"], wf["links"]
    by_type = {n["type"]: n for n in g.nodes}
    by_type["AnchorCacheChunker"]["widgets_values"][2] = 241
    first = by_type["CLIPTextEncode"]
    first["widgets_values"] = [SCHEDULE_PROMPTS[0]]
    low = by_type["LowResDenoise"]
    sched = g.add("HiStreamPromptSchedule", ["second", 0.0, 5.0, 10.0, 15.0], (450, 880), size=(330, 260))
    for i, prompt in enumerate(SCHEDULE_PROMPTS, 1):
        text = first["id"] if i == 1 else g.add("CLIPTextEncode", [prompt], (0, 480 + 220 * (i - 1)), size=(400, 180))
        if i > 1:
            g.link(by_type["CLIPLoader"]["id"], 0, text, "clip")
        g.link(text, 0, sched, f"conditioning_{i}")
    # LowResDenoise's positive now comes from the schedule: re-point that link's source (link ids stay 1..N)
    link = next(lk for lk in g.links if lk[3] == low["id"] and lk[4] == 1)
    first["outputs"][0]["links"].remove(link[0])
    link[1], link[2] = sched, 0
    g.nodes[sched - 1]["outputs"][0]["links"].append(link[0])
    note = next(n for n in g.nodes if n["type"] == "Note")
    note["widgets_values"] = [SCHEDULE_NOTE + "\n\n" + NOTE]
    return g.to_json()


BUILDERS = {  # graphs of their own shape
    "histream_vace_control_1080p.json": build_vace,
    "histream_prompt_schedule_long.json": build_prompt_schedule,
    "histream_toy_demo.json": build_toy,
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
