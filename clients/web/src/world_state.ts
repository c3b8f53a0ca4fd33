// What the client knows about the world it is in: players, its own pose, explored cells,
// and generation jobs under way. Filled from server messages; read by the HUD and tests.
import type { PlayerInfo, PoseInfo, ServerMessage, Welcome } from "./protocol";

export interface GenerationJob {
  id: number;
  center: [number, number, number];
  radius: number;
  fraction: number;
  message: string;
  mine: boolean;
  startedAt: number;
}

export interface GenerationTotals {
  requested: number;
  done: number;
  failed: number;
  /** Jobs dropped because no player needed them any more (not errors). */
  cancelled: number;
  lastDoneAt: number;
}

const STALE_JOB_MS = 120_000; // a job whose end we never heard of (e.g. lost in a reconnect)

export class WorldState {
  world = "";
  seed = 0;
  caption = "";
  myId = "";
  myName = "";
  pose: PoseInfo = { position: [0, 0, 0], yaw: 0, pitch: 0, roll: 0 };
  players = new Map<string, PlayerInfo>();
  /** Explored cells: key "i,j" -> state (EXPLORED_STATES). */
  explored = new Map<string, number>();
  cellSize = 1;
  jobs = new Map<number, GenerationJob>();
  totals: GenerationTotals = { requested: 0, done: 0, failed: 0, cancelled: 0, lastDoneAt: 0 };
  /** Bumped on every change the minimap draws, so it redraws only when needed. */
  version = 0;

  welcome(w: Welcome): void {
    const newWorld = w.world !== this.world;
    this.world = w.world;
    this.seed = w.seed;
    this.caption = w.caption;
    this.myId = w.player_id;
    this.pose = w.pose;
    this.cellSize = w.server.explored_cell_size || this.cellSize;
    // Jobs in flight when the connection dropped will not report back to this connection.
    this.jobs.clear();
    this.players.clear();
    if (newWorld) this.explored.clear();
    this.version += 1;
  }

  /** Apply a server event; returns true if it changed anything shown. */
  apply(m: ServerMessage): boolean {
    switch (m.type) {
      case "players":
        this.players = new Map(m.players.map((p) => [p.id, p]));
        this.updateOwnPose();
        break;
      case "player_joined":
        this.players.set(m.player.id, m.player);
        break;
      case "player_left":
        this.players.delete(m.id);
        break;
      case "caption_changed":
        this.caption = m.text;
        break;
      case "explored":
        if (m.cell_size > 0 && m.cell_size !== this.cellSize) {
          this.cellSize = m.cell_size;
          this.explored.clear();
        }
        for (const [i, j, state] of m.cells) this.explored.set(`${i},${j}`, state);
        break;
      case "generation_requested":
        this.totals.requested += 1;
        this.jobs.set(m.job_id, {
          id: m.job_id,
          center: m.center,
          radius: m.radius,
          fraction: 0,
          message: "",
          mine: m.requested_by.includes(this.myId),
          startedAt: performance.now(),
        });
        break;
      case "generation_progress": {
        const job = this.jobs.get(m.job_id);
        if (job) {
          job.fraction = m.fraction;
          job.message = m.message;
        }
        break;
      }
      case "generation_done":
        this.totals.done += 1;
        this.totals.lastDoneAt = performance.now();
        this.jobs.delete(m.job_id);
        break;
      case "generation_failed":
        if (m.cancelled) this.totals.cancelled += 1;
        else this.totals.failed += 1;
        this.jobs.delete(m.job_id);
        break;
      default:
        return false;
    }
    this.version += 1;
    return true;
  }

  /** Jobs still running (stale ones dropped). */
  activeJobs(now = performance.now()): GenerationJob[] {
    for (const [id, job] of this.jobs) if (now - job.startedAt > STALE_JOB_MS) this.jobs.delete(id);
    return [...this.jobs.values()];
  }

  private updateOwnPose(): void {
    const me = this.players.get(this.myId);
    if (me) this.pose = { ...this.pose, position: me.position, yaw: me.yaw };
  }
}
