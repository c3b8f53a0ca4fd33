// The full-window overlay that says what the view is waiting for: connecting, starting the
// stream, reconnecting, or that the server is gone.
import { byId, el } from "./dom";

export type OverlayState =
  | { kind: "hidden" }
  | { kind: "connecting"; world: string }
  | { kind: "starting" }
  | { kind: "reconnecting"; attempt: number; retryInMs: number; reason: string }
  | { kind: "offline"; retryInMs: number }
  | { kind: "failed"; message: string; title?: string; action?: { label: string; run: () => void } };

export class Overlay {
  private readonly root = byId("overlay");
  private countdown = 0;
  kind: OverlayState["kind"] = "hidden";

  constructor(
    private readonly onRetryNow: () => void,
    private readonly onStartOver: () => void,
  ) {}

  show(state: OverlayState): void {
    this.kind = state.kind;
    window.clearInterval(this.countdown);
    this.root.replaceChildren();
    this.root.dataset["state"] = state.kind;
    if (state.kind === "hidden") {
      this.root.hidden = true;
      return;
    }
    this.root.hidden = false;
    const card = el("div", "overlay-card");
    this.root.append(card);
    switch (state.kind) {
      case "connecting":
        card.append(el("div", "spinner"), el("h2", "", {}, ["Entering world"]), el("p", "muted", {}, [state.world || "new world"]));
        break;
      case "starting":
        card.append(el("div", "spinner"), el("h2", "", {}, ["Starting the stream"]));
        break;
      case "reconnecting":
        card.append(el("div", "spinner"), el("h2", "", {}, ["Reconnecting"]), this.retryLine(state.retryInMs, state.reason));
        break;
      case "offline": {
        const retry = el("button", "button primary", { type: "button" }, ["Retry now"]);
        retry.addEventListener("click", () => this.onRetryNow());
        card.append(
          el("div", "offline-icon", {}, ["⌁"]),
          el("h2", "", {}, ["The server is not answering"]),
          this.retryLine(state.retryInMs, "Your place in the world is kept."),
          retry,
        );
        break;
      }
      case "failed": {
        const back = el("button", state.action ? "button" : "button primary", { type: "button" }, ["Back to start"]);
        back.addEventListener("click", () => this.onStartOver());
        const buttons = el("div", "overlay-buttons", {}, [back]);
        if (state.action) {
          const { label, run } = state.action;
          const act = el("button", "button primary", { type: "button", id: "overlay-action" }, [label]);
          act.addEventListener("click", run);
          buttons.append(act);
        }
        card.append(el("h2", "", {}, [state.title ?? "Could not enter the world"]), el("p", "muted", {}, [state.message]), buttons);
        break;
      }
    }
  }

  /** "Trying again in 3 s", counting down. */
  private retryLine(retryInMs: number, reason: string): HTMLElement {
    const line = el("p", "muted");
    const until = performance.now() + retryInMs;
    const render = (): void => {
      const seconds = Math.max(0, Math.ceil((until - performance.now()) / 1000));
      line.textContent = `${reason ? `${reason} · ` : ""}${seconds > 0 ? `trying again in ${seconds} s` : "trying now…"}`;
    };
    render();
    this.countdown = window.setInterval(render, 250);
    return line;
  }
}
