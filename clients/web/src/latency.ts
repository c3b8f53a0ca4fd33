// Input-to-display latency, measured in the browser.
//
// For each input we send we note performance.now(). The server sends a frame_info for every
// video frame: its RTP timestamp and the newest input seq the frame shows. When the video
// element presents a frame (requestVideoFrameCallback), its metadata carries the frame's RTP
// timestamp and presentation time, so
//     latency = presentationTime(first presented frame showing seq s) - sentAt(s).
// Both times are on the performance.now() clock of this page: no clock sync is needed.
import type { PresentedFrame } from "./frame_clock";

interface FrameInfoEntry {
  rtp: number;
  inputSeq: number;
  arrival: number;
}

interface PendingFrame {
  wireRtp: number;
  presentationTime: number;
  receiveTime: number | null;
  seenAt: number;
}

export interface LatencySummary {
  p50: number | null;
  p95: number | null;
  samples: number;
  /** Presented frames matched to a frame_info (and so to an input). */
  matchedFrames: number;
  /** How the wire RTP timestamps map onto the server's (null until known). */
  rtpOffset: number | null;
}

const INFO_KEEP_MS = 5000;
const INPUT_KEEP_MS = 10000;
const WINDOW_MS = 10000;
const WINDOW_MAX_SAMPLES = 600;
const PENDING_KEEP_MS = 500;

/** Percentile of a sorted array by nearest rank. */
export function percentile(sorted: number[], p: number): number | null {
  if (!sorted.length) return null;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

/**
 * Finds the constant offset between RTP timestamps as they arrive and as the server reports
 * them. Ideally it is 0, but an RTP sender may add a random origin to every timestamp (aiortc
 * does). When frames are evenly spaced, shifting by a whole frame also matches, so candidates
 * are told apart by arrival times: a frame's packets arrive just after its frame_info, so the
 * right offset is the one with the smallest lag that is not clearly negative.
 */
class RtpOffsetEstimator {
  offset: number | null = null;
  private votes = new Map<number, { n: number; lagSum: number }>();
  private frames = 0;
  private misses = 0;

  /** Vote with one presented frame; returns the offset when known. */
  observe(wireRtp: number, receiveTime: number | null, infos: FrameInfoEntry[], byRtp: Map<number, FrameInfoEntry>): void {
    if (this.offset !== null) {
      if (byRtp.has((wireRtp - this.offset) >>> 0)) this.misses = 0;
      else if (++this.misses > 90) this.reset(); // the stream restarted under a new origin
      return;
    }
    if (receiveTime === null) {
      // No arrival time to compare: trust exact matches only.
      if (byRtp.has(wireRtp)) this.offset = 0;
      return;
    }
    this.frames += 1;
    for (const info of infos) {
      const lag = receiveTime - info.arrival;
      if (lag < -150 || lag > 400) continue;
      const offset = (wireRtp - info.rtp) >>> 0;
      const vote = this.votes.get(offset) ?? { n: 0, lagSum: 0 };
      vote.n += 1;
      vote.lagSum += lag;
      this.votes.set(offset, vote);
    }
    if (this.frames >= 12) this.decide();
  }

  private decide(): void {
    let best: number | null = null;
    let bestLag = Infinity;
    for (const [offset, vote] of this.votes) {
      if (vote.n < 0.7 * this.frames) continue;
      const lag = vote.lagSum / vote.n;
      if (lag >= -10 && lag < bestLag) {
        best = offset;
        bestLag = lag;
      }
    }
    if (best !== null) this.offset = best;
    else if (this.frames > 200) this.reset(); // no consistent mapping; start over
  }

  reset(): void {
    this.offset = null;
    this.votes.clear();
    this.frames = 0;
    this.misses = 0;
  }
}

export class LatencyMeter {
  private sentAt = new Map<number, number>();
  private infos: FrameInfoEntry[] = [];
  private infoByRtp = new Map<number, FrameInfoEntry>();
  private pending: PendingFrame[] = [];
  private samples: Array<{ at: number; ms: number }> = [];
  private lastCountedSeq = -1;
  /** When this connection's first frame was presented; earlier inputs waited for the stream, not the loop. */
  private streamStartedAt: number | null = null;
  private offsets = new RtpOffsetEstimator();
  matchedFrames = 0;

  /** A new connection: seqs restart, and so may the RTP timeline. */
  reset(): void {
    this.sentAt.clear();
    this.infos = [];
    this.infoByRtp.clear();
    this.pending = [];
    this.lastCountedSeq = -1;
    this.streamStartedAt = null;
    this.offsets.reset();
  }

  inputSent(seq: number, at = performance.now()): void {
    this.sentAt.set(seq, at);
    if (this.sentAt.size > 2000) {
      for (const [s, t] of this.sentAt) {
        if (t >= at - INPUT_KEEP_MS) break;
        this.sentAt.delete(s);
      }
    }
  }

  frameInfo(rtp: number, inputSeq: number, arrival = performance.now()): void {
    const entry = { rtp: rtp >>> 0, inputSeq, arrival };
    this.infos.push(entry);
    this.infoByRtp.set(entry.rtp, entry);
    while (this.infos.length && this.infos[0]!.arrival < arrival - INFO_KEEP_MS) {
      const old = this.infos.shift()!;
      if (this.infoByRtp.get(old.rtp) === old) this.infoByRtp.delete(old.rtp);
    }
    if (this.pending.length) this.resolvePending(arrival);
  }

  framePresented(frame: PresentedFrame): void {
    if (frame.rtpTimestamp === null) return;
    const wireRtp = frame.rtpTimestamp >>> 0;
    this.offsets.observe(wireRtp, frame.receiveTime, this.infos, this.infoByRtp);
    this.pending.push({
      wireRtp,
      presentationTime: frame.presentationTime,
      receiveTime: frame.receiveTime,
      seenAt: performance.now(),
    });
    this.resolvePending(performance.now());
  }

  /** Match presented frames to frame_infos (a frame_info may trail its frame slightly). */
  private resolvePending(now: number): void {
    const offset = this.offsets.offset;
    const still: PendingFrame[] = [];
    for (const frame of this.pending) {
      const info = offset === null ? undefined : this.infoByRtp.get((frame.wireRtp - offset) >>> 0);
      if (info) this.matched(info, frame.presentationTime);
      else if (now - frame.seenAt < PENDING_KEEP_MS) still.push(frame);
    }
    this.pending = still;
  }

  private matched(info: FrameInfoEntry, presentationTime: number): void {
    this.matchedFrames += 1;
    this.streamStartedAt ??= presentationTime;
    if (info.inputSeq <= this.lastCountedSeq) return; // not the first frame showing this input
    this.lastCountedSeq = info.inputSeq;
    const sent = this.sentAt.get(info.inputSeq);
    if (sent === undefined || presentationTime < sent || sent < this.streamStartedAt) return;
    this.samples.push({ at: presentationTime, ms: presentationTime - sent });
  }

  /** The input seq a presented frame shows (its RTP timestamp as received), once matched to its frame_info. */
  inputSeqOf(wireRtp: number): number | null {
    const offset = this.offsets.offset;
    if (offset === null) return null;
    return this.infoByRtp.get((wireRtp - offset) >>> 0)?.inputSeq ?? null;
  }

  /** The input seq of the newest frame_info (null before any on this connection). */
  get newestInputSeq(): number | null {
    return this.infos.length ? this.infos[this.infos.length - 1]!.inputSeq : null;
  }

  summary(now = performance.now()): LatencySummary {
    while (this.samples.length > WINDOW_MAX_SAMPLES || (this.samples.length && this.samples[0]!.at < now - WINDOW_MS)) {
      this.samples.shift();
    }
    const sorted = this.samples.map((s) => s.ms).sort((a, b) => a - b);
    return {
      p50: percentile(sorted, 50),
      p95: percentile(sorted, 95),
      samples: sorted.length,
      matchedFrames: this.matchedFrames,
      rtpOffset: this.offsets.offset,
    };
  }
}
