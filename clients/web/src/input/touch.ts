// Touch controls for phones: a virtual stick where the left thumb lands, drag anywhere else
// to look, and buttons for fly mode (toggle, rise, sink).
import { el } from "../dom";
import { clampAxis, LookAccumulator, type InputSource, type LookDelta, type MoveAxes } from "./source";

const STICK_RADIUS_PX = 56;
const TOUCH_RADIANS_PER_PIXEL = 0.005;
const RUN_BEYOND = 0.95; // pushing the stick to its rim runs

export class TouchControls implements InputSource {
  private stickId: number | null = null;
  private stickOrigin = { x: 0, y: 0 };
  private stick = { x: 0, y: 0 };
  private lookId: number | null = null;
  private lookLast = { x: 0, y: 0 };
  private look = new LookAccumulator();
  private rise = 0;
  private readonly base: HTMLElement;
  private readonly knob: HTMLElement;
  private readonly flyButtons: HTMLElement;
  private active = false;

  constructor(
    private readonly layer: HTMLElement,
    onToggleFly: () => void,
  ) {
    this.knob = el("div", "stick-knob");
    this.base = el("div", "stick-base", {}, [this.knob]);
    const flyToggle = el("button", "touch-button", { type: "button", "aria-label": "Toggle fly" }, ["✈"]);
    const riseButton = el("button", "touch-button", { type: "button", "aria-label": "Rise" }, ["▲"]);
    const sinkButton = el("button", "touch-button", { type: "button", "aria-label": "Sink" }, ["▼"]);
    this.flyButtons = el("div", "touch-fly", {}, [riseButton, sinkButton]);
    this.flyButtons.hidden = true; // rise/sink only mean something when flying
    layer.append(this.base, el("div", "touch-buttons", {}, [this.flyButtons, flyToggle]));
    flyToggle.addEventListener("touchstart", (e) => {
      e.preventDefault();
      onToggleFly();
    });
    this.holdButton(riseButton, 1);
    this.holdButton(sinkButton, -1);
    layer.addEventListener("touchstart", (e) => this.start(e), { passive: false });
    layer.addEventListener("touchmove", (e) => this.move(e), { passive: false });
    layer.addEventListener("touchend", (e) => this.end(e));
    layer.addEventListener("touchcancel", (e) => this.end(e));
    // Show the controls on touch devices, or as soon as anyone touches the screen.
    if (window.matchMedia("(pointer: coarse)").matches) this.activate();
    window.addEventListener("touchstart", () => this.activate(), { once: true, passive: true });
  }

  setFlying(flying: boolean): void {
    this.flyButtons.hidden = !flying;
  }

  axes(): MoveAxes {
    const push = Math.hypot(this.stick.x, this.stick.y);
    return { forward: clampAxis(-this.stick.y), right: clampAxis(this.stick.x), up: this.rise, run: push >= RUN_BEYOND };
  }

  takeLook(): LookDelta {
    return this.look.take();
  }

  release(): void {
    this.stickId = null;
    this.lookId = null;
    this.stick = { x: 0, y: 0 };
    this.rise = 0;
    this.drawStick();
  }

  private activate(): void {
    if (this.active) return;
    this.active = true;
    this.layer.hidden = false;
  }

  private holdButton(button: HTMLElement, direction: number): void {
    button.addEventListener("touchstart", (e) => {
      e.preventDefault();
      e.stopPropagation();
      this.rise = direction;
    });
    const stop = (): void => {
      this.rise = 0;
    };
    button.addEventListener("touchend", stop);
    button.addEventListener("touchcancel", stop);
  }

  private start(e: TouchEvent): void {
    e.preventDefault();
    for (const t of Array.from(e.changedTouches)) {
      if (this.stickId === null && t.clientX < window.innerWidth * 0.4) {
        this.stickId = t.identifier;
        this.stickOrigin = { x: t.clientX, y: t.clientY };
        this.stick = { x: 0, y: 0 };
        this.base.style.left = `${t.clientX}px`;
        this.base.style.top = `${t.clientY}px`;
        this.base.classList.add("active");
        this.drawStick();
      } else if (this.lookId === null) {
        this.lookId = t.identifier;
        this.lookLast = { x: t.clientX, y: t.clientY };
      }
    }
  }

  private move(e: TouchEvent): void {
    e.preventDefault();
    for (const t of Array.from(e.changedTouches)) {
      if (t.identifier === this.stickId) {
        let x = (t.clientX - this.stickOrigin.x) / STICK_RADIUS_PX;
        let y = (t.clientY - this.stickOrigin.y) / STICK_RADIUS_PX;
        const length = Math.hypot(x, y);
        if (length > 1) {
          x /= length;
          y /= length;
        }
        this.stick = { x, y };
        this.drawStick();
      } else if (t.identifier === this.lookId) {
        this.look.add((t.clientX - this.lookLast.x) * TOUCH_RADIANS_PER_PIXEL, -(t.clientY - this.lookLast.y) * TOUCH_RADIANS_PER_PIXEL);
        this.lookLast = { x: t.clientX, y: t.clientY };
      }
    }
  }

  private end(e: TouchEvent): void {
    for (const t of Array.from(e.changedTouches)) {
      if (t.identifier === this.stickId) {
        this.stickId = null;
        this.stick = { x: 0, y: 0 };
        this.base.classList.remove("active");
        this.drawStick();
      } else if (t.identifier === this.lookId) {
        this.lookId = null;
      }
    }
  }

  private drawStick(): void {
    this.knob.style.transform = `translate(${this.stick.x * STICK_RADIUS_PX}px, ${this.stick.y * STICK_RADIUS_PX}px)`;
  }
}
