// Everything local rendering needs that pulls in three.js and Spark (about 1 MB gzipped),
// in one module the page imports only when it first renders locally: a player on the video
// never downloads it.
import { AvatarLayer } from "./avatars";
import { LocalRenderer } from "./local_renderer";
import { SplatStore, type StoreEvents } from "./splat_store";

export interface Engine {
  store: SplatStore;
  renderer: LocalRenderer;
  avatars: AvatarLayer;
}

export function makeEngine(canvas: HTMLCanvasElement, events: StoreEvents): Engine {
  let renderer: LocalRenderer | null = null;
  const store = new SplatStore({ ack: events.ack, changed: () => (renderer?.invalidate(), events.changed()) });
  renderer = new LocalRenderer(canvas, store);
  const avatars = new AvatarLayer();
  renderer.scene.add(avatars.root);
  return { store, renderer, avatars };
}

export { LocalRenderer, SplatStore, AvatarLayer };
export type { LocalView } from "./local_renderer";
