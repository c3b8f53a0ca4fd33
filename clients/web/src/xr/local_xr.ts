// Local stereo rendering in the headset (render mode "local"): the splats this browser holds
// (local/), drawn for each eye by three.js's WebXR support from the headset's own poses, at
// the headset's rate: looking around and walking have no network in the loop. The server
// still gets the head pose every frame (planning, avatars) and sends new chunks as they land.
//
// three.js multiplies each eye's pose (WebXR space) by its camera's parent's matrix, so the
// camera hangs under a "room" object whose matrix is the rig's (xr_math.ts): WebXR space to
// worldstream's world (OpenCV axes, +y down), where the scene's splats and avatars live.
import * as THREE from "three";
import { FAR_PASS_FAR_M } from "../local/far_layer";
import type { LocalMode } from "../local/local_mode";
import type { WorldState } from "../world_state";
import { readEye, type EyeCapture } from "./eye_capture";
import type { Rig } from "./xr_math";

/** What the headset frame decided before drawing: where the room is, or null (no pose). */
export type HeadsetStep = (time: number, frame: XRFrame, space: XRReferenceSpace) => Rig | null;

/** The rig as a 4x4: x_world = position + R_yaw · M · (x_xr − origin), with M = diag(1, −1, −1). */
export function roomMatrix(rig: Rig, out = new THREE.Matrix4()): THREE.Matrix4 {
  const c = Math.cos(rig.yaw), s = Math.sin(rig.yaw);
  // R_yaw (a turn about world y, as yawQuat) times M, column by column: M flips y and z.
  const r = [c, 0, -s, 0, -1, 0, -s, 0, -c]; // row-major 3x3 of R_yaw · M
  const o = rig.origin;
  const t = [0, 1, 2].map((i) => rig.position[i]! - (r[3 * i]! * o[0] + r[3 * i + 1]! * o[1] + r[3 * i + 2]! * o[2]));
  return out.set(r[0]!, r[1]!, r[2]!, t[0]!, r[3]!, r[4]!, r[5]!, t[1]!, r[6]!, r[7]!, r[8]!, t[2]!, 0, 0, 0, 1);
}

export class LocalXr {
  /** Headset frames drawn from the splats. */
  framesDrawn = 0;
  private readonly room = new THREE.Object3D();
  private captures: Array<(capture: EyeCapture) => void> = [];

  constructor(
    private readonly local: LocalMode,
    private readonly world: WorldState,
  ) {
    this.room.matrixAutoUpdate = false;
  }

  /** Hand `session` to three.js and draw every headset frame after `step` (head pose, locomotion). */
  async start(session: XRSession, step: HeadsetStep): Promise<void> {
    const r = (await this.local.loadEngine()).renderer;
    const three = r.renderer;
    three.xr.enabled = true;
    three.xr.setReferenceSpaceType("local-floor");
    // three.js gives the headset the camera's depth range: wide enough for the far field.
    r.camera.far = FAR_PASS_FAR_M;
    this.room.add(r.camera);
    r.scene.add(this.room);
    await three.xr.setSession(session);
    const space = three.xr.getReferenceSpace();
    three.setAnimationLoop((time, frame) => {
      const rig = frame && space ? step(time, frame, space) : null;
      if (!rig) return;
      roomMatrix(rig, this.room.matrix);
      this.room.updateMatrixWorld(true);
      const eyeHeight = three.xr.getCamera().cameras[0]?.viewport.w ?? 1000;
      this.local.engine?.avatars.update(this.world.players.values(), this.world.myId, eyeHeight);
      r.renderXr(r.camera);
      this.framesDrawn += 1;
      const eye = three.xr.getCamera().cameras[0]?.viewport;
      if (this.captures.length && eye) {
        const capture = readEye(three.getContext(), { x: eye.x, y: eye.y, width: eye.z, height: eye.w });
        for (const resolve of this.captures.splice(0)) resolve(capture);
      }
    });
  }

  /** Tests: the first eye's picture as drawn in the next headset frame. */
  capture(): Promise<EyeCapture> {
    return new Promise((resolve) => this.captures.push(resolve));
  }

  /** The session ended: the page draws as before. */
  stop(): void {
    const r = this.local.engine?.renderer;
    if (!r) return;
    r.renderer.setAnimationLoop(null);
    r.renderer.xr.enabled = false;
    this.room.remove(r.camera);
    r.scene.remove(this.room);
  }
}
