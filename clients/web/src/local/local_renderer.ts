// Draws the world in this browser: the splats the feed sent (Spark on three.js) over the
// server's sky, plus whatever else is put in `scene` (other players' avatars), from any
// OpenCV camera. The public surface is small on purpose (others build on it, WebXR
// included):
//
//   const r = new LocalRenderer(canvas, store);
//   r.render({ w2c, K, width, height });      // one frame, same camera as the server's
//   r.scene / r.camera / r.renderer / r.spark // for XR: three.js drives the headset camera
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
  /** Frames drawn so far. */
  frames = 0;
  private size = { width: 0, height: 0 };

  constructor(readonly canvas: HTMLCanvasElement, readonly store: SplatStore) {
    this.renderer = new THREE.WebGLRenderer({ canvas, antialias: false, alpha: false, powerPreference: "high-performance" });
    this.renderer.setPixelRatio(1); // the drawing buffer is sized in device pixels by render()
    this.renderer.autoClear = true;
    this.spark = new SparkRenderer({
      renderer: this.renderer,
      preBlurAmount: EPS2D,
      blurAmount: 0,
      maxStdDev: CUTOFF_SIGMAS,
      minAlpha: ALPHA_MIN,
      sortRadial: false,
      accumExtSplats: true,
    });
    this.scene.add(this.sky.mesh, this.spark, store.root);
  }

  /** The world's sky (welcome.sky; null: the default). */
  setSky(sky: SkyInfo | null): void {
    this.sky.setSky(sky ?? DEFAULT_SKY);
  }

  /** Point the camera as the server would for this view (no drawing). */
  setView(view: LocalView): void {
    const { width, height } = view;
    if (width !== this.size.width || height !== this.size.height) {
      this.renderer.setSize(width, height, false); // CSS size stays the page's
      this.size = { width, height };
    }
    applyOpenCvCamera(this.camera, view.w2c, view.K, width, height);
  }

  /** Draw one frame of `view` into the canvas. */
  render(view: LocalView): void {
    this.setView(view);
    this.renderer.render(this.scene, this.camera);
    this.frames += 1;
  }

  /**
   * Draw `view` once Spark has sorted the splats for it (rendering right after a camera
   * jump uses the previous order for a frame), and read the picture back:
   * `width * height * 4` RGBA bytes, top row first. For tests and benchmarks.
   */
  async capture(view: LocalView): Promise<Uint8Array> {
    this.setView(view);
    await this.spark.update({ scene: this.scene, camera: this.camera });
    this.render(view);
    await this.spark.update({ scene: this.scene, camera: this.camera });
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
    this.renderer.dispose();
  }
}
