"""LoadHiStreamModel: any Wan2.1 T2V / Self-Forcing checkpoint → a standard ComfyUI MODEL."""

from __future__ import annotations

import logging

import comfy.sd
import folder_paths
import torch

from ..histream_core.attention import BACKENDS
from ..histream_core.loading import CheckpointError, load_wan_state_dict
from .stage_types import CATEGORY

log = logging.getLogger("histream")

WEIGHT_DTYPES = {"default": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp8_e4m3fn": torch.float8_e4m3fn}
ATTENTION_KEY = "histream_attention"


class LoadHiStreamModel:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (folder_paths.get_filename_list("diffusion_models"), {
                "tooltip": "A causal Wan2.1-T2V-1.3B checkpoint in models/diffusion_models: Self-Forcing "
                           "self_forcing_dmd.pt, a Wan2.1/ComfyUI .safetensors, or a ComfyUI causal-AR file."}),
            "weight_dtype": (list(WEIGHT_DTYPES), {
                "tooltip": "Storage dtype of the weights. fp8_e4m3fn halves weight memory (computed in bf16/fp16)."}),
            "attention": (list(BACKENDS), {
                "tooltip": "auto: sageattention when installed on a CUDA GPU, else torch SDPA."}),
        }}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Loads a causal (Self-Forcing) Wan2.1 T2V model as a standard MODEL: stock LoRA loaders and "
                   "model patches apply to it.")

    def load(self, model_name, weight_dtype, attention):
        path = folder_paths.get_full_path_or_raise("diffusion_models", model_name)
        try:
            sd, cfg, info = load_wan_state_dict(path)
        except CheckpointError as exc:
            raise ValueError(str(exc)) from None
        log.info("HiStream: %s (%s format, dim %d, %d blocks)", model_name, info.get("format"), cfg.dim,
                 cfg.num_layers)
        options = {}
        if WEIGHT_DTYPES[weight_dtype] is not None:
            options["dtype"] = WEIGHT_DTYPES[weight_dtype]
        patcher = comfy.sd.load_diffusion_model_state_dict(sd, model_options=options)
        if patcher is None:
            raise ValueError(f"ComfyUI could not recognise {model_name} as a Wan2.1 model after conversion")
        patcher.model_options.setdefault("transformer_options", {})[ATTENTION_KEY] = attention
        return (patcher,)
