"""Demo nodes for the embedded toy model (histream_toy): run HiStream in ComfyUI with nothing downloaded.

Toy Prompt turns a toy prompt ("red circle moving right, fast") into the toy model's CONDITIONING; Toy Decode turns
a LATENT from Cached Upsample Refine into IMAGE frames with the toy autoencoder. The toy DiT itself is an ordinary
Wan2.1-named checkpoint: its folder is registered with diffusion_models, so Load HiStream Model (or the stock
Load Diffusion Model) lists it.
"""

from __future__ import annotations

import comfy.latent_formats
import comfy.model_management
import folder_paths
import torch

from ..histream_toy import VOCAB, encode_prompt, load_toy_ae
from ..histream_toy.sampling import TOY_DIT_PATH

DEMO_CATEGORY = "HiStream/demo"
folder_paths.add_model_folder_path("diffusion_models", str(TOY_DIT_PATH.parent))


class HiStreamToyPrompt:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text": ("STRING", {"default": "red circle moving right, fast", "tooltip": (
                "colour shape moving direction, speed - words: " + " ".join(VOCAB) + ". Empty: the empty prompt, the "
                "toy model's negative for cfg.")}),
        }}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    TITLE = "HiStream Toy Prompt (demo)"
    CATEGORY = DEMO_CATEGORY
    DESCRIPTION = "The embedded toy model's text encoder (a fixed vocabulary; no download)."

    def encode(self, text):
        try:
            cond = encode_prompt(text)
        except ValueError as exc:
            raise ValueError(f"HiStream Toy Prompt: {exc}") from None
        return ([[cond, {}]],)


class HiStreamToyDecode:
    _ae = None

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT", {"tooltip": "From Cached Upsample Refine with the toy model."})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"
    TITLE = "HiStream Toy Decode (demo)"
    CATEGORY = DEMO_CATEGORY
    DESCRIPTION = "The embedded toy model's video decoder (8x space, 4x time, like Wan's VAE): LATENT -> frames."

    def decode(self, samples):
        z = samples["samples"]
        if z.ndim != 5 or z.shape[1] != 16:
            raise ValueError(f"HiStream Toy Decode needs a 16-channel video LATENT [B,16,T,H,W], got "
                             f"{tuple(z.shape)}: connect Cached Upsample Refine's output")
        if HiStreamToyDecode._ae is None:
            HiStreamToyDecode._ae = load_toy_ae()
        # the LATENT is in the host's Wan2.1 latent space; the sampler worked in the model space (process_in)
        model_space = comfy.latent_formats.Wan21().process_in(z.float().cpu())
        with torch.inference_mode():
            video = HiStreamToyDecode._ae.decode(model_space)  # [B, 3, F, H, W] in [-1, 1]
        images = ((video + 1) / 2).permute(0, 2, 3, 4, 1).flatten(0, 1)  # IMAGE [B*F, H, W, 3] in [0, 1]
        return (images.to(comfy.model_management.intermediate_device()),)
