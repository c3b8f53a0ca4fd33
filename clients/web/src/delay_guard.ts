// Keeps delay from building up in the browser's video jitter buffer.
//
// After a stall (a busy CPU on either side), Chrome's jitter-buffer estimate jumps to
// hundreds of milliseconds and decays over tens of seconds; jitterBufferTarget = 0 only
// sets a minimum. A fresh peer connection starts with an empty estimate, so when the
// buffer stays high for a few seconds the session renegotiates the video (the server
// replaces the old peer connection on a new rtc_offer). A link that is jittery for real
// would just refresh again, so the gap between refreshes doubles each time.

const HIGH_MS = 150;
const SUSTAIN_MS = 2500;
const FIRST_GAP_MS = 30_000;
const MAX_GAP_MS = 300_000;

export class DelayGuard {
  private highSince = 0;
  private lastRefreshAt = -Infinity;
  private gapMs = FIRST_GAP_MS;
  refreshes = 0;

  constructor(private readonly refresh: () => void) {}

  /** Feed the jitter-buffer delay of the last second (ms, null when unknown). */
  observe(jitterBufferMs: number | null, now = performance.now()): void {
    if (jitterBufferMs === null || jitterBufferMs < HIGH_MS) {
      this.highSince = 0;
      return;
    }
    if (!this.highSince) this.highSince = now;
    if (now - this.highSince < SUSTAIN_MS || now - this.lastRefreshAt < this.gapMs) return;
    if (now - this.lastRefreshAt < 2 * this.gapMs) this.gapMs = Math.min(MAX_GAP_MS, this.gapMs * 2);
    else this.gapMs = FIRST_GAP_MS; // calm for a long while: back to the short gap
    this.lastRefreshAt = now;
    this.highSince = 0;
    this.refreshes += 1;
    this.refresh();
  }
}
