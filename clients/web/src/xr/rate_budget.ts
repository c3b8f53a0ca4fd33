// A token bucket: head poses go out once per headset frame, but never faster than the
// server accepts (`INPUT_RATE_HZ`; a 120 Hz headset would otherwise run into it and lose
// poses to `rate_limited`).

export class RateBudget {
  private tokens: number;
  private last: number | null = null;

  /** `perSecond` sustained, `burst` at once (times on the performance.now() clock, ms). */
  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
  ) {
    this.tokens = burst;
  }

  /** Spend one token if there is one. */
  take(nowMs: number): boolean {
    if (this.last !== null) this.tokens = Math.min(this.burst, this.tokens + ((nowMs - this.last) / 1000) * this.perSecond);
    this.last = nowMs;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}
