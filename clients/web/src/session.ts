// One player's time in one world: ties the connection, the video link, the input devices,
// the measurements and the HUD together. Survives reconnects (a new socket and peer
// connection each time; the same world, player and place via the resume token).
import { WorldConnection, type JoinTarget, type LinkState } from "./connection";
import { DelayGuard } from "./delay_guard";
import { byId } from "./dom";
import { FrameClock } from "./frame_clock";
import { Hud } from "./hud";
import { GamepadInput } from "./input/gamepad";
import { KeyboardMouse } from "./input/keyboard_mouse";
import { InputSender } from "./input/sender";
import { TouchControls } from "./input/touch";
import { LatencyMeter } from "./latency";
import { LocalMode } from "./local/local_mode";
import { localPossible } from "./local/render_mode";
import { HelpOverlay } from "./help_overlay";
import { Overlay } from "./overlay";
import type { ServerMessage, View, Welcome } from "./protocol";
import { VideoLink } from "./rtc";
import { QUALITY_SCALE, SettingsStore } from "./settings";
import { SettingsPanel } from "./settings_panel";
import { showWorldInAddressBar } from "./share_link";
import type { StartChoice } from "./start_screen";
import { EMPTY_STATS, StreamStatsPoller, type StreamStats } from "./stream_stats";
import { describeError, toast } from "./toasts";
import { WorldState } from "./world_state";
import { LocalXr } from "./xr/local_xr";
import { VrMode } from "./xr/vr_mode";

const PING_EVERY_MS = 2000;
const STATS_EVERY_MS = 1000;
const LIVE_WITHIN_MS = 1000; // the live dot goes dark when no frame came for this long
const VIDEO_RESTART_MIN_MS = 2000; // at most one new offer per this long after video_ended
const FOV_Y = (60 * Math.PI) / 180;

function socketUrl(): string {
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${window.location.host}/ws`;
}

/** Ask for the window's size in device pixels times the quality's share (the server renders
 * at most its own size). */
function viewRequest(scale: number): View {
  const ratio = (window.devicePixelRatio || 1) * scale;
  const clamp = (v: number): number => Math.max(16, Math.min(4096, Math.round(v * ratio)));
  return { width: clamp(window.innerWidth), height: clamp(window.innerHeight), fov_y: FOV_Y };
}

/** Both eyes side by side, each at the headset's eye size and field of view. */
function stereoViewRequest(eye: { width: number; height: number }, fovY: number): View {
  const clamp = (v: number): number => Math.max(16, Math.min(4096, Math.round(v)));
  return { width: clamp(2 * eye.width), height: clamp(eye.height), fov_y: Math.max(0.1, Math.min(3, fovY)), stereo: true };
}

export class GameSession {
  readonly world = new WorldState();
  readonly frames: FrameClock;
  readonly latency = new LatencyMeter();
  readonly connection: WorldConnection;
  readonly sender: InputSender;
  readonly hud: Hud;
  readonly overlay: Overlay;
  readonly settings = new SettingsStore();
  readonly settingsPanel: SettingsPanel;
  readonly help = new HelpOverlay();
  readonly vr: VrMode;
  private localXr: LocalXr | null = null;
  /** Local rendering: the splats drawn in this browser (settings: render mode). */
  readonly local: LocalMode;
  /** The video size asked for in the last hello. */
  viewRequested: { width: number; height: number; stereo: boolean; fovY: number } | null = null;
  private readonly video = byId<HTMLVideoElement>("view");
  private readonly keyboardMouse: KeyboardMouse;
  private readonly touch: TouchControls;
  private link: VideoLink | null = null;
  private poller: StreamStatsPoller | null = null;
  private framesAtJoin = 0;
  private pingId = 0;
  readonly delayGuard = new DelayGuard(() => this.refreshVideo());
  stats: StreamStats = { ...EMPTY_STATS };
  rttMs: number | null = null;
  serverMtpP50: number | null = null;
  rtcState: RTCPeerConnectionState | "none" = "none";
  /** Times the server said video_ended (window.__worldstream.videoRestarts). */
  videoRestarts = 0;
  private videoRestartAt = -Infinity;
  private videoRestartTimer: number | null = null;
  lastError: { code: string; message: string } | null = null;
  /** Did the last welcome give back an earlier pose (resume token accepted)? */
  resumed = false;
  /** A private world's current invite (null: a public world). */
  invite: string | null = null;
  /** Is this player the world's creator (it may revoke the invite)? */
  owner = false;

  constructor(choice: StartChoice) {
    this.world.myName = choice.playerName;
    this.frames = new FrameClock(this.video);
    this.frames.onFrame((frame) => {
      this.latency.framePresented(frame);
      this.vr.videoPresented(frame.rtpTimestamp === null ? null : frame.rtpTimestamp >>> 0);
      if (this.overlay.kind === "starting" && this.frames.presented > this.framesAtJoin) this.overlay.show({ kind: "hidden" });
    });

    this.hud = new Hud(
      this.world,
      (text) => this.connection.send({ type: "caption", text }),
      () => this.connection.send({ type: "revoke_invite" }),
    );
    this.overlay = new Overlay(
      () => this.connection.retryNow(),
      () => window.location.assign(window.location.pathname),
    );

    const surface = byId("look-surface");
    const toggleFly = (): void => this.toggleFly();
    this.keyboardMouse = new KeyboardMouse(
      surface,
      toggleFly,
      (locked) => {
        surface.classList.toggle("locked", locked);
        if (!locked) this.hud.showHints();
        this.refreshMode();
      },
      this.settings,
    );
    this.settingsPanel = new SettingsPanel(this.settings, localPossible());
    this.local = new LocalMode(this.settings, this.world, {
      send: (message) => this.connection.send(message),
      viewSize: () => {
        const v = viewRequest(QUALITY_SCALE[this.settings.values.quality]);
        return { width: v.width ?? 640, height: v.height ?? 360 };
      },
      fovY: () => FOV_Y,
      paused: () => this.vr.active,
    });
    this.vr = new VrMode(this.video, this.settings, {
      pose: () => this.world.pose,
      sendHeadPose: (position, orientation) => {
        const seq = this.sender.takeSeq();
        const at = performance.now();
        if (!this.connection.send({ type: "head_pose", seq, t_ms: performance.timeOrigin + at, position, orientation })) return null;
        this.latency.inputSent(seq, at);
        return seq;
      },
      videoView: () => ({ stereo: this.viewRequested?.stereo ?? false, fovY: this.viewRequested?.fovY ?? FOV_Y }),
      frameSeq: (rtp) => this.latency.inputSeqOf(rtp),
      newestFrameSeq: () => this.latency.newestInputSeq,
      localXr: () => (this.local.mode === "local" ? (this.localXr ??= new LocalXr(this.local, this.world)) : null),
      // Stereo video in VR, mono outside: a new hello, the resume token keeps the place.
      changed: () => {
        if (this.connection.state === "joined") this.connection.drop();
      },
    });
    this.hud.attach([this.settingsPanel.chip, this.vr.button], [this.settingsPanel.element, this.help.element]);
    void this.vr.probe();
    this.settings.onChange((now, before) => {
      // A new size needs a new hello: reconnect (the resume token keeps the place).
      if (now.quality !== before.quality && this.connection.state === "joined") this.connection.drop();
    });
    this.touch = new TouchControls(byId("touch-layer"), toggleFly);
    window.addEventListener("touchstart", () => this.refreshMode(), { once: true, passive: true }); // touch hints
    const gamepad = new GamepadInput(toggleFly);
    this.sender = new InputSender([this.keyboardMouse, this.touch, gamepad], {
      send: (input) => {
        if (this.vr.active) return false; // in VR the head pose moves the player
        const sent = this.connection.send(input);
        if (sent) this.local.inputSent(input);
        return sent;
      },
      sent: (seq, at) => this.latency.inputSent(seq, at),
    });

    const view = (): View => {
      const v = this.vr.active && this.vr.eyeSize ? stereoViewRequest(this.vr.eyeSize, this.vr.fovY ?? FOV_Y) : viewRequest(QUALITY_SCALE[this.settings.values.quality]);
      this.viewRequested = { width: v.width ?? 0, height: v.height ?? 0, stereo: v.stereo ?? false, fovY: v.fov_y ?? FOV_Y };
      return v;
    };
    this.connection = new WorldConnection(socketUrl(), choice.target, choice.playerName, view, {
      state: (state, detail) => this.linkState(state, detail),
      welcome: (w) => void this.welcome(w),
      message: (m) => this.receive(m),
      closed: () => this.closeLink(),
    });
    const worldLabel = choice.target.kind === "join" ? choice.target.world : choice.target.newWorld.name ?? "";
    this.overlay.show({ kind: "connecting", world: worldLabel });
    this.refreshMode();
    this.connection.start();

    const frame = (now: number): void => {
      this.hud.setLive(now - this.frames.lastPresentedAt < LIVE_WITHIN_MS && this.connection.state === "joined");
      this.hud.frame(now, () => ({
        fps: this.frames.fps(now),
        stats: this.stats,
        latency: this.latency.summary(now),
        rttMs: this.rttMs,
        serverMtpP50: this.serverMtpP50,
      }));
      requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
    window.setInterval(() => void this.sampleStats(), STATS_EVERY_MS);
    window.setInterval(() => this.ping(), PING_EVERY_MS);
  }

  /** Drop the connection the way a network failure would (tests, and trying recovery by hand). */
  dropConnection(): void {
    this.connection.drop();
  }

  get touchActive(): boolean {
    return !byId("touch-layer").hidden;
  }

  private toggleFly(): void {
    this.sender.toggleFly();
    this.touch.setFlying(this.sender.flying);
    this.refreshMode();
    toast(this.sender.flying ? "Flying — Space rises, C sinks" : "Walking", "info");
  }

  private refreshMode(): void {
    this.hud.setMode(this.sender?.flying ?? false, this.keyboardMouse.locked, this.touchActive);
  }

  private linkState(state: LinkState, detail: { attempt: number; retryInMs: number; reason: string }): void {
    switch (state) {
      case "connecting":
        break;
      case "joined":
        this.overlay.show({ kind: "starting" });
        break;
      case "reconnecting":
        this.sender.releaseAll();
        this.local.predictor.release();
        this.overlay.show({ kind: "reconnecting", attempt: detail.attempt, retryInMs: detail.retryInMs, reason: detail.reason });
        break;
      case "offline":
        this.overlay.show({ kind: "offline", retryInMs: detail.retryInMs });
        break;
      case "failed": {
        if (this.connection.displaced) {
          this.overlay.show({
            kind: "failed",
            title: "Playing in another tab",
            message:
              "Your player was picked up by another tab or window of this browser (a duplicated tab, say), " +
              "so it stopped here. Carry on there, or join again here as another player.",
            action: this.recoveryAction("displaced"),
          });
          break;
        }
        const refusal = this.connection.refusal;
        this.overlay.show({
          kind: "failed",
          message: refusal ? describeError(refusal.code, refusal.message, refusal.field) : detail.reason,
          title: refusal?.limit === "idle_timeout" ? "Disconnected while idle" : undefined,
          action: this.recoveryAction(refusal?.code ?? ""),
        });
        break;
      }
    }
  }

  /** A way out of a refusal (create the world a link named, or join the one that exists), or of a takeover by another tab. */
  private recoveryAction(code: string): { label: string; run: () => void } | undefined {
    const request = this.connection.request;
    let next: JoinTarget | null = null;
    let label = "";
    if (code === "world_not_found" && request.kind === "join") {
      next = { kind: "create", newWorld: { name: request.world } };
      label = `Create “${request.world}”`;
    } else if (code === "limit_reached" && request.kind === "join" && this.connection.refusal?.limit === "idle_timeout") {
      next = request; // disconnected for idling: the player decides when to come back
      label = `Rejoin “${request.world}”`;
    } else if (code === "displaced" && request.kind === "join") {
      next = request; // its resume token went with the player: this joins as another one
      label = `Join “${request.world}” here`;
    } else if (code === "world_exists" && request.kind === "create" && request.newWorld.name) {
      next = { kind: "join", world: request.newWorld.name };
      label = `Join “${request.newWorld.name}”`;
    }
    if (!next) return undefined;
    const target = next;
    return {
      label,
      run: () => {
        this.overlay.show({ kind: "connecting", world: target.kind === "join" ? target.world : target.newWorld.name ?? "" });
        this.connection.restart(target);
      },
    };
  }

  private async welcome(w: Welcome): Promise<void> {
    const rejoin = this.world.world === w.world;
    this.world.welcome(w);
    this.resumed = w.resumed;
    this.hud.show();
    this.invite = w.invite ?? null;
    this.owner = Boolean(w.owner_key);
    this.hud.joined(this.invite, this.owner);
    showWorldInAddressBar(w.world, this.invite);
    document.title = `${w.world} · worldstream`;
    if (w.resumed && rejoin) toast("Reconnected — back where you were", "success");
    else if (w.resumed) toast("Welcome back — resumed where you were", "success");
    if (w.notice) toast(w.notice, "info");  // e.g. why the start image is not the first frame
    this.latency.reset();
    this.sender.restart();
    this.vr.restarted();
    this.framesAtJoin = this.frames.presented;
    this.local.welcome(w);

    await this.startVideo();
  }

  /** A new peer connection for the video (the server replaces the old one on a new offer). */
  private async startVideo(): Promise<void> {
    this.closeLink();
    const link = new VideoLink(this.video, (state) => {
      this.rtcState = state;
      // ICE failed or the peer went away while the socket stayed up: start over cleanly.
      if (state === "failed" && this.link === link) this.connection.drop();
    });
    this.link = link;
    this.poller = new StreamStatsPoller(link.pc);
    try {
      const sdp = await link.offer();
      if (this.link === link) this.connection.send({ type: "rtc_offer", sdp });
    } catch (err) {
      toast("Could not start the video stream", "error", String(err));
    }
  }

  /** The server closed our video on its own: offer a new one at once, but not more than
   * once per VIDEO_RESTART_MIN_MS (a server whose video keeps failing is not hammered). */
  private videoEnded(reason: string): void {
    const wait = Math.max(0, this.videoRestartAt + VIDEO_RESTART_MIN_MS - performance.now());
    this.videoRestarts += 1;
    if (this.videoRestartTimer !== null) return;
    this.videoRestartTimer = window.setTimeout(() => {
      this.videoRestartTimer = null;
      this.videoRestartAt = performance.now();
      toast("The video stream restarted", "info", reason);
      void this.startVideo();
    }, wait);
  }

  private closeLink(): void {
    this.link?.close();
    this.link = null;
    this.poller = null;
    this.rtcState = "none";
  }

  private receive(m: ServerMessage): void {
    this.local.message(m);
    switch (m.type) {
      case "splat_piece":
      case "splat_forget":
        return;
      case "rtc_answer":
        this.link?.answer(m.sdp).catch((err) => toast("The video answer was refused", "error", String(err)));
        return;
      case "video_ended":
        this.videoEnded(m.reason);
        return;
      case "ice_candidate":
        void this.link?.remoteCandidate(m.candidate, m.sdp_mid ?? null, m.sdp_mline_index ?? null).catch(() => undefined);
        return;
      case "frame_info":
        this.latency.frameInfo(m.rtp_timestamp, m.input_seq);
        this.vr.serverHead(m.input_seq, m.head_position);
        if (m.blocked) this.hud.blocked(performance.now());
        return;
      case "pong":
        if (m.t_ms) this.rttMs = performance.timeOrigin + performance.now() - m.t_ms;
        if (this.rttMs !== null) this.local.setRttMs(this.rttMs);
        return;
      case "stats":
        this.serverMtpP50 = m.mtp_p50_ms;
        return;
      case "error":
        this.lastError = { code: m.code, message: m.message };
        if (m.code !== "rate_limited" || !document.querySelector(".toast-error")) {
          toast(describeError(m.code, m.message, m.field), "error", m.code);
        }
        return;
      case "generation_failed":
        if (!m.cancelled) toast("A region could not be generated", "error", m.error);
        break;
      case "player_joined":
        if (m.player.id !== this.world.myId) toast(`${m.player.name} joined`, "info");
        break;
      case "player_left":
        if (m.id !== this.world.myId) toast(`${m.name || "A player"} left`, "info");
        break;
      case "caption_changed":
        this.world.apply(m);
        this.hud.caption.setCurrent(m.text); // every player's label follows whoever set it
        if (m.player_id !== this.world.myId) toast(`${m.player_name || "A player"} steered the world: “${m.text}”`, "info");
        return;
      case "welcome":
        return; // handled by the connection
      case "invite": // we revoked the old link: this one is the only one that works now
        this.invite = m.invite;
        this.connection.setInvite(m.invite);
        this.hud.share.setWorld(this.world.world, m.invite);
        showWorldInAddressBar(this.world.world, m.invite);
        toast("New invite link made — the old one no longer lets anyone in", "success");
        return;
      default:
        break;
    }
    this.world.apply(m);
  }

  private async sampleStats(): Promise<void> {
    if (!this.poller) return;
    try {
      this.stats = await this.poller.sample();
    } catch {
      return; // the peer connection closed under us
    }
    if (this.connection.state === "joined") this.delayGuard.observe(this.stats.jitterBufferMs);
  }

  /** Renegotiate the video to drop delay that built up in the jitter buffer. */
  refreshVideo(): void {
    if (this.connection.state !== "joined") return;
    this.latency.reset(); // the inputs sent meanwhile waited for the new stream, not the loop
    void this.startVideo();
  }

  private ping(): void {
    this.connection.send({ type: "ping", id: this.pingId++, t_ms: performance.timeOrigin + performance.now() });
  }
}
