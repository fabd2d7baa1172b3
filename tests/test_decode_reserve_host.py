"""The streaming decode's reservation (histream_core.memory.chunk_decode_reserve) on the host's own Wan2.1 VAE: the
host's estimate for one chunk's latent, which on v0.8.0 is the formula the README table uses and on v0.3.64 (no
time axis) the whole-video size."""

from __future__ import annotations

import pytest
import torch

from histream_core import HiStreamConfig
from histream_core.memory import chunk_decode_reserve
from tools.memory_table import wan_vae_decode_estimate

pytestmark = pytest.mark.comfy


def test_reservation_is_the_host_estimate_for_one_chunk(comfy_modules):
    import logging

    import comfy.sd
    import comfyui_version

    # the keys both hosts detect a Wan2.1 VAE by (the weights themselves do not matter for the estimate)
    sd = {"decoder.middle.0.residual.0.gamma": torch.ones(384, 1, 1, 1), "decoder.head.0.gamma": torch.ones(96, 1, 1, 1),
          "encoder.conv1.weight": torch.ones(96, 3, 3, 3, 3)}
    logging.disable(logging.WARNING)  # the host lists every key it did not get
    try:
        vae = comfy.sd.VAE(sd=sd)
    finally:
        logging.disable(logging.NOTSET)
    assert vae.latent_channels == 16
    hi = HiStreamConfig()  # 1080p: latent 136×240, chunks of 3 latent frames, 21 latent frames
    got = chunk_decode_reserve(vae.memory_used_decode, torch.bfloat16, 1, hi.chunk_frames, hi.latent_size,
                               vae.latent_channels)
    whole = vae.memory_used_decode((1, 16, hi.latent_frames, *hi.latent_size), torch.bfloat16)
    assert got == int(vae.memory_used_decode((1, 16, 3, 136, 240), torch.bfloat16))
    if comfyui_version.__version__ == "0.8.0":
        assert got == wan_vae_decode_estimate((1, 16, 3, 136, 240), 2) == 2200 * 136 * 240 * 64 * 2
        assert whole == 7000 * 136 * 240 * 64 * 2 > got  # the whole video's budget, which streaming never needs
    else:  # v0.3.64: one size for any length
        assert got == whole == 7000 * 136 * 240 * 64 * 2
