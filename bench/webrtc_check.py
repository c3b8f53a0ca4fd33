"""Can two aiortc peers on this machine connect? A ten-second check before a long run.

A set of wheels installed with ``pip --no-deps`` is never checked against itself: on the
GPU machine on 2026-12-07, cryptography 51 beside pyOpenSSL 26.4 (which asks for
cryptography < 51) let ICE complete but never finished a DTLS handshake, and every
stream stalled for its whole timeout. This opens two peer connections over loopback with
a data channel (ICE, DTLS and SCTP: everything a video stream needs but the codec) and
says which stage did not finish.

    python -m bench.webrtc_check            # exit 0 when connected, 1 with the stage otherwise
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from importlib import metadata

from aiortc import RTCPeerConnection

import runtime.stream.ice  # noqa: F401  (loopback host candidates on a loopback-only machine)

PACKAGES = ("aiortc", "aioice", "cryptography", "pyOpenSSL", "pylibsrtp", "av")


def versions() -> str:
    """The installed versions of the packages a peer connection depends on."""
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} missing")
    return ", ".join(found)


async def connect(timeout_s: float) -> str | None:
    """Connect two local peers; None when their data channel opens, else the stuck stage."""
    offerer, answerer = RTCPeerConnection(), RTCPeerConnection()
    opened = asyncio.Event()
    channel = offerer.createDataChannel("check")
    channel.on("open", opened.set)
    try:
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        await answerer.setLocalDescription(await answerer.createAnswer())
        await offerer.setRemoteDescription(answerer.localDescription)
        try:
            await asyncio.wait_for(opened.wait(), timeout_s)
            return None
        except asyncio.TimeoutError:
            transceiver = offerer.sctp
            dtls = transceiver.transport.state if transceiver is not None else "none"
            return f"ICE {offerer.iceConnectionState}, DTLS {dtls}, peer connection {offerer.connectionState}"
    finally:
        await offerer.close()
        await answerer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the data channel (default 10)")
    args = parser.parse_args(argv)
    print(versions())
    stuck = asyncio.run(connect(args.timeout))
    if stuck is None:
        print("webrtc check: two local peers connected (ICE, DTLS and SCTP)")
        return 0
    print(f"webrtc check: not connected within {args.timeout:g} s: {stuck}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
