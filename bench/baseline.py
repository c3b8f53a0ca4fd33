"""Side by side: how world-model demos stream today (a JPEG per frame over a WebSocket) vs
worldstream's path (H.264/VP8 over WebRTC through aiortc), on the same rendered frames.

Paths, each run in turn at a 30 fps source over loopback:

* ``jpeg-ws-base64``: every frame a JPEG, base64 inside a JSON text message;
* ``jpeg-ws-binary``: every frame a JPEG, one binary WebSocket message;
* ``webrtc-h264`` / ``webrtc-vp8``: the server's own ``PlayerVideo`` (our encoder, aiortc
  sender) to an aiortc receiving peer.

The sender lives in this process, the receiving client in another (as a browser would):
its decoding does not share this process's interpreter. Each frame carries its tick index
in a black/white strip along its top rows (with a checksum), so the client recovers which
frame it decoded on both paths alike; latency = decoded-and-converted-to-RGB at the client
minus produced at the sender (``time.monotonic`` is one clock for both processes).

Equal image quality: before the live runs, the walk is encoded at the WebRTC bitrate and
decoded, and JPEG quality (FFmpeg ``mjpeg`` qscale, 1 best .. 31 worst) is swept; the
JPEG quality used is the one whose PSNR is closest to H.264's without falling below it.
PSNR is measured below the stamp strip, against the unstamped source.

    .venv/bin/python -m bench.baseline [--resolution 640x360] [--duration 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import fractions
import json
import multiprocessing as mp
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bench.common import (
    describe_machine, format_table, machine, percentile, ping_pong_index, psnr, rate_control_label, rendered_walk, write_json,
)

PATHS = ("jpeg-ws-base64", "jpeg-ws-binary", "webrtc-h264", "webrtc-vp8")
JPEG_QSCALES = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 25, 31)
PSNR_EVERY = 3
"""The client keeps every third decoded frame for PSNR (computed after the run, off the clock)."""


# ---------------------------------------------------------------- frame index stamp
STAMP_ROWS = 16
STAMP_BITS = 16
CHECK_BITS = 4
"""A 16-bit tick index plus a 4-bit checksum, as black/white blocks one macroblock tall."""


def _stamp_bits(index: int) -> list[int]:
    value = index % (1 << STAMP_BITS)
    check = bin(value).count("1") % (1 << CHECK_BITS)
    return [(value >> b) & 1 for b in range(STAMP_BITS)] + [(check >> b) & 1 for b in range(CHECK_BITS)]


def stamp(rgb: np.ndarray, index: int) -> np.ndarray:
    """A copy of ``rgb`` with ``index`` drawn across its top ``STAMP_ROWS`` rows."""
    out = rgb.copy()
    width = out.shape[1]
    block = width // (STAMP_BITS + CHECK_BITS)
    out[:STAMP_ROWS] = 0
    for i, bit in enumerate(_stamp_bits(index)):
        if bit:
            out[:STAMP_ROWS, i * block:(i + 1) * block] = 255
    return out


def read_stamp(rgb: np.ndarray) -> int | None:
    """The index drawn by :func:`stamp`, or None when the checksum fails (a damaged frame)."""
    width = rgb.shape[1]
    block = width // (STAMP_BITS + CHECK_BITS)
    # Sample each block's middle only: compression smears its edges.
    rows = rgb[STAMP_ROWS // 4:3 * STAMP_ROWS // 4]
    margin = max(1, block // 4)
    bits = [int(rows[:, i * block + margin:(i + 1) * block - margin].mean() > 127) for i in range(STAMP_BITS + CHECK_BITS)]
    value = sum(b << i for i, b in enumerate(bits[:STAMP_BITS]))
    check = sum(b << i for i, b in enumerate(bits[STAMP_BITS:]))
    return value if check == bin(value).count("1") % (1 << CHECK_BITS) else None


def picture_psnr(decoded: np.ndarray, source: np.ndarray) -> float:
    """PSNR of the picture below the stamp strip."""
    return psnr(decoded[STAMP_ROWS:], source[STAMP_ROWS:])


# ---------------------------------------------------------------- JPEG
class JpegCodec:
    """FFmpeg's mjpeg encoder at a fixed qscale, and its decoder (yuvj420p, as most JPEGs are)."""

    def __init__(self, width: int, height: int, qscale: int) -> None:
        import av

        self._av = av
        enc = av.CodecContext.create("mjpeg", "w")
        enc.width, enc.height, enc.pix_fmt = width, height, "yuvj420p"
        enc.time_base = fractions.Fraction(1, 30)
        enc.qmin = enc.qmax = qscale  # pins the quantiser: a fixed quality, like PIL's quality=
        enc.open()
        self._enc = enc
        self._dec = av.CodecContext.create("mjpeg", "r")

    def encode(self, rgb: np.ndarray) -> bytes:
        frame = self._av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuvj420p")
        return b"".join(bytes(p) for p in self._enc.encode(frame))

    def decode(self, data: bytes) -> np.ndarray:
        frames = self._dec.decode(self._av.Packet(data))
        return frames[0].to_ndarray(format="rgb24")


def jpeg_decode_only() -> "JpegCodec":
    """A decoder-only instance (the client side)."""
    import av

    codec = JpegCodec.__new__(JpegCodec)
    codec._av = av
    codec._dec = av.CodecContext.create("mjpeg", "r")
    return codec


# ---------------------------------------------------------------- quality calibration
def bitrate_for(width: int, height: int) -> int:
    from bench.encode import bitrate_for as encode_bitrate

    return encode_bitrate(width, height)


def video_setting(settings) -> str:
    """How ``settings`` (the server's ``EncoderSettings``) spend bits, as a table cell:
    libx264 at its default constant quality capped at the bitrate, VP8 (and NVENC) at it."""
    cap = f"{settings.bitrate / 1e6:g} Mbit/s"
    rate = rate_control_label(settings)
    return cap if rate == "bitrate" else f"crf {rate}, at most {cap}"


def video_psnr(frames: np.ndarray, codec: str, ticks: int, fps: int = 30) -> dict:
    """Encode ``ticks`` stamped frames with the server's encoder, decode, mean PSNR and Mbit/s."""
    import av

    from runtime.stream.encoder import EncoderSettings, VideoEncoder

    count, height, width, _ = frames.shape
    enc = VideoEncoder(EncoderSettings(codec=codec, width=width, height=height, fps=fps, bitrate=bitrate_for(width, height)))
    dec = av.CodecContext.create({"h264": "h264", "vp8": "vp8"}[codec], "r")
    scores, size = [], 0
    for k in range(ticks):
        source = frames[ping_pong_index(k, count)]
        for packet in enc.encode(stamp(source, k), k * (90_000 // fps)):
            size += packet.size
            for frame in dec.decode(packet):
                scores.append(picture_psnr(frame.to_ndarray(format="rgb24"), source))
    return {"setting": f"{codec} {video_setting(enc.settings)}", "psnr_db": float(np.mean(scores)), "mbit_s": size * 8 * fps / ticks / 1e6}


def jpeg_sweep(frames: np.ndarray, ticks: int, fps: int = 30, qscales=JPEG_QSCALES) -> list[dict]:
    """Mean PSNR and Mbit/s of every JPEG qscale over every third tick of the walk."""
    count, height, width, _ = frames.shape
    rows = []
    for q in qscales:
        codec = JpegCodec(width, height, q)
        scores, sizes = [], []
        for k in range(0, ticks, 3):
            source = frames[ping_pong_index(k, count)]
            data = codec.encode(stamp(source, k))
            sizes.append(len(data))
            scores.append(picture_psnr(codec.decode(data), source))
        rows.append({"setting": f"jpeg q{q}", "qscale": q, "psnr_db": float(np.mean(scores)), "mbit_s": float(np.mean(sizes)) * 8 * fps / 1e6})
    return rows


def match_quality(target_db: float, sweep: list[dict]) -> dict:
    """The JPEG setting closest to ``target_db`` among those not below it (else the best there is)."""
    at_least = [r for r in sweep if r["psnr_db"] >= target_db]
    if at_least:
        return min(at_least, key=lambda r: r["psnr_db"] - target_db)
    return max(sweep, key=lambda r: r["psnr_db"])


# ---------------------------------------------------------------- the receiving client (its own process)
def _client_main(conn, path_name: str, frames_path: str) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_client(conn, path_name))
    frames = np.load(frames_path)
    count = len(frames)
    # PSNR off the clock, after the run: the kept frames against their sources.
    result["psnr_db"] = [picture_psnr(rgb, frames[ping_pong_index(k, count)]) for k, rgb in result.pop("kept").items()]
    conn.send(result)


async def _client(conn, path_name: str) -> dict:
    loop = asyncio.get_running_loop()
    decoded: list[tuple[int, float]] = []
    kept: dict[int, np.ndarray] = {}
    state = {"bad": 0, "bytes": 0}

    def record(rgb: np.ndarray) -> None:
        now = time.monotonic()
        k = read_stamp(rgb)
        if k is None:
            state["bad"] += 1
            return
        decoded.append((k, now))
        if k % PSNR_EVERY == 0:
            kept[k] = rgb

    setup = await loop.run_in_executor(None, conn.recv)
    if path_name.startswith("jpeg"):
        from websockets.asyncio.client import connect

        codec = jpeg_decode_only()
        async with connect(f"ws://127.0.0.1:{setup['port']}", max_size=None, compression=None) as ws:
            async for message in ws:  # ends when the server closes
                state["bytes"] += len(message)
                if isinstance(message, str):
                    data = base64.b64decode(json.loads(message)["jpeg"])
                else:
                    data = message
                record(codec.decode(data))
    else:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
        from aiortc.mediastreams import MediaStreamError

        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("video", direction="recvonly")
        got_track: asyncio.Future = loop.create_future()
        pc.on("track", lambda track: got_track.done() or got_track.set_result(track))
        await pc.setLocalDescription(await pc.createOffer())
        conn.send(pc.localDescription.sdp)
        answer = await loop.run_in_executor(None, conn.recv)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        track = await got_track

        async def receive() -> None:
            while True:
                frame = await track.recv()
                record(frame.to_ndarray(format="rgb24"))

        receiver = asyncio.ensure_future(receive())
        await loop.run_in_executor(None, conn.recv)  # the sender says it has stopped
        await asyncio.sleep(0.5)  # let frames in flight arrive
        receiver.cancel()
        try:
            await receiver
        except (asyncio.CancelledError, MediaStreamError):
            pass
        await pc.close()
    return {"decoded": decoded, "kept": kept, "bad_stamps": state["bad"], "wire_bytes": state["bytes"]}


# ---------------------------------------------------------------- the sender (this process)
async def _tick_frames(frames: np.ndarray, fps: int, duration_s: float):
    """Yield ``(k, stamped rgb, produced_at)`` on the 30 fps clock, as a renderer would."""
    count = len(frames)
    period = 1.0 / fps
    start = time.monotonic() + 0.05
    for k in range(int(duration_s * fps)):
        delay = start + k * period - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        yield k, stamp(frames[ping_pong_index(k, count)], k), time.monotonic()


async def _send_jpeg(conn, frames: np.ndarray, qscale: int, fps: int, duration_s: float, as_base64: bool) -> dict:
    """A demo-style server: one client; per tick encode a JPEG and send it (awaiting the socket)."""
    from websockets.asyncio.server import serve

    height, width = frames.shape[1:3]
    codec = JpegCodec(width, height, qscale)
    produced: dict[int, float] = {}
    sent_bytes = 0
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(1, thread_name_prefix="jpeg")

    async def handler(ws) -> None:
        nonlocal sent_bytes
        async for k, rgb, produced_at in _tick_frames(frames, fps, duration_s):
            produced[k] = produced_at
            data = await loop.run_in_executor(pool, codec.encode, rgb)
            if as_base64:
                message = json.dumps({"type": "frame", "index": k, "jpeg": base64.b64encode(data).decode("ascii")})
                sent_bytes += len(message)
            else:
                message = data
                sent_bytes += len(data)
            await ws.send(message)
        await ws.close()
        done.set()

    async with serve(handler, "127.0.0.1", 0, max_size=None, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        conn.send({"port": port})
        await asyncio.wait_for(done.wait(), duration_s + 60)
    pool.shutdown()
    return {"produced": produced, "payload_bytes": sent_bytes, "setting": f"jpeg q{qscale}"}


async def _send_webrtc(conn, frames: np.ndarray, codec: str, fps: int, duration_s: float) -> dict:
    """The server's PlayerVideo (our encoder + aiortc sender) fed on the 30 fps clock."""
    from runtime.stream.encoder import EncoderSettings
    from runtime.stream.video_track import RenderedFrame
    from runtime.stream.webrtc import PlayerVideo

    height, width = frames.shape[1:3]
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(1, thread_name_prefix="encode")
    # The track takes I420 from the renderer by default; these frames are RGB.
    takes_format = "pixel_format" in {f.name for f in dataclasses.fields(RenderedFrame)}

    def rendered(rgb: np.ndarray, produced_at: float, k: int) -> RenderedFrame:
        if takes_format:
            return RenderedFrame(rgb, produced_at, k, None, 0.0, pixel_format="rgb24")
        return RenderedFrame(rgb, produced_at, k, None, 0.0)

    encoded_bytes = []
    settings = EncoderSettings(codec=codec, width=width, height=height, fps=fps, bitrate=bitrate_for(width, height))
    video = PlayerVideo(settings, pool, lambda e: encoded_bytes.append(e.bytes), label="baseline")
    conn.send({"ready": True})
    offer = await asyncio.wait_for(loop.run_in_executor(None, conn.recv), 60)
    conn.send(await video.answer(offer))
    # Wait for the connection, so the clock starts when frames can flow (as after a page load).
    for _ in range(200):
        if video.pc.connectionState == "connected":
            break
        await asyncio.sleep(0.05)
    produced: dict[int, float] = {}
    async for k, rgb, produced_at in _tick_frames(frames, fps, duration_s):
        produced[k] = produced_at
        video.track.offer(rendered(rgb, produced_at, k))
    await asyncio.sleep(0.3)
    conn.send("stop")
    stats = await video.pc.getStats()
    rtp_bytes = sum(getattr(s, "bytesSent", 0) for s in stats.values() if getattr(s, "type", "") == "outbound-rtp")
    await video.close()
    pool.shutdown()
    return {
        "produced": produced, "payload_bytes": sum(encoded_bytes), "rtp_payload_bytes": rtp_bytes,
        "dropped_before_encode": video.track.dropped, "setting": video_setting(settings),
    }


def run_path(path_name: str, frames: np.ndarray, frames_path: str, qscale: int, fps: int, duration_s: float) -> dict:
    """One live run of one path: sender here, client in a fresh process; the row for the table."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    client = ctx.Process(target=_client_main, args=(child, path_name, frames_path), daemon=True)
    client.start()
    child.close()  # so a dead client reads as EOF here instead of a wait forever
    try:
        if path_name.startswith("jpeg"):
            sent = asyncio.run(_send_jpeg(parent, frames, qscale, fps, duration_s, as_base64=path_name.endswith("base64")))
        else:
            sent = asyncio.run(_send_webrtc(parent, frames, path_name.split("-")[1], fps, duration_s))
        got = parent.recv()
    finally:
        client.join(timeout=20)
        if client.is_alive():
            client.terminate()
    produced = sent["produced"]
    latencies = [(t - produced[k]) * 1e3 for k, t in got["decoded"] if k in produced]
    distinct = len({k for k, _ in got["decoded"] if k in produced})
    row = {
        "path": path_name,
        "setting": sent["setting"],
        "sent_frames": len(produced),
        "decoded_frames": distinct,
        "fps_delivered": distinct / duration_s,
        "latency_ms_p50": percentile(latencies, 50),
        "latency_ms_p95": percentile(latencies, 95),
        "mbit_s": sent["payload_bytes"] * 8 / duration_s / 1e6,
        "psnr_db": float(np.mean(got["psnr_db"])) if got["psnr_db"] else None,
        "bad_stamps": got["bad_stamps"],
    }
    if "dropped_before_encode" in sent:
        row["dropped_before_encode"] = sent["dropped_before_encode"]
        row["rtp_payload_mbit_s"] = sent["rtp_payload_bytes"] * 8 / duration_s / 1e6
    return row


def run(
    width: int = 640,
    height: int = 360,
    duration_s: float = 10.0,
    fps: int = 30,
    frame_count: int = 90,
    paths=PATHS,
    qscales=JPEG_QSCALES,
    frames: np.ndarray | None = None,
    log=print,
) -> dict:
    """Calibrate JPEG quality against H.264, then run every path live; returns rows and the sweep."""
    source = "given"
    if frames is None:
        frames, source = rendered_walk(width, height, frame_count)
        log(f"{width}x{height}: {len(frames)} frames from {source}")
    ticks = min(int(duration_s * fps), 2 * len(frames))
    target = video_psnr(frames, "h264", ticks, fps)
    calibration = [target]
    if any(p.endswith("vp8") for p in paths):
        calibration.append(video_psnr(frames, "vp8", ticks, fps))
    sweep = jpeg_sweep(frames, ticks, fps, qscales)
    chosen = match_quality(target["psnr_db"], sweep)
    log(f"H.264 at {target['setting']}: {target['psnr_db']:.2f} dB -> JPEG {chosen['setting']} ({chosen['psnr_db']:.2f} dB)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as tmp:
        frames_path = os.path.join(tmp, "frames.npy")
        np.save(frames_path, frames)
        for path_name in paths:
            row = run_path(path_name, frames, frames_path, chosen["qscale"], fps, duration_s)
            log(f"{path_name}: {row['fps_delivered']:.1f} fps, p50 {row['latency_ms_p50']} ms, {row['mbit_s']:.2f} Mbit/s, {row['psnr_db']} dB")
            rows.append(row)
    return {
        "resolution": f"{width}x{height}", "fps": fps, "duration_s": duration_s, "frame_source": source,
        "rows": rows, "calibration": calibration + sweep, "jpeg_qscale": chosen["qscale"],
    }


ROW_COLUMNS = [
    ("path", "path"), ("setting", "setting"), ("fps_delivered", "fps delivered"), ("latency_ms_p50", "latency p50 ms"),
    ("latency_ms_p95", "latency p95 ms"), ("mbit_s", "Mbit/s"), ("psnr_db", "PSNR dB"), ("decoded_frames", "decoded"),
    ("sent_frames", "sent"),
]
CALIBRATION_COLUMNS = [("setting", "setting"), ("psnr_db", "PSNR dB"), ("mbit_s", "Mbit/s at 30 fps")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--resolution", default="640x360")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds each path streams")
    ap.add_argument("--fps", type=int, default=30, help="source frame rate")
    ap.add_argument("--frames", type=int, default=90, help="rendered frames in the walk (played ping-pong)")
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--json", dest="json_path", default=None)
    args = ap.parse_args()
    width, height = (int(v) for v in args.resolution.lower().split("x"))
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    for p in paths:
        if p not in PATHS:
            ap.error(f"unknown path {p!r}; choose from {PATHS}")
    print(describe_machine(machine()))
    result = run(width, height, args.duration, args.fps, args.frames, paths)
    print(f"\nQuality calibration ({result['resolution']}, PSNR below the stamp strip; JPEG q{result['jpeg_qscale']} chosen):")
    print(format_table(result["calibration"], CALIBRATION_COLUMNS))
    print(f"\nLive, {result['fps']} fps source, {result['duration_s']:g} s per path, loopback:")
    print(format_table(result["rows"], ROW_COLUMNS))
    write_json(args.json_path, {"benchmark": "baseline", "args": vars(args), **result})


if __name__ == "__main__":
    main()
