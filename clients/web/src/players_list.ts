// Everyone in this world, with the colour they have on the minimap.
import { playerColor, SELF_COLOR } from "./colors";
import { el } from "./dom";
import type { WorldState } from "./world_state";

export class PlayersList {
  readonly element = el("ul", "players", { id: "players", "aria-label": "Players in this world" });
  private shown = "";

  constructor(private readonly world: WorldState) {}

  update(): void {
    const players = [...this.world.players.values()].sort((a, b) => {
      if (a.id === this.world.myId) return -1;
      if (b.id === this.world.myId) return 1;
      return a.name.localeCompare(b.name);
    });
    const key = players.map((p) => `${p.id}:${p.name}`).join("|");
    if (key === this.shown) return; // positions change often; the list only when people do
    this.shown = key;
    this.element.replaceChildren(
      ...players.map((p) => {
        const me = p.id === this.world.myId;
        const dot = el("span", "player-dot");
        dot.style.background = me ? SELF_COLOR : playerColor(p.id);
        return el("li", me ? "player me" : "player", { "data-id": p.id }, [dot, el("span", "player-name", {}, [p.name]), me ? el("span", "player-you", {}, ["you"]) : ""]);
      }),
    );
  }
}
