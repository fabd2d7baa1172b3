"""Streaming decode: the host's Wan2.1 VAE decodes each finished chunk before HiStream starts the next one.

The decode loop is this pack's own (`wan_causal_decode.CausalDecoder`, over the host VAE's layers); it keeps each
causal convolution's past across chunks and groups latent frames as the host's stock decode does, so the frames equal
stock `VAEDecode`'s bit for bit. A frame that the host's grouping pairs with the next one waits for the next chunk
(or the end of the video). One more detail matters for bit equality: the VAE's `conv2` (1×1×1, pointwise) must see a
tensor of the whole video's shape, because CPU kernels block the flattened positions by the tensor's size and a
position's rounding can depend on its block (seen: `conv2` of a 2×3-latent chunk differed in the last bits from the
same frames of the whole-latent `conv2`). So each chunk is written into a video-sized latent buffer on the VAE's
load device (as stock `VAEDecode` holds the whole latent there) and `conv2` runs over that buffer; its cost is
negligible. Output follows the host: its decode output dtype (`vae_output_dtype()` where the host has it, else fp32)
and its `process_output` (newer hosts run it in place on the output and return None).

The same stream drives a tiny decoder (TAE, ComfyUI ≥ v0.8.0) through `taehv_causal_decode.TaeCausalDecoder`: on
`vae` it gives the final IMAGE (that TAE's whole-video decode, bit for bit), on `preview_vae` only the per-chunk
previews (`keep_video=False`: nothing of the video is kept). A TAE whose latents are not Wan 2.1's is refused.
"""
from __future__ import annotations

import traceback

import comfy.ldm.wan.vae as wan_vae
import comfy.model_management
import latent_preview
import torch
from comfy.cli_args import LatentPreviewMethod, args
from comfy_execution.graph_utils import ExecutionBlocker
from PIL import Image

from ..histream_core.memory import chunk_decode_reserve
from .wan_causal_decode import CausalDecoder, Schedule, host_schedule, passes

try:  # ComfyUI ≥ v0.8.0 has tiny video decoders (TAEHV); older hosts cannot load one
    from . import taehv_causal_decode
except ModuleNotFoundError as missing:
    if not (missing.name or "").startswith("comfy.taesd"):
        raise
    taehv_causal_decode = None

IMAGE_OUTPUT = 1  # CachedUpsampleRefine's IMAGE output slot
NO_VAE_MESSAGE = ("Cached Upsample Refine's IMAGE output is connected but its vae input is empty: connect a VAELoader "
                  "(Wan2.1 VAE, or its tiny decoder lighttaew2_1) to vae, or decode the LATENT output with VAEDecode")
WAN21_TAE = "lighttaew2_1.safetensors in models/vae_approx"  # the host's Wan21.taesd_decoder_name, as VAELoader lists it
NO_TAE_HOST = ("a tiny decoder (TAE) needs ComfyUI v0.8.0 or newer (comfy.taesd.taehv), which this ComfyUI lacks: "
               "update ComfyUI")


def pixel_frames(latent_frames: int) -> int:
    """The host's Wan2.1 temporal upscale: 1 pixel frame for the first latent frame, 4 for each later one."""
    return 1 + 4 * (latent_frames - 1) if latent_frames > 0 else 0


def vae_kind(vae) -> str:
    """'wan' (the host's Wan2.1 VAE) or 'tae' (a Wan 2.1 TAE), checked before anything is allocated; anything else
    gets one clear error with the fix."""
    model = getattr(vae, "first_stage_model", None)
    if model is None:
        tae = "" if taehv_causal_decode is not None else f" (a tiny decoder file is not read here: {NO_TAE_HOST})"
        raise ValueError(f"the VAE input holds no VAE weights{tae}: load wan_2.1_vae.safetensors with VAELoader")
    if isinstance(model, wan_vae.WanVAE) and getattr(vae, "latent_channels", None) == 16:
        return "wan"
    if taehv_causal_decode is not None and isinstance(model, taehv_causal_decode.host_tae.TAEHV):
        check_tae_latents(model)
        return "tae"
    raise ValueError(f"streaming decode needs the Wan2.1 VAE (wan_2.1_vae.safetensors, 16 latent channels) or its "
                     f"tiny decoder ({WAN21_TAE}), got {type(model).__module__}.{type(model).__name__}: load one of "
                     f"them with VAELoader, or leave the vae input empty and decode the LATENT with VAEDecode")


def check_tae_latents(model) -> None:
    """The host reads every TAE file as some model family's: only Wan 2.1's takes this pack's latents."""
    family = {48: "Wan 2.2's", 32: "HunyuanVideo 1.5's"}.get(model.latent_channels)
    if family is None and model.latent_format is not None:  # Wan 2.1's TAE takes the Wan VAE's latent unscaled
        family = f"{model.latent_format.__name__}'s (ComfyUI reads a 16-channel TAE stored in fp16 as taehv)"
    if family is None and model.latent_channels != 16:
        family = f"a {model.latent_channels}-channel latent's"
    if family is not None:
        raise ValueError(f"this tiny decoder (TAE) decodes {family} latents, not Wan 2.1's: load the Wan 2.1 TAE "
                         f"({WAN21_TAE}, stored in bf16 or fp32) with VAELoader")


def check_preview_vae(vae) -> None:
    """preview_vae takes a Wan 2.1 TAE only (the exact Wan VAE belongs on vae)."""
    if taehv_causal_decode is None:
        raise ValueError(f"Cached Upsample Refine's preview_vae: {NO_TAE_HOST}, or leave preview_vae empty")
    if vae_kind(vae) != "tae":
        raise ValueError(f"preview_vae takes the Wan 2.1 tiny decoder ({WAN21_TAE}); the Wan2.1 VAE belongs on the "
                         f"vae input (it decodes the IMAGE output): move it there, or leave preview_vae empty")


def causal_decoder(vae, schedule: Schedule | None = None):
    """This pack's causal decode loop over the layers of `vae` (Wan VAE or TAE)."""
    if vae_kind(vae) == "tae":
        return taehv_causal_decode.TaeCausalDecoder(vae.first_stage_model)
    return CausalDecoder(vae.first_stage_model, schedule or host_schedule())


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


def decode_reserve_bytes(vae, batch: int, latent_hw: tuple[int, int], chunk_frames: int) -> int:
    """What the host itself budgets for decoding ONE chunk of this size (the stream holds one chunk's activations at
    a time, never the whole video's). v0.3.64's Wan VAE estimate has no time axis (≈ 27 GiB at 1080p in bf16 for
    any length); since v0.8.0 it depends on the frame count (≈ 8.6 GiB for a 3-latent-frame 1080p chunk)."""
    return chunk_decode_reserve(vae.memory_used_decode, vae.vae_dtype, batch, chunk_frames, latent_hw,
                                vae.latent_channels)


class StreamingDecode:
    """Feed finished chunks in order; each `decode` returns the pixel frames [B, f, H, W, 3] (0..1, on the VAE's
    output device) that became final, or None, written into one preallocated video. `images()` is stock
    VAEDecode's IMAGE. `schedule`: the Wan VAE's latent frame grouping (default: this host's stock one).
    `keep_video=False` (previews): each call returns its frames alone and nothing of the video is kept."""

    def __init__(self, vae, batch: int, latent_frames: int, schedule: Schedule | None = None,
                 keep_video: bool = True):
        self.decoder = causal_decoder(vae, schedule)  # checks the VAE first
        self.vae, self.batch, self.latent_frames, self.keep_video = vae, batch, latent_frames, keep_video
        self.out_dtype = vae.vae_output_dtype() if hasattr(vae, "vae_output_dtype") else torch.float32
        self.received = 0  # latent frames given so far
        self.done = 0  # latent frames decoded so far
        self.written = 0  # pixel frames in the video so far
        self.latent: torch.Tensor | None = None  # [B, 16, T, h, w] on the VAE device: the chunks so far, then zeros
        self.video: torch.Tensor | None = None  # [B, pixel frames, H, W, 3], allocated on the first output

    @torch.no_grad()
    def decode(self, raw_latent: torch.Tensor) -> torch.Tensor | None:
        """`raw_latent`: the next chunk [B, 16, t, h, w] in the VAE's (process_out) latent space."""
        if self.decoder is None:
            raise RuntimeError("this streaming decode was released")
        b, c, t, h, w = raw_latent.shape
        if b != self.batch or self.received + t > self.latent_frames:
            raise ValueError(f"chunk {tuple(raw_latent.shape)} does not continue a {self.batch}×"
                             f"{self.latent_frames}-frame video at latent frame {self.received}")
        vae = self.vae
        if self.latent is None:  # the host's load device, never a weight's (offloaded weights stay on the CPU)
            self.latent = torch.zeros((b, c, self.latent_frames, h, w), dtype=vae.vae_dtype, device=vae.device)
        self.latent[:, :, self.received:self.received + t] = raw_latent.to(device=vae.device, dtype=vae.vae_dtype)
        self.received += t
        todo = passes(self.decoder.schedule, self.done, self.received, final=self.received == self.latent_frames)
        if not todo:
            return None
        first = self.written
        if not self.keep_video:
            self.video = None  # previews: this call's frames only
        z = self.decoder.latent_conv(self.latent)  # the whole video's shape, as in stock decode (module notes)
        try:
            for start, stop in todo:
                comfy.model_management.throw_exception_if_processing_interrupted()
                for piece in self.decoder.decode(z[:, :, start:stop]):
                    self._write(piece)
                self.done = stop
        except BaseException as exc:  # Stop (the host's ops check it too) or OOM inside a layer: the traceback,
            self.release()  # which the host keeps to report, must not pin the decode state in the layers' frames
            if exc.__traceback__ is not None:
                traceback.clear_frames(exc.__traceback__.tb_next)
            raise
        return self.video[:, first:self.written] if self.keep_video else self.video

    def _write(self, piece: torch.Tensor) -> None:
        """Decoded frames [B, 3, f, H, W] → the video, through the host's output dtype and process_output."""
        vae = self.vae
        frames = piece.to(device=vae.output_device, dtype=self.out_dtype).movedim(1, -1)
        if not self.keep_video:
            processed = vae.process_output(frames)  # elementwise; in place on newer hosts (None)
            frames = frames if processed is None else processed
            self.video = frames if self.video is None else torch.cat([self.video, frames], dim=1)
            self.written += frames.shape[1]
            return
        if self.video is None:
            self.video = torch.empty((self.batch, pixel_frames(self.latent_frames), *frames.shape[2:]),
                                     device=vae.output_device, dtype=self.out_dtype)
        view = self.video[:, self.written:self.written + frames.shape[1]]
        view.copy_(frames)
        processed = vae.process_output(view)  # elementwise: in place on newer hosts (None), else a new tensor
        if processed is not None and processed is not view:
            view.copy_(processed)
        self.written += frames.shape[1]

    def images(self) -> torch.Tensor:
        """The whole video as ComfyUI IMAGE [B·frames, H, W, 3] (stock VAEDecode's batch-major layout)."""
        if not self.keep_video:
            raise RuntimeError("a preview decode keeps no video")
        if self.video is None or self.done != self.latent_frames:
            raise RuntimeError(f"decoded {self.done} of {self.latent_frames} latent frames")
        return self.video.reshape(-1, *self.video.shape[2:])

    def release(self) -> None:
        """Drop the decode state (causal history) and the latent buffer (VAE device); the decoded frames stay."""
        self.decoder = self.latent = None


def load_with_vae(patcher, *vaes, extra_bytes: int, decode_bytes: int) -> None:
    """Load the diffusion model and the VAEs (the VAE and/or a preview TAE) together, as stock samplers load a model
    with its helpers: the host decides what stays on the GPU for the run's own memory plus its own decode estimates
    (`decode_bytes`: their sum; the decoders run one after the other, but each keeps its causal state)."""
    # force_full_load goes to the VAE patcher alone, as stock VAE decode passes it (newer dynamic-VRAM model patchers
    # assert on it); the joint call then keeps the loaded VAE and loads the model beside it
    for v in vaes:
        comfy.model_management.load_models_gpu([v.patcher], memory_required=decode_bytes,
                                               force_full_load=v.disable_offload)
    comfy.model_management.load_models_gpu([patcher, *(v.patcher for v in vaes)],
                                           memory_required=extra_bytes + decode_bytes)


def previews_enabled() -> bool:
    return args.preview_method != LatentPreviewMethod.NoPreviews


def frames_preview(frames: torch.Tensor, every: int) -> tuple:
    """A ComfyUI preview of decoded frames [B, f, H, W, 3] (first video of the batch): every `every`-th frame
    counted from the last, side by side."""
    picked = frames[0].flip(0)[::every].flip(0)
    strip = torch.cat(list(picked), dim=1)  # [H, n·W, 3]
    pixels = (strip.clamp(0, 1) * 255).round().to(device="cpu", dtype=torch.uint8)
    return "JPEG", Image.fromarray(pixels.numpy()), latent_preview.MAX_PREVIEW_RESOLUTION
