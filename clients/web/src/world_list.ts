// The "recent worlds" list on the start screen, from the server's GET /worlds.
import { el } from "./dom";

/** One row of GET /worlds (see runtime/app.py `world_listing`). */
export interface WorldListing {
  name: string;
  caption: string;
  chunks: number;
  players: number;
  last_played: number;
}

const SHOWN = 6;

async function fetchWorlds(): Promise<WorldListing[]> {
  const response = await fetch("/worlds", { cache: "no-store" });
  if (!response.ok) return [];
  const body = (await response.json()) as { worlds?: WorldListing[] };
  return body.worlds ?? [];
}

/** A list that fills itself in; clicking a world calls `pick(name)`. Stays empty if the server has none. */
export function recentWorldsList(pick: (name: string) => void): HTMLElement {
  const list = el("ul", "world-list", { id: "recent-worlds" });
  list.hidden = true;
  fetchWorlds()
    .then((worlds) => {
      for (const world of worlds.slice(0, SHOWN)) {
        const who = world.players > 0 ? `${world.players} playing` : `${world.chunks} chunks`;
        const button = el("button", "world-pick", { type: "button", title: world.caption || world.name }, [
          el("span", "world-pick-name", {}, [world.name]),
          el("span", "world-pick-meta", {}, [world.caption ? `${world.caption} · ${who}` : who]),
        ]);
        button.addEventListener("click", () => pick(world.name));
        list.append(el("li", "", {}, [button]));
      }
      list.hidden = list.childElementCount === 0;
    })
    .catch(() => {
      // An older server without /worlds: joining by name still works.
    });
  return list;
}
