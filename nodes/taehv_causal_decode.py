"""A tiny video decoder (TAEHV, ComfyUI ≥ v0.8.0: comfy.taesd.taehv) run by this pack as a causal stream over the
host's own blocks.

ARCHITECTURE (the 16-channel Wan 2.1 TAE, `lighttaew2_1`; 8× space, 4× time): a sequence of 2-D blocks applied to
one latent frame [B, C, h, w] at a time: a clamp, 3×3 convolutions and ReLUs, three stages of three MemBlocks, each
stage ending in a ×2 spatial upsample and a TGrow. Two things are temporal:
- a MemBlock reads its own input of the previous time step beside the current one (zeros at the video's first
  step), so the stream keeps, per MemBlock, its last input (`history`) — across chunks, which the host keeps only
  inside one `decode` call;
- a TGrow (1×1 convolution to `stride`·C channels) turns one time step into `stride` steps: channel block k is step
  k. Later blocks see those steps in time order. Strides 1, 2, 2: each latent frame becomes 4 pixel frames.
The host's whole-video decode drops its first `frames_to_trim` (3) output frames, so latent frame 0 gives 1 pixel
frame and each later one 4 (1 + 4·(T-1), as the Wan VAE). The stream drops them once, from the first frames it makes.

Each block is called on the same one-step tensors (same shapes, same memory layout of the batch) as the host's own
sequential decode, so the streamed frames equal the host's whole-video decode bit for bit on the same device. The
host's `TAEHV.decode` and its block loop are never called; only its blocks (their `forward`, the host's ops).
"""
from __future__ import annotations

import comfy.taesd.taehv as host_tae
import torch
from torch import nn

from .wan_causal_decode import ONE_FRAME


class TaeCausalDecoder:
    """One video's decode state over a host `TAEHV`: per MemBlock its last input, and how many of the first output
    frames are still to drop. Same interface as `wan_causal_decode.CausalDecoder` (feed latent frames in order)."""

    schedule = ONE_FRAME  # every latent frame is complete on its own: decode each as soon as it arrives

    def __init__(self, model: nn.Module):
        self.model, self.blocks = model, list(model.decoder)
        self.to_trim = int(model.frames_to_trim)
        self.history: dict[int, torch.Tensor] = {}  # MemBlock index → its input at the previous time step
        if getattr(model, "patch_size", 1) != 1 or any(isinstance(b, host_tae.TPool) for b in self.blocks):
            raise RuntimeError("unexpected TAE decoder layout (patched pixels or a time pool): the streaming decode "
                               "knows the Wan 2.1 TAE only; leave the vae input empty and decode with VAEDecode")

    def latent_conv(self, z: torch.Tensor) -> torch.Tensor:
        """The TAE's own latent scaling (`process_in`; the Wan 2.1 TAE takes the Wan VAE's latent as it is)."""
        return self.model.process_in(z)

    def decode(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Latent frames `z` [B, C, t, h, w] → their pixel frames [B, 3, f, H, W] (after the first-frame trim)."""
        steps = z.movedim(2, 1).contiguous()  # [B, t, C, h, w]: each step [B, C, h, w] with the batch rows apart
        out: list[torch.Tensor] = []
        for i in range(steps.shape[1]):
            self._run(0, steps[:, i], out)
        drop = min(self.to_trim, len(out))
        self.to_trim -= drop
        out = out[drop:]
        return [torch.stack(out, dim=2)] if out else []

    def _run(self, i: int, x: torch.Tensor, out: list) -> None:
        """One time step `x` [B, C, h, w] from block `i` on, depth first (a TGrow's steps in time order)."""
        while i < len(self.blocks):
            block = self.blocks[i]
            if isinstance(block, host_tae.MemBlock):
                past = self.history.get(i)
                self.history[i] = x  # never written in place by the blocks (their activations act on new tensors)
                x = block(x, torch.zeros_like(x) if past is None else past)
            elif isinstance(block, host_tae.TGrow):
                grown = block(x).unflatten(0, (x.shape[0], block.stride))  # [B, stride, C, h, w]: step k = block k
                for k in range(block.stride):
                    self._run(i + 1, grown[:, k], out)
                return
            else:
                x = block(x)  # clamp, convolution, activation, spatial upsample: one time step each
            i += 1
        out.append(x)
