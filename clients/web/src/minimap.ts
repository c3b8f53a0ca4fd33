// A top-down map of the ground plane (x, z), centred on the player and north-up (+z up,
// +x right, so yaw 0 points up and positive yaw turns clockwise): explored cells, regions
// being generated, and every player with their heading.
import { playerColor, SELF_COLOR } from "./colors";
import type { WorldState } from "./world_state";

const SPAN_M = 48; // metres across the map
const GENERATED = 1;
const VISITED = 2;

export class Minimap {
  private drawnVersion = -1;
  private drawnAt = 0;

  constructor(
    private readonly canvas: HTMLCanvasElement,
    private readonly world: WorldState,
  ) {}

  /** Redraw if the world changed (players move ~10 Hz) or a job pulse needs animating. */
  draw(now: number): void {
    const animating = this.world.jobs.size > 0 && now - this.drawnAt > 50;
    if (this.world.version === this.drawnVersion && !animating) return;
    this.drawnVersion = this.world.version;
    this.drawnAt = now;

    const ratio = window.devicePixelRatio || 1;
    const css = this.canvas.clientWidth || 168;
    const size = Math.round(css * ratio);
    if (this.canvas.width !== size) {
      this.canvas.width = size;
      this.canvas.height = size;
    }
    const ctx = this.canvas.getContext("2d");
    if (!ctx) return;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, css, css);

    const scale = css / SPAN_M; // px per metre
    const [mx, , mz] = this.world.pose.position;
    const toScreen = (x: number, z: number): [number, number] => [css / 2 + (x - mx) * scale, css / 2 - (z - mz) * scale];

    this.drawCells(ctx, toScreen, scale, css);
    this.drawJobs(ctx, toScreen, scale, now);
    this.drawPlayers(ctx, toScreen);

    // North marker: which way +z is.
    ctx.fillStyle = "rgba(255,255,255,0.45)";
    ctx.font = "600 9px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.fillText("+z", css / 2, 11);
  }

  private drawCells(ctx: CanvasRenderingContext2D, toScreen: (x: number, z: number) => [number, number], scale: number, css: number): void {
    const cell = this.world.cellSize;
    const px = cell * scale;
    for (const [key, state] of this.world.explored) {
      if (state !== GENERATED && state !== VISITED) continue;
      const comma = key.indexOf(",");
      const i = Number(key.slice(0, comma));
      const j = Number(key.slice(comma + 1));
      // Cell (i, j) spans x in [i, i+1)*cell, z in [j, j+1)*cell; its top edge on screen is z = (j+1)*cell.
      const [sx, sy] = toScreen(i * cell, (j + 1) * cell);
      if (sx > css || sy > css || sx + px < 0 || sy + px < 0) continue;
      ctx.fillStyle = state === VISITED ? "rgba(102, 227, 196, 0.42)" : "rgba(102, 227, 196, 0.16)";
      ctx.fillRect(sx, sy, px + 0.5, px + 0.5);
    }
  }

  private drawJobs(ctx: CanvasRenderingContext2D, toScreen: (x: number, z: number) => [number, number], scale: number, now: number): void {
    const pulse = 0.5 + 0.5 * Math.sin(now / 180);
    for (const job of this.world.jobs.values()) {
      const [sx, sy] = toScreen(job.center[0], job.center[2]);
      ctx.beginPath();
      ctx.arc(sx, sy, Math.max(3, job.radius * scale), 0, Math.PI * 2);
      ctx.setLineDash([3, 3]);
      ctx.strokeStyle = `rgba(255, 196, 87, ${0.45 + 0.45 * pulse})`;
      ctx.lineWidth = 1.5;
      ctx.stroke();
      ctx.setLineDash([]);
    }
  }

  private drawPlayers(ctx: CanvasRenderingContext2D, toScreen: (x: number, z: number) => [number, number]): void {
    const players = [...this.world.players.values()];
    if (!this.world.players.has(this.world.myId)) {
      players.push({ id: this.world.myId, name: this.world.myName, position: this.world.pose.position, yaw: this.world.pose.yaw });
    }
    // Others first, so that you are drawn on top.
    players.sort((a, b) => Number(a.id === this.world.myId) - Number(b.id === this.world.myId));
    for (const p of players) {
      const me = p.id === this.world.myId;
      const [sx, sy] = toScreen(p.position[0], p.position[2]);
      ctx.save();
      ctx.translate(sx, sy);
      ctx.rotate(p.yaw); // canvas y points down, so a positive angle turns clockwise: toward +x
      if (me) {
        // View cone, to read the heading at a glance.
        const cone = ctx.createRadialGradient(0, 0, 0, 0, 0, 30);
        cone.addColorStop(0, "rgba(255,255,255,0.28)");
        cone.addColorStop(1, "rgba(255,255,255,0)");
        ctx.fillStyle = cone;
        ctx.beginPath();
        ctx.moveTo(0, 0);
        ctx.arc(0, 0, 30, -Math.PI / 2 - 0.55, -Math.PI / 2 + 0.55);
        ctx.closePath();
        ctx.fill();
      }
      ctx.beginPath();
      ctx.moveTo(0, -7);
      ctx.lineTo(5, 5);
      ctx.lineTo(0, 2.5);
      ctx.lineTo(-5, 5);
      ctx.closePath();
      ctx.fillStyle = me ? SELF_COLOR : playerColor(p.id);
      ctx.strokeStyle = "rgba(0,0,0,0.7)";
      ctx.lineWidth = 1.2;
      ctx.fill();
      ctx.stroke();
      ctx.restore();
      if (!me) {
        ctx.fillStyle = "rgba(255,255,255,0.85)";
        ctx.font = "500 9px system-ui, sans-serif";
        ctx.textAlign = "center";
        ctx.fillText(p.name, sx, sy - 10);
      }
    }
  }
}
