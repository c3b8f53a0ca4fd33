// The controls, listed: `?` shows and hides it, Esc hides it.
import { el, typingInField } from "./dom";

const CONTROLS: Array<[string, string]> = [
  ["W A S D / arrows", "walk and strafe"],
  ["Q / E, ← / →", "turn"],
  ["Mouse", "look (click to capture it, Esc frees it; or drag)"],
  ["Shift", "run / fly fast"],
  ["F", "walk ↔ fly"],
  ["Space / C", "up / down while flying"],
  ["Gamepad", "left stick moves, right stick looks"],
  ["Touch", "left thumb moves, drag to look"],
  ["H", "hide or show the HUD"],
  ["O", "settings (sensitivity, invert, render mode, quality, fullscreen)"],
  ["?", "this help"],
];

export class HelpOverlay {
  readonly element = el("div", "panel help", { id: "help", hidden: true, role: "dialog", "aria-label": "Controls" });

  constructor() {
    const rows = CONTROLS.map(([keys, what]) => el("tr", "", {}, [el("td", "help-keys", {}, [keys]), el("td", "", {}, [what])]));
    const close = el("button", "chip", { type: "button", id: "help-close" }, ["Close"]);
    close.addEventListener("click", () => this.toggle(false));
    this.element.append(el("div", "settings-title", {}, ["Controls"]), el("table", "help-table", {}, rows), close);
    window.addEventListener("keydown", (e) => {
      if (typingInField()) return;
      if (e.key === "?") this.toggle();
      else if (e.code === "Escape") this.toggle(false);
    });
  }

  get open(): boolean {
    return !this.element.hidden;
  }

  toggle(open = !this.open): void {
    this.element.hidden = !open;
  }
}
