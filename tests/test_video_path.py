"""The streaming path: I420 frames from the renderers, the encoder taking them, the player's track."""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np
import pytest
import torch

from bench.compare import psnr
from bench.synthetic import scene_from_chunks, typical_world
from runtime.stream.encoder import EncoderSettings, VideoEncoder, i420_video_frame
from runtime.stream.video_track import PlayerVideoTrack, RenderedFrame
from runtime.world.camera import Cameras, Pose
from runtime.world.render import cuda_available, gsplat_importable
from runtime.world.render.cpu import CpuRenderer
from runtime.world.render.gpu_video import composite_i420_torch, pick_video_kernels
from runtime.world.render.i420_cpu import rgb_to_i420_numba
from runtime.world.render.video import render_video, rgb_to_i420_reference, split_planes, stitch_i420, submit_video
from runtime.world.sky import Sky

SKY = Sky()
W, H = 160, 90


@pytest.fixture(scope="module")
def scene():
    return scene_from_chunks(typical_world(num_views=2, width=96, height=54, seed=1))


def cameras(n: int, width: int = W, height: int = H) -> Cameras:
    return Cameras.concat([Pose(np.zeros(3, np.float32), yaw=0.3 + 0.7 * i, pitch=-0.08).camera(width, height, math.radians(60)) for i in range(n)])


def i420_to_rgb(i420: np.ndarray, width: int, height: int) -> np.ndarray:
    return av.VideoFrame.from_ndarray(i420.reshape(height * 3 // 2, width), format="yuv420p").to_ndarray(format="rgb24")


# ---------------------------------------------------------------- conversion
def test_numba_conversion_equals_reference_and_is_close_to_swscale():
    rgb = np.random.default_rng(0).integers(0, 256, (2, 36, 64, 3), dtype=np.uint8)
    ours = rgb_to_i420_numba(rgb)
    assert np.array_equal(ours, rgb_to_i420_reference(rgb))
    swscale = av.VideoFrame.from_ndarray(rgb[0], format="rgb24").reformat(format="yuv420p").to_ndarray().reshape(-1)
    assert np.abs(ours[0].astype(int) - swscale).max() <= 1  # noise: the hardest case for the chroma filter


def test_stitched_planes_equal_converting_the_stitched_image():
    rgb = np.random.default_rng(1).integers(0, 256, (2, 18, 32, 3), dtype=np.uint8)
    i420 = rgb_to_i420_reference(rgb)
    side_by_side = rgb_to_i420_reference(np.concatenate([rgb[0], rgb[1]], axis=1)[None])[0]
    assert np.array_equal(stitch_i420([i420[0], i420[1]], 32, 18), side_by_side)


def test_cpu_render_video_shows_the_same_picture_as_the_rgb_path(scene):
    renderer = CpuRenderer()
    cams = cameras(2)
    snap = scene.snapshot()
    rgb = renderer.render(snap, cams, SKY).rgb
    frames = render_video(renderer, snap, cams, SKY)
    assert frames.i420.shape == (2, W * H * 3 // 2) and frames.i420.dtype == np.uint8
    for i in range(2):
        # The old path: RGB -> libswscale. The new one: I420 from the renderer.
        old = av.VideoFrame.from_ndarray(rgb[i], format="rgb24").reformat(format="yuv420p").to_ndarray().reshape(-1)
        assert psnr(frames.i420[i], old) >= 45.0
        assert psnr(i420_to_rgb(frames.i420[i], W, H), rgb[i]) >= 30.0  # 4:2:0 loses chroma detail
    y, u, v = frames.planes(1)
    assert y.shape == (H, W) and u.shape == v.shape == (H // 2, W // 2)
    stereo = frames.side_by_side(0, 2)
    assert split_planes(stereo, 2 * W, H)[0][:, W:].tolist() == y.tolist()


def test_pictures_go_into_the_callers_buffers_where_given(scene):
    renderer = CpuRenderer()
    cams = cameras(3)
    snap = scene.snapshot()
    plain = submit_video(renderer, snap, cams, SKY).wait()
    assert plain.written is None
    size = W * H * 3 // 2
    mine = np.zeros(size, np.uint8)
    frames = submit_video(renderer, snap, cams, SKY, into=[None, mine, None]).wait()
    assert frames.written[1] is mine and np.array_equal(mine, plain.i420[1])
    assert frames.picture(1) is mine and np.array_equal(frames.picture(0), plain.i420[0])
    assert np.array_equal(frames.side_by_side(1, 2), stitch_i420([plain.i420[1], plain.i420[2]], W, H))
    with pytest.raises(ValueError, match=r"into\[0\] must be a contiguous \[21600\] uint8 array"):
        submit_video(renderer, snap, cams, SKY, into=[np.zeros(size - 1, np.uint8), None, None])
    with pytest.raises(ValueError, match="into has 1 entries for 3 cameras"):
        submit_video(renderer, snap, cams, SKY, into=[mine])


def test_torch_composite_matches_the_rgb_path():
    gen = torch.Generator().manual_seed(0)
    n, h, w, stride = 2, 38, 100, 4
    colors, alphas = torch.rand((n, h, w, 3), generator=gen), torch.rand((n, h, w, 1), generator=gen)
    colors *= alphas
    grid = torch.rand((n, 11, 26, 3), generator=gen)
    out = torch.empty((n, h * w * 3 // 2), dtype=torch.uint8)
    composite_i420_torch(torch, colors, alphas, grid, stride, out)
    sky = torch.nn.functional.interpolate(grid.permute(0, 3, 1, 2), size=(41, 101), mode="bilinear", align_corners=True)
    sky = sky[:, :, :h, :w].permute(0, 2, 3, 1)
    rgb = torch.floor((colors + (1 - alphas) * sky) * 255 + 0.5).clamp(0, 255).to(torch.uint8).numpy()
    assert np.array_equal(out.numpy(), rgb_to_i420_reference(rgb))


def test_pick_video_kernels_falls_back_or_agrees_on_cpu():
    kernels = pick_video_kernels(torch, "cpu")
    assert kernels.name in ("triton", "torch") and callable(kernels.composite) and callable(kernels.sky_grids)


# ---------------------------------------------------------------- encoder
def test_encoder_takes_i420_and_rgb_and_gives_the_same_picture():
    rgb = np.random.default_rng(2).integers(0, 256, (1, H, W, 3), dtype=np.uint8)
    rgb = np.ascontiguousarray(np.sort(rgb, axis=2))  # some structure
    i420 = rgb_to_i420_reference(rgb)[0]
    settings = EncoderSettings(width=W, height=H, fps=30, bitrate=4_000_000)
    decoded = []
    for image, fmt in ((i420, "yuv420p"), (rgb[0], "rgb24"), (i420_video_frame(i420, W, H), "yuv420p")):
        packets = VideoEncoder(settings).encode(image, 0, pixel_format=fmt)
        assert len(packets) == 1 and packets[0].is_keyframe
        decoder = av.CodecContext.create("h264", "r")
        frames = [f for p in packets for f in decoder.decode(p)] + list(decoder.decode(None))
        decoded.append(frames[0].to_ndarray(format="rgb24"))
    assert psnr(decoded[0], decoded[1]) >= 35.0
    assert np.array_equal(decoded[0], decoded[2])  # a frame made by i420_video_frame is the same picture
    with pytest.raises(ValueError):
        VideoEncoder(settings).encode(i420[:-2], 0, pixel_format="yuv420p")
    with pytest.raises(ValueError, match=f"yuv420p frame of {W}x{H}"):
        VideoEncoder(settings).encode(av.VideoFrame(W + 2, H, "yuv420p"), 0)


def test_i420_video_frame_copies_into_padded_rows():
    w, h = 200, 120  # chroma rows of 100 bytes: FFmpeg pads them
    picture = np.random.default_rng(5).integers(0, 256, w * h * 3 // 2, dtype=np.uint8)
    frame = i420_video_frame(picture, w, h)
    assert frame.planes[1].line_size != w // 2 or frame.planes[0].line_size != w  # the case this test is for
    assert np.array_equal(frame.to_ndarray().reshape(-1), picture)
    with pytest.raises(ValueError, match="need uint8 I420 of 200x120"):
        i420_video_frame(picture[:-1], w, h)


def test_encoder_threads_one_per_stream_up_to_1080p30():
    auto = {(w, h, fps): EncoderSettings(width=w, height=h, fps=fps).auto_threads()
            for w, h, fps in ((640, 360, 30), (1280, 720, 60), (1920, 1080, 30), (1920, 1080, 60), (3840, 1080, 90))}
    assert list(auto.values()) == [1, 1, 1, 2, 4]
    assert VideoEncoder(EncoderSettings(width=W, height=H))._context.thread_count == 1
    assert VideoEncoder(EncoderSettings(width=W, height=H, threads=2))._context.thread_count == 2
    with pytest.raises(ValueError, match="threads must be in"):
        EncoderSettings(threads=17)


def test_constant_quality_sends_less_than_the_cap_and_keeps_the_picture(scene):
    turning = Cameras.concat([Pose(np.zeros(3, np.float32), yaw=0.3 + 0.02 * k, pitch=-0.08).camera(W, H, math.radians(60))
                              for k in range(12)])
    pictures = render_video(CpuRenderer(), scene.snapshot(), turning, SKY).i420
    sent, quality = {}, {}
    for crf in (None, 18):
        encoder = VideoEncoder(EncoderSettings(width=W, height=H, fps=30, bitrate=4_000_000, crf=crf))
        decoder = av.CodecContext.create("h264", "r")
        size, scores = 0, []
        for k, picture in enumerate(pictures):
            for packet in encoder.encode(picture, k * 3000, pixel_format="yuv420p"):
                size += packet.size
                for decoded in decoder.decode(packet):
                    scores.append(psnr(i420_to_rgb(picture, W, H), decoded.to_ndarray(format="rgb24")))
        sent[crf], quality[crf] = size, min(scores)
    # Rate-targeted, the stream spends its 4 Mbit/s whatever the picture needs; CRF 18
    # stops at near-transparent quality, far below the cap.
    assert sent[18] < 0.6 * sent[None], sent
    assert quality[18] > 38.0, quality
    with pytest.raises(ValueError, match=r"crf must be in \[0, 51\]"):
        EncoderSettings(crf=52)


def test_track_encodes_the_newest_picture_and_counts_the_replaced():
    async def main():
        pool = ThreadPoolExecutor(2)
        try:
            settings = EncoderSettings(width=W, height=H, fps=30, bitrate=2_000_000)
            encoded = []
            track = PlayerVideoTrack(settings, pool, encoded.append)
            rgb = np.random.default_rng(3).integers(0, 256, (3, H, W, 3), dtype=np.uint8)
            pictures = rgb_to_i420_reference(rgb)
            # Three pictures before the first recv: the first two are dropped, unencoded.
            for k in range(3):
                track.offer(RenderedFrame(pictures[k], 10.0 + k, k, 5.0 + k, 0.001))
            packet = await asyncio.wait_for(track.recv(), 30)
            assert track.dropped == 2 and encoded[-1].replaced == 2
            assert encoded[-1].input_seq == 2 and packet.is_keyframe and packet.size > 0
            assert encoded[-1].mtp_s is not None  # the oldest input still counts (5.0)
            track.offer(RenderedFrame(pictures[0], 14.0, 3, None, 0.001))
            packet = await asyncio.wait_for(track.recv(), 30)
            assert encoded[-1].input_seq == 3 and not packet.is_keyframe and packet.size > 0 and encoded[-1].replaced == 0
            track.stop()
        finally:
            pool.shutdown(wait=True)

    asyncio.run(main())


# ---------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not (cuda_available() and gsplat_importable()), reason="needs CUDA and gsplat")
def test_gsplat_render_video_matches_cpu_conversion(scene):
    from runtime.world.render.gsplat_renderer import GsplatRenderer
    from runtime.world.render.video import rgb_to_i420

    renderer = GsplatRenderer()
    cams = cameras(3, 320, 180)
    snap = scene.snapshot()
    frames = renderer.render_video(snap, cams, SKY)
    expected = rgb_to_i420(renderer.render(snap, cams, SKY).rgb)
    assert np.abs(frames.i420.astype(int) - expected).max() <= 2
    pending = [renderer.submit_video(snap, cams, SKY) for _ in range(3)]  # overlapped batches
    for p in pending:
        assert np.array_equal(p.wait().i420, frames.i420)
    cpu = rgb_to_i420(CpuRenderer().render(snap, cams, SKY).rgb)
    assert psnr(frames.i420, cpu) >= 40.0

    # Straight into callers' buffers: a page-locked shared-memory ring (a DMA) and a
    # plain array (a blocking copy); the others into the batch's buffer as before.
    from runtime.stream.picture_ring import PictureRing

    size = frames.i420.shape[1]
    ring = PictureRing(size)
    reader = PictureRing(size, name=ring.name)
    unpin = renderer.pin_host_memory(ring.memory)
    assert torch.from_numpy(ring.memory).is_pinned()
    try:
        plain = np.zeros(size, np.uint8)
        for _ in range(4):  # every buffer of the ring, one reused
            slot = ring.reserve(size)
            got = renderer.submit_video(snap, cams, SKY, into=[slot, None, plain]).wait()
            assert got.written[0] is slot and np.array_equal(got.picture(1), frames.i420[1])
            assert np.array_equal(plain, frames.i420[2])
            assert np.array_equal(reader.read(ring.commit(), size), frames.i420[0])
    finally:
        unpin()
        assert not torch.from_numpy(ring.memory).is_pinned()
        reader.close()
        ring.close()
