"""LoadHiStreamModel: any Wan2.1 T2V / Self-Forcing checkpoint → a standard ComfyUI MODEL."""

from __future__ import annotations

import logging

import comfy.model_management
import comfy.sd
import folder_paths
import torch

from ..histream_core.attention import BACKENDS
from ..histream_core.finite import first_non_finite_weight
from ..histream_core.loading import CheckpointError, load_wan_state_dict
from ..histream_core.lora_merge import load_lora_pairs, merge_lora
from ..histream_core.vace_loading import load_vace_state_dict
from .host_compat import call_accepting
from .stage_types import CATEGORY

log = logging.getLogger("histream")

WEIGHT_DTYPES = {"default": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp8_e4m3fn": torch.float8_e4m3fn}
ATTENTION_KEY = "histream_attention"
VACE_KEY = "histream_vace"  # transformer_options: the VACE file attached by this loader
NO_VACE = "none"
NO_LORA = "none"


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
        }, "optional": {
            "vace_model": ([NO_VACE] + folder_paths.get_filename_list("diffusion_models"), {
                "default": NO_VACE,
                "tooltip": "VACE control (for WanVaceToVideo): a Wan2.1 VACE module (vace_* tensors only) or a full "
                           "Wan2.1-VACE-1.3B checkpoint, of which only the vace_* tensors are used."}),
            "lora": ([NO_LORA] + folder_paths.get_filename_list("loras"), {
                "default": NO_LORA,
                "tooltip": "A LoRA that is part of the model, merged at strength 1 before the MODEL is built "
                           "(LongLive: lora.pt with longlive_base.pt; PEFT or ComfyUI names). Stock LoRA loaders "
                           "cannot read LongLive's lora.pt: they apply nothing. A LoRA matching no weight is refused."}),
        }}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    TITLE = "Load HiStream Model"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Loads a causal (Self-Forcing) Wan2.1 T2V model as a standard MODEL: stock LoRA loaders and "
                   "model patches apply to it.")

    def load(self, model_name, weight_dtype, attention, vace_model=NO_VACE, lora=NO_LORA):
        path = folder_paths.get_full_path_or_raise("diffusion_models", model_name)
        try:
            sd, cfg, info = load_wan_state_dict(path)
        except CheckpointError as exc:
            raise ValueError(str(exc)) from None
        log.info("HiStream: %s (%s format, dim %d, %d blocks)", model_name, info.get("format"), cfg.dim,
                 cfg.num_layers)
        if lora and lora != NO_LORA:  # before the host builds the MODEL: the merged model is an ordinary one
            try:
                pairs = load_lora_pairs(folder_paths.get_full_path_or_raise("loras", lora))
                sd = merge_lora(sd, pairs, 1.0, name=lora)
            except CheckpointError as exc:
                raise ValueError(str(exc)) from None
            log.info("HiStream: merged %s into %s (%d weights, rank %d)", lora, model_name, len(pairs), pairs[0].rank)
        if vace_model and vace_model != NO_VACE:  # the host then builds its VACE model type over both
            try:
                vace, vinfo = load_vace_state_dict(folder_paths.get_full_path_or_raise("diffusion_models",
                                                                                       vace_model), cfg)
            except CheckpointError as exc:
                raise ValueError(str(exc)) from None
            sd = {**sd, **vace}
            log.info("HiStream: VACE control from %s (%d VACE blocks%s)", vace_model, vinfo["vace_layers"],
                     "; the file's main blocks are not used" if vinfo["full_checkpoint"] else "")
        bad = first_non_finite_weight(sd.items(), device=comfy.model_management.get_torch_device())
        if bad is not None:
            raise ValueError(f"{model_name} holds NaN/inf values in {bad}: the file is damaged or was saved from a "
                             f"diverged run; re-download it (or pick another checkpoint)")
        options = {}
        if WEIGHT_DTYPES[weight_dtype] is not None:
            options["dtype"] = WEIGHT_DTYPES[weight_dtype]
        # newer hosts take the file's metadata (quantisation layout) and can turn dynamic VRAM off: HiStream runs
        # the layers itself and is untested on dynamic-VRAM patchers, so it asks for the classic one where it can
        patcher = call_accepting(comfy.sd.load_diffusion_model_state_dict, sd, model_options=options,
                                 optional={"metadata": info.get("metadata") or None, "disable_dynamic": True})
        if patcher is None:
            raise ValueError(f"ComfyUI could not recognise {model_name} as a Wan2.1 model after conversion")
        options = patcher.model_options.setdefault("transformer_options", {})
        options[ATTENTION_KEY] = attention
        if vace_model and vace_model != NO_VACE:
            options[VACE_KEY] = vace_model
        return (patcher,)
