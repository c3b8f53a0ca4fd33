// "Enter VR": an immersive-vr WebXR session showing the server's stereo video, one half per
// eye, with the head pose sent to the server on every headset frame (`head_pose`, within the
// server's rate limit) and thumbstick locomotion with comfort options (locomotion.ts).
//
// The video is reprojected (reprojection.ts): each headset frame shows the last video frame
// turned to the newest head orientation, so looking around responds at the headset's rate
// whatever the network does. The server moves the head with collision (walls stop it) and
// says where it put it (`frame_info.head_position`): the rig follows (`serverHead`).
// In render mode local, three.js draws the splats for each eye instead (local_xr.ts).
import { el } from "../dom";
import { INPUT_BURST, INPUT_RATE_HZ } from "../protocol";
import type { SettingsStore } from "../settings";
import { readEye, type EyeCapture } from "./eye_capture";
import { EyeVideo } from "./eye_video";
import type { LocalXr } from "./local_xr";
import { Locomotion } from "./locomotion";
import { RateBudget } from "./rate_budget";
import { warpMatrix } from "./reprojection";
import { SentPoses } from "./sent_poses";
import { Rig, type Quat, type Vec3 } from "./xr_math";

// Head poses: at most 90% of the server's input rate (a 120 Hz headset sends ~108 a second).
const HEAD_POSE_RATE_HZ = 0.9 * INPUT_RATE_HZ;
const HEAD_POSE_BURST = INPUT_BURST / 2;
// Video frames are copied when the page presents them (requestVideoFrameCallback), so the
// texture and the pose it was rendered for match. Where the page's frame callbacks stop in
// an immersive session (some headset browsers), the headset frame copies the video itself.
const PRESENTED_STALE_MS = 250;
// Differences smaller than this between the head sent and where the server put it are
// rounding (the server keeps float32 positions), not collision.
const COLLISION_SLACK_M = 0.01;

export interface VrHooks {
  /** The player's pose in the world when VR starts (where the rig is put). */
  pose(): { position: number[]; yaw: number };
  /** Send a head pose (world, OpenCV; orientation w x y z); its seq, or null when not connected. */
  sendHeadPose(position: Vec3, orientation: Quat): number | null;
  /** VR started or ended: the video must become stereo, or mono again. */
  changed(active: boolean): void;
  /** The video as last asked of the server: side by side stereo or not, vertical field of view (radians). */
  videoView(): { stereo: boolean; fovY: number };
  /** The input seq a presented video frame (by its RTP timestamp as received) shows, once its frame_info is matched. */
  frameSeq(rtp: number): number | null;
  /** The input seq of the newest frame_info received (null before any). */
  newestFrameSeq(): number | null;
  /** Where the render mode is local: what draws the splats in the headset (else null: the video). */
  localXr(): LocalXr | null;
}


export class VrMode {
  readonly button = el("button", "chip vr-button", { id: "enter-vr", type: "button", hidden: true, title: "Enter VR (WebXR headset)" }, ["Enter VR"]);
  /** In an immersive session now. */
  active = false;
  /** Headset frames (XR animation frames) so far, head poses sent, frames with a picture drawn,
   * and of those the ones turned to the head pose (the pose the frame was rendered for known). */
  xrFrames = 0;
  headPosesSent = 0;
  framesDrawn = 0;
  framesReprojected = 0;
  /** Times the rig was moved to where the server's collision put the head. */
  collisionCorrections = 0;
  lastHeadPose: { position: Vec3; orientation: Quat } | null = null;
  /** Vertical field of view of the headset's eyes (radians), once known. */
  fovY: number | null = null;
  /** The size of one eye's framebuffer viewport (pixels), once known. */
  eyeSize: { width: number; height: number } | null = null;
  /** Tests: keep showing the video frame in the texture (as if the network stalled). */
  holdVideo = false;
  private readonly locomotion: Locomotion;
  private readonly sent = new SentPoses();
  private localXr: LocalXr | null = null;
  /** Frames showing head poses up to this seq were rendered before the rig's last collision correction. */
  private correctedThrough = -1;
  private readonly budget = new RateBudget(HEAD_POSE_RATE_HZ, HEAD_POSE_BURST);
  private session: XRSession | null = null;
  private space: XRReferenceSpace | null = null;
  private gl: WebGL2RenderingContext | null = null;
  private eyes: EyeVideo | null = null;
  private rig: Rig | null = null;
  private announced = false;
  private lastTime: number | null = null;
  /** The video frame in the texture: its RTP timestamp (when presented), the input seq it
   * shows, and the orientation it was rendered with, once known (kept: a long stall must not
   * lose it from the poses sent). */
  private shown: { rtp: number | null; seq: number | null; rendered?: Quat } | null = null;
  private presentedAt = -Infinity;
  private captures: Array<(capture: EyeCapture) => void> = [];

  constructor(
    private readonly video: HTMLVideoElement,
    settings: SettingsStore,
    private readonly hooks: VrHooks,
  ) {
    this.locomotion = new Locomotion(settings);
    this.button.addEventListener("click", () => void (this.active ? this.exit() : this.enter()));
  }

  /** Comfort vignette now, 0..1 (0 when the setting is off). */
  get vignette(): number {
    return this.locomotion.vignette;
  }

  /** Show the button where the browser offers immersive VR. */
  async probe(): Promise<boolean> {
    const supported = (await navigator.xr?.isSessionSupported("immersive-vr").catch(() => false)) ?? false;
    this.button.hidden = !supported;
    return supported;
  }

  async enter(): Promise<void> {
    if (this.active || !navigator.xr) return;
    const session = await navigator.xr.requestSession("immersive-vr", { optionalFeatures: ["local-floor"] });
    const local = this.hooks.localXr();
    if (local) return this.enterLocal(session, local);
    const canvas = document.createElement("canvas");
    const gl = canvas.getContext("webgl2", { xrCompatible: true, antialias: false });
    if (!gl) {
      await session.end();
      throw new Error("WebGL 2 is not available for VR");
    }
    this.gl = gl;
    this.eyes = new EyeVideo(gl);
    session.updateRenderState({ baseLayer: new XRWebGLLayer(session, gl) });
    this.space = await session.requestReferenceSpace("local-floor").catch(() => session.requestReferenceSpace("local"));
    this.started(session);
    session.requestAnimationFrame((t, f) => this.frame(t, f));
  }

  /** Render mode local: three.js draws the splats for each eye (local_xr.ts); this class
   * still moves the rig and sends the head pose, from three.js's headset frame. */
  private async enterLocal(session: XRSession, local: LocalXr): Promise<void> {
    this.localXr = local;
    this.started(session);
    this.announced = true; // no stereo video to ask for: the page draws the world itself
    await local.start(session, (time, frame, space) => {
      this.space = space;
      return this.step(time, frame) ? this.rig : null;
    });
  }

  private started(session: XRSession): void {
    this.session = session;
    this.active = true;
    this.rig = null; // placed on the first pose
    this.lastTime = null;
    this.announced = false;
    this.shown = null;
    this.button.textContent = "Exit VR";
    session.addEventListener("end", () => this.ended());
  }

  async exit(): Promise<void> {
    await this.session?.end();
  }

  /** A new connection: input seqs start again, so the poses sent so far name other frames. */
  restarted(): void {
    this.sent.clear();
    this.correctedThrough = -1;
    this.shown = null;
  }

  /** The page presented a video frame (requestVideoFrameCallback): copy it while it is the video's current one. */
  videoPresented(rtp: number | null): void {
    if (!this.active || !this.eyes || this.holdVideo) return;
    this.eyes.upload(this.video);
    this.shown = { rtp, seq: null };
    this.presentedAt = performance.now();
  }

  /**
   * A frame_info: where the server put the head for head pose `seq`. Collision stopped it
   * short of where the rig sent it, so the rig moves by the difference (the server decides
   * where the player is; otherwise walking into a wall would pile up an offset that walking
   * back must first undo). Poses sent before a correction are not corrected for twice.
   */
  serverHead(seq: number, position: Vec3 | null): void {
    const rig = this.rig;
    if (!this.active || !rig || !position || seq <= this.correctedThrough) return;
    const sent = this.sent.get(seq);
    if (!sent) return;
    const d: Vec3 = [position[0] - sent.position[0], position[1] - sent.position[1], position[2] - sent.position[2]];
    if (Math.hypot(...d) < COLLISION_SLACK_M) return;
    rig.position = [rig.position[0] + d[0], rig.position[1] + d[1], rig.position[2] + d[2]];
    this.correctedThrough = this.sent.newest;
    this.collisionCorrections += 1;
  }

  /** Tests: the first eye's picture as drawn in the next headset frame. */
  capture(): Promise<EyeCapture> {
    if (this.localXr) return this.localXr.capture();
    return new Promise((resolve) => this.captures.push(resolve));
  }

  /** Headset frames drawn locally from the splats (render mode local). */
  get localFramesDrawn(): number {
    return this.localXr?.framesDrawn ?? 0;
  }

  private ended(): void {
    this.localXr?.stop();
    this.localXr = null;
    this.session = null;
    this.space = null;
    this.active = false;
    this.button.textContent = "Enter VR";
    this.gl = null;
    this.eyes = null;
    this.hooks.changed(false);
  }

  /** A headset frame of the video path: step, then draw the video for each eye. */
  private frame(time: number, frame: XRFrame): void {
    const session = this.session;
    if (!session) return;
    session.requestAnimationFrame((t, f) => this.frame(t, f));
    const viewer = this.step(time, frame);
    if (!viewer) return;
    this.draw(session, viewer);
    if (!this.announced && this.eyeSize) {
      this.announced = true; // the eyes' size and field of view are known now
      this.hooks.changed(true);
    }
  }

  /** Every headset frame: the head pose, the sticks moving the rig, the pose to the server. */
  private step(time: number, frame: XRFrame): XRViewerPose | null {
    const session = this.session;
    if (!session || !this.space) return null;
    const dt = this.lastTime === null ? 0 : Math.min((time - this.lastTime) / 1000, 0.1);
    this.lastTime = time;
    const viewer = frame.getViewerPose(this.space);
    if (!viewer) return null;
    this.xrFrames += 1;
    const first = viewer.views[0];
    if (first) this.fovY = 2 * Math.atan(1 / first.projectionMatrix[5]!);
    const p = viewer.transform.position;
    const o = viewer.transform.orientation;
    const headXr: Vec3 = [p.x, p.y, p.z];
    const orientation: [number, number, number, number] = [o.x, o.y, o.z, o.w];
    if (!this.rig) {
      const pose = this.hooks.pose();
      this.rig = new Rig([pose.position[0] ?? 0, pose.position[1] ?? 0, pose.position[2] ?? 0], pose.yaw, headXr);
    }
    this.locomotion.update(session, this.rig, headXr, orientation, dt);
    const head = this.rig.headInWorld(headXr, orientation);
    this.lastHeadPose = head;
    if (this.budget.take(time)) {
      const seq = this.hooks.sendHeadPose(head.position, head.orientation);
      if (seq !== null) {
        this.headPosesSent += 1;
        this.sent.add(seq, head);
      }
    }
    return viewer;
  }

  /** The orientation the frame in the texture was rendered with, when known. */
  private renderedOrientation(): Quat | undefined {
    const shown = this.shown;
    if (!shown) return undefined;
    if (shown.seq === null && shown.rtp !== null) shown.seq = this.hooks.frameSeq(shown.rtp);
    if (shown.seq !== null) shown.rendered ??= this.sent.get(shown.seq)?.orientation;
    return shown.rendered;
  }

  /** Each eye: its half of the side-by-side stereo video, turned to where the eye looks now. */
  private draw(session: XRSession, viewer: XRViewerPose): void {
    const gl = this.gl;
    const eyes = this.eyes;
    const layer = session.renderState.baseLayer;
    if (!gl || !eyes || !layer || !this.rig) return;
    const video = this.video;
    const playing = video.readyState >= HTMLMediaElement.HAVE_CURRENT_DATA && video.videoWidth > 0;
    if (playing && !this.holdVideo && performance.now() - this.presentedAt > PRESENTED_STALE_MS) {
      eyes.upload(video);
      this.shown = { rtp: null, seq: this.hooks.newestFrameSeq() };
    }
    gl.bindFramebuffer(gl.FRAMEBUFFER, layer.framebuffer);
    gl.clearColor(0, 0, 0, 1);
    gl.clear(gl.COLOR_BUFFER_BIT);
    const { stereo, fovY } = this.hooks.videoView();
    const aspect = video.videoWidth / (stereo ? 2 : 1) / Math.max(video.videoHeight, 1);
    const rendered = this.renderedOrientation();
    viewer.views.forEach((view, i) => {
      const vp = layer.getViewport(view);
      if (!vp) return;
      if (i === 0) this.eyeSize = { width: vp.width, height: vp.height };
      gl.viewport(vp.x, vp.y, vp.width, vp.height);
      if (!eyes.hasPicture) return;
      const t = view.transform;
      const eye = this.rig!.headInWorld([t.position.x, t.position.y, t.position.z], [t.orientation.x, t.orientation.y, t.orientation.z, t.orientation.w]);
      eyes.draw({
        projection: view.projectionMatrix,
        warp: warpMatrix(rendered ?? eye.orientation, eye.orientation),
        uvRect: stereo ? [view.eye === "right" ? 0.5 : 0, 0, 0.5, 1] : [0, 0, 1, 1],
        fovY,
        aspect,
        vignette: this.locomotion.vignette,
      });
      if (i === 0 && this.captures.length) this.readBack(gl, vp);
    });
    if (eyes.hasPicture) {
      this.framesDrawn += 1;
      if (rendered) this.framesReprojected += 1;
    }
  }

  private readBack(gl: WebGL2RenderingContext, vp: XRViewport): void {
    const capture = readEye(gl, vp);
    for (const resolve of this.captures.splice(0)) resolve(capture);
  }
}
