// window.__worldstream: a read-only view of the client's state for the browser tests (and
// for anyone curious in the devtools console), plus dropConnection() to test recovery.
import { probeCapability } from "./local/render_mode";
import type { GameSession } from "./session";
import type { EyeCapture } from "./xr/eye_capture";

export interface WorldstreamHooks {
  readonly ready: boolean;
  readonly framesPresented: number;
  readonly fps: number;
  readonly connectionState: string;
  readonly rtcState: string;
  readonly reconnects: number;
  readonly resumed: boolean;
  readonly videoRefreshes: number;
  /** Times the server said video_ended (each answered by a new offer). */
  readonly videoRestarts: number;
  readonly world: string;
  readonly myId: string;
  readonly players: Array<{ id: string; name: string; position: number[]; yaw: number }>;
  readonly pose: { position: number[]; yaw: number; pitch: number };
  readonly latency: { p50: number | null; p95: number | null; samples: number; matchedFrames: number; rtpOffset: number | null };
  readonly stats: unknown;
  readonly generation: { active: number; requested: number; done: number; failed: number; indicatorShown: number; indicatorVisible: boolean };
  readonly exploredCells: number;
  readonly inputsSent: number;
  /** The "blocked" cue: times it appeared, and whether it shows now. */
  readonly blockedCue: { shown: number; visible: boolean };
  readonly flying: boolean;
  readonly overlay: string;
  readonly shareUrl: string;
  readonly lastError: { code: string; message: string } | null;
  /** The player's settings (settings.ts) and whether the settings panel and the help are open. */
  readonly settings: unknown;
  readonly settingsOpen: boolean;
  readonly helpOpen: boolean;
  /** The video size asked of the server in the last hello. */
  readonly viewRequested: { width: number; height: number; stereo: boolean } | null;
  /** WebXR: in VR now, head poses sent, frames drawn in the headset, the last head pose sent. */
  readonly vr: {
    active: boolean; buttonShown: boolean; vignette: number; xrFrames: number; headPosesSent: number; framesDrawn: number;
    /** Headset frames showing the video turned to the head pose (the frame's own pose known). */
    framesReprojected: number;
    /** Times the rig moved to where the server's collision put the head. */
    collisionCorrections: number;
    /** Headset frames drawn from the splats in this browser (render mode local). */
    localFramesDrawn: number;
    lastHeadPose: unknown; fovY: number | null;
  };
  /** Tests, VR: keep showing the current video frame (as if the network stalled), and read back the first eye's next picture. */
  holdVrVideo(hold: boolean): void;
  captureVrEye(): Promise<EyeCapture>;
  /** Tests, VR in render mode local: which layers headset frames draw (the far field, the scene's splats). */
  showVrLayers(layers: { far: boolean; scene: boolean }): void;
  /** Local rendering: mode in effect, whether it covers the video, frames, what the feed sent. */
  readonly local: {
    /** firstFrameMs / firstChunkMs: from asking for the splats to the first local frame / the first chunk decoded. */
    mode: string; showing: boolean; framesDrawn: number; fps: number; firstFrameMs: number | null; firstChunkMs: number | null;
    /** Ground the server has explored around this player so far (m²: explored cells times their area). */
    exploredM2: number;
    chunks: number; chunksHeld: number; splats: number; pieces: number; bytes: number; badPieces: number;
    /** Far-field chunks drawn (behind the scene) and their Gaussians. */
    farChunks: number; farSplats: number;
    avatars: number; pose: { position: number[]; yaw: number; pitch: number }; capability: unknown;
    /** Ids of the scene and far-field chunks drawn, and the sky the welcome gave (null: the default). */
    chunkIds: number[]; farChunkIds: number[]; sky: unknown;
  };
  /** Draw a chosen view locally (OpenCV w2c and K, row-major) and return its RGBA pixels,
   * top row first, base64. Makes the renderer if local mode never has. */
  captureLocal(view: { w2c: number[]; K: number[]; width: number; height: number }): Promise<string>;
  /** Look change sent to the server so far (radians). */
  readonly lookSent: { yaw: number; pitch: number };
  dropConnection(): void;
  /** Renegotiate the video on the same connection (what the delay guard does). */
  refreshVideo(): void;
}

export function exposeHooks(session: GameSession): void {
  const hooks: WorldstreamHooks = {
    ready: true,
    get framesPresented() {
      return session.frames.presented;
    },
    get fps() {
      return session.frames.fps();
    },
    get connectionState() {
      return session.connection.state;
    },
    get rtcState() {
      return session.rtcState;
    },
    get reconnects() {
      return session.connection.reconnects;
    },
    get videoRefreshes() {
      return session.delayGuard.refreshes;
    },
    get videoRestarts() {
      return session.videoRestarts;
    },
    get resumed() {
      return session.resumed;
    },
    get world() {
      return session.world.world;
    },
    get myId() {
      return session.world.myId;
    },
    get players() {
      return [...session.world.players.values()].map((p) => ({ id: p.id, name: p.name, position: [...p.position], yaw: p.yaw }));
    },
    get pose() {
      const pose = session.world.pose;
      return { position: [...pose.position], yaw: pose.yaw, pitch: pose.pitch };
    },
    get latency() {
      return session.latency.summary();
    },
    get stats() {
      return { ...session.stats, rttMs: session.rttMs, serverMtpP50: session.serverMtpP50 };
    },
    get generation() {
      const totals = session.world.totals;
      return {
        active: session.world.activeJobs().length,
        requested: totals.requested,
        done: totals.done,
        failed: totals.failed,
        cancelled: totals.cancelled,
        indicatorShown: session.hud.generation.timesShown,
        indicatorVisible: session.hud.generation.visible,
      };
    },
    get exploredCells() {
      return session.world.explored.size;
    },
    get blockedCue() {
      return { shown: session.hud.blockedShown, visible: session.hud.blockedVisible };
    },
    get inputsSent() {
      return session.sender.sentCount;
    },
    get flying() {
      return session.sender.flying;
    },
    get overlay() {
      return session.overlay.kind;
    },
    get shareUrl() {
      return session.hud.share.element.dataset["url"] ?? "";
    },
    get lastError() {
      return session.lastError;
    },
    get settings() {
      return { ...session.settings.values };
    },
    get settingsOpen() {
      return session.settingsPanel.open;
    },
    get helpOpen() {
      return session.help.open;
    },
    get vr() {
      const vr = session.vr;
      return {
        active: vr.active, buttonShown: !vr.button.hidden, vignette: vr.vignette, xrFrames: vr.xrFrames, headPosesSent: vr.headPosesSent,
        framesDrawn: vr.framesDrawn, framesReprojected: vr.framesReprojected, collisionCorrections: vr.collisionCorrections,
        localFramesDrawn: vr.localFramesDrawn,
        lastHeadPose: vr.lastHeadPose, fovY: vr.fovY,
      };
    },
    get lookSent() {
      return { ...session.sender.lookSent };
    },
    get viewRequested() {
      return session.viewRequested;
    },
    get local() {
      const local = session.local;
      const s = local.stats;
      const p = local.predictor;
      return {
        mode: local.mode, showing: local.showing, framesDrawn: local.framesDrawn, fps: local.fps(),
        firstFrameMs: local.firstFrameAt >= 0 && local.subscribedAt >= 0 ? local.firstFrameAt - local.subscribedAt : null,
        firstChunkMs: s.firstChunkAt >= 0 && local.subscribedAt >= 0 ? s.firstChunkAt - local.subscribedAt : null,
        exploredM2: session.world.explored.size * session.world.cellSize ** 2,
        chunks: s.chunksShown, chunksHeld: s.chunksHeld, splats: s.splats, farChunks: s.farChunksShown, farSplats: s.farSplats, pieces: s.pieces, bytes: s.bytes, badPieces: s.badPieces,
        avatars: local.engine?.avatars.count ?? 0, pose: { position: [...p.position], yaw: p.yaw, pitch: p.pitch }, capability: probeCapability(),
        chunkIds: local.engine ? local.engine.store.held().filter((c) => c.mesh && c.layer === "scene").map((c) => c.id) : [],
        farChunkIds: local.engine ? local.engine.store.held().filter((c) => c.mesh && c.layer === "far").map((c) => c.id) : [], sky: local.sky,
      };
    },
    async captureLocal(view) {
      const engine = await session.local.loadEngine();
      engine.avatars.update(session.world.players.values(), session.world.myId, view.height);
      const rgba = await engine.renderer.capture(view);
      let text = "";
      for (let i = 0; i < rgba.length; i += 0x8000) text += String.fromCharCode(...rgba.subarray(i, i + 0x8000));
      return btoa(text);
    },
    dropConnection() {
      session.dropConnection();
    },
    holdVrVideo(hold) {
      session.vr.holdVideo = hold;
    },
    captureVrEye() {
      return session.vr.capture();
    },
    showVrLayers({ far, scene }) {
      const engine = session.local.engine;
      if (!engine) return;
      engine.renderer.farInXr = far;
      engine.store.root.visible = scene;
    },
    refreshVideo() {
      session.refreshVideo();
    },
  };
  (window as unknown as { __worldstream: WorldstreamHooks }).__worldstream = hooks;
}
