"""The Wan2.1 VAE decoder run by this pack as a causal stream over the host's own layers (comfy.ldm.wan.vae).

ARCHITECTURE (Wan2.1 decoder, 8× space, 4× time): conv1 → middle (residual, attention, residual) → four stages of
residual blocks joined by three Resamples (two 'upsample3d': ×2 in time and space, one 'upsample2d': ×2 in space)
→ head (RMS norm, SiLU, conv to RGB). Every 3-D convolution is causal in time: output frame t reads input frames
t-k+1 … t of its k time taps, with zeros before the video. So a stream that keeps, per convolution, the last k-1
frames of everything that convolution has read so far (`history`) computes what a pass over the whole video
computes, chunk after chunk. This module keeps that history itself; it never calls the host's `Decoder3d.forward`,
`WanVAE.decode`, `CausalConv3d.forward` or its feature-cache helpers, only the layers: each causal convolution
through its base `Conv3d.forward` (the host's op, so its weight cast/offload still applies) on input padded here.

Temporal upsampling: latent frame 0 becomes 1 pixel frame, every later one 4 (1 + 4·(T-1)). At an 'upsample3d',
frame 0 passes unchanged; every later frame goes through the time conv (3 taps, 2c output channels: the two new
frames, interleaved), whose past starts at frame 1 (frame 0 is not part of it).

Grouping (`Schedule`): which latent frames pass the layers together. The math is the same for every grouping, the
rounding is not (a convolution over 2 frames need not round like two over 1), so the stream takes the host's stock
grouping: one latent frame per pass (ComfyUI with `count_conv3d`, up to ≈ v0.17), or frame 0 alone and then pairs,
with the frames after each temporal upsample going on in pieces of 2 (`count_cache_layers`, newer). Hosts whose
Conv3d op takes `autopad="causal_zero"` (newer) convolve a lone frame with no past by dropping the time taps that
would only meet zeros; the stream asks the op for the same (same math, same rounding as that host's stock decode).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import comfy.ldm.wan.vae as wan_vae
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Schedule:
    group: int  # latent frames per pass after frame 0 (frame 0 always passes alone)
    piece: int | None  # after a temporal upsample, frames go on in pieces of at most this many (None: together)


ONE_FRAME = Schedule(group=1, piece=None)
PAIRS = Schedule(group=2, piece=2)


def host_schedule(vae_module=wan_vae) -> Schedule:
    """The grouping of this host's stock `VAEDecode` (see the module notes)."""
    if hasattr(vae_module, "count_cache_layers"):
        return PAIRS
    if hasattr(vae_module, "count_conv3d"):
        return ONE_FRAME
    raise RuntimeError("this ComfyUI's Wan VAE module has neither count_conv3d nor count_cache_layers: its stock "
                       "decode grouping is unknown; leave the vae input empty and decode the LATENT with VAEDecode")


def passes(schedule: Schedule, decoded: int, available: int, final: bool) -> list[tuple[int, int]]:
    """Latent frame ranges [start, stop) to decode now: frame 0 alone, then `schedule.group` at a time; a short
    last group waits for the next chunk unless the video is `final` (complete)."""
    out = []
    while decoded < available:
        stop = decoded + (1 if decoded == 0 else schedule.group)
        if stop > available:
            if not final:
                break
            stop = available
        out.append((decoded, stop))
        decoded = stop
    return out


def base_conv3d(conv: nn.Module) -> type:
    """The class after the host's CausalConv3d in `conv`'s MRO: the host's Conv3d op."""
    mro = type(conv).__mro__
    return mro[mro.index(wan_vae.CausalConv3d) + 1]


def op_drops_zero_taps(conv: nn.Module) -> bool:
    """Whether the host's Conv3d op takes `autopad="causal_zero"` (see the module notes)."""
    conv_forward = getattr(base_conv3d(conv), "_conv_forward", None)
    return conv_forward is not None and "autopad" in inspect.signature(conv_forward).parameters


class CausalDecoder:
    """One video's decode state over a host `WanVAE`: per causal convolution the tail of its input so far, per
    temporal upsample whether frame 0 has passed. Feed latent frame ranges in order (`passes`)."""

    def __init__(self, model: nn.Module, schedule: Schedule):
        dec = model.decoder
        self.schedule, self.latent_conv_module = schedule, model.conv2
        self.layers = [dec.conv1, *dec.middle, *dec.upsamples, *dec.head]
        self.drop_zero_taps = op_drops_zero_taps(dec.conv1)
        self.history: dict[nn.Module, torch.Tensor] = {}
        self.started: set[nn.Module] = set()  # temporal upsamples that frame 0 has passed
        for m in (*dec.modules(), model.conv2):  # the padding below assumes stride 1 and no time padding by the op
            if isinstance(m, wan_vae.CausalConv3d) and (tuple(m.stride) != (1, 1, 1) or m.padding[0] != 0):
                raise RuntimeError(f"unexpected Wan decoder convolution {m}: this host's VAE layout is unknown to "
                                   f"the streaming decode; leave the vae input empty and decode with VAEDecode")

    # ---- layers --------------------------------------------------------------------------------------------------
    def conv(self, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Causal convolution of the next frames `x` [B, C, t, H, W] after this layer's history."""
        kt, kh, kw = m.kernel_size
        past = self.history.get(m)
        seq = x if past is None else torch.cat([past, x], dim=2)
        if kt > 1:
            self.history[m] = seq[:, :, -(kt - 1):].clone()
        front = kt - 1 - (0 if past is None else past.shape[2])  # zero frames before the video's first
        ph, pw = (kh - 1) // 2 - m.padding[1], (kw - 1) // 2 - m.padding[2]  # "same" padding the op leaves to us
        forward = base_conv3d(m).forward
        if past is None and x.shape[2] == 1 and self.drop_zero_taps:
            return forward(m, F.pad(x, (pw, pw, ph, ph)) if ph or pw else x, autopad="causal_zero")
        if front or ph or pw:
            seq = F.pad(seq, (pw, pw, ph, ph, front, 0))
        return forward(m, seq)

    def residual(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in block.residual:
            h = self.conv(layer, h) if isinstance(layer, wan_vae.CausalConv3d) else layer(h)
        skip = block.shortcut
        return h + (self.conv(skip, x) if isinstance(skip, wan_vae.CausalConv3d) else skip(x))

    def resample(self, r: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if r.mode == "upsample3d":
            if r in self.started:
                y = self.conv(r.time_conv, x)  # [B, 2C, t, h, w]: channel half k is new frame 2·i + k
                b, c2, t = y.shape[:3]
                x = y.reshape(b, 2, c2 // 2, t, *y.shape[3:]).permute(0, 2, 3, 1, 4, 5).reshape(
                    b, c2 // 2, 2 * t, *y.shape[3:])
            elif x.shape[2] == 1:
                self.started.add(r)  # frame 0 stays one frame and is not in the time conv's past
            else:
                raise RuntimeError("latent frame 0 must be decoded alone (Schedule)")
        elif r.mode != "upsample2d":
            raise RuntimeError(f"unexpected Wan decoder resample mode {r.mode!r}")
        b, c, t = x.shape[:3]
        y = r.resample(x.transpose(1, 2).reshape(b * t, c, *x.shape[3:]))  # frame by frame, in space
        return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)

    def layer(self, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if isinstance(m, wan_vae.CausalConv3d):
            return self.conv(m, x)
        if isinstance(m, wan_vae.ResidualBlock):
            return self.residual(m, x)
        if isinstance(m, wan_vae.Resample):
            return self.resample(m, x)
        return m(x)  # attention (per frame), RMS norm, SiLU, dropout

    # ---- passes --------------------------------------------------------------------------------------------------
    def latent_conv(self, z: torch.Tensor) -> torch.Tensor:
        """The VAE's 1×1×1 `conv2` on the latent (pointwise: give it the whole video's shape, see stream_decode)."""
        return self.conv(self.latent_conv_module, z)

    def decode(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Latent frames `z` (after `latent_conv`) → their pixel frames [B, 3, f, H, W] in time order, in pieces."""
        out: list[torch.Tensor] = []
        self._run(0, z, out)
        return out

    def _run(self, i: int, x: torch.Tensor, out: list) -> None:
        piece = self.schedule.piece
        while i < len(self.layers):
            m = self.layers[i]
            x = self.layer(m, x)
            i += 1
            if piece and isinstance(m, wan_vae.Resample) and m.mode == "upsample3d" and x.shape[2] > piece:
                for s in range(0, x.shape[2], piece):  # depth first: one piece through all later layers
                    self._run(i, x[:, :, s:s + piece], out)
                return
        out.append(x)
