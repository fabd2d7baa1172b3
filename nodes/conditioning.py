"""ComfyUI CONDITIONING → the core's typed inputs, in one place: the text context (one prompt, several entries, a
HiStream Prompt Schedule), the negative, and VACE control (stock WanVaceToVideo).

- Several entries (e.g. ConditioningCombine) are joined along the token axis, as stock ConditioningConcat does;
  area/mask/strength options do not apply to HiStream (a warning says so).
- HiStream Prompt Schedule only tags entries with their start (as stock ConditioningSetTimestepRange tags a range);
  here tagged entries become a core `PromptSchedule` once the chunk plan is known.
- WanVaceToVideo appends to every entry `vace_frames` (a list, one per chained node, of raw-VAE latents
  [1, 32, T, H, W]: inactive + reactive), `vace_mask` (packed masks [1, 64, T, H, W]) and `vace_strength`
  (floats). As the host's WAN21_Vace.extra_conds does, each 16-channel latent group goes through the model's
  `process_latent_in`, a missing mask list means all-ones masks and a missing strength list means 1.0 each.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..histream_core import HiStreamConfig, PromptSchedule
from ..histream_core.finite import check_input
from ..histream_core.prompt_schedule import PromptScheduleError, build_prompt_schedule
from ..histream_core.vace import MASK_CHANNELS, VaceControl

log = logging.getLogger("histream")

START_KEY = "histream_start"  # the tags HiStream Prompt Schedule puts on each entry
UNIT_KEY = "histream_unit"
IGNORED_OPTIONS = ("area", "mask", "strength", "set_area_to_bounds")


@dataclass(frozen=True)
class TextInputs:
    """What the core pipeline takes as text: the positive context (or a prompt schedule) and the negative."""

    context: torch.Tensor | PromptSchedule
    negative: torch.Tensor | None  # only with guidance (cfg != 1)

    def to(self, device) -> TextInputs:
        return TextInputs(self.context.to(device), None if self.negative is None else self.negative.to(device))


def text_inputs(positive: list, negative: list | None, cfg: HiStreamConfig, text_dim: int) -> TextInputs:
    """The positive CONDITIONING as one context [B, L, text_dim] or a PromptSchedule in chunks of `cfg`, and the
    negative as one context when `cfg` is guided (else None)."""
    if not positive:
        raise ValueError("the positive CONDITIONING is empty: connect CLIPTextEncode (Wan umT5 text encoder)")
    _check_text(positive, "positive")
    if any(START_KEY in opts for _, opts in positive):  # from HiStream Prompt Schedule
        context = _prompt_schedule(positive, cfg, text_dim)
    else:
        context = joined_context(positive, cfg.batch_size, text_dim)
    neg = None
    if cfg.guided:
        if not negative:  # None is refused by LowResDenoise already
            raise ValueError("the negative CONDITIONING is empty: connect CLIPTextEncode (an empty prompt works)")
        if any(START_KEY in opts for _, opts in negative):
            raise ValueError("the negative prompt cannot be a HiStream Prompt Schedule: connect a plain text "
                             "encode (one negative is used for every chunk)")
        _check_text(negative, "negative")
        neg = joined_context(negative, cfg.batch_size, text_dim)
    return TextInputs(context, neg)


def _check_text(entries: list, role: str) -> None:
    """No empty or non-finite text reaches the model (NaN compares false, so it would pass every other check and
    come back as a black video)."""
    for i, (cond, _opts) in enumerate(entries):
        where = f"the {role} CONDITIONING" + (f" (entry {i + 1} of {len(entries)})" if len(entries) > 1 else "")
        if cond.ndim == 3 and cond.shape[1] == 0:
            raise ValueError(f"{where} has 0 text tokens: encode a prompt with CLIPTextEncode (an empty prompt "
                             f"still gives tokens)")
        check_input(cond, where, "re-encode the prompt; NaN/inf text usually comes from an fp16 text encoder "
                                 "overflow: load the umt5_xxl encoder in bf16/fp32 (CLIPLoader) or its fp8 file")


def joined_context(entries: list, batch: int, text_dim: int) -> torch.Tensor:
    """Untagged CONDITIONING entries → [batch, tokens, text_dim], joined along the tokens."""
    parts = []
    for cond, opts in entries:
        if cond.ndim != 3 or cond.shape[-1] != text_dim:
            raise ValueError(f"CONDITIONING of shape {tuple(cond.shape)} is not Wan text: load the umt5_xxl "
                             f"text encoder with CLIPLoader type 'wan' (expected [batch, tokens, {text_dim}])")
        ignored = sorted(k for k in IGNORED_OPTIONS if k in opts)
        if ignored:
            log.warning("HiStream ignores conditioning options %s", ignored)
        parts.append(cond)
    b = max(p.shape[0] for p in parts)
    if any(p.shape[0] not in (1, b) for p in parts):
        raise ValueError("conditioning entries have different batch sizes")
    ctx = torch.cat([p.expand(b, -1, -1) for p in parts], dim=1)
    if b not in (1, batch):
        raise ValueError(f"conditioning batch {b} does not match the video batch size {batch}")
    if len(parts) > 1:
        log.info("HiStream: %d conditioning entries joined into %d text tokens", len(parts), ctx.shape[1])
    return ctx.expand(batch, -1, -1)


def _prompt_schedule(positive: list, cfg: HiStreamConfig, text_dim: int) -> PromptSchedule:
    """Tagged entries → a PromptSchedule in chunks; entries with the same start are joined along the tokens, as
    stock ConditioningCombine entries are."""
    if any(START_KEY not in opts for _, opts in positive):
        raise ValueError("the positive CONDITIONING mixes HiStream Prompt Schedule entries with other entries: "
                         "connect every prompt through the schedule node")
    if len({opts[UNIT_KEY] for _, opts in positive}) > 1:  # mixing would hide ordering mistakes
        raise ValueError("the prompt schedule mixes 'chunk' and 'second' starts: use one unit")
    groups: dict[tuple[float, str], list] = {}
    for cond, opts in positive:
        rest = {k: v for k, v in opts.items() if k not in (START_KEY, UNIT_KEY)}
        groups.setdefault((float(opts[START_KEY]), opts[UNIT_KEY]), []).append([cond, rest])
    items = [(s, u, joined_context(entries, cfg.batch_size, text_dim)) for (s, u), entries in sorted(groups.items())]
    try:
        return build_prompt_schedule(items, cfg.chunk_frames, cfg.num_chunks, prefix_frames=cfg.prefix_frames)
    except PromptScheduleError as exc:
        raise ValueError(f"HiStream Prompt Schedule: {exc}") from None


def vace_control(patcher, positive: list, cfg: HiStreamConfig) -> VaceControl | None:
    """The VACE control carried by the positive CONDITIONING, or None (then the VACE blocks are skipped).

    The pipeline checks the same again; these checks run here because here they fail before the model is loaded."""
    found = [opts for _, opts in positive if opts.get("vace_frames")]
    if not found:
        return None
    opts = found[0]
    if any(len(o["vace_frames"]) != len(opts["vace_frames"]) or
           any(a is not b for a, b in zip(o["vace_frames"], opts["vace_frames"])) for o in found[1:]):
        log.warning("HiStream: conditioning entries carry different VACE controls; using the first entry's")
    if getattr(patcher.model.diffusion_model, "vace_blocks", None) is None:
        raise ValueError("the conditioning carries VACE control (WanVaceToVideo) but the MODEL has no VACE blocks: "
                         "choose a VACE module in Load HiStream Model's vace_model input")
    frames = [check_input(f.float(), f"VACE control video {i + 1} (WanVaceToVideo)", "check the control video and "
                          "its preprocessor; re-encode it with the Wan VAE") for i, f in enumerate(opts["vace_frames"])]
    masks = [torch.ones(f.shape[0], MASK_CHANNELS, *f.shape[2:]) if m is None else m.float()
             for f, m in zip(frames, opts.get("vace_mask") or [None] * len(frames))]
    strengths = [float(s) for s in opts.get("vace_strength") or [1.0] * len(frames)]
    VaceControl(frames, masks, strengths).validate(cfg.batch_size, cfg.latent_frames, cfg.latent_size)
    # raw VAE latents → the model's normalised space, per 16-channel group (as the host's extra_conds does)
    latent_in = patcher.model.process_latent_in
    frames = [torch.cat([latent_in(f[:, i:i + 16]) for i in range(0, f.shape[1], 16)], dim=1) for f in frames]
    control = VaceControl(frames, masks, strengths)
    log.info("HiStream: VACE control, %d control video(s), strength %s", len(frames),
             ", ".join(f"{s:g}" for s in strengths))
    return control
