// Local rendering in the page: asks the server for the splats (`splats`), keeps them
// (SplatStore), and while the mode is local draws every animation frame from the predicted
// pose (PosePredictor) with other players as 3D avatars. The server's video keeps playing
// underneath: it is what the player sees until the feed has caught up with the view (the
// first burst of pieces is over), so nothing half-downloaded is ever shown. The client
// still sends its inputs as always, so the server keeps planning generation around it and
// new chunks arrive as they land.
//
// three.js and Spark load on first use (engine.ts, a separate bundle): the video alone
// never downloads them. The pose is predicted in every mode, so switching keeps it.
import type { ClientMessage, Input, ServerMessage, SkyInfo, Welcome } from "../protocol";
import type { SettingsStore } from "../settings";
import type { WorldState } from "../world_state";
import { intrinsicsFromFov, worldToCamera, type Mat3, type Mat4 } from "./camera";
import type { Engine } from "./engine";
import { PosePredictor } from "./pose_predictor";
import { effectiveMode, probeCapability } from "./render_mode";

const CAUGHT_UP_MS = 400; // the feed is idle this long: the view's region is in
const SHOW_ANYWAY_MS = 5000; // a feed that never pauses (huge world): show what is in after this

export interface LocalModeHooks {
  /** Send a message to the server; false when not connected. */
  send(message: ClientMessage): boolean;
  /** Drawing size in device pixels (the size the video is asked for). */
  viewSize(): { width: number; height: number };
  /** Vertical field of view (radians), as asked of the server. */
  fovY(): number;
  /** Whether the page draws something else now (WebXR session): local drawing pauses. */
  paused(): boolean;
}

/** One picture, in the server's camera conventions (LocalRenderer draws it). */
export interface ViewSpec {
  w2c: Mat4;
  K: Mat3;
  width: number;
  height: number;
}

const NO_STATS = { chunksShown: 0, chunksHeld: 0, splats: 0, farChunksShown: 0, farSplats: 0, pieces: 0, bytes: 0, badPieces: 0, lastPieceAt: -1, firstChunkAt: -1 };

export class LocalMode {
  readonly canvas: HTMLCanvasElement;
  readonly predictor = new PosePredictor();
  /** The store, renderer and avatars, once loaded (null: local rendering never started). */
  engine: Engine | null = null;
  /** The mode in effect ("auto" resolved). */
  mode: "video" | "local" = "video";
  /** The local picture covers the video now. */
  showing = false;
  /** Frames drawn locally, and when the first one since asking for the splats was (performance.now(), -1: none). */
  framesDrawn = 0;
  firstFrameAt = -1;
  /** When local mode last asked for the splats (performance.now()). */
  subscribedAt = -1;
  private subscribed = false;
  private caughtUp = false;
  private lastFrameAt = 0;
  private welcomed: Welcome | null = null;
  private loading: Promise<Engine> | null = null;
  private readonly drawTimes: number[] = [];

  constructor(
    settings: SettingsStore,
    private readonly world: WorldState,
    private readonly hooks: LocalModeHooks,
  ) {
    this.canvas = document.getElementById("local-view") as HTMLCanvasElement;
    this.mode = effectiveMode(settings.values.renderMode);
    settings.onChange((now, before) => {
      if (now.renderMode !== before.renderMode) this.setMode(effectiveMode(now.renderMode));
    });
    if (this.mode === "local") void this.loadEngine();
    const frame = (now: number): void => {
      this.frame(now);
      requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
  }

  /** What the feed sent and what is drawn (zeros before local rendering started). */
  get stats(): typeof NO_STATS {
    return this.engine?.store.stats ?? NO_STATS;
  }

  /** The world's sky as the welcome gave it (null: the default sky). */
  get sky(): SkyInfo | null {
    return this.welcomed?.sky ?? null;
  }

  /** Load three.js and Spark (once) and make the store, renderer and avatars. */
  loadEngine(): Promise<Engine> {
    this.loading ??= import("./engine").then(({ makeEngine }) => {
      const engine = makeEngine(this.canvas, { ack: (id) => void this.hooks.send({ type: "splat_ack", id }), changed: () => undefined });
      engine.renderer.setSky(this.sky);
      this.engine = engine;
      return engine;
    });
    return this.loading;
  }

  /** A (re)joined world: the server's feed starts over for this connection. */
  welcome(w: Welcome): void {
    this.welcomed = w;
    this.predictor.reset(w.pose);
    this.engine?.store.clear();
    this.engine?.renderer.setSky(w.sky ?? null);
    this.subscribed = false;
    this.caughtUp = false; // the frame loop subscribes once the engine is in
  }

  /** Server messages this mode cares about (the session passes them all). */
  message(m: ServerMessage): void {
    switch (m.type) {
      case "splat_piece":
        if (this.subscribed && this.engine) this.engine.store.receive(m);
        else this.hooks.send({ type: "splat_ack", id: m.id }); // stopped meanwhile: free the server's slot
        break;
      case "splat_forget":
        this.engine?.store.forget(m.chunk_ids);
        break;
      case "players": {
        const me = m.players.find((p) => p.id === this.world.myId);
        if (me) this.predictor.serverPose(me.position, me.yaw);
        break;
      }
      default:
        break;
    }
  }

  /** An input went out to the server (look and movement are predicted from it). */
  inputSent(input: Input): void {
    this.predictor.inputSent(input);
  }

  setRttMs(rttMs: number): void {
    this.predictor.rttMs = rttMs;
  }

  /** The view drawn now, as the server would draw it for this pose. */
  currentView(): ViewSpec {
    const { width, height } = this.hooks.viewSize();
    const p = this.predictor;
    return { w2c: worldToCamera(p.position, p.yaw, p.pitch, p.roll), K: intrinsicsFromFov(width, height, this.hooks.fovY()), width, height };
  }

  /** Local frames per second over the last second. */
  fps(now = performance.now()): number {
    while (this.drawTimes.length && this.drawTimes[0]! < now - 1000) this.drawTimes.shift();
    return this.drawTimes.length;
  }

  private setMode(mode: "video" | "local"): void {
    if (mode === this.mode) return;
    this.mode = mode;
    if (mode === "local") {
      void this.loadEngine(); // the frame loop subscribes once it is in
    } else {
      this.hooks.send({ type: "splats", enabled: false });
      this.subscribed = false;
      this.caughtUp = false;
      this.engine?.store.clear();
      this.show(false);
    }
  }

  private subscribe(): void {
    const cap = probeCapability();
    this.subscribed = this.hooks.send({ type: "splats", enabled: true, max_splats: cap.maxSplats, max_far_splats: cap.maxFarSplats });
    this.subscribedAt = performance.now();
    this.firstFrameAt = -1;
    this.caughtUp = false;
  }

  private show(on: boolean): void {
    if (this.showing === on) return;
    this.showing = on;
    this.canvas.hidden = !on;
    if (!on) this.engine?.renderer.invalidate(); // shown again: draw afresh, not the old frame
  }

  private frame(now: number): void {
    // Real time, even at a few frames a second (software GL); a stall (hidden tab) does not jump.
    const dt = this.lastFrameAt ? Math.min(0.5, (now - this.lastFrameAt) / 1000) : 0;
    this.lastFrameAt = now;
    this.predictor.advance(dt, now); // in every mode, so that switching keeps the pose
    const engine = this.engine;
    if (this.mode !== "local" || this.hooks.paused() || !engine) {
      this.show(false);
      return;
    }
    if (!this.subscribed && this.welcomed) this.subscribe(); // a new connection, or the engine just came in
    const stats = engine.store.stats;
    if (!this.caughtUp && stats.chunksShown > 0) {
      const idle = now - stats.lastPieceAt > CAUGHT_UP_MS;
      this.caughtUp = idle || now - this.subscribedAt > SHOW_ANYWAY_MS;
    }
    if (!this.caughtUp) {
      this.show(false);
      return;
    }
    const view = this.currentView();
    if (engine.avatars.update(this.world.players.values(), this.world.myId, view.height)) engine.renderer.invalidate();
    // Same view, nothing new: the canvas keeps the last frame (standing still costs nothing).
    if (!engine.renderer.renderIfChanged(view) && this.showing) return;
    this.show(true);
    this.framesDrawn += 1;
    if (this.firstFrameAt < 0) this.firstFrameAt = now;
    this.drawTimes.push(now);
  }
}
