// The far field drawn behind the scene, as the server draws it (runtime/world/render/far_pass.py;
// SceneSnapshot.far): the far chunks (splat_piece layer "far") are drawn over the sky on the
// server's far grid (every `stride`-th pixel centre, half the sky grid's stride,
// `round(max(W, H) / 160) / 2`: every 2nd pixel at 640x360), and the scene's splats are
// composited over that grid interpolated bilinearly, as over the bare sky. So a far splat never
// hides a scene splat and shows only where the scene is see-through. One difference: the
// server shows the far field only where the scene leaves a pixel more than 80 % see-through
// (fading in above), which needs the scene's transmittance per pixel after the scene is drawn;
// here it shows behind the scene's soft edges too (see far_pass.py for why the server does not).
//
// Two passes a frame: a second SparkRenderer (its own sorted splat set: only the far meshes)
// draws the far grid into a small render target, with the sky behind it; in the main pass
// a full-screen triangle (in place of the sky) samples that target at each pixel's coarse
// position. With no far chunk held the main pass draws the exact per-pixel sky as before.
//
// WebXR (three.js drives the eyes' cameras, known only inside its render call) has no coarse
// grid: `drawBehind` draws the far splats over the sky for each eye at the eye's own
// resolution, and the scene is drawn over that without clearing (LocalRenderer.renderXr). Same
// layering (the far field only where the scene is see-through), finer than the server's grid.
import * as THREE from "three";
import { SparkRenderer } from "@sparkjsdev/spark";
import type { SkyInfo } from "../protocol";
import type { Mat3, Mat4 } from "./camera";
import { SkyBackground, backgroundTriangle } from "./sky";
import { applyOpenCvCamera } from "./three_camera";

/** runtime/world/render/sky_grid.py SKY_COARSE_COLUMNS: samples across the longer side. */
export const SKY_COARSE_COLUMNS = 160;
/** Far splats reach 5 km (runtime/world/keyframes/far_field.py FAR_MAX_DEPTH): the far plane of
 * a camera that draws them. */
export const FAR_PASS_FAR_M = 1e4;

/** Pixels between coarse samples for a picture size (sky_grid.sky_stride). */
export function coarseStride(width: number, height: number): number {
  return Math.max(1, Math.round(Math.max(width, height) / SKY_COARSE_COLUMNS));
}

/** runtime/world/render/far_pass.py FAR_GRID_DIVISOR: the far grid is this much finer than the sky's. */
export const FAR_GRID_DIVISOR = 2;

/** Pixels between the far grid's samples (far_pass.far_stride): every 2nd pixel at 640x360. */
export function farStride(width: number, height: number): number {
  return Math.max(1, Math.floor(coarseStride(width, height) / FAR_GRID_DIVISOR));
}

/** The coarse grid's camera (sky_grid.coarse_camera): its pixel (i, j) centre is the fine
 * pixel (i*stride, j*stride) centre, and it covers the picture up to its last row and column. */
export function coarseView(K: Mat3, width: number, height: number, stride: number): { K: Mat3; width: number; height: number } {
  const wc = Math.ceil((width - 1) / stride) + 1;
  const hc = Math.ceil((height - 1) / stride) + 1;
  const k = Array.from(K);
  k[0] = k[0]! / stride;
  k[4] = k[4]! / stride;
  k[2] = (k[2]! - 0.5) / stride + 0.5;
  k[5] = (k[5]! - 0.5) / stride + 0.5;
  return { K: k as unknown as Mat3, width: wc, height: hc };
}

const VERTEX = /* glsl */ `
void main() {
  vec2 p = vec2(float((gl_VertexID & 1) << 2) - 1.0, float((gl_VertexID & 2) << 1) - 1.0);
  gl_Position = vec4(p, 1.0, 1.0);
}`;

// Fine pixel (x, y) (x from the left, y from the top, at pixel centres x + 0.5) lies at coarse
// coordinate (x, y) / stride, where coarse sample (i, j) sits on its texel centre; the target's
// rows run bottom-up like the canvas's.
const FRAGMENT = /* glsl */ `
uniform sampler2D grid;
uniform vec2 gridSize;
uniform float stride;
uniform float height;
out vec4 outColor;
void main() {
  float x = gl_FragCoord.x - 0.5;
  float yTop = height - gl_FragCoord.y - 0.5;
  vec2 c = vec2(x, yTop) / stride;
  vec2 uv = vec2((c.x + 0.5) / gridSize.x, (gridSize.y - 0.5 - c.y) / gridSize.y);
  outColor = vec4(texture(grid, uv).rgb, 1.0);
}`;

export class FarLayer {
  /** Far-chunk meshes go here (SplatStore.farRoot). */
  readonly scene = new THREE.Scene();
  /** The main pass's background while far chunks are held: add it to the main scene. */
  readonly background: THREE.Mesh;
  readonly camera = new THREE.PerspectiveCamera();
  readonly spark: SparkRenderer;
  private readonly sky = new SkyBackground();
  private readonly target = new THREE.WebGLRenderTarget(1, 1, {
    depthBuffer: false,
    stencilBuffer: false,
    minFilter: THREE.LinearFilter,
    magFilter: THREE.LinearFilter,
    generateMipmaps: false,
  });
  private readonly uniforms = {
    grid: { value: this.target.texture as THREE.Texture },
    gridSize: { value: new THREE.Vector2(1, 1) },
    stride: { value: 1 },
    height: { value: 1 },
  };

  /**
   * @param renderer the page's renderer (the far pass draws into its own target with it).
   * @param root the far meshes' group (drawn only by this layer's SparkRenderer).
   * @param sparkOptions the main SparkRenderer's rasteriser settings (the server's).
   */
  constructor(readonly renderer: THREE.WebGLRenderer, readonly root: THREE.Object3D, sparkOptions: Partial<ConstructorParameters<typeof SparkRenderer>[0]>) {
    this.spark = new SparkRenderer({ ...sparkOptions, renderer });
    // Spark writes linear colour into any off-screen target (it assumes the target is
    // converted back later); this target is read raw, like the canvas, as the server's values.
    const base = this.spark.onBeforeRender.bind(this.spark);
    this.spark.onBeforeRender = (r, s, c, ...rest) => {
      base(r, s, c);
      this.spark.uniforms.encodeLinear.value = false;
      void rest;
    };
    this.scene.add(this.sky.mesh, this.spark, root);
    this.background = backgroundTriangle(VERTEX, FRAGMENT, this.uniforms);
    this.background.visible = false;
  }

  setSky(sky: SkyInfo): void {
    this.sky.setSky(sky);
  }

  /** Whether any far chunk is held (drawn or not). */
  held(): boolean {
    return this.root.children.length > 0;
  }

  /** Point the coarse camera for the picture `w2c`, `K`, `width` x `height`. */
  setView(w2c: Mat4, K: Mat3, width: number, height: number): void {
    const stride = farStride(width, height);
    const coarse = coarseView(K, width, height, stride);
    if (this.target.width !== coarse.width || this.target.height !== coarse.height) this.target.setSize(coarse.width, coarse.height);
    applyOpenCvCamera(this.camera, w2c, coarse.K, coarse.width, coarse.height, undefined, FAR_PASS_FAR_M);
    this.uniforms.gridSize.value.set(coarse.width, coarse.height);
    this.uniforms.stride.value = stride;
    this.uniforms.height.value = height;
  }

  /** Draw the coarse grid for the view last set (call before the main pass). */
  drawGrid(): void {
    const previous = this.renderer.getRenderTarget();
    this.renderer.setRenderTarget(this.target);
    try {
      this.renderer.render(this.scene, this.camera);
    } finally {
      this.renderer.setRenderTarget(previous);
    }
  }

  /**
   * Draw the sky and the far splats into the current target for `camera` as three.js draws
   * it (in a WebXR session: each eye, at the eye's resolution), clearing it first: the
   * background a scene pass drawn without clearing goes over (LocalRenderer.renderXr).
   * Every far chunk is drawn: the desktop's frustum culling (for its last view) does not
   * hold for the eyes, and the far chunks are few (one per far cell).
   */
  drawBehind(camera: THREE.Camera): void {
    for (const mesh of this.root.children) mesh.visible = true;
    this.renderer.render(this.scene, camera);
  }

  /** Sort the far splats for the view last set (before a capture). */
  async sort(): Promise<void> {
    await this.spark.update({ scene: this.scene, camera: this.camera });
  }

  dispose(): void {
    this.spark.dispose();
    this.target.dispose();
  }
}
