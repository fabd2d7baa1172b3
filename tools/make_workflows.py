"""Writes the shipped UI-format workflows in workflows/ (run: python -m tools.make_workflows).

Graphs are described once here so that every workflow stays consistent (links, types, widget order); the JSON
files are what users drag onto the canvas.
"""

from __future__ import annotations

import json
from pathlib import Path

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
    "CachedUpsampleRefine": ([("low_res", "HISTREAM_LOWRES")], [("LATENT", "LATENT")]),
    "VAELoader": ([], [("VAE", "VAE")]),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")]),
    "CreateVideo": ([("images", "IMAGE"), ("audio", "AUDIO")], [("VIDEO", "VIDEO")]),
    "SaveVideo": ([("video", "VIDEO")], []),
    "Note": ([], []),
    "HiStreamPromptSchedule": ([(f"conditioning_{i}", "CONDITIONING") for i in range(1, 5)],
                               [("positive", "CONDITIONING")]),
}


class Graph:
    def __init__(self):
        self.nodes, self.links = [], []

    def add(self, type_, widgets, pos, size=(320, 130), models=None, title=None):
        ins, outs = SLOTS[type_]
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


def build(preset: str, window: int = 1, lora: bool = False, prefix: str = "histream/t2v_1080p") -> dict:
    g = Graph()
    model = g.add("LoadHiStreamModel", ["self_forcing_dmd.pt", "default", "auto"], (0, 0), models=["self_forcing"])
    if lora:
        lora_id = g.add("LoraLoaderModelOnly", [MODELS["lora"]["name"], 1.0], (0, 170), models=["lora"])
        g.link(model, 0, lora_id, "model")
        model = lora_id
    clip = g.add("CLIPLoader", [MODELS["umt5"]["name"], "wan", "default"], (0, 330), models=["umt5"])
    text = g.add("CLIPTextEncode", [PROMPT], (0, 480), size=(400, 180))
    g.link(clip, 0, text, "clip")
    chunker = g.add("AnchorCacheChunker", [1920, 1088, 81, 1, 3, 3, window, "cache_relative"], (450, 0),
                    size=(330, 250))
    steps = g.add("SparseStepSampler", [preset, 5.0, 4, 2, 2, 1], (450, 290), size=(330, 200))
    low = g.add("LowResDenoise", [42, "randomize", 0.5], (830, 0), size=(330, 200))
    g.link(model, 0, low, "model")
    g.link(text, 0, low, "positive")
    g.link(chunker, 0, low, "cache")
    g.link(steps, 0, low, "steps")
    g.link(chunker, 1, low, "latent")
    refine = g.add("CachedUpsampleRefine", ["bilinear", "area", 1.0, "clean_pass"], (830, 250), size=(330, 170))
    g.link(low, 0, refine, "low_res")
    vae = g.add("VAELoader", [MODELS["vae"]["name"]], (830, 470), models=["vae"])
    decode = g.add("VAEDecode", [], (1210, 0))
    g.link(refine, 0, decode, "samples")
    g.link(vae, 0, decode, "vae")
    video = g.add("CreateVideo", [16.0], (1210, 170))
    g.link(decode, 0, video, "images")
    save = g.add("SaveVideo", [prefix, "auto", "auto"], (1210, 340), size=(400, 420))
    g.link(video, 0, save, "video")
    g.add("Note", [NOTE], (450, 540), size=(700, 300), title="HiStream: how the stages map to the paper")
    return g.to_json()


WORKFLOWS = {
    "histream_t2v_1080p.json": dict(preset="HiStream"),
    "histream_plus_1080p.json": dict(preset="HiStream+", prefix="histream/plus_1080p"),
    "histream_lora_1080p.json": dict(preset="HiStream", lora=True, prefix="histream/lora_1080p"),
    # the baseline: full-res Self-Forcing with an unbounded cache (window ≥ chunk count)
    "self_forcing_fullres_1080p.json": dict(preset="Self-Forcing full-res", window=10000,
                                            prefix="histream/self_forcing_1080p"),
}


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


BUILDERS = {"histream_prompt_schedule_long.json": build_prompt_schedule}


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
