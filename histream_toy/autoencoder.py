"""ToyVideoAE: a tiny causal video autoencoder with Wan's strides (8x in space, 4x in time, first frame alone).

Frames are taken in groups - frame 0 alone (repeated 4x), then groups of 4 - and each group is encoded by a 2-D conv
stack on its 4 frames stacked as channels, so latent frame i only depends on pixel frames <= 4i (causal).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

LATENT_CHANNELS = 16
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "toy_vae.safetensors"


class _Res(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.a, self.b = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x + self.b(F.silu(self.a(F.silu(x))))


class _Up(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class ToyVideoAE(nn.Module):
    def __init__(self, widths=(64, 128), latent_channels: int = LATENT_CHANNELS):
        super().__init__()
        c2, c3 = widths
        self.latent_channels = latent_channels
        self.encoder = nn.Sequential(
            nn.PixelUnshuffle(2), nn.Conv2d(48, c2, 3, padding=1), nn.SiLU(),  # /2
            nn.Conv2d(c2, c3, 4, stride=2, padding=1), _Res(c3),           # /4
            nn.Conv2d(c3, c3, 4, stride=2, padding=1), _Res(c3), _Res(c3),  # /8
            nn.SiLU(), nn.Conv2d(c3, latent_channels, 3, padding=1))
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, c3, 3, padding=1), _Res(c3), _Res(c3),
            _Up(c3, c3), _Res(c3),                                         # x2
            _Up(c3, c2), nn.SiLU(),                                        # x4
            nn.Conv2d(c2, 48, 3, padding=1), nn.PixelShuffle(2))           # x8
        # latent normalisation (set after training): encode returns (z - shift) * scale
        self.register_buffer("latent_shift", torch.zeros(latent_channels))
        self.register_buffer("latent_scale", torch.ones(latent_channels))

    @staticmethod
    def latent_frames(frames: int) -> int:
        if frames < 1 or (frames - 1) % 4:
            raise ValueError(f"frames must be 1 + 4k, got {frames}")
        return 1 + (frames - 1) // 4

    def _groups(self, video: torch.Tensor) -> torch.Tensor:
        """[B, 3, F, H, W] -> [B * T, 12, H, W]; group 0 is frame 0 repeated 4 times."""
        c, h, w = video.shape[1], video.shape[3], video.shape[4]
        if h % 8 or w % 8:
            raise ValueError(f"height and width must be multiples of 8, got {h}x{w}")
        g = frame_groups(video)  # [B, C, T, 4, H, W]
        return g.permute(0, 2, 3, 1, 4, 5).reshape(-1, 4 * c, h, w)

    def encode_raw(self, video: torch.Tensor) -> torch.Tensor:
        b, t = video.shape[0], self.latent_frames(video.shape[2])
        z = self.encoder(self._groups(video))  # [B*T, 16, h, w]
        return z.reshape(b, t, *z.shape[1:]).transpose(1, 2)

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Unnormalised latent [B, 16, T, h, w] -> unclamped video [B, 3, 1 + 4(T-1), 8h, 8w]."""
        b, c, t, h, w = z.shape
        y = self.decoder(z.transpose(1, 2).reshape(b * t, c, h, w))
        y = y.reshape(b, t, 4, 3, 8 * h, 8 * w).permute(0, 3, 1, 2, 4, 5)  # [B, 3, T, 4, H, W]
        first = y[:, :, :1, :].mean(dim=3)  # group 0 -> frame 0
        rest = y[:, :, 1:].reshape(b, 3, 4 * (t - 1), 8 * h, 8 * w)
        return torch.cat([first, rest], dim=2)

    def _norm(self):
        return self.latent_shift.view(1, -1, 1, 1, 1), self.latent_scale.view(1, -1, 1, 1, 1)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video [B, 3, F, H, W] in [-1, 1] -> normalised latent [B, 16, 1 + (F-1)//4, H/8, W/8]."""
        shift, scale = self._norm()
        return (self.encode_raw(video) - shift) * scale

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalised latent -> video [B, 3, F, H, W] clamped to [-1, 1]."""
        shift, scale = self._norm()
        return self.decode_raw(latent / scale + shift).clamp(-1, 1)


def frame_groups(x: torch.Tensor) -> torch.Tensor:
    """[..., F, H, W] -> [..., T, 4, H, W]: the pixel frames behind each latent frame (frame 0 repeated 4 times,
    then fours: latent frame i >= 1 is pixel frames 4i-3..4i)."""
    *lead, f, h, w = x.shape
    t = ToyVideoAE.latent_frames(f)
    first = x[..., :1, :, :].expand(*lead, 4, h, w)
    return torch.cat([first, x[..., 1:, :, :]], dim=-3).reshape(*lead, t, 4, h, w)


def load_toy_ae(path=None, map_location="cpu") -> ToyVideoAE:
    from safetensors.torch import load_file

    model = ToyVideoAE()
    model.load_state_dict({k: v.float() for k, v in load_file(str(path or DEFAULT_WEIGHTS), device=map_location).items()})
    return model.eval()
