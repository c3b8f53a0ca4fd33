// The player's own pose for the local view, predicted from the inputs this client sends
// so that looking and walking show at once, with no network in the loop. The server stays
// authoritative (it moves the player with collision: runtime/world/movement/motion.py):
// its reports (`players`, 10 a second) pull the prediction back, compared with where the
// prediction was about one report interval plus half a round trip earlier, so that a
// steady walk is not dragged backwards by the report's lag. Standing still, the
// prediction converges onto the server's pose exactly (walls, steps and gravity included).
import type { Input, PoseInfo } from "../protocol";

const WALK_SPEED = 1.5; // m/s, motion.py
const RUN_SPEED = 4.0;
const FLY_SPEED = 6.0;
const MAX_PITCH = (89 * Math.PI) / 180;
const CORRECTION = 0.35; // share of the measured error removed per server report
const HISTORY_MS = 2000;
const LOOK_SETTLE_MS = 400; // yaw follows the server's only after this long without turning

type Vec3 = [number, number, number];

export class PosePredictor {
  position: Vec3 = [0, 0, 0];
  yaw = 0;
  pitch = 0;
  roll = 0;
  /** Latest round trip (ms) to the server, for matching reports to the past. */
  rttMs = 50;
  private held: Input | null = null;
  private lastLookAt = -Infinity;
  private history: Array<{ at: number; position: Vec3 }> = [];

  /** Start from a pose the server gave (welcome; a teleport). */
  reset(pose: PoseInfo): void {
    this.position = [...pose.position];
    this.yaw = pose.yaw;
    this.pitch = pose.pitch;
    this.roll = pose.roll;
    this.held = null;
    this.history = [];
  }

  /** An input went out: its look change applies now; its axes move us until the next one. */
  inputSent(input: Input, now = performance.now()): void {
    const yaw = input.yaw_delta ?? 0;
    const pitch = input.pitch_delta ?? 0;
    if (yaw || pitch) this.lastLookAt = now;
    this.yaw = Math.atan2(Math.sin(this.yaw + yaw), Math.cos(this.yaw + yaw));
    this.pitch = Math.max(-MAX_PITCH, Math.min(MAX_PITCH, this.pitch + pitch));
    this.held = input;
  }

  /** Nothing is held any more (the window lost focus; the connection dropped). */
  release(): void {
    this.held = null;
  }

  /** Move by the held axes over `dtS` seconds (free space: no collision here). */
  advance(dtS: number, now = performance.now()): void {
    const input = this.held;
    if (input && dtS > 0) {
      let f = input.forward ?? 0, r = input.right ?? 0;
      const planar = Math.hypot(f, r);
      if (planar > 1) {
        f /= planar;
        r /= planar;
      }
      const sy = Math.sin(this.yaw), cy = Math.cos(this.yaw);
      const p = this.position;
      if (input.fly) {
        const sp = Math.sin(this.pitch), cp = Math.cos(this.pitch);
        const u = input.up ?? 0;
        const s = FLY_SPEED * dtS;
        p[0] += s * (f * sy * cp + r * cy);
        p[1] += s * (-f * sp - u); // world up is -y
        p[2] += s * (f * cy * cp - r * sy);
      } else {
        const s = (input.run ? RUN_SPEED : WALK_SPEED) * dtS;
        p[0] += s * (f * sy + r * cy);
        p[2] += s * (f * cy - r * sy);
      }
    }
    this.history.push({ at: now, position: [...this.position] });
    while (this.history.length > 2 && this.history[0]!.at < now - HISTORY_MS) this.history.shift();
  }

  /** The server's report of our pose: pull the prediction toward it. */
  serverPose(position: ArrayLike<number>, yaw: number, now = performance.now()): void {
    const then = this.predictedAt(now - this.rttMs / 2 - 50);
    for (let i = 0; i < 3; i++) this.position[i] = this.position[i]! + CORRECTION * (position[i]! - then[i]!);
    for (const h of this.history) for (let i = 0; i < 3; i++) h.position[i] = h.position[i]! + CORRECTION * (position[i]! - then[i]!);
    if (now - this.lastLookAt > LOOK_SETTLE_MS) this.yaw = yaw;
  }

  /** Where the prediction put us at time `at` (the oldest kept, or the newest). */
  private predictedAt(at: number): Vec3 {
    let best = this.position;
    for (const h of this.history) {
      if (h.at > at) break;
      best = h.position;
    }
    return best;
  }
}
