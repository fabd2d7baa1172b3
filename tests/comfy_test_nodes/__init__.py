"""Test-only ComfyUI nodes (never shipped): Wan-shaped text conditioning without the 5.7B umT5 encoder."""

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


NODE_CLASS_MAPPINGS = {"HiStreamTestPoison": HiStreamTestPoison, "HiStreamTestSigmas": HiStreamTestSigmas,
                       "HiStreamTestConditioning": HiStreamTestConditioning, "HiStreamTestAttnPatch": HiStreamTestAttnPatch}
