// Points a three.js camera as an OpenCV camera (camera.ts): the three.js camera looks down
// its -z with +y up, which is the OpenCV camera turned half a turn about its x axis.
import * as THREE from "three";
import { FAR_M, NEAR_M, type Mat3, type Mat4 } from "./camera";

const flip = new THREE.Matrix4().makeScale(1, -1, -1); // OpenCV camera axes <-> three.js camera axes
const scratch = new THREE.Matrix4();

/**
 * Point a three.js camera as the OpenCV camera `w2c` with intrinsics `K` for a
 * `width` x `height` picture: the same pixel lands on the same pixel (principal point
 * off centre included).
 */
export function applyOpenCvCamera(camera: THREE.PerspectiveCamera, w2c: Mat4, K: Mat3, width: number, height: number, near = NEAR_M, far = FAR_M): void {
  // three.js view matrix = flip * w2c, so its camera-to-world = inverse(w2c) * flip.
  scratch.set(
    w2c[0]!, w2c[1]!, w2c[2]!, w2c[3]!,
    w2c[4]!, w2c[5]!, w2c[6]!, w2c[7]!,
    w2c[8]!, w2c[9]!, w2c[10]!, w2c[11]!,
    0, 0, 0, 1,
  );
  const c2w = scratch.invert().multiply(flip);
  c2w.decompose(camera.position, camera.quaternion, camera.scale);
  camera.updateMatrixWorld(true);

  const fx = K[0]!, fy = K[4]!, cx = K[2]!, cy = K[5]!;
  // The perspective matrix that maps OpenCV pixel u = fx x/z + cx onto window x in [0, width].
  camera.projectionMatrix.set(
    (2 * fx) / width, 0, 1 - (2 * cx) / width, 0,
    0, (2 * fy) / height, (2 * cy) / height - 1, 0,
    0, 0, -(far + near) / (far - near), (-2 * far * near) / (far - near),
    0, 0, -1, 0,
  );
  camera.projectionMatrixInverse.copy(camera.projectionMatrix).invert();
  // Keep the plain fields roughly right for code that reads them (Spark's LoD, raycasts).
  camera.near = near;
  camera.far = far;
  camera.aspect = width / height;
  camera.fov = THREE.MathUtils.radToDeg(2 * Math.atan(0.5 * height / fy));
}
