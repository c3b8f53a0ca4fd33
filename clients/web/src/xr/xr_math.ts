// From a WebXR head pose to the server's world, and the headset's locomotion rig.
//
// WebXR spaces are y up, and a view looks down -z. The server's world and cameras follow
// OpenCV (docs/world.md): world +y points down, a camera looks down +z with +y down.
// M = diag(1, -1, -1) maps one to the other (a half turn about x), for positions and for
// camera axes alike, so a head rotation R_xr becomes M R_xr M in the world, and the rig
// (where the player stands and which way the room faces) adds a yaw turn and an offset.

/** Quaternion (w, x, y, z), as the protocol's `head_pose.orientation`. */
export type Quat = [number, number, number, number];
export type Vec3 = [number, number, number];

export function quatMultiply(a: Quat, b: Quat): Quat {
  const [aw, ax, ay, az] = a;
  const [bw, bx, by, bz] = b;
  return [
    aw * bw - ax * bx - ay * by - az * bz,
    aw * bx + ax * bw + ay * bz - az * by,
    aw * by - ax * bz + ay * bw + az * bx,
    aw * bz + ax * by - ay * bx + az * bw,
  ];
}

/** Rotate `v` by unit quaternion `q`. */
export function rotate(q: Quat, v: Vec3): Vec3 {
  const [w, x, y, z] = q;
  // v' = v + 2w (q_v × v) + 2 q_v × (q_v × v)
  const tx = 2 * (y * v[2] - z * v[1]);
  const ty = 2 * (z * v[0] - x * v[2]);
  const tz = 2 * (x * v[1] - y * v[0]);
  return [v[0] + w * tx + (y * tz - z * ty), v[1] + w * ty + (z * tx - x * tz), v[2] + w * tz + (x * ty - y * tx)];
}

/** The server's yaw (radians, turning right about world up; 0 faces +z) as a rotation. */
export function yawQuat(yaw: number): Quat {
  return [Math.cos(yaw / 2), 0, Math.sin(yaw / 2), 0];
}

/** M v for M = diag(1, -1, -1). */
export function xrToWorldAxes(v: Vec3): Vec3 {
  return [v[0], -v[1], -v[2]];
}

/** M R M for a rotation R given as a quaternion (a half turn about x, conjugated). */
export function xrToWorldRotation(q: Quat): Quat {
  return [q[0], q[1], -q[2], -q[3]];
}

/** The player's yaw in the world for a camera rotation (OpenCV, camera-to-world). */
export function yawOf(q: Quat): number {
  const forward = rotate(q, [0, 0, 1]);
  return Math.atan2(forward[0], forward[2]);
}

/**
 * Where the room is in the world: the head pose at `origin` in XR space maps to `position`
 * in the world, and the room is turned `yaw` radians. Locomotion moves and turns the rig.
 */
export class Rig {
  constructor(
    public position: Vec3,
    public yaw: number,
    public origin: Vec3,
  ) {}

  /** A head pose in XR space (position, orientation x y z w as DOMPointReadOnly gives it)
   * as the server's head pose: world position and camera-to-world rotation (w, x, y, z). */
  headInWorld(p: Vec3, orientationXyzw: [number, number, number, number]): { position: Vec3; orientation: Quat } {
    const [x, y, z, w] = orientationXyzw;
    const turn = yawQuat(this.yaw);
    const offset = rotate(turn, xrToWorldAxes([p[0] - this.origin[0], p[1] - this.origin[1], p[2] - this.origin[2]]));
    const position: Vec3 = [this.position[0] + offset[0], this.position[1] + offset[1], this.position[2] + offset[2]];
    return { position, orientation: quatMultiply(turn, xrToWorldRotation([w, x, y, z])) };
  }

  /** Walk: `forward` and `right` metres along the ground, relative to where the head faces. */
  move(headOrientation: Quat, forward: number, right: number): void {
    const yaw = yawOf(headOrientation);
    this.position = [
      this.position[0] + forward * Math.sin(yaw) + right * Math.cos(yaw),
      this.position[1],
      this.position[2] + forward * Math.cos(yaw) - right * Math.sin(yaw),
    ];
  }

  /** Turn the room `angle` radians (right) about the head, so the head stays where it is. */
  turn(headXr: Vec3, angle: number, orientationXyzw: [number, number, number, number]): void {
    const head = this.headInWorld(headXr, orientationXyzw).position;
    this.yaw += angle;
    const moved = this.headInWorld(headXr, orientationXyzw).position;
    this.position = [this.position[0] + head[0] - moved[0], this.position[1] + head[1] - moved[1], this.position[2] + head[2] - moved[2]];
  }
}
