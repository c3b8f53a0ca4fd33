// "Enter VR": an immersive-vr WebXR session showing the server's stereo video, one half per
// eye, with the head pose sent to the server on every headset frame (`head_pose`) and
// thumbstick locomotion (left stick walks where you look, right stick turns: snap or smooth).
//
// While the sticks move or turn the player, a comfort vignette darkens the edges of the view
// (Settings: VR comfort vignette). The server moves the head with collision (walls stop it).
// Not here yet (issue 19): rendering the splats locally in the headset, and reprojection of
// the last frame to the newest head pose.
import { el } from "../dom";
import type { SettingsStore } from "../settings";
import { Rig, type Quat, type Vec3 } from "./xr_math";

const WALK_M_PER_S = 1.5;
const SMOOTH_TURN_RAD_PER_S = 1.6;
const SNAP_TURN_RAD = Math.PI / 6;
const STICK_DEAD_ZONE = 0.15;
const SNAP_ARM_BELOW = 0.3; // the stick must come back to the middle before the next snap
const SNAP_FIRE_ABOVE = 0.7;
const VIGNETTE_RISE_PER_S = 6; // to full in about 0.15 s
const VIGNETTE_FALL_PER_S = 3;
const SNAP_VIGNETTE = 1; // a snap turn flashes it, then it fades

const VERTEX_SHADER = `#version 300 es
in vec2 corner;
uniform vec4 uvRect; // x0, y0, width, height of this eye's half of the video
out vec2 uv;
void main() {
  uv = uvRect.xy + (corner * 0.5 + 0.5) * uvRect.zw;
  uv.y = 1.0 - uv.y;
  gl_Position = vec4(corner, 0.0, 1.0);
}`;
const FRAGMENT_SHADER = `#version 300 es
precision mediump float;
in vec2 uv;
uniform sampler2D video;
uniform float vignette; // 0 none .. 1 full: the edges go dark while the sticks move the player
uniform highp vec4 uvRect;
out vec4 color;
void main() {
  vec2 p = (uv - uvRect.xy) / uvRect.zw * 2.0 - 1.0; // -1..1 across this eye's picture
  float edge = smoothstep(0.35, 0.95, length(p));
  color = vec4(texture(video, uv).rgb * (1.0 - vignette * edge), 1.0);
}`;

export interface VrHooks {
  /** The player's pose in the world when VR starts (where the rig is put). */
  pose(): { position: number[]; yaw: number };
  /** Send a head pose (world, OpenCV; orientation w x y z); false when not connected. */
  sendHeadPose(position: Vec3, orientation: Quat): boolean;
  /** VR started or ended: the video must become stereo, or mono again. */
  changed(active: boolean): void;
}

export class VrMode {
  readonly button = el("button", "chip vr-button", { id: "enter-vr", type: "button", hidden: true, title: "Enter VR (WebXR headset)" }, ["Enter VR"]);
  /** In an immersive session now. */
  active = false;
  /** Headset frames (XR animation frames) so far, head poses sent, and frames with a picture drawn. */
  xrFrames = 0;
  headPosesSent = 0;
  framesDrawn = 0;
  lastHeadPose: { position: Vec3; orientation: Quat } | null = null;
  /** Comfort vignette now, 0..1 (0 when the setting is off). */
  vignette = 0;
  /** Vertical field of view of the headset's eyes (radians), once known. */
  fovY: number | null = null;
  /** The size of one eye's framebuffer viewport (pixels), once known. */
  eyeSize: { width: number; height: number } | null = null;
  private session: XRSession | null = null;
  private space: XRReferenceSpace | null = null;
  private gl: WebGL2RenderingContext | null = null;
  private program: WebGLProgram | null = null;
  private texture: WebGLTexture | null = null;
  private rig: Rig | null = null;
  private snapArmed = true;
  private announced = false;
  private lastTime: number | null = null;

  constructor(
    private readonly video: HTMLVideoElement,
    private readonly settings: SettingsStore,
    private readonly hooks: VrHooks,
  ) {
    this.button.addEventListener("click", () => void (this.active ? this.exit() : this.enter()));
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
    const canvas = document.createElement("canvas");
    const gl = canvas.getContext("webgl2", { xrCompatible: true, antialias: false });
    if (!gl) {
      await session.end();
      throw new Error("WebGL 2 is not available for VR");
    }
    this.gl = gl;
    this.setupGl(gl);
    session.updateRenderState({ baseLayer: new XRWebGLLayer(session, gl) });
    this.space = await session.requestReferenceSpace("local-floor").catch(() => session.requestReferenceSpace("local"));
    this.session = session;
    this.active = true;
    this.rig = null; // placed on the first pose
    this.lastTime = null;
    this.announced = false;
    this.button.textContent = "Exit VR";
    session.addEventListener("end", () => this.ended());
    session.requestAnimationFrame((t, f) => this.frame(t, f));
  }

  async exit(): Promise<void> {
    await this.session?.end();
  }

  private ended(): void {
    this.session = null;
    this.space = null;
    this.active = false;
    this.button.textContent = "Enter VR";
    this.gl = null;
    this.hooks.changed(false);
  }

  private setupGl(gl: WebGL2RenderingContext): void {
    const compile = (type: number, source: string): WebGLShader => {
      const shader = gl.createShader(type)!;
      gl.shaderSource(shader, source);
      gl.compileShader(shader);
      return shader;
    };
    const program = gl.createProgram()!;
    gl.attachShader(program, compile(gl.VERTEX_SHADER, VERTEX_SHADER));
    gl.attachShader(program, compile(gl.FRAGMENT_SHADER, FRAGMENT_SHADER));
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(`VR shader: ${gl.getProgramInfoLog(program) ?? "link failed"}`);
    const buffer = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, buffer);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
    const corner = gl.getAttribLocation(program, "corner");
    gl.enableVertexAttribArray(corner);
    gl.vertexAttribPointer(corner, 2, gl.FLOAT, false, 0, 0);
    this.texture = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, this.texture);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.LINEAR);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
    this.program = program;
  }

  private frame(time: number, frame: XRFrame): void {
    const session = this.session;
    if (!session || !this.space) return;
    session.requestAnimationFrame((t, f) => this.frame(t, f));
    const dt = this.lastTime === null ? 0 : Math.min((time - this.lastTime) / 1000, 0.1);
    this.lastTime = time;
    const viewer = frame.getViewerPose(this.space);
    if (!viewer) return;
    this.xrFrames += 1;
    const p = viewer.transform.position;
    const o = viewer.transform.orientation;
    const headXr: Vec3 = [p.x, p.y, p.z];
    const orientation: [number, number, number, number] = [o.x, o.y, o.z, o.w];
    if (!this.rig) {
      const pose = this.hooks.pose();
      this.rig = new Rig([pose.position[0] ?? 0, pose.position[1] ?? 0, pose.position[2] ?? 0], pose.yaw, headXr);
    }
    this.locomotion(session, headXr, orientation, dt);
    const head = this.rig.headInWorld(headXr, orientation);
    this.lastHeadPose = head;
    if (this.hooks.sendHeadPose(head.position, head.orientation)) this.headPosesSent += 1;
    this.draw(session, viewer);
    if (!this.announced && this.eyeSize) {
      this.announced = true; // the eyes' size and field of view are known now
      this.hooks.changed(true);
    }
  }

  /** Left stick walks where the head looks; right stick turns the room about the head. */
  private locomotion(session: XRSession, headXr: Vec3, orientation: [number, number, number, number], dt: number): void {
    const rig = this.rig!;
    let moving = false;
    for (const source of session.inputSources) {
      const axes = source.gamepad?.axes;
      if (!axes || axes.length < 4) continue; // xr-standard: thumbstick is axes 2, 3
      const x = Math.abs(axes[2]!) > STICK_DEAD_ZONE ? axes[2]! : 0;
      const y = Math.abs(axes[3]!) > STICK_DEAD_ZONE ? axes[3]! : 0;
      if (source.handedness === "left" && (x || y)) {
        moving = true;
        rig.move(rig.headInWorld(headXr, orientation).orientation, -y * WALK_M_PER_S * dt, x * WALK_M_PER_S * dt);
      } else if (source.handedness === "right") {
        if (this.settings.values.vrTurn === "smooth") {
          if (x) {
            moving = true;
            rig.turn(headXr, x * SMOOTH_TURN_RAD_PER_S * dt, orientation);
          }
        } else if (this.snapArmed && Math.abs(x) > SNAP_FIRE_ABOVE) {
          rig.turn(headXr, Math.sign(x) * SNAP_TURN_RAD, orientation);
          this.snapArmed = false;
          this.vignette = Math.max(this.vignette, SNAP_VIGNETTE);
        } else if (Math.abs(x) < SNAP_ARM_BELOW) {
          this.snapArmed = true;
        }
      }
    }
    const target = moving && this.settings.values.vrVignette ? 1 : 0;
    const rate = target > this.vignette ? VIGNETTE_RISE_PER_S : VIGNETTE_FALL_PER_S;
    this.vignette += Math.sign(target - this.vignette) * Math.min(Math.abs(target - this.vignette), rate * dt);
    if (!this.settings.values.vrVignette) this.vignette = 0;
  }

  /** Each eye: its half of the side-by-side stereo video, filling its viewport. */
  private draw(session: XRSession, viewer: XRViewerPose): void {
    const gl = this.gl;
    const layer = session.renderState.baseLayer;
    if (!gl || !layer || !this.program) return;
    gl.bindFramebuffer(gl.FRAMEBUFFER, layer.framebuffer);
    gl.clearColor(0, 0, 0, 1);
    gl.clear(gl.COLOR_BUFFER_BIT);
    gl.useProgram(this.program);
    gl.bindTexture(gl.TEXTURE_2D, this.texture);
    const hasPicture = this.video.readyState >= HTMLMediaElement.HAVE_CURRENT_DATA && this.video.videoWidth > 0;
    if (hasPicture) gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA, gl.RGBA, gl.UNSIGNED_BYTE, this.video);
    const stereo = viewer.views.length > 1;
    const uvRect = gl.getUniformLocation(this.program, "uvRect");
    gl.uniform1f(gl.getUniformLocation(this.program, "vignette"), this.vignette);
    viewer.views.forEach((view, i) => {
      const vp = layer.getViewport(view);
      if (!vp) return;
      if (i === 0) {
        this.eyeSize = { width: vp.width, height: vp.height };
        this.fovY = 2 * Math.atan(1 / view.projectionMatrix[5]!);
      }
      gl.viewport(vp.x, vp.y, vp.width, vp.height);
      const half = stereo ? (view.eye === "right" ? 0.5 : 0) : 0;
      gl.uniform4f(uvRect, half, 0, stereo ? 0.5 : 1, 1);
      if (hasPicture) gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
    });
    if (hasPicture) this.framesDrawn += 1;
  }
}
