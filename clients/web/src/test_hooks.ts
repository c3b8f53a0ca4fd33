// window.__worldstream: a read-only view of the client's state for the browser tests (and
// for anyone curious in the devtools console), plus dropConnection() to test recovery.
import type { GameSession } from "./session";
import type { EyeCapture } from "./xr/vr_mode";

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
    framesReprojected: number; lastHeadPose: unknown; fovY: number | null;
  };
  /** Tests, VR: keep showing the current video frame (as if the network stalled), and read back the first eye's next picture. */
  holdVrVideo(hold: boolean): void;
  captureVrEye(): Promise<EyeCapture>;
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
        framesDrawn: vr.framesDrawn, framesReprojected: vr.framesReprojected, lastHeadPose: vr.lastHeadPose, fovY: vr.fovY,
      };
    },
    get lookSent() {
      return { ...session.sender.lookSent };
    },
    get viewRequested() {
      return session.viewRequested;
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
    refreshVideo() {
      session.refreshVideo();
    },
  };
  (window as unknown as { __worldstream: WorldstreamHooks }).__worldstream = hooks;
}
