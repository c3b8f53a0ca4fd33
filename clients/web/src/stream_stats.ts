// Receive-side video statistics from RTCPeerConnection.getStats() (the inbound-rtp entry).

export interface StreamStats {
  /** Received bitrate over the last interval, bits per second. */
  bitrate: number;
  /** Frames decoded per second, as the browser reports it (or derived from counters). */
  decodedFps: number;
  framesDecoded: number;
  framesDropped: number;
  packetsLost: number;
  /** Mean time a frame waited in the jitter buffer, ms. */
  jitterBufferMs: number | null;
  codec: string;
  frameWidth: number;
  frameHeight: number;
}

export const EMPTY_STATS: StreamStats = {
  bitrate: 0,
  decodedFps: 0,
  framesDecoded: 0,
  framesDropped: 0,
  packetsLost: 0,
  jitterBufferMs: null,
  codec: "",
  frameWidth: 0,
  frameHeight: 0,
};

/** Polls one peer connection; call sample() about once a second. */
export class StreamStatsPoller {
  private lastBytes = 0;
  private lastFrames = 0;
  private lastAt = 0;
  private lastJitterDelay = 0;
  private lastEmitted = 0;
  latest: StreamStats = { ...EMPTY_STATS };

  constructor(private readonly pc: RTCPeerConnection) {}

  async sample(): Promise<StreamStats> {
    const report = await this.pc.getStats();
    let inbound: RTCInboundRtpStreamStats | null = null;
    report.forEach((entry: { type: string; kind?: string }) => {
      if (entry.type === "inbound-rtp" && entry.kind === "video") inbound = entry as RTCInboundRtpStreamStats;
    });
    if (!inbound) return this.latest;
    const rtp: RTCInboundRtpStreamStats = inbound;
    const now = rtp.timestamp;
    const bytes = rtp.bytesReceived ?? 0;
    const frames = rtp.framesDecoded ?? 0;
    const seconds = this.lastAt ? (now - this.lastAt) / 1000 : 0;
    const codecEntry = rtp.codecId ? (report.get(rtp.codecId) as { mimeType?: string } | undefined) : undefined;
    // The jitter-buffer counters are cumulative: use this interval's share so the HUD shows now.
    const emitted = rtp.jitterBufferEmittedCount ?? 0;
    const jitterDelay = rtp.jitterBufferDelay ?? 0;
    const newlyEmitted = emitted - this.lastEmitted;
    this.latest = {
      bitrate: seconds > 0 ? (8 * (bytes - this.lastBytes)) / seconds : 0,
      decodedFps: rtp.framesPerSecond ?? (seconds > 0 ? (frames - this.lastFrames) / seconds : 0),
      framesDecoded: frames,
      framesDropped: rtp.framesDropped ?? 0,
      packetsLost: rtp.packetsLost ?? 0,
      jitterBufferMs: newlyEmitted > 0 ? (1000 * (jitterDelay - this.lastJitterDelay)) / newlyEmitted : null,
      codec: codecEntry?.mimeType?.replace(/^video\//, "") ?? "",
      frameWidth: rtp.frameWidth ?? 0,
      frameHeight: rtp.frameHeight ?? 0,
    };
    this.lastBytes = bytes;
    this.lastFrames = frames;
    this.lastAt = now;
    this.lastJitterDelay = jitterDelay;
    this.lastEmitted = emitted;
    return this.latest;
  }
}
