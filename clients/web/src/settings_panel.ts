// The settings panel (the ⚙ chip, or O): fullscreen, mouse sensitivity and invert, render
// mode and quality. It edits the SettingsStore; whoever cares listens to the store.
import { el, typingInField } from "./dom";
import { MAX_SENSITIVITY, MIN_SENSITIVITY, type Quality, type RenderMode, type SettingsStore, type VrTurn } from "./settings";

/** Fullscreen on and off for the whole page (the HUD stays over the view). */
export function toggleFullscreen(): void {
  if (document.fullscreenElement) void document.exitFullscreen().catch(() => undefined);
  else void document.documentElement.requestFullscreen?.().catch(() => undefined);
}

function row(label: string, control: HTMLElement, note = ""): HTMLElement {
  const children: Array<Node | string> = [el("span", "settings-label", {}, [label]), control];
  if (note) children.push(el("span", "settings-note", {}, [note]));
  return el("label", "settings-row", {}, children);
}

function select<T extends string>(id: string, options: Array<[T, string, boolean?]>, value: T, onChange: (v: T) => void): HTMLSelectElement {
  const node = el("select", "settings-select", { id });
  for (const [v, text, disabled] of options) node.append(el("option", "", { value: v, disabled: disabled === true }, [text]));
  node.value = value;
  node.addEventListener("change", () => onChange(node.value as T));
  return node;
}

export class SettingsPanel {
  readonly chip = el("button", "chip", { id: "settings-button", type: "button", title: "Settings (O)" }, ["⚙"]);
  readonly element = el("div", "panel settings", { id: "settings", hidden: true, role: "dialog", "aria-label": "Settings" });

  constructor(
    store: SettingsStore,
    /** Can this browser draw the world itself? (local rendering) */
    localAvailable: boolean,
  ) {
    const s = store.values;
    const sensitivity = el("input", "settings-range", {
      id: "settings-sensitivity", type: "range", min: MIN_SENSITIVITY, max: MAX_SENSITIVITY, step: 0.1, value: s.sensitivity,
    });
    const readout = el("span", "settings-value", { id: "settings-sensitivity-value" }, [s.sensitivity.toFixed(1) + "×"]);
    sensitivity.addEventListener("input", () => {
      store.update({ sensitivity: Number(sensitivity.value) });
      readout.textContent = store.values.sensitivity.toFixed(1) + "×";
    });
    const invert = el("input", "", { id: "settings-invert", type: "checkbox", checked: s.invertY });
    invert.addEventListener("change", () => store.update({ invertY: invert.checked }));
    const mode = select<RenderMode>(
      "settings-render-mode",
      [["auto", "Auto"], ["video", "Video (server renders)"], ["local", "Local (this device renders)", !localAvailable]],
      s.renderMode,
      (v) => store.update({ renderMode: v }),
    );
    const quality = select<Quality>(
      "settings-quality",
      [["high", "High (full resolution)"], ["medium", "Medium (¾)"], ["low", "Low (½)"]],
      s.quality,
      (v) => store.update({ quality: v }),
    );
    const turn = select<VrTurn>(
      "settings-vr-turn",
      [["snap", "Snap (30° steps)"], ["smooth", "Smooth"]],
      s.vrTurn,
      (v) => store.update({ vrTurn: v }),
    );
    const vignette = el("input", "", { id: "settings-vr-vignette", type: "checkbox", checked: s.vrVignette });
    vignette.addEventListener("change", () => store.update({ vrVignette: vignette.checked }));
    const fullscreen = el("button", "chip", { id: "settings-fullscreen", type: "button" }, ["Fullscreen"]);
    fullscreen.addEventListener("click", () => toggleFullscreen());
    const close = el("button", "chip", { type: "button", id: "settings-close" }, ["Done"]);
    close.addEventListener("click", () => this.toggle(false));

    this.element.append(
      el("div", "settings-title", {}, ["Settings"]),
      row("Mouse sensitivity", el("span", "settings-inline", {}, [sensitivity, readout])),
      row("Invert mouse Y", invert),
      row("Render mode", mode, localAvailable ? "Auto draws locally on a GPU with enough memory, else shows the video." : "This browser has no WebGL2: the video is used."),
      row("Quality", quality, "Changing it restarts the stream (you keep your place)."),
      row("VR turning", turn),
      row("VR comfort vignette", vignette),
      el("div", "settings-actions", {}, [fullscreen, close]),
    );
    this.chip.addEventListener("click", () => this.toggle());
    window.addEventListener("keydown", (e) => {
      if (e.code === "KeyO" && !typingInField() && !e.ctrlKey && !e.metaKey && !e.altKey) this.toggle();
      else if (e.code === "Escape") this.toggle(false);
    });
  }

  get open(): boolean {
    return !this.element.hidden;
  }

  toggle(open = !this.open): void {
    this.element.hidden = !open;
    if (open && document.pointerLockElement) document.exitPointerLock(); // the panel needs the pointer
  }
}
