// The player's settings: kept in this browser (localStorage), read by the input devices
// and the session whenever they need them, so a change applies at once.

export type RenderMode = "video" | "local" | "auto";
export type Quality = "low" | "medium" | "high";
export type VrTurn = "snap" | "smooth";

export interface Settings {
  /** Mouse look speed, a multiple of the default (0.0024 rad per pixel). */
  sensitivity: number;
  /** Mouse up looks down (flight-stick style). */
  invertY: boolean;
  /** Who draws the world: the server's video, this browser (splats), or auto by capability. */
  renderMode: RenderMode;
  /** Video resolution asked of the server, as a share of the window's device pixels. */
  quality: Quality;
  /** VR right thumbstick: turn in 30° steps (comfortable for most) or continuously. */
  vrTurn: VrTurn;
  /** VR: darken the edges of the view while the thumbsticks move or turn you (less motion sickness). */
  vrVignette: boolean;
}

export const MIN_SENSITIVITY = 0.2;
export const MAX_SENSITIVITY = 4;
export const QUALITY_SCALE: Record<Quality, number> = { low: 0.5, medium: 0.75, high: 1 };
export const DEFAULT_SETTINGS: Settings = { sensitivity: 1, invertY: false, renderMode: "auto", quality: "high", vrTurn: "snap", vrVignette: true };

const STORAGE_KEY = "worldstream.settings";
const RENDER_MODES: readonly RenderMode[] = ["video", "local", "auto"];
const QUALITIES: readonly Quality[] = ["low", "medium", "high"];

/** Anything stored (possibly by an older client, possibly garbage) made into valid settings. */
export function sanitize(raw: unknown): Settings {
  const s = (typeof raw === "object" && raw !== null ? raw : {}) as Record<string, unknown>;
  const sensitivity = typeof s["sensitivity"] === "number" && Number.isFinite(s["sensitivity"]) ? s["sensitivity"] : DEFAULT_SETTINGS.sensitivity;
  return {
    sensitivity: Math.min(MAX_SENSITIVITY, Math.max(MIN_SENSITIVITY, sensitivity)),
    invertY: s["invertY"] === true,
    renderMode: RENDER_MODES.includes(s["renderMode"] as RenderMode) ? (s["renderMode"] as RenderMode) : DEFAULT_SETTINGS.renderMode,
    quality: QUALITIES.includes(s["quality"] as Quality) ? (s["quality"] as Quality) : DEFAULT_SETTINGS.quality,
    vrTurn: s["vrTurn"] === "smooth" ? "smooth" : "snap",
    vrVignette: s["vrVignette"] !== false,
  };
}

export class SettingsStore {
  private current: Settings;
  private readonly listeners: Array<(now: Settings, before: Settings) => void> = [];

  constructor() {
    let stored: unknown = null;
    try {
      stored = JSON.parse(window.localStorage.getItem(STORAGE_KEY) ?? "null");
    } catch {
      stored = null; // unreadable or blocked storage: defaults
    }
    this.current = sanitize(stored);
  }

  get values(): Readonly<Settings> {
    return this.current;
  }

  /** Change some settings, keep them, and tell the listeners (only when something changed). */
  update(change: Partial<Settings>): void {
    const before = this.current;
    const now = sanitize({ ...before, ...change });
    if (JSON.stringify(now) === JSON.stringify(before)) return;
    this.current = now;
    try {
      window.localStorage.setItem(STORAGE_KEY, JSON.stringify(now));
    } catch {
      // private mode or full storage: the settings hold for this page only
    }
    for (const listener of this.listeners) listener(now, before);
  }

  onChange(listener: (now: Settings, before: Settings) => void): void {
    this.listeners.push(listener);
  }
}
