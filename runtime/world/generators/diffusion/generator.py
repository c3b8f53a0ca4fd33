"""``wan-vace``: grow the world with a video diffusion model that fills what routing leaves open.

For each job (see :mod:`.path`, :mod:`.routing`, :mod:`.pipeline`):

1. a camera path of ``4k + 1`` frames from a known view into the requested ones;
2. routing: every path frame gets the scene rendered there plus the retrieved memory frames
   forward-warped (z-buffered): a conditioning video and a keep/generate mask;
3. Wan VACE fills the generate regions, prompted by the region's caption, with the best
   retrieved frame as a reference image; progress is reported per denoising step and a
   cancelled job stops between steps;
4. keyframes along the path (every ``keyframe_every`` frames and each target) are returned
   at the request's size with their cameras; their depth comes from the depth estimator
   aligned (inverse depth, scale and shift) to the routed depth, or, without one, from the
   world's estimator.
"""

from __future__ import annotations

import hashlib
import threading
import time

import numpy as np

from ...camera import Cameras
from ...depth.align import align_to_known
from ...depth.files import resize_depth
from ...formats.media import resize_image
from ..base import CancelToken, GenerationRequest, GenerationResult, GeneratorUnavailable, ProgressCallback
from .path import camera_path, frames_for_budget, start_pose
from .pipeline import WAN_DOWNLOAD_HINT, LoadedPipeline, load_vace_pipeline
from .routing import Conditioning, route

DEFAULT_NEGATIVE_PROMPT = "blurry, distorted, low quality, flicker, text, watermark"

ROUTING_SHARE = 0.1
"""Share of a job's progress bar given to routing; decoding and depth get the same at the end."""


def _option(name: str, value, kind: type, default=None):
    """A ``--generator-option`` value (a string from the command line, or a number) as
    ``kind``; ``default`` when unset. Bad values are :class:`GeneratorUnavailable` naming it."""
    if value is None or value == "":
        return default
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise GeneratorUnavailable(f"--generator-option {name}={value!r}: expected {kind.__name__}") from None


class VideoDiffusionGenerator:
    """A :class:`..base.Generator` around diffusers' ``WanVACEPipeline``.

    Options (strings from ``--generator-option KEY=VALUE`` are converted):
        model: diffusers folder of Wan 2.1 VACE 1.3B or 14B (required).
        width, height: the model's frame size, multiples of 16 (default 832 x 480).
        frames: the longest path, ``4k + 1`` (default 33).
        budget_s: if set, paths shorten (down to 5 frames) to generate within this many
            seconds, by the measured seconds per frame.
        steps: denoising steps (default 35; 4 with a distillation LoRA).
        guidance: classifier-free guidance scale (default 5; 1 turns it off, as distilled
            models want).
        lora, lora_scale: a LoRA fused into the transformer (e.g. few-step distillation).
        offload: ``none`` | ``model`` | ``sequential`` (see :func:`.pipeline.load_vace_pipeline`).
        device, dtype: default ``cuda`` + ``bfloat16`` when there is a GPU, else ``cpu`` + ``float32``.
        references: retrieved frames given as VACE reference images (default 1).
        keyframe_every: path frames between returned keyframes (default 4).
        depth_model: a Depth Anything-class folder for the new frames' depth; without it the
            frames go back RGB-only and the world's estimator (``--depth-model``) is used.
        negative_prompt: what to steer away from.
        pipeline: an already loaded ``WanVACEPipeline`` instead of ``model`` (tests, notebooks).
    """

    name = "wan-vace"
    makes_depth = False  # unless depth_model is given (then depth is aligned to routed depth)

    def __init__(
        self,
        model: str | None = None,
        *,
        width=832,
        height=480,
        frames=33,
        budget_s=None,
        steps=None,
        guidance=None,
        lora: str | None = None,
        lora_scale=1.0,
        offload: str = "none",
        device: str | None = None,
        dtype: str | None = None,
        references=1,
        keyframe_every=4,
        depth_model: str | None = None,
        negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
        pipeline=None,
    ) -> None:
        self.width, self.height = _option("width", width, int), _option("height", height, int)
        if self.width % 16 or self.height % 16 or self.width < 16 or self.height < 16:
            raise GeneratorUnavailable(f"--generator-option width/height must be multiples of 16, got {self.width}x{self.height}")
        self.max_frames = _option("frames", frames, int)
        if self.max_frames < 5 or (self.max_frames - 1) % 4:
            raise GeneratorUnavailable(f"--generator-option frames must be 4k + 1 >= 5 (5, 9, 17, 33, 81), got {frames}")
        self.budget_s = _option("budget_s", budget_s, float)
        self.steps = max(1, _option("steps", steps, int, 4 if lora else 35))
        self.guidance = _option("guidance", guidance, float, 1.0 if lora else 5.0)
        self.references = max(0, _option("references", references, int))
        self.keyframe_every = max(1, _option("keyframe_every", keyframe_every, int))
        lora_scale = _option("lora_scale", lora_scale, float)
        self.negative_prompt = negative_prompt
        if pipeline is not None:
            self._loaded = LoadedPipeline(pipeline, str(pipeline.device), str(pipeline.transformer.dtype), threading.Lock())
            pipeline.set_progress_bar_config(disable=True)
        elif not model:
            raise GeneratorUnavailable(f"the wan-vace generator needs its weights: {WAN_DOWNLOAD_HINT}")
        else:
            self._loaded = load_vace_pipeline(model, device=device, dtype=dtype, offload=offload, lora=lora, lora_scale=lora_scale)
        self.depth_estimator = None
        if depth_model:
            from ...depth import DepthModelMissing, load_depth_estimator

            try:
                self.depth_estimator = load_depth_estimator(depth_model)
            except DepthModelMissing as e:
                raise GeneratorUnavailable(str(e).replace("--depth-model", "--generator-option depth_model=")) from None
            self.makes_depth = True
        self._seconds_per_frame: float | None = None
        self._stats_lock = threading.Lock()

    # ------------------------------------------------------------------ the job
    def generate(self, request: GenerationRequest, progress: ProgressCallback, cancel: CancelToken) -> GenerationResult:
        started = time.perf_counter()
        cancel.raise_if_cancelled()
        targets = request.cameras
        frames = frames_for_budget(self.budget_s, self._seconds_per_frame, self.max_frames)
        frames = max(frames, _shortest_path(len(targets)))
        path = camera_path(start_pose(targets, request.memory), targets, frames)
        model_cams = path.cameras.resized(self.width, self.height)
        cond = route(model_cams, request.memory, request.scene)
        progress(ROUTING_SHARE, f"routed {frames} frames ({100 * cond.known.mean():.0f}% known)")
        cancel.raise_if_cancelled()

        video = self._denoise(request, cond, progress, cancel)  # [F, h, w, 3] uint8
        keep = self._keyframe_indices(frames, path.targets)
        H, W = targets.height, targets.width
        rgb = np.stack([resize_image(video[i], W, H) for i in keep])
        cams = Cameras(path.cameras.w2c[keep], path.cameras.K[keep], W, H)
        depth = None
        if self.depth_estimator is not None:
            known = Conditioning(*(x[keep] for x in (cond.rgb, cond.known, cond.depth)))
            depth = self._aligned_depth(rgb, cams, known)
        elapsed = time.perf_counter() - started
        with self._stats_lock:
            per_frame = elapsed / frames
            self._seconds_per_frame = per_frame if self._seconds_per_frame is None else 0.7 * self._seconds_per_frame + 0.3 * per_frame
        progress(1.0, "done")
        info = {"model": "wan-vace", "frames": frames, "steps": self.steps, "known": float(cond.known.mean()), "seconds": elapsed}
        return GenerationResult(rgb, depth, info, cams)

    def _denoise(self, request: GenerationRequest, cond: Conditioning, progress: ProgressCallback, cancel: CancelToken) -> np.ndarray:
        import torch
        from PIL import Image

        F = len(cond.rgb)
        video = np.where(cond.known[..., None], cond.rgb, 128).astype(np.float32) / 255.0
        mask = np.repeat((~_erode(cond.known, 2))[..., None].astype(np.float32), 3, axis=-1)
        references = [Image.fromarray(np.ascontiguousarray(f.rgb)) for f in request.memory[: self.references]] or None
        steps = self.steps

        def on_step(pipe, i, t, tensors):
            progress(ROUTING_SHARE + (1 - 2 * ROUTING_SHARE) * (i + 1) / steps, f"denoising step {i + 1}/{steps}")
            cancel.raise_if_cancelled()  # stops the pipeline between steps
            return tensors

        seed = _job_seed(request)
        loaded = self._loaded
        with loaded.lock:
            cancel.raise_if_cancelled()
            generator = torch.Generator(device="cpu").manual_seed(seed)
            out = loaded.pipe(
                prompt=request.caption or "a place",
                negative_prompt=self.negative_prompt,
                video=video[None],
                mask=mask[None],
                reference_images=references,
                height=self.height,
                width=self.width,
                num_frames=F,
                num_inference_steps=steps,
                guidance_scale=self.guidance,
                generator=generator,
                output_type="np",
                callback_on_step_end=on_step,
            )
        frames = np.asarray(out.frames[0])  # [F, h, w, 3] float in [0, 1]
        return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)

    def _keyframe_indices(self, frames: int, targets: tuple[int, ...]) -> list[int]:
        """Path frames returned as keyframes: every ``keyframe_every``-th (not the known
        start) and every target."""
        return sorted(set(range(self.keyframe_every, frames, self.keyframe_every)) | set(targets))

    def _aligned_depth(self, rgb: np.ndarray, cams: Cameras, known: Conditioning) -> np.ndarray:
        """The estimator's depth of the keyframes, aligned to the routed (known) depth."""
        depth = self.depth_estimator.estimate(rgb, cams, ())
        H, W = depth.shape[1:]
        ref = np.stack([resize_depth(d, W, H) for d in known.depth])
        weight = np.stack([resize_depth(k.astype(np.float32), W, H) for k in known.known])
        return align_to_known(depth, ref, weight)


def _shortest_path(targets: int) -> int:
    """The fewest ``4k + 1`` frames that give every target its own frame after the start."""
    return 4 * max(1, -(-targets // 4)) + 1


def _job_seed(request: GenerationRequest) -> int:
    """A seed fixed by (world seed, caption, cameras): the same request gives the same pixels."""
    h = hashlib.sha256()
    h.update(str(int(request.seed)).encode())
    h.update(request.caption.encode())
    h.update(np.round(np.asarray(request.cameras.w2c, np.float64), 4).tobytes())
    return int.from_bytes(h.digest()[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def _erode(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``[F, H, W]`` bool ``mask`` eroded by ``pixels`` (4-neighbourhood): applied to the known
    mask, the generate region overlaps known content a little, so seams are painted over."""
    out = mask.copy()
    for _ in range(pixels):
        eroded = out.copy()
        eroded[:, 1:] &= out[:, :-1]
        eroded[:, :-1] &= out[:, 1:]
        eroded[:, :, 1:] &= out[:, :, :-1]
        eroded[:, :, :-1] &= out[:, :, 1:]
        out = eroded
    return out
