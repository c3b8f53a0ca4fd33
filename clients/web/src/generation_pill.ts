// Shows that the region ahead is being generated (with progress), and briefly when it lands.
import { el } from "./dom";
import type { WorldState } from "./world_state";

const LANDED_SHOW_MS = 1800;

export class GenerationPill {
  readonly element: HTMLElement;
  private readonly label: HTMLElement;
  private readonly bar: HTMLElement;
  /** How many times the indicator has appeared (tests check that it did). */
  timesShown = 0;
  visible = false;

  constructor(private readonly world: WorldState) {
    this.label = el("span", "gen-label");
    this.bar = el("span", "gen-bar-fill");
    this.element = el("div", "gen-pill", { id: "generation", role: "status" }, [
      el("span", "gen-dot"),
      this.label,
      el("span", "gen-bar", {}, [this.bar]),
    ]);
    this.element.hidden = true;
  }

  update(now: number): void {
    const jobs = this.world.activeJobs(now);
    const landed = now - this.world.totals.lastDoneAt < LANDED_SHOW_MS && this.world.totals.lastDoneAt > 0;
    const show = jobs.length > 0 || landed;
    if (show && !this.visible) this.timesShown += 1;
    this.visible = show;
    this.element.hidden = !show;
    if (!show) return;
    if (jobs.length === 0) {
      this.element.dataset["state"] = "landed";
      this.label.textContent = "New region ready";
      this.bar.style.width = "100%";
      return;
    }
    this.element.dataset["state"] = "working";
    const fraction = jobs.reduce((sum, j) => sum + j.fraction, 0) / jobs.length;
    const mine = jobs.some((j) => j.mine);
    const what = jobs.length > 1 ? `Generating ${jobs.length} regions` : mine ? "Generating ahead" : "Generating nearby";
    this.label.textContent = `${what} · ${Math.round(fraction * 100)}%`;
    this.bar.style.width = `${Math.max(4, fraction * 100)}%`;
  }
}
