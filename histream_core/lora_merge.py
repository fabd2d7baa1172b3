"""LoRA files → low-rank pairs on canonical Wan2.1 weights, and the merge W' = W + s·(α/r)·B·A (pure PyTorch).

Why the pack merges some LoRAs itself: LongLive ships its model as a base checkpoint plus a LoRA that is part of the
model (`lora.pt` = `{"generator_lora": {...}}`, PEFT names `base_model.model.blocks.N.<module>.lora_A.weight`,
r = α = 256). A host LoRA loader sees the outer dict and a PEFT prefix it does not map, so it applies nothing. The
loader merges such a file at strength 1 before the host builds the MODEL; stock LoRA loaders can patch the result.

Name layouts read (each reduced to the canonical module path, e.g. `blocks.0.self_attn.q`):
- PEFT: `base_model.model.<path>.lora_A[.default].weight` / `lora_B`; no alpha stored (α = r unless given);
- ComfyUI / diffusers trainers: `diffusion_model.<path>.lora_A.weight` / `lora_B`, `lora_down` / `lora_up`, with an
  optional `<path>.alpha` scalar; the `transformer.` and `model.` prefixes of some trainers too.
Training checkpoints: `generator_lora` is used, never `critic_lora` (the critic is a training-only network).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .loading import WRAPPER_SEGMENTS, CheckpointError

GENERATOR_KEY = "generator_lora"
CRITIC_KEYS = ("critic_lora", "critic", "fake_score", "real_score")
PREFIXES = ("base_model.model.", "diffusion_model.", "transformer.", "model.", "generator.")
_PAIR_RE = re.compile(r"^(?P<path>.+)\.(?P<kind>lora_A|lora_B|lora_down|lora_up)(?:\.default)?\.weight$")
_ALPHA_RE = re.compile(r"^(?P<path>.+)\.alpha$")
_DOWN = ("lora_A", "lora_down")


@dataclass(frozen=True)
class LoraPair:
    """One low-rank update of `target` (a canonical weight name): ΔW = scale·B·A with scale = α/r."""

    target: str
    down: torch.Tensor  # A: [r, in]
    up: torch.Tensor  # B: [out, r]
    alpha: float | None  # None: α = r (PEFT files store no alpha)

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def scale(self) -> float:
        return (self.rank if self.alpha is None else self.alpha) / self.rank


def unwrap_lora(obj: dict, name: str = "the LoRA") -> dict[str, torch.Tensor]:
    """The LoRA tensors of a file: a flat dict as is, a training checkpoint's `generator_lora` (never a critic's)."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{name} holds a {type(obj).__name__}, not a dict of LoRA tensors")
    if isinstance(obj.get(GENERATOR_KEY), dict):
        obj = obj[GENERATOR_KEY]
    elif any(isinstance(obj.get(k), dict) for k in CRITIC_KEYS) and not _has_tensors(obj):
        found = next(k for k in CRITIC_KEYS if isinstance(obj.get(k), dict))
        raise CheckpointError(f"{name} holds only {found!r} weights (a training-only critic), no 'generator_lora': "
                              f"pick the generator's LoRA file (LongLive: models/lora.pt)")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _has_tensors(d: dict) -> bool:
    return any(isinstance(v, torch.Tensor) for v in d.values())


def _module_path(path: str) -> str:
    for seg in WRAPPER_SEGMENTS:
        path = path.replace(seg, "")
    changed = True
    while changed:  # prefixes can stack (PEFT over a `model.`-wrapped generator)
        changed = False
        for p in PREFIXES:
            if path.startswith(p):
                path, changed = path[len(p):], True
    return path


def lora_pairs(sd: dict[str, torch.Tensor], name: str = "the LoRA") -> list[LoraPair]:
    """Group a LoRA state dict into (A, B, α) per target weight; one clear error for a file that is not one."""
    halves: dict[str, dict[str, torch.Tensor]] = {}
    alphas: dict[str, float] = {}
    for k, v in sd.items():
        m = _PAIR_RE.match(k)
        if m:
            halves.setdefault(_module_path(m["path"]), {})["down" if m["kind"] in _DOWN else "up"] = v
            continue
        m = _ALPHA_RE.match(k)
        if m and v.numel() == 1:
            alphas[_module_path(m["path"])] = float(v.float().item())
    if not halves:
        first = ", ".join(sorted(sd)[:3]) or "no tensors at all"
        raise CheckpointError(f"{name} has no LoRA tensors (lora_A/lora_B or lora_down/lora_up; first keys: {first}); "
                              f"pick a LoRA file, or load a full model as model_name")
    pairs = []
    for path, h in sorted(halves.items()):
        if set(h) != {"down", "up"}:
            missing = "lora_B (up)" if "up" not in h else "lora_A (down)"
            raise CheckpointError(f"{name}: {path} has no {missing} half; the file looks truncated, re-download it")
        a, b = h["down"], h["up"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise CheckpointError(f"{name}: {path} has lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)}, whose "
                                  f"ranks do not match (expected A [r, in], B [out, r]); the file is damaged")
        pairs.append(LoraPair(f"{path}.weight", a, b, alphas.get(path)))
    return pairs


def merge_lora(sd: dict[str, torch.Tensor], pairs: list[LoraPair], strength: float = 1.0,
               name: str = "the LoRA") -> dict[str, torch.Tensor]:
    """W + strength·(α/r)·B·A for every pair, computed in float32 and stored in W's dtype. Refuses a LoRA with any
    target the model lacks (a partly applied LoRA is a different model), and shapes that do not fit."""
    unknown = [p.target for p in pairs if p.target not in sd]
    if unknown:
        have = next((k for k in sd if k.startswith("blocks.0.")), next(iter(sd), "none"))
        what = "none of its" if len(unknown) == len(pairs) else f"{len(unknown)} of its {len(pairs)}"
        raise CheckpointError(f"{name} does not fit this model: {what} targets exist in it (first: {unknown[0]}; the "
                              f"model has e.g. {have}); pick the LoRA made for this base model (LongLive: lora.pt "
                              f"with longlive_base.pt)")
    out = dict(sd)
    for p in pairs:
        w = sd[p.target]
        if w.dtype.is_floating_point and w.element_size() == 1:
            raise CheckpointError(f"{name} cannot be merged into fp8 weights ({p.target} is {w.dtype}): load the "
                                  f"bf16/fp16 base checkpoint, then pick fp8 as weight_dtype if memory is short")
        if tuple(w.shape) != (p.up.shape[0], p.down.shape[1]):
            raise CheckpointError(f"{name}: {p.target} is {tuple(w.shape)} in the model but the LoRA makes "
                                  f"{(p.up.shape[0], p.down.shape[1])}; it was trained for another model size")
        delta = (p.up.to(torch.float32) @ p.down.to(torch.float32)) * (strength * p.scale)
        out[p.target] = (w.to(torch.float32) + delta).to(w.dtype)
    return out


def load_lora_pairs(path, name: str | None = None) -> list[LoraPair]:
    """Read a LoRA file (.safetensors or a weights-only pickle) → its pairs."""
    from pathlib import Path

    from .checkpoint_files import read_state_dict

    name = name or Path(path).name
    raw, _ = read_state_dict(path)
    pairs = lora_pairs(unwrap_lora(raw, name), name)
    bad = next((p.target for p in pairs if not (torch.isfinite(p.down).all() and torch.isfinite(p.up).all())), None)
    if bad is not None:
        raise CheckpointError(f"{name} holds NaN/inf values in its {bad} pair: the file is damaged or from a diverged "
                              f"run; re-download it")
    return pairs
