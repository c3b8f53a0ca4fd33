// What every input device (keyboard+mouse, touch, gamepad) reports to the input sender.

/** Held movement, each axis in [-1, 1]. */
export interface MoveAxes {
  forward: number;
  right: number;
  up: number;
  run: boolean;
}

/** Look change in radians: positive yaw turns right, positive pitch looks up. */
export interface LookDelta {
  yaw: number;
  pitch: number;
}

export interface InputSource {
  /** Movement held right now. */
  axes(): MoveAxes;
  /** Look change since the last call (then reset). `dt` (s) lets rate-based sticks integrate. */
  takeLook(dt: number): LookDelta;
  /** Forget held keys/touches (window lost focus: a key-up may never come). */
  release(): void;
}

/** Look deltas summed between sends (pointer and touch drags arrive as events). */
export class LookAccumulator {
  private yaw = 0;
  private pitch = 0;

  add(yaw: number, pitch: number): void {
    this.yaw += yaw;
    this.pitch += pitch;
  }

  /** The sum since the last take, then zero. */
  take(): LookDelta {
    const look = { yaw: this.yaw, pitch: this.pitch };
    this.yaw = 0;
    this.pitch = 0;
    return look;
  }
}

export const NO_MOVE: MoveAxes = { forward: 0, right: 0, up: 0, run: false };

export function clampAxis(v: number): number {
  return Math.max(-1, Math.min(1, v));
}
