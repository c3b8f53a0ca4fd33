// A stable colour per player id, shared by the minimap and the player list.

const PALETTE = ["#ff8a65", "#ffd54f", "#81c784", "#64b5f6", "#ba68c8", "#f06292", "#4dd0e1", "#aed581"];

export const SELF_COLOR = "#ffffff";

export function playerColor(id: string): string {
  let hash = 0;
  for (let i = 0; i < id.length; i++) hash = (hash * 31 + id.charCodeAt(i)) | 0;
  return PALETTE[Math.abs(hash) % PALETTE.length]!;
}
