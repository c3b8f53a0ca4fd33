// The heads-up display: status and measurements (top left), generation progress (top
// centre), minimap and players (top right), caption box (bottom left), mode and hints
// (bottom centre). It floats over the video and keeps the middle of the view clear.
import { CaptionBox } from "./caption_box";
import { byId, el } from "./dom";
import { GenerationPill } from "./generation_pill";
import type { LatencySummary } from "./latency";
import { Minimap } from "./minimap";
import { PlayersList } from "./players_list";
import { RevokeButton, ShareButton } from "./share_link";
import type { StreamStats } from "./stream_stats";
import type { WorldState } from "./world_state";

export interface HudReadings {
  fps: number;
  stats: StreamStats;
  latency: LatencySummary;
  rttMs: number | null;
  serverMtpP50: number | null;
}

const HINT_MS = 9000;
const BLOCKED_CUE_MS = 400; // the cue stays this long after the last frame that said "blocked"
const READOUT_EVERY_MS = 250; // numbers that change every frame are unreadable

function metric(label: string, id: string): [HTMLElement, HTMLElement] {
  const value = el("span", "metric-value", { id });
  return [el("div", "metric", {}, [el("span", "metric-label", {}, [label]), value]), value];
}

function formatBitrate(bps: number): string {
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(1)} Mb/s`;
  return `${Math.round(bps / 1e3)} kb/s`;
}

function formatMs(ms: number | null): string {
  return ms === null ? "–" : `${Math.round(ms)}`;
}

export class Hud {
  readonly caption: CaptionBox;
  readonly generation: GenerationPill;
  readonly share = new ShareButton();
  readonly revoke: RevokeButton;
  private readonly root = byId("hud");
  private readonly worldName = el("span", "world-name", { id: "world-name" });
  private readonly liveDot = el("span", "live-dot");
  private readonly fps: HTMLElement;
  private readonly bitrate: HTMLElement;
  private readonly latency: HTMLElement;
  private readonly rtt: HTMLElement;
  private readonly mode = el("span", "mode-badge", { id: "mode" });
  private readonly hint = el("span", "hint", { id: "hint" });
  // Shown while the server says the walk is blocked, so a player who stops knows why.
  private readonly blockedCue = el("span", "blocked-cue", { id: "blocked-cue", role: "status" }, ["Blocked"]);
  private blockedUntil = 0;
  /** Times the blocked cue appeared (it was hidden before); read by the browser tests. */
  blockedShown = 0;
  private readonly minimap: Minimap;
  private readonly players: PlayersList;
  private hintUntil = 0;
  private readoutAt = 0;

  constructor(
    private readonly world: WorldState,
    onCaption: (text: string) => boolean,
    onRevoke: () => boolean,
  ) {
    this.caption = new CaptionBox(onCaption);
    this.revoke = new RevokeButton(onRevoke);
    this.generation = new GenerationPill(world);
    this.players = new PlayersList(world);
    const canvas = el("canvas", "minimap", { id: "minimap", width: 168, height: 168 });
    this.minimap = new Minimap(canvas, world);

    const [fpsBox, fps] = metric("fps", "hud-fps");
    const [bitrateBox, bitrate] = metric("bitrate", "hud-bitrate");
    const [latencyBox, latency] = metric("latency p50/p95", "hud-latency");
    const [rttBox, rtt] = metric("rtt", "hud-rtt");
    latencyBox.title = "Input sent → first frame showing it on screen, measured in this browser (last 10 s)";
    this.fps = fps;
    this.bitrate = bitrate;
    this.latency = latency;
    this.rtt = rtt;

    const status = el("div", "panel status", {}, [
      el("div", "status-row", {}, [this.liveDot, el("span", "brand", {}, ["worldstream"]), this.worldName, this.share.element, this.revoke.element]),
      el("div", "metrics", {}, [fpsBox, bitrateBox, latencyBox, rttBox]),
    ]);
    const side = el("div", "side", {}, [el("div", "panel map-panel", {}, [canvas, this.players.element])]);
    const bottom = el("div", "bottom-bar", {}, [this.blockedCue, this.mode, this.hint]);
    this.root.append(status, this.generation.element, side, this.caption.element, bottom);
    window.addEventListener("keydown", (e) => {
      if (e.code === "KeyH" && !(e.target instanceof HTMLInputElement)) this.root.classList.toggle("minimal");
    });
  }

  /** Chips next to the world's name (settings) and panels floating over the view. */
  attach(chips: HTMLElement[], panels: HTMLElement[]): void {
    this.root.querySelector(".status-row")?.append(...chips);
    this.root.append(...panels);
  }

  show(): void {
    this.root.hidden = false;
    byId("crosshair").hidden = false;
  }

  /** ``invite``: a private world's invite (its links carry it); ``owner``: this player made the world. */
  joined(invite: string | null, owner: boolean): void {
    this.worldName.textContent = this.world.world;
    this.worldName.classList.toggle("private", invite !== null);
    this.worldName.title = invite !== null ? "Private world: only people with its invite link can join" : "";
    this.share.setWorld(this.world.world, invite);
    this.revoke.setOwner(owner, invite !== null);
    this.caption.setCurrent(this.world.caption);
    this.hintUntil = performance.now() + HINT_MS;
  }

  setLive(live: boolean): void {
    this.liveDot.classList.toggle("on", live);
  }

  setMode(flying: boolean, pointerLocked: boolean, touch: boolean): void {
    this.mode.textContent = flying ? "FLY" : "WALK";
    this.mode.classList.toggle("flying", flying);
    if (touch) {
      this.hint.textContent = flying ? "Left thumb moves · drag to look · ▲▼ rise and sink" : "Left thumb moves · drag to look · ✈ flies";
      return;
    }
    const keys = flying
      ? "WASD move · Q/E turn · Space/C up/down · Shift fast · F walk"
      : "WASD move · Q/E or ←/→ turn · Shift run · F fly";
    const look = pointerLocked ? "Esc frees the mouse" : "Click to look (or drag)";
    this.hint.textContent = `${look} · ${keys} · H hides HUD · ? help`;
  }

  /** A frame_info said the player's move was blocked (by a wall, a tree, a cliff). */
  blocked(now: number): void {
    if (now >= this.blockedUntil) this.blockedShown += 1;
    this.blockedUntil = now + BLOCKED_CUE_MS;
  }

  get blockedVisible(): boolean {
    return this.blockedCue.classList.contains("on");
  }

  /** Per animation frame: cheap updates only (text a few times a second, one canvas). */
  frame(now: number, read: () => HudReadings): void {
    if (now - this.readoutAt >= READOUT_EVERY_MS) {
      this.readoutAt = now;
      const r = read();
      this.fps.textContent = r.fps.toFixed(0);
      this.bitrate.textContent = formatBitrate(r.stats.bitrate);
      this.latency.textContent = `${formatMs(r.latency.p50)} / ${formatMs(r.latency.p95)} ms`;
      this.latency.title = `${r.latency.samples} samples in 10 s; the server's share (input received → frame encoded), p50: ${formatMs(r.serverMtpP50)} ms`;
      this.rtt.textContent = r.rttMs === null ? "–" : `${r.rttMs.toFixed(0)} ms`;
    }
    this.hint.classList.toggle("faded", now > this.hintUntil);
    this.blockedCue.classList.toggle("on", now < this.blockedUntil);
    this.generation.update(now);
    this.players.update();
    this.minimap.draw(now);
  }

  /** Bring the hints back (e.g. pointer lock released). */
  showHints(): void {
    this.hintUntil = performance.now() + HINT_MS;
  }
}
