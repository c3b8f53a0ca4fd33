// Cameras for the local view, in worldstream's conventions (runtime/world/camera.py):
// OpenCV pinhole cameras (+x right, +y down, +z forward), world-to-camera 4x4 matrices,
// 3x3 intrinsics in pixels, world +y pointing down. The three.js scene holds the world in
// these same coordinates; only the three.js camera differs (three_camera.ts). No three.js
// here: the page loads three.js and Spark only when it renders locally.

/** A 4x4 matrix, row-major (as numpy prints it): m[row * 4 + col]. */
export type Mat4 = ArrayLike<number>;
/** A 3x3 matrix, row-major: k[row * 3 + col]. */
export type Mat3 = ArrayLike<number>;

export const DEFAULT_FOV_Y = (60 * Math.PI) / 180;
export const NEAR_M = 0.01; // runtime/world/render/conventions.py NEAR_PLANE
export const FAR_M = 2000;

/** Camera-to-world rotation (columns: right, down, forward) for yaw/pitch/roll (radians),
 * as `rotation_from_yaw_pitch_roll`: yaw 0 faces +z and turns right, pitch > 0 looks up. */
export function rotationFromYawPitchRoll(yaw: number, pitch: number, roll = 0): number[] {
  const cy = Math.cos(yaw), sy = Math.sin(yaw), cp = Math.cos(pitch), sp = Math.sin(pitch);
  const f = [sy * cp, -sp, cy * cp];
  let r = [cy, 0, -sy];
  let d = [f[1]! * r[2]! - f[2]! * r[1]!, f[2]! * r[0]! - f[0]! * r[2]!, f[0]! * r[1]! - f[1]! * r[0]!];
  if (roll) {
    const cr = Math.cos(roll), sr = Math.sin(roll);
    const r2 = r.map((v, i) => cr * v - sr * d[i]!);
    d = r.map((v, i) => sr * v + cr * d[i]!);
    r = r2;
  }
  // Row-major 3x3 with columns right, down, forward.
  return [r[0]!, d[0]!, f[0]!, r[1]!, d[1]!, f[1]!, r[2]!, d[2]!, f[2]!];
}

/** World-to-camera 4x4 (row-major) for an eye at `position` looking along yaw/pitch/roll. */
export function worldToCamera(position: ArrayLike<number>, yaw: number, pitch: number, roll = 0): number[] {
  const R = rotationFromYawPitchRoll(yaw, pitch, roll); // c2w rotation
  const out = new Array<number>(16).fill(0);
  for (let i = 0; i < 3; i++) {
    let t = 0;
    for (let j = 0; j < 3; j++) {
      out[i * 4 + j] = R[j * 3 + i]!; // R^T
      t -= R[j * 3 + i]! * position[j]!;
    }
    out[i * 4 + 3] = t;
  }
  out[15] = 1;
  return out;
}

/** Intrinsics (row-major 3x3) for a vertical field of view, square pixels, centred. */
export function intrinsicsFromFov(width: number, height: number, fovY: number): number[] {
  const f = (0.5 * height) / Math.tan(0.5 * fovY);
  return [f, 0, width / 2, 0, f, height / 2, 0, 0, 1];
}

/** Eye position (world) of a world-to-camera matrix. */
export function cameraCenter(w2c: Mat4): [number, number, number] {
  const c: [number, number, number] = [0, 0, 0];
  for (let j = 0; j < 3; j++) c[j] = -(w2c[0 * 4 + j]! * w2c[3]! + w2c[1 * 4 + j]! * w2c[7]! + w2c[2 * 4 + j]! * w2c[11]!);
  return c;
}
