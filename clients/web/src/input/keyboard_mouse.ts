// Keyboard (W/S or Up/Down walk, A/D strafe, Q/E or Left/Right turn, Shift, Space / C, F)
// and mouse look: with pointer lock after a click, or by dragging with the button held
// when the pointer is free.
import { typingInField } from "../dom";
import type { SettingsStore } from "../settings";
import { LookAccumulator, type InputSource, type LookDelta, type MoveAxes } from "./source";

const MOUSE_RADIANS_PER_PIXEL = 0.0024;
/** Turning speed while Q/E or Left/Right is held: a full circle in about 3 s. */
export const KEY_TURN_RADIANS_PER_S = 2.0;
const CLICK_SLOP_PX = 4;

/** Keys the page handles itself (their default action, such as scrolling, is suppressed). */
const GAME_KEYS = new Set([
  "KeyW", "KeyA", "KeyS", "KeyD", "ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight",
  "KeyQ", "KeyE", "Space", "KeyC", "ShiftLeft", "ShiftRight", "KeyF",
]);

export class KeyboardMouse implements InputSource {
  private held = new Set<string>();
  private lookSum = new LookAccumulator();
  private drag: { x: number; y: number; moved: number } | null = null;

  constructor(
    private readonly surface: HTMLElement,
    private readonly onToggleFly: () => void,
    private readonly onPointerLockChange: (locked: boolean) => void,
    private readonly settings: SettingsStore,
  ) {
    window.addEventListener("keydown", (e) => this.keyDown(e));
    window.addEventListener("keyup", (e) => this.held.delete(e.code));
    window.addEventListener("blur", () => this.release());
    surface.addEventListener("mousedown", (e) => this.mouseDown(e));
    window.addEventListener("mousemove", (e) => this.mouseMove(e));
    window.addEventListener("mouseup", () => this.mouseUp());
    document.addEventListener("pointerlockchange", () => this.onPointerLockChange(this.locked));
  }

  get locked(): boolean {
    return document.pointerLockElement === this.surface;
  }

  axes(): MoveAxes {
    const on = (...codes: string[]): number => (codes.some((c) => this.held.has(c)) ? 1 : 0);
    return {
      forward: on("KeyW", "ArrowUp") - on("KeyS", "ArrowDown"),
      right: on("KeyD") - on("KeyA"),
      up: on("Space") - on("KeyC"),
      run: on("ShiftLeft", "ShiftRight") === 1,
    };
  }

  takeLook(dt: number): LookDelta {
    const look = this.lookSum.take();
    const turn = (this.held.has("KeyE") || this.held.has("ArrowRight") ? 1 : 0) - (this.held.has("KeyQ") || this.held.has("ArrowLeft") ? 1 : 0);
    look.yaw += turn * KEY_TURN_RADIANS_PER_S * dt; // positive yaw turns right
    return look;
  }

  release(): void {
    this.held.clear();
    this.drag = null;
  }

  private keyDown(e: KeyboardEvent): void {
    if (typingInField() || e.ctrlKey || e.metaKey || e.altKey) return;
    if (!GAME_KEYS.has(e.code)) return;
    e.preventDefault();
    if (e.code === "KeyF") {
      if (!e.repeat) this.onToggleFly();
      return;
    }
    this.held.add(e.code);
  }

  private mouseDown(e: MouseEvent): void {
    if (e.button !== 0 || this.locked) return;
    (document.activeElement as HTMLElement | null)?.blur?.(); // leave the caption box: keys walk again
    this.drag = { x: e.clientX, y: e.clientY, moved: 0 };
    e.preventDefault();
  }

  private mouseMove(e: MouseEvent): void {
    if (this.locked) {
      this.look(e.movementX, e.movementY);
    } else if (this.drag) {
      // Deltas from client coordinates: movementX is unreliable for synthetic and touchpad events.
      const dx = e.clientX - this.drag.x;
      const dy = e.clientY - this.drag.y;
      this.drag = { x: e.clientX, y: e.clientY, moved: this.drag.moved + Math.abs(dx) + Math.abs(dy) };
      this.look(dx, dy);
    }
  }

  private mouseUp(): void {
    const drag = this.drag;
    this.drag = null;
    // A click that did not drag asks for pointer lock (mouse look without holding the button).
    if (drag && drag.moved < CLICK_SLOP_PX && !this.locked) {
      const request = this.surface.requestPointerLock() as unknown;
      if (request instanceof Promise) request.catch(() => undefined); // refused (e.g. headless): dragging still works
    }
  }

  private look(dx: number, dy: number): void {
    const { sensitivity, invertY } = this.settings.values;
    const k = MOUSE_RADIANS_PER_PIXEL * sensitivity;
    this.lookSum.add(dx * k, (invertY ? dy : -dy) * k); // mouse up (negative dy) looks up, unless inverted
  }
}
