// Watches the video element present frames (requestVideoFrameCallback): counts them,
// measures the presented frame rate, and hands each frame's metadata to listeners.

export interface PresentedFrame {
  /** RTP timestamp of the frame as it arrived (90 kHz), when the browser reports it. */
  rtpTimestamp: number | null;
  /** When the frame was handed to the compositor (performance.now() clock, ms). */
  presentationTime: number;
  /** When the browser expects it on screen (same clock). */
  expectedDisplayTime: number;
  /** When its last packet arrived (same clock), when reported (WebRTC sources only). */
  receiveTime: number | null;
  width: number;
  height: number;
}

type FrameListener = (frame: PresentedFrame) => void;

const FPS_WINDOW_MS = 1000;

export class FrameClock {
  /** Frames presented since the page loaded (across reconnects). */
  presented = 0;
  lastPresentedAt = 0;
  width = 0;
  height = 0;
  private recent: number[] = [];
  private listeners: FrameListener[] = [];

  constructor(private readonly video: HTMLVideoElement) {
    if (!("requestVideoFrameCallback" in HTMLVideoElement.prototype)) return; // HUD shows "–"
    const onFrame = (now: DOMHighResTimeStamp, meta: VideoFrameCallbackMetadata): void => {
      this.frame(now, meta);
      this.video.requestVideoFrameCallback(onFrame);
    };
    this.video.requestVideoFrameCallback(onFrame);
  }

  onFrame(listener: FrameListener): void {
    this.listeners.push(listener);
  }

  /** Frames presented over the last second. */
  fps(now = performance.now()): number {
    while (this.recent.length && this.recent[0]! < now - FPS_WINDOW_MS) this.recent.shift();
    return this.recent.length * (1000 / FPS_WINDOW_MS);
  }

  private frame(now: number, meta: VideoFrameCallbackMetadata): void {
    this.presented += 1;
    this.lastPresentedAt = now;
    this.width = meta.width;
    this.height = meta.height;
    this.recent.push(meta.presentationTime);
    const frame: PresentedFrame = {
      rtpTimestamp: meta.rtpTimestamp ?? null,
      presentationTime: meta.presentationTime,
      expectedDisplayTime: meta.expectedDisplayTime,
      receiveTime: meta.receiveTime ?? null,
      width: meta.width,
      height: meta.height,
    };
    for (const listener of this.listeners) listener(frame);
  }
}
