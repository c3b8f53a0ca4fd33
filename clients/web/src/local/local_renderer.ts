// Draws the world in this browser: the splats the feed sent (Spark on three.js) over the
// server's sky (or, once far-field chunks are held, over the far field drawn on the sky's
// coarse grid: far_layer.ts), plus whatever else is put in `scene` (other players' avatars), from any
// OpenCV camera. The public surface is small on purpose (others build on it, WebXR
// included):
//
//   const r = new LocalRenderer(canvas, store);
//   r.render({ w2c, K, width, height });      // one frame, same camera as the server's
//   r.scene / r.camera / r.renderer / r.spark // for XR: three.js drives the headset camera
//   r.renderXr(r.camera)                     // one headset frame (far field included)
//
// The scene holds the world in worldstream's own coordinates (metres, OpenCV, +y down), so
// anything added to it is placed with world coordinates as they come from the server.
//
// Spark's options are set to the server's rasteriser (runtime/world/render/conventions.py):
// a 0.3 px² low-pass added to each splat's 2D covariance without opacity compensation
// (3DGS "classic"), splats cut where alpha falls below 1/255, sorted by view depth.
import * as THREE from "three";
import { SparkRenderer } from "@sparkjsdev/spark";
import type { SkyInfo } from "../protocol";
import type { Mat3, Mat4 } from "./camera";
import { applyOpenCvCamera } from "./three_camera";
import { DEFAULT_SKY, SkyBackground } from "./sky";
import { FarLayer } from "./far_layer";
import type { SplatStore } from "./splat_store";

/** One picture to draw: the server's camera conventions. */
export interface LocalView {
  /** World-to-camera 4x4, row-major, OpenCV. */
  w2c: Mat4;
  /** Intrinsics 3x3, row-major, pixels of a `width` x `height` picture. */
  K: Mat3;
  width: number;
  height: number;
}

const EPS2D = 0.3; // px², conventions.EPS2D
const ALPHA_MIN = 1 / 255; // conventions.ALPHA_MIN
const CUTOFF_SIGMAS = Math.sqrt(2 * Math.log(255)); // where an opaque splat's alpha reaches ALPHA_MIN

export class LocalRenderer {
  readonly renderer: THREE.WebGLRenderer;
  readonly scene = new THREE.Scene();
  readonly camera = new THREE.PerspectiveCamera();
  readonly spark: SparkRenderer;
  readonly sky = new SkyBackground();
  /** The far field behind the scene (its own Spark pass on the coarse sky grid). */
  readonly far: FarLayer;
  /** Whether headset frames draw the far field (tests turn it off to compare). */
  farInXr = true;
  /** Frames drawn so far, and those skipped by renderIfChanged (nothing had changed). */
  frames = 0;
  skipped = 0;
  private size = { width: 0, height: 0 };
  private dirty = true;
  private lastViewKey = "";
  private readonly frustum = new THREE.Frustum();
  private readonly sphere = new THREE.Sphere();
  private readonly viewProjection = new THREE.Matrix4();

  constructor(readonly canvas: HTMLCanvasElement, readonly store: SplatStore) {
    this.renderer = new THREE.WebGLRenderer({ canvas, antialias: false, alpha: false, powerPreference: "high-performance" });
    this.renderer.setPixelRatio(1); // the drawing buffer is sized in device pixels by render()
    this.renderer.autoClear = true;
    const options = {
      preBlurAmount: EPS2D,
      blurAmount: 0,
      maxStdDev: CUTOFF_SIGMAS,
      minAlpha: ALPHA_MIN,
      sortRadial: false,
      accumExtSplats: true,
      onDirty: () => this.invalidate(), // a sort finished: the next frame must show it
    };
    this.spark = new SparkRenderer({ renderer: this.renderer, ...options });
    this.far = new FarLayer(this.renderer, store.farRoot, options);
    this.scene.add(this.sky.mesh, this.far.background, this.spark, store.root);
  }

  /** The world's sky (welcome.sky; null: the default). */
  setSky(sky: SkyInfo | null): void {
    this.sky.setSky(sky ?? DEFAULT_SKY);
    this.far.setSky(sky ?? DEFAULT_SKY);
    this.invalidate();
  }

  /** Something drawn changed (chunks, avatars, sky): renderIfChanged draws the next frame. */
  invalidate(): void {
    this.dirty = true;
  }

  /** Point the camera as the server would for this view (no drawing). */
  setView(view: LocalView): void {
    const { width, height } = view;
    if (width !== this.size.width || height !== this.size.height) {
      this.renderer.setSize(width, height, false); // CSS size stays the page's
      this.size = { width, height };
    }
    applyOpenCvCamera(this.camera, view.w2c, view.K, width, height);
    this.far.setView(view.w2c, view.K, width, height);
    this.cullChunks(this.store.root, this.camera);
    this.cullChunks(this.store.farRoot, this.far.camera); // its frustum reaches the far field's 10 km
  }

  /** Chunks whose bounding sphere is outside the view are left out of Spark's work: each
   * drawn splat costs vertex work even when it lands off screen. */
  private cullChunks(root: THREE.Object3D, camera: THREE.Camera): void {
    this.viewProjection.multiplyMatrices(camera.projectionMatrix, camera.matrixWorldInverse);
    this.frustum.setFromProjectionMatrix(this.viewProjection);
    for (const mesh of root.children) {
      const bounds = mesh.userData["bounds"] as { center: [number, number, number]; radius: number } | undefined;
      if (!bounds) continue;
      this.sphere.center.fromArray(bounds.center);
      this.sphere.radius = bounds.radius;
      mesh.visible = this.frustum.intersectsSphere(this.sphere);
    }
  }

  /** Draw one frame of `view` into the canvas. */
  render(view: LocalView): void {
    this.lastViewKey = ""; // renderIfChanged must not trust a frame drawn for another view
    this.setView(view);
    // The far field replaces the sky here on the coarse grid; the headset's path is renderXr.
    const far = this.far.held();
    if (far) this.far.drawGrid();
    this.far.background.visible = far;
    this.sky.mesh.visible = !far;
    try {
      this.renderer.render(this.scene, this.camera);
    } finally {
      this.far.background.visible = false;
      this.sky.mesh.visible = true;
    }
    this.frames += 1;
  }

  /**
   * Draw one headset frame: `scene` from `camera` as three.js's WebXR support places each
   * eye. With far chunks held, the far field is drawn first behind everything (its sky and
   * far splats, at the eyes' resolution: far_layer.ts) and the scene over it without clearing,
   * so, as on the desktop, the far field shows only where the scene is see-through.
   */
  renderXr(camera: THREE.Camera): void {
    const three = this.renderer;
    const far = this.far.held() && this.farInXr;
    const autoClear = three.autoClear;
    if (far) {
      this.far.drawBehind(camera);
      three.clearDepth();
      three.autoClear = false;
    }
    this.sky.mesh.visible = !far;
    try {
      three.render(this.scene, camera);
    } finally {
      three.autoClear = autoClear;
      this.sky.mesh.visible = true;
    }
  }

  /** Draw `view` unless the last frame already shows it (same camera, nothing invalidated):
   * a player standing still costs nothing. Returns whether it drew. */
  renderIfChanged(view: LocalView): boolean {
    // To 0.1 mm and 0.1 mrad: the server's reports settle the predicted pose geometrically, and
    // the last sub-millimetre steps would otherwise redraw an unchanged picture.
    const key = `${view.width}x${view.height}:${Array.from(view.w2c, (v) => v.toFixed(4)).join(",")}:${Array.from(view.K, (v) => v.toFixed(2)).join(",")}`;
    if (!this.dirty && key === this.lastViewKey) {
      this.skipped += 1;
      return false;
    }
    this.dirty = false;
    this.lastViewKey = key;
    this.render(view);
    return true;
  }

  /**
   * Draw `view` once Spark has sorted the splats for it (rendering right after a camera
   * jump uses the previous order for a frame), and read the picture back:
   * `width * height * 4` RGBA bytes, top row first. For tests and benchmarks.
   */
  async capture(view: LocalView): Promise<Uint8Array> {
    this.setView(view);
    await Promise.all([this.spark.update({ scene: this.scene, camera: this.camera }), this.far.sort()]);
    this.render(view);
    await Promise.all([this.spark.update({ scene: this.scene, camera: this.camera }), this.far.sort()]);
    this.render(view);
    const { width, height } = view;
    const gl = this.renderer.getContext();
    const rows = new Uint8Array(width * height * 4);
    gl.readPixels(0, 0, width, height, gl.RGBA, gl.UNSIGNED_BYTE, rows);
    const out = new Uint8Array(rows.length);
    const stride = width * 4;
    for (let y = 0; y < height; y++) out.set(rows.subarray((height - 1 - y) * stride, (height - y) * stride), y * stride);
    return out;
  }

  dispose(): void {
    this.store.clear();
    this.spark.dispose();
    this.far.dispose();
    this.renderer.dispose();
  }
}
