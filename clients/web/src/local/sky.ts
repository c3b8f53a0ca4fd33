// The server's sky (runtime/world/sky.py) as a three.js background: a full-screen
// triangle whose fragment shader evaluates the same gradient and sun glow per pixel from
// the pixel's world ray (the scene holds the world in its own OpenCV coordinates) (the server samples it on a coarse grid and interpolates; the
// sky is smooth, so the two agree to within a level or so).
import * as THREE from "three";
import type { SkyInfo } from "../protocol";

/** runtime/world/sky.py's defaults: the sky of a world whose welcome names none. */
export const DEFAULT_SKY: SkyInfo = {
  zenith: [0.25, 0.45, 0.85],
  horizon: [0.75, 0.85, 0.95],
  ground: [0.55, 0.6, 0.65],
  sun_direction: [0.3, -0.6, 0.74],
  sun_color: [1.0, 0.9, 0.7],
};

const VERTEX = /* glsl */ `
uniform mat4 clipToCamera; // the drawing camera's inverse projection
uniform mat3 cameraToWorld; // and its rotation
out vec3 ray;
void main() {
  // One triangle covering the screen, drawn behind everything; each corner carries its
  // world ray (an affine function of the screen position, so interpolation is exact).
  vec2 p = vec2(float((gl_VertexID & 1) << 2) - 1.0, float((gl_VertexID & 2) << 1) - 1.0);
  vec4 c = clipToCamera * vec4(p, 1.0, 1.0);
  ray = cameraToWorld * (c.xyz / c.w);
  gl_Position = vec4(p, 1.0, 1.0);
}`;

const FRAGMENT = /* glsl */ `
uniform vec3 zenith, horizon, ground, sunDirection, sunColor;
in vec3 ray;
out vec4 outColor;
void main() {
  vec3 d = normalize(ray);
  float up = -d.y; // world +y points down
  float t = pow(clamp(up, 0.0, 1.0), 0.6);
  vec3 above = horizon * (1.0 - t) + zenith * t;
  float g = clamp(-up * 4.0, 0.0, 1.0);
  vec3 below = horizon * (1.0 - g) + ground * g;
  vec3 rgb = up >= 0.0 ? above : below;
  float glow = pow(clamp(dot(d, sunDirection), 0.0, 1.0), 64.0);
  outColor = vec4(clamp(rgb + glow * sunColor * 0.6, 0.0, 1.0), 1.0);
}`;

/** A triangle covering the screen, drawn first and behind everything (its vertex shader
 * places the corners from gl_VertexID). */
export function backgroundTriangle(vertexShader: string, fragmentShader: string, uniforms: Record<string, THREE.IUniform>): THREE.Mesh {
  const geometry = new THREE.BufferGeometry();
  geometry.setAttribute("position", new THREE.BufferAttribute(new Float32Array(9), 3)); // three vertices; positions come from gl_VertexID
  const material = new THREE.ShaderMaterial({ vertexShader, fragmentShader, uniforms, glslVersion: THREE.GLSL3, depthTest: false, depthWrite: false });
  const mesh = new THREE.Mesh(geometry, material);
  mesh.frustumCulled = false;
  mesh.renderOrder = -1000;
  return mesh;
}

export class SkyBackground {
  readonly mesh: THREE.Mesh;
  private readonly uniforms = {
    clipToCamera: { value: new THREE.Matrix4() },
    cameraToWorld: { value: new THREE.Matrix3() },
    zenith: { value: new THREE.Vector3() },
    horizon: { value: new THREE.Vector3() },
    ground: { value: new THREE.Vector3() },
    sunDirection: { value: new THREE.Vector3() },
    sunColor: { value: new THREE.Vector3() },
  };

  constructor(sky: SkyInfo = DEFAULT_SKY) {
    this.mesh = backgroundTriangle(VERTEX, FRAGMENT, this.uniforms);
    this.mesh.onBeforeRender = (_renderer, _scene, camera) => this.follow(camera);
    this.setSky(sky);
  }

  setSky(sky: SkyInfo): void {
    const u = this.uniforms;
    u.zenith.value.fromArray(sky.zenith);
    u.horizon.value.fromArray(sky.horizon);
    u.ground.value.fromArray(sky.ground);
    u.sunDirection.value.fromArray(sky.sun_direction).normalize();
    u.sunColor.value.fromArray(sky.sun_color);
  }

  /** Follow whichever camera draws it (each eye of a WebXR view included). */
  private follow(camera: THREE.Camera): void {
    this.uniforms.clipToCamera.value.copy(camera.projectionMatrixInverse);
    this.uniforms.cameraToWorld.value.setFromMatrix4(camera.matrixWorld);
    (this.mesh.material as THREE.ShaderMaterial).uniformsNeedUpdate = true; // set after three.js chose what to upload
  }
}
