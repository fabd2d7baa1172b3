"""Which of a MODEL's patches the HiStream loop does not apply, named once at the start of a run.

HiStream runs the Wan layers of the patcher's own modules itself (its chunk loop and KV caches replace the host's
`forward_orig`), so what the host applies inside its own forward or sampler never reaches it: block and attention
patches, RoPE options, attention overrides, wrappers, callbacks, sampler CFG functions, and hook LoRAs (registered
by the host's sampler from the conditioning). What does apply: weight patches (LoRA loaders, merges), weight dtype /
fp8 casting, object patches that swap modules, and ModelSamplingSD3's shift (read by the schedule).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

log = logging.getLogger("histream")

# transformer_options entries the HiStream loop does not apply (the host's forward reads them)
_TRANSFORMER_OPTIONS = {
    "patches": "patches",  # attn1_patch, attn2_patch, double_block, ... (Uni3C-style controls)
    "patches_replace": "block replacements",
    "rope_options": "RoPE options",
    "optimized_attention_override": "attention override",
    "wrappers": "wrappers",
    "callbacks": "callbacks",
}
# model_options entries read only by the host's sampler
_SAMPLER_OPTIONS = ("model_function_wrapper", "sampler_cfg_function", "sampler_pre_cfg_function",
                    "sampler_post_cfg_function", "sampler_calc_cond_batch_function", "denoise_mask_function")


def _nonempty(value) -> bool:
    """A patch entry counts when it holds something: empty dicts/lists (the host's defaults) do not."""
    if isinstance(value, Mapping):
        return any(_nonempty(v) for v in value.values())
    if isinstance(value, (list, tuple, set)):
        return len(value) > 0
    return value is not None


def _named_entries(kind: str, entries) -> list[str]:
    if isinstance(entries, Mapping):
        names = [str(k) for k, v in entries.items() if _nonempty(v)]
        return [f"{kind} ({', '.join(names)})"] if names else []
    return [kind] if _nonempty(entries) else []


def unapplied_patches(patcher, conditionings: Iterable[list | None] = ()) -> list[str]:
    """Every patch on `patcher` (and hook set on `conditionings`) that the HiStream loop will not apply."""
    options = getattr(patcher, "model_options", {}) or {}
    found: list[str] = []
    transformer = options.get("transformer_options", {}) or {}
    for key, kind in _TRANSFORMER_OPTIONS.items():
        found += _named_entries(kind, transformer.get(key))
    found += [name for name in _SAMPLER_OPTIONS if _nonempty(options.get(name))]
    # wrappers and callbacks live on the patcher itself; the host's sampler copies them into transformer_options
    for attr in ("wrappers", "callbacks"):
        found += _named_entries(f"model {attr}", getattr(patcher, attr, None))
    if _nonempty(getattr(patcher, "hook_patches", None)):
        found.append("hook patches (registered hook LoRAs)")
    if _nonempty(getattr(patcher, "injections", None)):
        found.append("model injections")
    if any(opts.get("hooks") is not None for cond in conditionings if cond for _, opts in cond):
        found.append("conditioning hooks (e.g. a hook LoRA from Create Hook LoRA / Set CLIP Hooks)")
    return list(dict.fromkeys(found))


def warn_unapplied(patcher, conditionings: Iterable[list | None] = ()) -> list[str]:
    """Log one warning naming every patch the run will not apply; returns the names (empty when none)."""
    found = unapplied_patches(patcher, conditionings)
    if found:
        log.warning("HiStream runs the Wan layers itself and does not apply these model patches: %s. Weight "
                    "patches (LoRA loaders, merges), weight dtype and ModelSamplingSD3 apply; for a hook LoRA "
                    "use LoraLoaderModelOnly instead", "; ".join(found))
    return found
