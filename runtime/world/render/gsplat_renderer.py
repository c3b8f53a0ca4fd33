"""The CUDA renderer: one ``gsplat.rasterization`` call per batch of cameras.

Chunks are uploaded once (activated: exp scales, sigmoid opacities, unit quaternions
w-first) and kept on the GPU by chunk; the concatenation of the visible chunks is
kept per (snapshot version, visible set), so a player who keeps looking at the same
chunks costs no copies. gsplat draws premultiplied colour and expected depth
("RGB+ED"); the sky is composited here, from the same coarse sky grid as the CPU
renderer, interpolated on the GPU. The far field (``snapshot.far``) is drawn over that
coarse grid at the grid's resolution, as the CPU renderer does, before the scene is
composited over it.

``gsplat`` and ``torch`` are imported when a renderer is built, never at module import,
so machines without CUDA can import this module.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..camera import Cameras
from ..scene import Chunk, SceneSnapshot
from ..sky import Sky
from .base import Backdrop, RenderOutput
from .chunk_cache import ChunkCache
from .conventions import ALPHA_MIN, EPS2D, NEAR_PLANE
from .cuda import require_cuda_and_gsplat
from .gpu_video import SkyConstants, coarse_sky_geometry, pick_video_kernels, sky_is_portable
from .i420 import i420_size
from .sky_grid import SkyGridCache
from .video import VideoFrames, check_into

log = logging.getLogger("worldstream.render")

_CUDA_HOST_REGISTER_PORTABLE = 1  # cudaHostRegisterPortable: page-locked for every CUDA context


def _no_op() -> None:
    pass


def _in_own_thread(call):
    """``call()``'s result, called in a short-lived thread: a CUDA runtime call that fails
    also sets its thread's last-error state, which torch's next kernel-launch check in
    that thread would raise as if the kernel had failed."""
    result: list = []

    def run() -> None:
        try:
            result.append((True, call()))
        except BaseException as exc:  # handed to the caller's thread
            result.append((False, exc))

    thread = threading.Thread(target=run, name="cuda-host-register")
    thread.start()
    thread.join()
    ok, value = result[0]
    if not ok:
        raise value
    return value


DEFAULT_GPU_CACHE_BYTES = 8 << 30
"""GPU memory for uploaded chunks (56 B per Gaussian: ~150M Gaussians)."""
CONCAT_CACHE_SIZE = 4


@dataclass(frozen=True)
class _GpuGaussians:
    """Activated Gaussians on the GPU: means ``[G,3]``, quats ``[G,4]`` (w first, unit),
    scales ``[G,3]`` (metres), opacities ``[G]``, colors ``[G,3]`` (torch float32 tensors)."""

    means: "object"
    quats: "object"
    scales: "object"
    opacities: "object"
    colors: "object"

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.means, self.quats, self.scales, self.opacities, self.colors))

    def __len__(self) -> int:
        return int(self.means.shape[0])


class GsplatRenderer:
    """3DGS on CUDA through gsplat.

    Args:
        device: torch device for the scene copies and rendering.
        cache_bytes: GPU memory budget for uploaded chunks.
        packed: gsplat's ``packed`` mode (less memory for large scenes, may be slower).
    Raises:
        RuntimeError: no CUDA device or no gsplat.
    """

    name = "gsplat"
    far_see_through_from = None  # the far field lies behind the whole scene (not yet the CPU renderer's rule)
    packed_chunks = None  # chunks live on the GPU: the colour fit activates its own CPU copies

    def __init__(self, device: str = "cuda", cache_bytes: int = DEFAULT_GPU_CACHE_BYTES, packed: bool = False) -> None:
        self._torch, self._gsplat = require_cuda_and_gsplat("gsplat renderer", "; use the cpu renderer")
        self.device = self._torch.device(device)
        self.packed = packed
        self._chunks: ChunkCache[_GpuGaussians] = ChunkCache(self._upload, lambda g: g.nbytes, cache_bytes)
        self._concat_lock = threading.Lock()
        self._concat: OrderedDict[tuple, tuple[_GpuGaussians, list]] = OrderedDict()
        self._skies = SkyGridCache(size=64)
        # Streaming path (render_video): the sky-grid and fused composite + I420 kernels,
        # and a side stream for copies to the host so they overlap the next batch's rasterisation.
        self._kernels = pick_video_kernels(self._torch, self.device)
        self.video_backend = self._kernels.name
        self._copy_stream = self._torch.cuda.Stream(device=self.device)
        self._sky_constants: dict[Sky, SkyConstants] = {}
        self._copy_lock = threading.Lock()
        self._deferred: list[_PendingGpuVideo] = []  # rendered, host copy not yet queued
        self._staging = _PinnedRing(self._torch)
        self._pin_refused = False

    # ---- public API ----
    def render(self, snapshot: SceneSnapshot, cameras: Cameras, sky: Sky) -> RenderOutput:
        """Draw ``snapshot`` from all cameras in one rasterisation call (and one more for its far field)."""
        torch = self._torch
        n, h, w = len(cameras), cameras.height, cameras.width
        g = self._visible(snapshot, cameras)
        with torch.no_grad():
            sky_rgb = self._sky_batch(sky, cameras, snapshot)  # [N,H,W,3] float32 on the GPU
            if len(g) == 0:
                rgb_f = sky_rgb
                alpha = torch.zeros((n, h, w), dtype=torch.float32, device=self.device)
                depth = torch.full((n, h, w), float("inf"), dtype=torch.float32, device=self.device)
            else:
                colors, alphas = self._rasterize(g, g.colors, *self._camera_tensors(cameras), w, h, "RGB+ED")
                alpha = alphas[..., 0]
                rgb_f = colors[..., :3] + (1.0 - alpha)[..., None] * sky_rgb
                depth = torch.where(alpha >= ALPHA_MIN, colors[..., 3], torch.full_like(alpha, float("inf")))
            rgb = (rgb_f * 255.0 + 0.5).clamp_(0.0, 255.0).to(torch.uint8)
        return RenderOutput(
            rgb=rgb.cpu().numpy(),
            depth=depth.float().cpu().numpy(),
            alpha=alpha.float().cpu().numpy(),
            scene_version=snapshot.version,
        )

    def backdrop(self, snapshot: SceneSnapshot, camera: Cameras, sky: Sky) -> Backdrop:
        """What :meth:`render` lays behind ``snapshot``'s chunks at one camera (they are not
        drawn): the far field over the sky, under the whole scene (``far_from`` None); see
        :class:`~.base.Backdrop`."""
        far = SceneSnapshot(snapshot.version, (), snapshot.far)
        background = self.render(far, camera, sky).rgb[0].astype(np.float32) / 255
        if not snapshot.visible_far(camera):
            return Backdrop(background, None, None)
        bare = self.render(SceneSnapshot(snapshot.version, ()), camera, sky).rgb[0].astype(np.float32) / 255
        return Backdrop(background, bare, None)

    def submit_video(
        self, snapshot: SceneSnapshot, cameras: Cameras, sky: Sky, into: Sequence[np.ndarray | None] | None = None
    ) -> "_PendingGpuVideo":
        """Queue the streaming frames of all cameras; returns at once, ``.wait()`` gives
        :class:`~.video.VideoFrames` (I420 in pinned host memory).

        On the render stream: rasterise (colour + alpha only), the sky grids, the fused
        composite + RGB -> I420 kernel. On the copy stream, after those: the I420 bytes
        (1.5 B/pixel) to a pinned host buffer, or, for cameras with an ``into`` buffer
        (:func:`.video.submit_video`), straight to it: a DMA when it is page-locked
        (:meth:`pin_host_memory`), a blocking copy otherwise.

        The copy is issued late: by ``wait()``, or by the next ``submit_video`` right after
        its rasterisation call returns, whichever comes first. gsplat reads a count back
        to the host in the middle of every rasterisation, and on the GPU that small read
        queues behind any large device-to-host copy in flight (0.5 ms per batch of 32
        720p frames, measured); issued after that read, the copy overlaps the next batch's
        rasterisation instead of stalling it. A caller that waits at once loses nothing.
        """
        torch = self._torch
        n, h, w = len(cameras), cameras.height, cameras.width
        if h % 2 or w % 2:
            raise ValueError(f"render_video: image size must be even, got {w}x{h}")
        g = self._visible(snapshot, cameras)
        with torch.no_grad():
            viewmats, Ks, rays, stride, hc, wc = self._video_camera_tensors(cameras)
            grid, stride = self._sky_grids(sky, cameras, rays, stride, hc, wc)
            grid = self._far_over(snapshot, cameras, viewmats, Ks, grid, stride)
            if len(g) == 0:
                colors = torch.zeros((n, h, w, 3), dtype=torch.float32, device=self.device)
                alphas = torch.zeros((n, h, w, 1), dtype=torch.float32, device=self.device)
            else:
                colors, alphas = self._rasterize(g, g.colors, viewmats, Ks, w, h, "RGB")
            self._issue_deferred_copy()
            frames_gpu = torch.empty((n, i420_size(w, h)), dtype=torch.uint8, device=self.device)
            self._kernels.composite(torch, colors, alphas, grid, stride, frames_gpu)
            rendered = torch.cuda.Event()
            rendered.record()
        pending = _PendingGpuVideo(self, frames_gpu, rendered, w, h, snapshot.version, check_into(into, cameras))
        with self._copy_lock:
            self._deferred.append(pending)
        return pending

    def _issue_deferred_copy(self) -> None:
        """Queue the host copies of earlier batches that nobody has waited for yet."""
        with self._copy_lock:
            deferred, self._deferred = self._deferred, []
        for pending in deferred:
            pending.issue_copy()

    def _forget(self, pending: "_PendingGpuVideo") -> None:
        """Drop a waited-for batch from the deferred list (its pinned frames can be reused sooner)."""
        with self._copy_lock:
            if pending in self._deferred:
                self._deferred.remove(pending)

    def _copy_to_host(self, frames_gpu, rendered, into):
        """On the copy stream, after ``rendered``: ``frames_gpu`` into pinned host memory,
        each picture with an ``into`` buffer into that instead. Returns ``(frames_host,
        copied event)``. Pinned buffers come from torch's caching host allocator: one is
        reused only when its frames are no longer referenced and its copy has finished."""
        torch = self._torch
        frames_host = torch.empty(frames_gpu.shape, dtype=torch.uint8, pin_memory=True)
        self._copy_stream.wait_event(rendered)
        with torch.cuda.stream(self._copy_stream):
            if into is None:
                frames_host.copy_(frames_gpu, non_blocking=True)
            else:
                for i, buffer in enumerate(into):
                    target = frames_host[i] if buffer is None else torch.from_numpy(buffer)
                    target.copy_(frames_gpu[i], non_blocking=True)
            copied = torch.cuda.Event()
            copied.record()
        # frames_gpu was allocated on the render stream: keep it until the copy is done.
        frames_gpu.record_stream(self._copy_stream)
        return frames_host, copied

    def pin_host_memory(self, memory: np.ndarray):
        """Page-lock ``memory`` (any contiguous host array) so that copies from the GPU into
        it are DMAs that cost no CPU; returns the function that unlocks it, to be called
        before the memory is freed and after the last copy into it has finished.

        Where the driver refuses, logs that once and returns a no-op: copies into the
        memory still work, through the CPU. Blocks while the driver locks the pages:
        call it off the event loop.
        """
        torch = self._torch
        if not memory.flags.c_contiguous or memory.nbytes == 0:
            raise ValueError(f"pin_host_memory: need a contiguous, non-empty array, got {memory.shape} {memory.dtype}")
        cudart = torch.cuda.cudart()
        address, nbytes = memory.ctypes.data, memory.nbytes
        error = _in_own_thread(lambda: cudart.cudaHostRegister(address, nbytes, _CUDA_HOST_REGISTER_PORTABLE))
        if int(error) != 0:
            if not self._pin_refused:
                self._pin_refused = True
                log.warning("could not page-lock %d bytes for GPU copies (cudaError %d): copies go through the CPU", nbytes, int(error))
            return _no_op

        def unpin() -> None:
            _in_own_thread(lambda: cudart.cudaHostUnregister(address))

        return unpin

    def render_video(self, snapshot: SceneSnapshot, cameras: Cameras, sky: Sky) -> VideoFrames:
        """I420 frames of all cameras in host memory (blocking :meth:`submit_video`)."""
        return self.submit_video(snapshot, cameras, sky).wait()

    def render_alpha(self, snapshot: SceneSnapshot, cameras: Cameras) -> np.ndarray:
        """``[N, H, W]`` float32 accumulated opacity (one-channel gsplat pass)."""
        torch = self._torch
        n, h, w = len(cameras), cameras.height, cameras.width
        g = self._visible(snapshot, cameras)
        if len(g) == 0:
            return np.zeros((n, h, w), np.float32)
        with torch.no_grad():
            colors = torch.zeros((len(g), 1), dtype=torch.float32, device=self.device)
            _, alphas = self._rasterize(g, colors, *self._camera_tensors(cameras), w, h, "RGB")
        return alphas[..., 0].float().cpu().numpy()

    def _rasterize(self, g: "_GpuGaussians", colors, viewmats, Ks, width: int, height: int, mode: str):
        """One ``gsplat.rasterization`` call with the project's conventions; ``(colors, alphas)``.

        Args:
            colors: ``[G, D]`` per-Gaussian values to blend (RGB, or one zero channel for alpha only).
            viewmats, Ks: ``[N, 4, 4]`` world-to-camera and ``[N, 3, 3]`` intrinsics on the device.
            mode: gsplat's ``render_mode`` (``"RGB"`` or ``"RGB+ED"``).
        """
        colors_out, alphas, _ = self._gsplat.rasterization(
            g.means, g.quats, g.scales, g.opacities, colors, viewmats, Ks, width, height,
            near_plane=NEAR_PLANE, eps2d=EPS2D, packed=self.packed, render_mode=mode, rasterize_mode="classic",
        )
        return colors_out, alphas

    def cached_chunk_ids(self) -> list[int]:
        """Ids of chunks held on the GPU."""
        return self._chunks.chunk_ids()

    # ---- scene on the GPU ----
    def _upload(self, chunk: Chunk) -> _GpuGaussians:
        torch = self._torch
        g = chunk.gaussians
        quats = g.quats / np.maximum(np.linalg.norm(g.quats, axis=1, keepdims=True), 1e-12)

        def put(array: np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)

        return _GpuGaussians(
            means=put(g.means),
            quats=put(quats),
            scales=put(np.exp(g.log_scales)),
            opacities=put(g.opacities),
            colors=put(g.colors),
        )

    def _visible(self, snapshot: SceneSnapshot, cameras: Cameras) -> _GpuGaussians:
        """The visible chunks (union over cameras) as one set of GPU tensors; cached."""
        return self._merged(snapshot.visible_chunks(cameras))

    def _merged(self, chunks: tuple[Chunk, ...]) -> _GpuGaussians:
        """``chunks`` as one set of GPU tensors; cached per (ids, Gaussians) set."""
        torch = self._torch
        key = tuple((c.id, id(c.gaussians)) for c in chunks)
        with self._concat_lock:
            hit = self._concat.get(key)
            if hit is not None:
                self._concat.move_to_end(key)
                return hit[0]
        parts = [self._chunks.get(c) for c in chunks]
        parts = [p for p in parts if len(p)]
        if not parts:
            empty = torch.zeros((0, 3), dtype=torch.float32, device=self.device)
            merged = _GpuGaussians(empty, torch.zeros((0, 4), device=self.device), empty, empty[:, 0], empty)
        elif len(parts) == 1:
            merged = parts[0]
        else:
            merged = _GpuGaussians(
                *(torch.cat([getattr(p, f) for p in parts]) for f in ("means", "quats", "scales", "opacities", "colors"))
            )
        with self._concat_lock:
            # Holding the chunks' Gaussians keeps the id() in the key from being reused.
            self._concat[key] = (merged, [c.gaussians for c in chunks])
            while len(self._concat) > CONCAT_CACHE_SIZE:
                self._concat.popitem(last=False)
        return merged

    def _camera_tensors(self, cameras: Cameras):
        torch = self._torch
        viewmats = torch.from_numpy(np.ascontiguousarray(cameras.w2c, np.float32)).to(self.device)
        Ks = torch.from_numpy(np.ascontiguousarray(cameras.K, np.float32)).to(self.device)
        return viewmats, Ks

    # ---- sky ----
    def _video_camera_tensors(self, cameras: Cameras):
        """``(viewmats [N,4,4], Ks [N,3,3], sky rays [N,3,3], stride, hc, wc)`` on the GPU
        through one pinned, non-blocking upload: a pageable ``.to(device)`` waits for
        the GPU queue to drain, which would serialise this batch behind the previous one.
        The three arrays lie one after the other, so the device tensors are views (no copies)."""
        n = len(cameras)
        rays, stride, hc, wc = coarse_sky_geometry(cameras)
        staging, uploaded = self._staging.take(34 * n)
        host = staging.numpy()
        host[: 16 * n] = cameras.w2c.reshape(-1)
        host[16 * n : 25 * n] = cameras.K.reshape(-1)
        host[25 * n : 34 * n] = rays.reshape(-1)
        dev = staging.to(self.device, non_blocking=True)
        uploaded.record()  # the slot may be refilled once this copy is done
        viewmats = dev[: 16 * n].view(n, 4, 4)
        Ks = dev[16 * n : 25 * n].view(n, 3, 3)
        rays = dev[25 * n : 34 * n].view(n, 3, 3)
        return viewmats, Ks, rays, stride, hc, wc

    def _sky_grids(self, sky: Sky, cameras: Cameras, rays, stride: int, hc: int, wc: int):
        """``([N, hc, wc, 3] float32 coarse sky grids on the GPU, stride)``.

        Computed on the GPU for :class:`Sky` itself (one kernel launch for any number of
        cameras: no per-camera CPU work, no cache misses when players turn); a Sky
        subclass with its own colours goes through the CPU grid cache.
        """
        torch = self._torch
        try:
            hash(sky)
        except TypeError:  # an unhashable Sky subclass: no constants cache, CPU grids
            portable = False
        else:
            portable = sky_is_portable(sky)
        if portable:
            constants = self._sky_constants.get(sky)
            if constants is None:
                constants = self._sky_constants[sky] = SkyConstants(torch, sky, self.device)
            return self._kernels.sky_grids(torch, constants, rays, hc, wc), stride
        grids = [self._skies.get(sky, cameras[i]) for i in range(len(cameras))]
        return torch.from_numpy(np.stack([g for g, _ in grids])).to(self.device), grids[0][1]

    def _far_over(self, snapshot: SceneSnapshot, cameras: Cameras, viewmats, Ks, grid, stride: int):
        """``grid`` ``[N, hc, wc, 3]`` (coarse sky samples on the GPU) with the snapshot's visible
        far-field chunks drawn over it at the grid's own resolution: the background the scene
        is composited over (see :class:`..scene.SceneSnapshot`). ``grid`` itself when there are none.

        ``viewmats``, ``Ks``: the cameras' ``[N, 4, 4]`` and ``[N, 3, 3]`` device tensors; the
        coarse cameras' intrinsics are derived on the device (no host copy).
        """
        far = snapshot.visible_far(cameras)
        if not far:
            return grid
        g = self._merged(far)
        if len(g) == 0:
            return grid
        hc, wc = int(grid.shape[1]), int(grid.shape[2])
        Kc = Ks.clone()
        if stride > 1:  # pixel (i, j) of the coarse camera is the image's pixel (i*stride, j*stride): sky_grid.coarse_camera
            Kc[:, 0, 0] = Ks[:, 0, 0] / stride
            Kc[:, 1, 1] = Ks[:, 1, 1] / stride
            Kc[:, 0, 2] = (Ks[:, 0, 2] - 0.5) / stride + 0.5
            Kc[:, 1, 2] = (Ks[:, 1, 2] - 0.5) / stride + 0.5
        colors, alphas = self._rasterize(g, g.colors, viewmats, Kc, wc, hc, "RGB")
        return (colors[..., :3] + (1.0 - alphas) * grid).contiguous()

    def _sky_batch(self, sky: Sky, cameras: Cameras, snapshot: SceneSnapshot | None = None):
        """``[N, H, W, 3]`` float32 sky on the GPU, bilinear from the coarse grids (as the CPU renderer),
        with ``snapshot``'s far field drawn over the grids (:meth:`_far_over`).

        The coarse grids are computed on the CPU (cached by rotation) and interpolated
        for all cameras in one call.
        """
        torch = self._torch
        grids = [self._skies.get(sky, cameras[i]) for i in range(len(cameras))]
        stride = grids[0][1]
        coarse = torch.from_numpy(np.stack([g for g, _ in grids])).to(self.device)  # [N,hc,wc,3]
        if snapshot is not None and snapshot.far:
            coarse = self._far_over(snapshot, cameras, *self._camera_tensors(cameras), coarse, stride)
        coarse = coarse.permute(0, 3, 1, 2)  # [N,3,hc,wc]
        if stride == 1:
            return coarse.permute(0, 2, 3, 1).contiguous()
        # align_corners=True maps output pixel j to coarse position j / stride exactly.
        hc, wc = coarse.shape[2:]
        full = torch.nn.functional.interpolate(
            coarse, size=((hc - 1) * stride + 1, (wc - 1) * stride + 1), mode="bilinear", align_corners=True
        )
        return full[:, :, : cameras.height, : cameras.width].permute(0, 2, 3, 1)


class _PinnedRing:
    """A few reusable pinned host buffers for small uploads (camera matrices).

    ``take(count)`` returns a float32 pinned view of ``count`` elements and the slot's
    event; the caller records the event after queueing the copy. A slot is refilled
    only after its last copy finished (in practice long done: the ring turns once per
    ``SLOTS`` batches). Allocating pinned memory per batch costs ~40 us of host time.
    """

    SLOTS = 8

    def __init__(self, torch) -> None:
        self._torch = torch
        self._lock = threading.Lock()
        self._slots: list = [None] * self.SLOTS
        self._events = [torch.cuda.Event() for _ in range(self.SLOTS)]
        self._next = 0

    def take(self, count: int):
        torch = self._torch
        with self._lock:
            i = self._next
            self._next = (i + 1) % self.SLOTS
            event = self._events[i]
            event.synchronize()  # a never-recorded event returns at once
            buffer = self._slots[i]
            if buffer is None or buffer.numel() < count:
                buffer = self._slots[i] = torch.empty(max(count, 1024), dtype=torch.float32, pin_memory=True)
        return buffer[:count], event


class _PendingGpuVideo:
    """I420 frames rendered on the GPU; the copy to pinned host memory is queued late
    (see :meth:`GsplatRenderer.submit_video`) and exactly once."""

    def __init__(self, renderer: GsplatRenderer, frames_gpu, rendered, width: int, height: int, scene_version: int, into) -> None:
        self._renderer = renderer
        self._frames_gpu = frames_gpu
        self._into = into
        self._rendered = rendered
        self._lock = threading.Lock()
        self._frames_host = None
        self._copied = None
        self._result: VideoFrames | None = None
        self._size = (width, height)
        self._version = scene_version

    def issue_copy(self) -> None:
        """Queue the copy to the host if nobody has yet (any thread, any number of times)."""
        with self._lock:
            if self._copied is None:
                self._frames_host, self._copied = self._renderer._copy_to_host(self._frames_gpu, self._rendered, self._into)
                self._frames_gpu = None

    def wait(self) -> VideoFrames:
        """Block until the copy is done; the arrays view the pinned buffer (kept alive by them)."""
        if self._result is None:
            self.issue_copy()
            self._renderer._forget(self)
            self._copied.synchronize()
            self._result = VideoFrames(self._frames_host.numpy(), *self._size, self._version, self._into)
            self._into = None
            self._frames_host = None
        return self._result
