"""Streaming decode: the host's Wan2.1 VAE decodes each finished chunk before HiStream starts the next one.

The host's `WanVAE.decode` maps the latent through `conv2` (a 1×1×1 convolution) and then calls its decoder one
latent frame at a time, carrying a causal feature cache (the last frames seen by every causal 3-D convolution) from
call to call; the first call sees no cache and yields 1 pixel frame, every later latent frame 4. Keeping that cache
alive across chunks and feeding the same one-frame calls in the same order therefore gives stock `VAEDecode`'s
pixels exactly. One detail matters for bit equality: `conv2` must see a tensor of the whole video's shape. It is
pointwise, but CPU kernels block the flattened positions by the tensor's size, and a position's rounding can depend
on the block it lands in (seen: `conv2` of a 2×3-latent chunk differed in the last bits from the same frames of the
whole-latent `conv2`). So each chunk is written into a video-sized latent buffer on the VAE's device (as stock
`VAEDecode` holds the whole latent there) and `conv2` runs over that buffer; its 1×1×1 cost is negligible.
Only the host's own modules run here; this file holds no math of its own.
"""
from __future__ import annotations

import comfy.ldm.wan.vae as wan_vae
import comfy.model_management
import latent_preview
import torch
from comfy.cli_args import LatentPreviewMethod, args
from comfy_execution.graph_utils import ExecutionBlocker
from PIL import Image

IMAGE_OUTPUT = 1  # CachedUpsampleRefine's IMAGE output slot
NO_VAE_MESSAGE = ("Cached Upsample Refine's IMAGE output is connected but its vae input is empty: connect a VAELoader "
                  "(Wan2.1 VAE) to vae, or decode the LATENT output with VAEDecode")


def pixel_frames(latent_frames: int) -> int:
    """The host's Wan2.1 temporal upscale: 1 pixel frame for the first latent frame, 4 for each later one."""
    return 1 + 4 * (latent_frames - 1) if latent_frames > 0 else 0


def pixel_range(first_latent: int, count: int) -> tuple[int, int]:
    """Pixel frames [start, stop) that latent frames [first_latent, first_latent + count) decode to."""
    return pixel_frames(first_latent), pixel_frames(first_latent + count)


def check_vae(vae) -> None:
    """A clear error, before anything is allocated, for a VAE that is not the host's Wan2.1 VAE."""
    if getattr(vae, "first_stage_model", None) is None:
        raise ValueError("the VAE input holds no VAE weights: load wan_2.1_vae.safetensors with VAELoader")
    model = vae.first_stage_model
    if not isinstance(model, wan_vae.WanVAE) or getattr(vae, "latent_channels", None) != 16:
        raise ValueError(f"streaming decode needs the Wan2.1 VAE (wan_2.1_vae.safetensors, 16 latent channels), "
                         f"got {type(model).__module__}.{type(model).__name__}: load the Wan2.1 VAE with "
                         f"VAELoader, or leave the vae input empty and decode the LATENT with VAEDecode")


def image_output_used(prompt: dict | None, unique_id) -> bool:
    """Whether some node of the queued graph reads this node's IMAGE output (needs ComfyUI's hidden inputs)."""
    if not prompt or unique_id is None:
        return False
    me = str(unique_id)
    for node in prompt.values():
        for value in (node.get("inputs") or {}).values():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) == me and value[1] == IMAGE_OUTPUT:
                return True
    return False


def no_images():
    """The IMAGE output without a VAE: ComfyUI's ExecutionBlocker stops any node that reads it with the message
    (the run itself checks the graph first; this also covers a cached result and graphs it cannot see)."""
    return ExecutionBlocker(NO_VAE_MESSAGE)


def decode_reserve_bytes(vae, batch: int, latent_hw: tuple[int, int]) -> int:
    """The memory the host itself budgets for a Wan VAE decode of this size (its estimate has no time axis)."""
    return int(vae.memory_used_decode((batch, vae.latent_channels, 1, *latent_hw), vae.vae_dtype))


class StreamingDecode:
    """Feed finished chunks in order; each `decode` returns the new pixel frames [B, f, H, W, 3] (0..1, on the
    VAE's output device), written into one preallocated video. `images()` is stock VAEDecode's IMAGE."""

    def __init__(self, vae, batch: int, latent_frames: int):
        check_vae(vae)
        self.vae, self.batch, self.latent_frames = vae, batch, latent_frames
        self.model = vae.first_stage_model
        self.feat_cache: list | None = [None] * wan_vae.count_conv3d(self.model.decoder)
        self.done = 0  # latent frames decoded so far
        self.latent: torch.Tensor | None = None  # [B, 16, T, h, w] on the VAE device: the chunks so far, then zeros
        self.video: torch.Tensor | None = None  # [B, pixel frames, H, W, 3], allocated on the first output

    @torch.no_grad()
    def decode(self, raw_latent: torch.Tensor) -> torch.Tensor:
        """`raw_latent`: the next chunk [B, 16, t, h, w] in the VAE's (process_out) latent space."""
        if self.feat_cache is None:
            raise RuntimeError("this streaming decode was released")
        b, c, t, h, w = raw_latent.shape
        if b != self.batch or self.done + t > self.latent_frames:
            raise ValueError(f"chunk {tuple(raw_latent.shape)} does not continue a {self.batch}×"
                             f"{self.latent_frames}-frame video at latent frame {self.done}")
        vae = self.vae
        if self.latent is None:
            self.latent = torch.zeros((b, c, self.latent_frames, h, w), dtype=vae.vae_dtype, device=vae.device)
        first = self.done
        self.latent[:, :, first:first + t] = raw_latent.to(vae.vae_dtype).to(vae.device)
        z = self.model.conv2(self.latent)  # the whole video's shape, as in WanVAE.decode (see the module notes)
        for i in range(first, first + t):
            comfy.model_management.throw_exception_if_processing_interrupted()
            # one latent frame per call: the causal feature cache carries the past, as in WanVAE.decode
            out = self.model.decoder(z[:, :, i:i + 1], feat_cache=self.feat_cache, feat_idx=[0])
            frames = vae.process_output(out.to(vae.output_device).float()).movedim(1, -1)
            if self.video is None:
                self.video = torch.empty((b, pixel_frames(self.latent_frames), *frames.shape[2:]),
                                         device=vae.output_device)
            lo, hi = pixel_range(self.done, 1)
            self.video[:, lo:hi] = frames
            self.done += 1
        return self.video[:, pixel_frames(first):pixel_frames(self.done)]

    def images(self) -> torch.Tensor:
        """The whole video as ComfyUI IMAGE [B·frames, H, W, 3] (stock VAEDecode's batch-major layout)."""
        if self.video is None or self.done != self.latent_frames:
            raise RuntimeError(f"decoded {self.done} of {self.latent_frames} latent frames")
        return self.video.reshape(-1, *self.video.shape[2:])

    def release(self) -> None:
        """Drop the causal feature cache and the latent buffer (VAE device); the decoded frames stay."""
        self.feat_cache = self.latent = None


def load_with_vae(patcher, vae, extra_bytes: int, decode_bytes: int) -> None:
    """Load the diffusion model and the VAE together, as stock samplers load a model with its helpers: the host
    decides what stays on the GPU for the run's own memory plus its own estimate for a VAE decode."""
    comfy.model_management.load_models_gpu([patcher, vae.patcher], memory_required=extra_bytes + decode_bytes,
                                           force_full_load=vae.disable_offload)


def previews_enabled() -> bool:
    return args.preview_method != LatentPreviewMethod.NoPreviews


def frames_preview(frames: torch.Tensor, every: int) -> tuple:
    """A ComfyUI preview of decoded frames [B, f, H, W, 3] (first video of the batch): every `every`-th frame
    counted from the last, side by side."""
    picked = frames[0].flip(0)[::every].flip(0)
    strip = torch.cat(list(picked), dim=1)  # [H, n·W, 3]
    pixels = (strip.clamp(0, 1) * 255).round().to(device="cpu", dtype=torch.uint8)
    return "JPEG", Image.fromarray(pixels.numpy()), latent_preview.MAX_PREVIEW_RESOLUTION
