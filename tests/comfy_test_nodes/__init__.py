"""Test-only ComfyUI nodes (never shipped): Wan-shaped text conditioning without the 5.7B umT5 encoder, and a
saver for what a CONDITIONING carries (to rebuild a graph's run in the core)."""

import torch

TEXT_DIM = 4096


def fake_wan_text(seed: int, tokens: int, batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, tokens, TEXT_DIM, generator=g)


class HiStreamTestConditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                             "tokens": ("INT", {"default": 8, "min": 1, "max": 512}),
                             "batch": ("INT", {"default": 1, "min": 1, "max": 8})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "HiStream/testing"

    def make(self, seed, tokens, batch):
        return ([[fake_wan_text(seed, tokens, batch), {}]],)


class HiStreamTestAttnPatch:
    """A MODEL carrying an `attn1_patch` (the kind Uni3C-style controls and hypernetworks set): it scales the
    self-attention query, so where a host applies it the output changes."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "scale": ("FLOAT", {"default": 2.0})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "HiStream/testing"

    def patch(self, model, scale):
        def scale_query(q, k, v, extra_options):
            return q * scale, k, v

        patched = model.clone()
        patched.set_model_attn1_patch(scale_query)
        return (patched,)


class HiStreamTestPoison:
    """One non-finite element in a CONDITIONING: in the text tensor, or in its first VACE control latent."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",), "value": (["nan", "inf", "-inf"],),
                             "where": (["text", "vace_frames"],)}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "poison"
    CATEGORY = "HiStream/testing"

    def poison(self, conditioning, value, where):
        out = []
        for cond, opts in conditioning:
            opts = dict(opts)
            if where == "text":
                cond = cond.clone()
                cond.view(-1)[cond.numel() // 2] = float(value)
            else:
                frames = [f.clone() for f in opts["vace_frames"]]
                frames[0].view(-1)[0] = float(value)
                opts["vace_frames"] = frames
            out.append([cond, opts])
        return (out,)


class HiStreamTestSigmas:
    """A SIGMAS list typed as text ("1, nan, 0.5, 0"): custom schedules, including broken ones."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"values": ("STRING", {"default": "1.0, 0.9375, 0.8333, 0.625, 0.0"})}}

    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "make"
    CATEGORY = "HiStream/testing"

    def make(self, values):
        return (torch.tensor([float(v) for v in values.split(",")]),)


class HiStreamTestSaveConditioning:
    """Writes the first entry of a CONDITIONING (its tensor and WanVaceToVideo's vace_* lists) to
    output/<filename>.safetensors as `cond`, `vace_frames.<i>`, `vace_mask.<i>`, `vace_strength`."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",), "filename": ("STRING", {"default": "cond"})}}

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = "HiStream/testing"

    def save(self, conditioning, filename):
        import os

        import folder_paths
        from safetensors.torch import save_file

        cond, opts = conditioning[0]
        out = {"cond": cond.contiguous()}
        for key in ("vace_frames", "vace_mask"):
            for i, t in enumerate(opts.get(key) or []):
                out[f"{key}.{i}"] = t.contiguous()
        if opts.get("vace_strength") is not None:
            out["vace_strength"] = torch.tensor([float(s) for s in opts["vace_strength"]])
        save_file(out, os.path.join(folder_paths.get_output_directory(), f"{filename}.safetensors"))
        return ()


class HiStreamTestEmulatedARVideoI2V:
    """EMULATED, test only: core ComfyUI's ARVideoI2V (comfy_extras/nodes_ar_video.py, v0.21+; no matrix host has
    it), rebuilt from its public source's behaviour: the first start image resized by comfy.utils.common_upscale
    (bilinear, center crop) to width x height, vae.encode of its RGB channels stored at
    transformer_options["ar_config"]["initial_latent"] of a MODEL clone, and an empty latent of `length` frames."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "vae": ("VAE",), "start_image": ("IMAGE",),
                             "width": ("INT", {"default": 832, "min": 16, "max": 8192, "step": 16}),
                             "height": ("INT", {"default": 480, "min": 16, "max": 8192, "step": 16}),
                             "length": ("INT", {"default": 81, "min": 1, "max": 1024, "step": 4}),
                             "batch_size": ("INT", {"default": 1, "min": 1, "max": 64})}}

    RETURN_TYPES = ("MODEL", "LATENT")
    FUNCTION = "emulate"
    CATEGORY = "HiStream/testing"

    def emulate(self, model, vae, start_image, width, height, length, batch_size):
        import comfy.utils

        pixels = comfy.utils.common_upscale(start_image[:1].movedim(-1, 1), width, height, "bilinear", "center")
        encoded = vae.encode(pixels.movedim(1, -1)[:, :, :, :3])
        patched = model.clone()
        ar = patched.model_options.setdefault("transformer_options", {}).setdefault("ar_config", {})
        ar["initial_latent"] = encoded
        empty = torch.zeros([batch_size, 16, (length - 1) // 4 + 1, height // 8, width // 8])
        return (patched, {"samples": empty})


NODE_CLASS_MAPPINGS = {
    "HiStreamTestEmulatedARVideoI2V": HiStreamTestEmulatedARVideoI2V,
    "HiStreamTestConditioning": HiStreamTestConditioning, "HiStreamTestSaveConditioning": HiStreamTestSaveConditioning,
    "HiStreamTestAttnPatch": HiStreamTestAttnPatch, "HiStreamTestPoison": HiStreamTestPoison,
    "HiStreamTestSigmas": HiStreamTestSigmas,
}
