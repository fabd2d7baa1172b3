"""HiStream Sampler: the HiStream chunk loop as a stock SAMPLER, for SamplerCustomAdvanced (the graph shape of core's
AR video template: a guider, RandomNoise, a scheduler, SamplerCustomAdvanced).

SamplerCustomAdvanced calls `sampler.sample(guider, sigmas, extra_args, callback, noise, latent_image, denoise_mask,
disable_pbar)` after loading the guider's model for one plain forward. This sampler reads from the host only
`extra_args["seed"]`, the guider's `model_patcher`, `conds` and `cfg`, and the callback; it resolves the same RunPlan
as Cached Upsample Refine and runs the same loop (`denoise_nodes.run_plan`), so the same plan and seed give the same
latent as the five stage nodes. The incoming noise tensor is not used: HiStream draws each chunk's noise from the seed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import sys
from pathlib import Path

import comfy.samplers
import torch

from ..histream_core.config import SAMPLERS
from .denoise_nodes import LOW_RES_SCALE_INPUT, REFINE_INPUTS, refine_options, resolve_plan, run_plan, video_config
from .plan_nodes import FAMILY_STEPS, NODE_PRESETS, SparseStepSampler
from .stage_types import CACHE_TYPE, CATEGORY, STEPS_TYPE, CachePlan, LowResStage, StepSpec

log = logging.getLogger("histream")
SIGMAS_PLAN = "SIGMAS"  # the step_plan choice that runs SamplerCustomAdvanced's SIGMAS on every chunk
HOST_COND_KEYS = ("cross_attn", "model_conds", "uuid")  # what the guider adds to each CONDITIONING entry
PICKLE_MODULE = "histream_pickle"


@dataclasses.dataclass(frozen=True)
class SamplerPlan:
    """What the HiStream Sampler node decided; plain data, so that a pickled sampler restores anywhere."""

    cache: CachePlan
    steps: StepSpec | None  # None: SamplerCustomAdvanced's SIGMAS on every chunk
    sigmas_low_steps: int  # with SIGMAS: how many of each chunk's steps run at low resolution
    shift: float
    sampler: str
    low_res_scale: float
    refine: dict  # upsample_method, downsample_method, rope_ntk_scale, cache_update

    def state(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> SamplerPlan:
        steps = state["steps"]
        if steps is not None:
            sigmas = steps["sigmas"]
            steps = StepSpec(**{**steps, "sigmas": None if sigmas is None else tuple(sigmas)})
        return cls(**{**state, "cache": CachePlan(**state["cache"]), "steps": steps, "refine": dict(state["refine"])})

    def step_spec(self, sigmas: torch.Tensor) -> StepSpec:
        if self.steps is not None:
            log.info("HiStream Sampler: the per-chunk step plan %r is used; the SIGMAS given to "
                     "SamplerCustomAdvanced are ignored", self.steps.preset)
            return self.steps
        n, low = len(sigmas) - 1, self.sigmas_low_steps
        return StepSpec(SIGMAS_PLAN, self.shift, n, low, n, low, sigmas=tuple(float(s) for s in sigmas.flatten()
                                                                             .tolist()), sampler=self.sampler)


def guider_conditioning(entries: list | None) -> list | None:
    """The guider's CONDITIONING entries (dicts with `cross_attn`) back in the [tensor, options] form the stage nodes
    receive; the options the host added are dropped."""
    if not entries:
        return None
    if any(e.get("cross_attn") is None for e in entries):
        raise ValueError("HiStream Sampler: a guider conditioning entry has no text (cross_attn): connect Wan text "
                         "(CLIPLoader type wan → CLIPTextEncode) to the guider")
    return [[e["cross_attn"], {k: v for k, v in e.items() if k not in HOST_COND_KEYS}] for e in entries]


class HiStreamLoopSampler(comfy.samplers.Sampler):
    """The SAMPLER: SamplerCustomAdvanced calls `sample`; it pickles to plain data (see histream_pickle.py)."""

    def __init__(self, plan: SamplerPlan):
        self.plan = plan

    @classmethod
    def from_state(cls, state: dict) -> HiStreamLoopSampler:
        return cls(SamplerPlan.from_state(state))

    def __reduce__(self):
        return (RESTORER.restore_sampler, (self.plan.state(),))

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        if denoise_mask is not None:
            raise ValueError("HiStream Sampler makes whole videos: a noise mask (inpainting, SetLatentNoiseMask) is "
                             "not supported; remove it from the latent")
        seed = extra_args.get("seed")
        if seed is None:
            raise ValueError("HiStream Sampler needs a seed: connect RandomNoise to SamplerCustomAdvanced's noise")
        if latent_image is not None and torch.count_nonzero(latent_image) > 0:
            log.warning("HiStream Sampler: the latent's content is not used (only its shape): HiStream makes the "
                        "video from noise")
        conds = model_wrap.conds
        positive, negative = guider_conditioning(conds.get("positive")), guider_conditioning(conds.get("negative"))
        if positive is None:
            raise ValueError("HiStream Sampler: the guider has no positive conditioning: connect CLIPTextEncode")
        cfg = float(getattr(model_wrap, "cfg", 1.0))  # BasicGuider has none: no guidance
        if cfg != 1.0 and negative is None:
            raise ValueError(f"HiStream Sampler: cfg {cfg:g} needs a negative prompt: use CFGGuider with a negative "
                             f"(an empty prompt works), or cfg 1")
        p = self.plan
        stage = LowResStage(model_wrap.model_patcher, positive, p.cache, p.step_spec(sigmas),
                            {"samples": latent_image}, int(seed), p.low_res_scale, negative, cfg)
        run = resolve_plan(stage, dict(p.refine))
        x = run_plan(run, preview=callback)
        if callback is not None:  # the last x0 the host keeps is the whole video: denoised_output == output
            total = run.config.steps.total_steps(run.config.num_chunks)
            callback(total - 1, x, x, total)
        return x.float().cpu()  # the guider maps it with process_latent_out, as Cached Upsample Refine does


def _restorer():
    """The pack-root module `histream_pickle` under its plain name (a pickle refers to it by that name)."""
    module = sys.modules.get(PICKLE_MODULE)
    if module is None:
        spec = importlib.util.spec_from_file_location(PICKLE_MODULE,
                                                      Path(__file__).resolve().parent.parent / "histream_pickle.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[PICKLE_MODULE] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:  # no half-loaded module left under the plain name
            sys.modules.pop(PICKLE_MODULE, None)
            raise
    module.register(HiStreamLoopSampler)
    return module


RESTORER = _restorer()
STEP_PLANS = list(NODE_PRESETS) + list(FAMILY_STEPS) + [SIGMAS_PLAN]


class HiStreamSampler:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "cache": (CACHE_TYPE, {"tooltip": "The chunk plan: Anchor Cache Chunker's cache (its latent goes to "
                                              "SamplerCustomAdvanced's latent_image)."}),
            "step_plan": (STEP_PLANS, {"default": "HiStream", "tooltip": (
                "Which steps each chunk runs. The per-chunk plan wins over SIGMAS: a connected steps input (Sparse "
                "Step Sampler) first, else this preset (as Sparse Step Sampler's presets) — the SIGMAS given to "
                "SamplerCustomAdvanced are then ignored. SIGMAS: those SIGMAS on every chunk (as Sparse Step "
                "Sampler's sigmas input), sigmas_low_steps of them at low resolution.")}),
            "shift": ("FLOAT", {"default": 5.0, "min": 0.01, "max": 100.0, "step": 0.01,
                                "tooltip": "Timestep shift of the preset's steps (Self-Forcing: 5). A "
                                           "ModelSamplingSD3 patch on the MODEL overrides it."}),
            "sigmas_low_steps": ("INT", {"default": 2, "min": 0, "max": 100, "tooltip": (
                "step_plan SIGMAS only: how many of each chunk's steps run at low resolution.")}),
            "sampler": (list(SAMPLERS), {"default": "renoise", "tooltip": (
                "renoise: fresh noise between steps (Self-Forcing's sampler, for distilled few-step weights). "
                "euler: deterministic flow-ODE steps (models trained by flow matching only). A connected steps "
                "input brings its own.")}),
            **LOW_RES_SCALE_INPUT,
            **REFINE_INPUTS,
        }, "optional": {
            "steps": (STEPS_TYPE, {"tooltip": "Sparse Step Sampler's per-chunk plan: wins over step_plan and over "
                                              "the SIGMAS."}),
        }}

    RETURN_TYPES = ("SAMPLER",)
    FUNCTION = "build"
    TITLE = "HiStream Sampler"
    CATEGORY = CATEGORY
    DESCRIPTION = ("The whole HiStream loop (dual-resolution caching, anchor + window cache, per-chunk steps, "
                   "previews, Stop) as a SAMPLER for stock SamplerCustomAdvanced: the same video as the five stage "
                   "nodes for the same plan and the RandomNoise seed (its noise tensor is not used). Guider: "
                   "CFGGuider (cfg 1 for distilled weights) or BasicGuider.")

    def build(self, cache, step_plan, shift, sigmas_low_steps, sampler, low_res_scale, upsample_method,
              downsample_method, rope_ntk_scale, cache_update, steps=None):
        if step_plan not in STEP_PLANS:
            raise ValueError(f"HiStream Sampler: step_plan {step_plan!r} is unknown; choose one of {STEP_PLANS}")
        if steps is None and step_plan != SIGMAS_PLAN:
            (steps,) = SparseStepSampler().build(step_plan, shift, 4, 2, 2, 1, sampler=sampler)  # counts: presets'
        elif steps is None and sampler not in SAMPLERS:
            raise ValueError(f"HiStream Sampler: sampler {sampler!r} is unknown; choose one of {list(SAMPLERS)}")
        refine = refine_options(upsample_method, downsample_method, rope_ntk_scale, cache_update)
        plan = SamplerPlan(cache, steps, int(sigmas_low_steps), float(shift), sampler, float(low_res_scale), refine)
        # sizes and options now, with the nearest valid values in the message (the SIGMAS arrive when it runs)
        placeholder = steps or StepSpec(SIGMAS_PLAN, float(shift), 4, 0, 4, 0, sampler=sampler)
        video_config(LowResStage(None, [], cache, placeholder, {}, 0, float(low_res_scale)), **refine)
        return (HiStreamLoopSampler(plan),)
