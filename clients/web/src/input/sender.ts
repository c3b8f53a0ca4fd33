// Sends the player's input at the display rate (once per animation frame): the newest
// state wins, nothing queues. A message goes out only while something is held or moved,
// once more when everything is released, and as a slow keepalive otherwise.
import { MAX_LOOK_DELTA, type Input } from "../protocol";
import { clampAxis, type InputSource, type MoveAxes } from "./source";

const KEEPALIVE_MS = 1000;
// The server accepts 120 inputs/s; on a 120-144 Hz display, send on every other frame.
const MIN_SEND_INTERVAL_MS = 9;
const MAX_FRAME_DT_S = 0.1; // after a stall, do not turn a gamepad by a whole second's worth

export interface InputSink {
  /** Try to send; false when not connected (the input is then dropped, not queued). */
  send(input: Input): boolean;
  /** Called with each sent seq and its send time (for latency matching). */
  sent(seq: number, at: number): void;
}

export class InputSender {
  private seq = 0;
  private lastSentAt = 0;
  private lastMoving = false;
  private lastFrameAt = 0;
  private pendingYaw = 0;
  private pendingPitch = 0;
  flying = false;
  /** The axes most recently sent (for the HUD and tests). */
  lastSent: Input | null = null;
  sentCount = 0;
  /** Look change sent so far, radians (tests: sensitivity and invert). */
  readonly lookSent = { yaw: 0, pitch: 0 };

  /** A seq from the sequence input shares with head_pose (the server keeps the newest). */
  takeSeq(): number {
    return this.seq++;
  }

  constructor(
    private readonly sources: InputSource[],
    private readonly sink: InputSink,
  ) {
    const frame = (now: number): void => {
      this.tick(now);
      requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
    // Hidden tabs get no animation frames; make sure nothing stays held meanwhile.
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) this.releaseAll();
    });
  }

  /** A new connection: seqs start again from 0. */
  restart(): void {
    this.seq = 0;
    this.lastSentAt = 0;
    this.lastMoving = false;
    this.pendingYaw = 0;
    this.pendingPitch = 0;
  }

  toggleFly(): void {
    this.flying = !this.flying;
    this.lastSentAt = 0; // send the mode change right away
  }

  releaseAll(): void {
    for (const source of this.sources) source.release();
  }

  private combined(): MoveAxes {
    const total = { forward: 0, right: 0, up: 0, run: false };
    for (const source of this.sources) {
      const a = source.axes();
      total.forward += a.forward;
      total.right += a.right;
      total.up += a.up;
      total.run ||= a.run;
    }
    return { forward: clampAxis(total.forward), right: clampAxis(total.right), up: clampAxis(total.up), run: total.run };
  }

  private tick(now: number): void {
    const dt = this.lastFrameAt ? Math.min(MAX_FRAME_DT_S, (now - this.lastFrameAt) / 1000) : 0;
    this.lastFrameAt = now;
    const move = this.combined();
    for (const source of this.sources) {
      const look = source.takeLook(dt);
      this.pendingYaw += look.yaw;
      this.pendingPitch += look.pitch;
    }
    if (!this.flying) move.up = 0;
    const moving = move.forward !== 0 || move.right !== 0 || move.up !== 0;
    const looking = this.pendingYaw !== 0 || this.pendingPitch !== 0;
    const keepalive = now - this.lastSentAt >= KEEPALIVE_MS;
    if (!moving && !looking && !this.lastMoving && !keepalive) return;
    if (now - this.lastSentAt < MIN_SEND_INTERVAL_MS) return; // look deltas keep accumulating

    // One message carries at most MAX_LOOK_DELTA per axis; any excess goes out next frame.
    const yaw = Math.max(-MAX_LOOK_DELTA, Math.min(MAX_LOOK_DELTA, this.pendingYaw));
    const pitch = Math.max(-MAX_LOOK_DELTA, Math.min(MAX_LOOK_DELTA, this.pendingPitch));
    const input: Input = {
      type: "input",
      seq: this.seq,
      t_ms: performance.timeOrigin + now,
      forward: move.forward,
      right: move.right,
      up: move.up,
      yaw_delta: yaw,
      pitch_delta: pitch,
      run: move.run,
      fly: this.flying,
    };
    if (!this.sink.send(input)) {
      // Not connected: drop it; look changes made meanwhile are dropped too, so that the
      // view does not jump when the stream comes back.
      this.pendingYaw = 0;
      this.pendingPitch = 0;
      return;
    }
    const sentAt = performance.now();
    this.sink.sent(this.seq, sentAt);
    this.seq += 1;
    this.sentCount += 1;
    this.lookSent.yaw += yaw;
    this.lookSent.pitch += pitch;
    this.pendingYaw -= yaw;
    this.pendingPitch -= pitch;
    this.lastSentAt = now;
    this.lastMoving = moving;
    this.lastSent = input;
  }
}
