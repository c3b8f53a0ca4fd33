"""Video encoding with PyAV, outside aiortc.

aiortc's own encoders cap H.264 at 30 fps and 0.5-3 Mbps (VP8 at 0.25-1.5 Mbps) and
encode on aiortc's default executor. We encode ourselves, with our own frame rate,
bitrate and thread pool, and hand aiortc finished :class:`av.Packet` s, which its
sender packetizes without re-encoding (``Encoder.pack``).

Frames arrive as I420 (``yuv420p``, what the renderers' ``render_video`` returns): either
already in an ``av.VideoFrame`` (:func:`i420_video_frame`; the media workers copy each
picture out of its ring straight into one) or as an array copied into one here, with no
colour conversion; RGB still works.

H.264 uses ``h264_nvenc`` where PyAV has it and it opens on this machine (a GPU with
NVENC), else libx264; ``WORLDSTREAM_NVENC=0`` turns NVENC off.

An encoder is used by one thread at a time (one per player's track); it is not
thread-safe. PyAV holds the interpreter lock for much of an encode, so the server puts
players' encoders in media worker processes (``media_pool``).
"""

from __future__ import annotations

import fractions
import functools
import logging
import math
import os
import time
from dataclasses import dataclass

import av
import numpy as np

VIDEO_CLOCK_HZ = 90_000
"""RTP clock rate of video; packet timestamps are in these units."""
TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_HZ)
CODECS = ("h264", "vp8")
PIXEL_FORMATS = ("yuv420p", "rgb24")
log = logging.getLogger("worldstream.encoder")


def default_bitrate(width: int, height: int, fps: int) -> int:
    """Bits per second for a stream with no bitrate given: 6 Mbit/s at 1280x720@30, scaled
    with the pixel count and the square root of the frame rate, at least 500 kbit/s
    (1.5 Mbit/s at 640x360@30, 8.5 Mbit/s at 1280x720@60)."""
    return max(500_000, int(6_000_000 * (width * height) / (1280 * 720) * math.sqrt(fps / 30)))


def i420_video_frame(picture: np.ndarray, width: int, height: int) -> av.VideoFrame:
    """One I420 picture (``[H*W*3/2]`` uint8, layout: ``runtime.world.render.video``) in a
    new ``av.VideoFrame``: one copy per plane into the frame's own buffers.

    Why not ``av.VideoFrame.from_ndarray``: it costs over twice as much (0.30 against 0.13 ms
    for 1280x720 on the 2-core dev machine, PyAV 18), once per player per frame. The plane
    offsets are ``runtime.world.render.video.split_planes``'s, written out: importing that
    module loads the world package (numba included, 0.4 s) into every media worker.
    """
    size = width * height
    flat = picture.reshape(-1)
    if flat.dtype != np.uint8 or flat.size != size * 3 // 2:
        raise ValueError(
            f"i420_video_frame: need uint8 I420 of {width}x{height} ({size * 3 // 2} bytes), got {picture.dtype} {picture.shape}"
        )
    frame = av.VideoFrame(width, height, "yuv420p")
    start = 0
    for plane, (w, h) in zip(frame.planes, ((width, height), (width // 2, height // 2), (width // 2, height // 2))):
        rows = np.frombuffer(plane, np.uint8).reshape(h, plane.line_size)  # rows may be padded
        rows[:, :w] = flat[start : start + w * h].reshape(h, w)
        start += w * h
    return frame


@functools.lru_cache(maxsize=1)
def nvenc_available() -> bool:
    """True when PyAV has ``h264_nvenc`` and it opens here (needs an NVENC-capable GPU).

    An H100 has no NVENC: the codec is listed but opening it fails, so this opens a
    small context once and remembers the answer.
    """
    if os.environ.get("WORLDSTREAM_NVENC", "1") == "0" or "h264_nvenc" not in av.codecs_available:
        return False
    try:
        ctx = av.CodecContext.create("h264_nvenc", "w")
        ctx.width, ctx.height, ctx.pix_fmt = 256, 144, "yuv420p"
        ctx.time_base = TIME_BASE
        ctx.open()
    except Exception as exc:  # no device, no driver support, no NVENC engine
        log.info("h264_nvenc present but does not open here (%s): using libx264", exc)
        return False
    return True


@dataclass(frozen=True)
class EncoderSettings:
    """How to encode one stream.

    Attributes:
        codec: ``"h264"`` (libx264, constrained baseline) or ``"vp8"`` (libvpx).
        width, height: frame size in pixels (even numbers).
        fps: nominal frame rate (rate control and level selection; frames may come slower).
        bitrate: bits per second: the most a stream sends with ``crf`` (libx264), else the
            rate it aims at.
        crf: libx264's constant rate factor (0-51, lower is better), capped at ``bitrate``;
            ``None`` encodes at ``bitrate`` whatever the picture needs. The default, 18,
            is close to transparent and spends bits only where the picture has detail: on
            the procedural world's 720p30 walk, 2.1 Mbit/s at 43.4 dB PSNR against 7.8 Mbit/s
            at 43.9 dB when targeting 8 Mbit/s, for a quarter less encode time and a quarter
            of the packets to send (``bench/encode.py --crf off,18``). NVENC and VP8 stay
            rate-targeted.
        keyframe_interval_s: a keyframe at least this often (besides those requested
            by the receiver), so a receiver that lost packets without asking recovers.
        hardware: use ``h264_nvenc`` for H.264 when :func:`nvenc_available`.
        threads: software encoder threads for this stream (x264 slice threads); 0 =
            :meth:`auto_threads`: one up to 1080p30's pixel rate. One because a server
            encodes many streams at once, each in its own thread, and with every core busy
            slice threads wait on each other: 10 players at 720p30 through the media
            workers on the 2-core dev machine were sent 25.9 fps with one thread and 25.1
            with two, at 5.9 against 6.1 CPU ms per frame (``bench/media.py
            --encode-threads 1,2``). On an idle machine two threads encode a 720p frame in
            3.3 ms instead of 4.0.
    """

    codec: str = "h264"
    width: int = 640
    height: int = 360
    fps: int = 30
    bitrate: int = 2_000_000
    keyframe_interval_s: float = 4.0
    hardware: bool = True
    threads: int = 0
    crf: int | None = 18

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"EncoderSettings.codec must be one of {CODECS}, got {self.codec!r}")
        if self.width % 2 or self.height % 2 or self.width < 16 or self.height < 16:
            raise ValueError(f"EncoderSettings: size must be even and >= 16, got {self.width}x{self.height}")
        if not 1 <= self.fps <= 240:
            raise ValueError(f"EncoderSettings.fps must be in [1, 240], got {self.fps}")
        if not 50_000 <= self.bitrate <= 100_000_000:
            raise ValueError(f"EncoderSettings.bitrate must be in [50 kbit/s, 100 Mbit/s], got {self.bitrate}")
        if not 0 <= self.threads <= 16:
            raise ValueError(f"EncoderSettings.threads must be in [0, 16] (0 = automatic), got {self.threads}")
        if self.crf is not None and not 0 <= self.crf <= 51:
            raise ValueError(f"EncoderSettings.crf must be in [0, 51] or None (encode at the bitrate), got {self.crf}")

    def encoder_name(self) -> str:
        """The FFmpeg encoder these settings open here: ``libx264``, ``h264_nvenc`` or ``libvpx``."""
        if self.codec == "vp8":
            return "libvpx"
        return "h264_nvenc" if self.hardware and nvenc_available() else "libx264"

    def constant_quality(self) -> bool:
        """True when streams encode at ``crf`` capped at ``bitrate`` (libx264 only)."""
        return self.crf is not None and self.encoder_name() == "libx264"

    ONE_THREAD_PIXEL_RATE = 1920 * 1080 * 30
    """Pixels per second one encoder thread takes on: 1080p30 or 720p60, a frame in about a
    quarter of its interval on the dev machine's cores (720p: ~4 ms, 1080p: ~9 ms)."""

    def auto_threads(self) -> int:
        """Threads for ``threads=0``: one, two above :data:`ONE_THREAD_PIXEL_RATE`, four above
        four times it (e.g. stereo 1080p at 90 fps), so that a big stream still encodes in
        well under its frame interval."""
        rate = self.width * self.height * self.fps
        return 1 if rate <= self.ONE_THREAD_PIXEL_RATE else 2 if rate <= 4 * self.ONE_THREAD_PIXEL_RATE else 4


class VideoEncoder:
    """I420 (or RGB) frames in, encoded packets out (one packet per frame: no B-frames, no lookahead).

    Attributes:
        codec_name: the FFmpeg encoder in use (``libx264``, ``h264_nvenc``, ``libvpx``).
    """

    def __init__(self, settings: EncoderSettings) -> None:
        self.settings = settings
        self.codec_name = settings.encoder_name()
        self._context = self._open(settings, self.codec_name)
        self._last_keyframe_pts: int | None = None
        self.last_encode_s = 0.0

    @staticmethod
    def _open(s: EncoderSettings, codec_name: str) -> av.VideoCodecContext:
        threads = s.threads or s.auto_threads()
        constant_quality = s.constant_quality()  # nvenc_available is cached: no second probe
        if codec_name == "h264_nvenc":
            ctx = av.CodecContext.create("h264_nvenc", "w")
            ctx.options = {
                "preset": "p1",  # fastest
                "tune": "ull",  # ultra-low latency: no B-frames, no lookahead
                "zerolatency": "1",
                "delay": "0",
                "rc": "cbr",
                "profile": "baseline",
                "forced-idr": "1",  # a forced keyframe is an IDR (receivers can join)
                "maxrate": str(s.bitrate),
                "bufsize": str(max(s.bitrate // 2, 1)),
            }
        elif codec_name == "libx264":
            ctx = av.CodecContext.create("libx264", "w")
            options = {
                "preset": "ultrafast",
                "tune": "zerolatency",  # no B-frames, no lookahead, no frame threads
                "profile": "baseline",  # constrained baseline: every browser decodes it
                "maxrate": str(s.bitrate),
                "bufsize": str(max(s.bitrate // 2, 1)),
                "x264-params": "scenecut=0:repeat-headers=1:aud=0",
            }
            if constant_quality:  # capped CRF: maxrate and bufsize bound it; no bit_rate below
                options["crf"] = str(s.crf)
            ctx.options = options
        else:
            ctx = av.CodecContext.create("libvpx", "w")
            ctx.options = {
                "deadline": "realtime",
                "cpu-used": "8",
                "lag-in-frames": "0",
                "error-resilient": "1",
                "minrate": str(s.bitrate),
                "maxrate": str(s.bitrate),
                "bufsize": str(s.bitrate),
                "undershoot-pct": "95",
                "static-thresh": "1",
            }
            ctx.qmin = 4
            ctx.qmax = 56
        ctx.width = s.width
        ctx.height = s.height
        ctx.pix_fmt = "yuv420p"
        if not constant_quality:
            ctx.bit_rate = s.bitrate
        ctx.framerate = fractions.Fraction(s.fps, 1)
        ctx.time_base = TIME_BASE
        ctx.gop_size = 100_000  # keyframes only when we ask (see keyframe_interval_s)
        ctx.thread_count = threads
        ctx.open()
        return ctx

    def encode(self, image: np.ndarray | av.VideoFrame, pts: int, keyframe: bool = False, pixel_format: str = "rgb24") -> list[av.Packet]:
        """Encode one frame shown at ``pts`` (90 kHz units).

        Args:
            image: a ``yuv420p`` ``av.VideoFrame`` of the stream's size, encoded as it is
                (the same frame may be encoded again, to repeat a picture); or an array:
                ``pixel_format="rgb24"``: ``[H, W, 3]`` uint8 (converted by libswscale);
                ``"yuv420p"``: one I420 picture, ``[H*W*3/2]`` or ``[H*3/2, W]`` uint8
                (layout: ``runtime.world.render.video``), copied in without conversion.
            keyframe: force an IDR/key frame (e.g. after a receiver's PLI).
        Returns the packets (normally exactly one) with ``pts`` and ``time_base`` set.
        """
        s = self.settings
        start = time.perf_counter()
        interval = int(s.keyframe_interval_s * VIDEO_CLOCK_HZ)
        if self._last_keyframe_pts is None or pts - self._last_keyframe_pts >= interval:
            keyframe = True
        frame = self._video_frame(image, pixel_format)
        frame.pts = pts
        frame.time_base = TIME_BASE
        frame.pict_type = av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        packets = list(self._context.encode(frame))
        for packet in packets:
            packet.pts = pts
            packet.dts = pts
            packet.time_base = TIME_BASE
        if keyframe:
            self._last_keyframe_pts = pts
        self.last_encode_s = time.perf_counter() - start
        return packets

    def _video_frame(self, image: np.ndarray | av.VideoFrame, pixel_format: str) -> av.VideoFrame:
        s = self.settings
        if isinstance(image, av.VideoFrame):
            if (image.width, image.height, image.format.name) != (s.width, s.height, "yuv420p"):
                raise ValueError(
                    f"VideoEncoder.encode: need a yuv420p frame of {s.width}x{s.height}, "
                    f"got {image.format.name} {image.width}x{image.height}"
                )
            return image
        if pixel_format == "yuv420p":
            return i420_video_frame(image, s.width, s.height)
        if pixel_format == "rgb24":
            if image.shape != (s.height, s.width, 3) or image.dtype != np.uint8:
                raise ValueError(f"VideoEncoder.encode: need uint8 [{s.height}, {s.width}, 3], got {image.dtype} {image.shape}")
            return av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(format="yuv420p")
        raise ValueError(f"VideoEncoder.encode: pixel_format must be one of {PIXEL_FORMATS}, got {pixel_format!r}")

    def close(self) -> None:
        self._context = None  # PyAV frees the codec context when collected
