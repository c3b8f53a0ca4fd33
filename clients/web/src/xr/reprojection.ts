// Rotation-only reprojection ("timewarp"): the last video frame, rendered for an older head
// pose, is shown turned to the newest head pose, so turning the head moves the picture at
// the headset's rate even while the next frame is still on its way.
//
// Which pose a frame was rendered for: every frame's `frame_info.input_seq` names the newest
// `head_pose` the server applied, and the server renders exactly that orientation (collision
// may stop the head's position, never its rotation). So the client keeps the orientations it
// sent, by seq (sent_poses.ts). Translation since then is not corrected (the video carries no depth).
import { quatMultiply, rotate, type Quat } from "./xr_math";

function conjugate(q: Quat): Quat {
  return [q[0], -q[1], -q[2], -q[3]];
}

/**
 * The 3x3 matrix (column-major, for `uniformMatrix3fv`) taking a ray in the current eye's
 * view space (WebXR axes: x right, y up, looking down -z) to the camera that rendered the
 * frame (OpenCV axes: x right, y down, looking down +z).
 *
 * @param rendered camera-to-world rotation the frame was rendered with (w, x, y, z; world, OpenCV)
 * @param current the eye's camera-to-world rotation now (same conventions)
 */
export function warpMatrix(rendered: Quat, current: Quat): Float32Array {
  const delta = quatMultiply(conjugate(rendered), current); // current camera -> rendered camera
  // Columns: the images of the XR view axes x, y, z, i.e. of OpenCV's x, -y, -z.
  const x = rotate(delta, [1, 0, 0]);
  const y = rotate(delta, [0, -1, 0]);
  const z = rotate(delta, [0, 0, -1]);
  return new Float32Array([...x, ...y, ...z]);
}
