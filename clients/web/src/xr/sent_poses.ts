// The head poses sent to the server, by `head_pose` seq: what a video frame naming that seq
// (`frame_info.input_seq`) was rendered for, and what the server's `head_position` for it is
// compared with (collision).
import type { Quat, Vec3 } from "./xr_math";

const POSES_KEPT = 512; // a few seconds of head poses at headset rates

export interface SentPose {
  position: Vec3;
  orientation: Quat;
}

/** Bounded: the oldest go first. */
export class SentPoses {
  /** The newest seq sent (-1 before any). */
  newest = -1;
  private bySeq = new Map<number, SentPose>();

  add(seq: number, pose: SentPose): void {
    this.bySeq.set(seq, pose);
    this.newest = Math.max(this.newest, seq);
    if (this.bySeq.size > POSES_KEPT) this.bySeq.delete(this.bySeq.keys().next().value!);
  }

  get(seq: number): SentPose | undefined {
    return this.bySeq.get(seq);
  }

  clear(): void {
    this.bySeq.clear();
    this.newest = -1;
  }
}
