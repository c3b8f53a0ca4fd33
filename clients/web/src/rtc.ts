// The WebRTC half of a session: one receive-only video track, tuned for the lowest delay.

const ICE_GATHER_TIMEOUT_MS = 3000;

/** Resolve once ICE gathering completes (loopback needs no trickle), or after a timeout. */
function iceGatheringDone(pc: RTCPeerConnection): Promise<void> {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = window.setTimeout(finish, ICE_GATHER_TIMEOUT_MS);
    function finish(): void {
      window.clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    }
    function check(): void {
      if (pc.iceGatheringState === "complete") finish();
    }
    pc.addEventListener("icegatheringstatechange", check);
  });
}

/**
 * Ask the receiver to play frames out as soon as they decode. Chrome otherwise grows its
 * jitter buffer on a bursty stream, and that delay never shrinks back on its own.
 */
function minimiseReceiverDelay(receiver: RTCRtpReceiver): void {
  try {
    receiver.jitterBufferTarget = 0;
  } catch {
    /* not supported in this browser */
  }
  const legacy = receiver as RTCRtpReceiver & { playoutDelayHint?: number };
  if ("playoutDelayHint" in legacy) legacy.playoutDelayHint = 0;
}

export class VideoLink {
  readonly pc: RTCPeerConnection;
  private closed = false;

  constructor(
    private readonly video: HTMLVideoElement,
    onState: (state: RTCPeerConnectionState) => void,
  ) {
    // Loopback / LAN: host candidates suffice, so no STUN server (nothing outside is reached).
    this.pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: "max-bundle" });
    const transceiver = this.pc.addTransceiver("video", { direction: "recvonly" });
    minimiseReceiverDelay(transceiver.receiver);
    this.pc.ontrack = (event) => {
      minimiseReceiverDelay(event.receiver);
      this.video.srcObject = event.streams[0] ?? new MediaStream([event.track]);
      void this.video.play().catch(() => {
        /* autoplay of a muted video is allowed; a refusal would show as "no frames" */
      });
    };
    this.pc.onconnectionstatechange = () => onState(this.pc.connectionState);
  }

  /** Build the offer with every ICE candidate inside it; returns its SDP text. */
  async offer(): Promise<string> {
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    await iceGatheringDone(this.pc);
    const sdp = this.pc.localDescription?.sdp;
    if (!sdp) throw new Error("no local description after ICE gathering");
    return sdp;
  }

  async answer(sdp: string): Promise<void> {
    if (this.closed) return;
    await this.pc.setRemoteDescription({ type: "answer", sdp });
  }

  async remoteCandidate(candidate: string, sdpMid: string | null, sdpMLineIndex: number | null): Promise<void> {
    if (this.closed) return;
    await this.pc.addIceCandidate(candidate ? { candidate, sdpMid, sdpMLineIndex } : null);
  }

  close(): void {
    this.closed = true;
    this.pc.ontrack = null;
    this.pc.onconnectionstatechange = null;
    this.pc.close();
  }
}
