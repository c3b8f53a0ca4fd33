// Other players in the local 3D view: a body, a head and a name tag, the same figure and
// colour the server draws into its video (runtime/world/render/avatars.py), but as real
// 3D objects, so the splats in front of a player hide it. Placed from the `players` list
// (eye position, world coordinates; the figure is round, so yaw does not show).
import * as THREE from "three";
import type { PlayerInfo } from "../protocol";

const HEAD_RADIUS = 0.14; // m, avatars.py
const BODY_HALF_WIDTH = 0.22;
const SHOULDER_DROP = 0.22;
const EYE_HEIGHT = 1.7;
const LABEL_HEIGHT_PX = 18;
const MAX_LABEL_CHARS = 16;

let crcTable: Uint32Array | null = null;

/** zlib's CRC-32 of a string's UTF-8 bytes (what avatars.py hashes a player id with). */
export function crc32(text: string): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (const byte of new TextEncoder().encode(text)) crc = crcTable[(crc ^ byte) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** A player's body colour (0-255 RGB), as `avatar_color` gives it. */
export function avatarColor(id: string): [number, number, number] {
  const hue = (crc32(id) % 360) / 60;
  const x = 1 - Math.abs((hue % 2) - 1);
  const table: Array<[number, number, number]> = [[1, x, 0], [x, 1, 0], [0, 1, x], [0, x, 1], [x, 0, 1], [1, 0, x]];
  const [r, g, b] = table[Math.floor(hue) % 6]!;
  return [Math.floor(40 + 200 * r), Math.floor(40 + 200 * g), Math.floor(40 + 200 * b)];
}

function labelSprite(name: string): THREE.Sprite {
  const text = name.length <= MAX_LABEL_CHARS ? name : name.slice(0, MAX_LABEL_CHARS - 1) + "…";
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d")!;
  const font = `600 ${LABEL_HEIGHT_PX * 2}px system-ui, sans-serif`;
  ctx.font = font;
  const w = Math.ceil(ctx.measureText(text).width) + 24;
  canvas.width = w;
  canvas.height = LABEL_HEIGHT_PX * 2 + 12;
  ctx.font = font;
  ctx.fillStyle = "rgba(10, 12, 16, 0.75)";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#fff";
  ctx.textBaseline = "middle";
  ctx.fillText(text, 12, canvas.height / 2);
  const texture = new THREE.CanvasTexture(canvas);
  texture.colorSpace = THREE.SRGBColorSpace;
  const sprite = new THREE.Sprite(new THREE.SpriteMaterial({ map: texture, sizeAttenuation: false, depthTest: false }));
  sprite.center.set(0.5, 0); // anchored at its lower edge: the tag sits above the head, never over it
  sprite.userData["aspect"] = canvas.width / canvas.height;
  sprite.renderOrder = 10;
  return sprite;
}

interface Figure {
  group: THREE.Group;
  label: THREE.Sprite;
  name: string;
}

export class AvatarLayer {
  readonly root = new THREE.Group();
  private readonly figures = new Map<string, Figure>();
  private readonly head = new THREE.SphereGeometry(HEAD_RADIUS, 16, 12);
  private readonly body: THREE.CylinderGeometry;

  constructor() {
    this.root.name = "avatars";
    const length = EYE_HEIGHT - SHOULDER_DROP;
    this.body = new THREE.CylinderGeometry(BODY_HALF_WIDTH, BODY_HALF_WIDTH * 0.6, length, 16);
    this.body.translate(0, -length / 2, 0); // from the shoulders down (three.js +y is up here: flipped below)
  }

  /** Show `players` except `myId` at their poses; `pixelHeight` sizes the name tags.
   * Returns whether anything drawn changed. */
  update(players: Iterable<PlayerInfo>, myId: string, pixelHeight: number): boolean {
    const seen = new Set<string>();
    let changed = false;
    for (const p of players) {
      if (p.id === myId) continue;
      seen.add(p.id);
      let figure = this.figures.get(p.id);
      if (!figure) {
        figure = this.add(p);
        changed = true;
      }
      if (figure.name !== p.name) {
        changed = true;
        figure.group.remove(figure.label);
        figure.label.material.map?.dispose();
        figure.label.material.dispose();
        figure.label = labelSprite(p.name);
        figure.name = p.name;
        figure.group.add(figure.label);
      }
      const pos = figure.group.position;
      if (pos.x !== p.position[0] || pos.y !== p.position[1] || pos.z !== p.position[2]) changed = true;
      pos.set(p.position[0], p.position[1], p.position[2]);
      const h = LABEL_HEIGHT_PX / Math.max(1, pixelHeight);
      figure.label.scale.set(h * 2 * (figure.label.userData["aspect"] as number), h * 2, 1);
    }
    for (const [id, figure] of this.figures) {
      if (!seen.has(id)) {
        this.root.remove(figure.group);
        figure.label.material.map?.dispose();
        figure.label.material.dispose();
        this.figures.delete(id);
        changed = true;
      }
    }
    return changed;
  }

  /** Players drawn now (tests). */
  get count(): number {
    return this.figures.size;
  }

  private add(p: PlayerInfo): Figure {
    const [r, g, b] = avatarColor(p.id);
    const material = new THREE.MeshBasicMaterial({ color: new THREE.Color().setRGB(r / 255, g / 255, b / 255, THREE.SRGBColorSpace) });
    const group = new THREE.Group();
    // Built with three.js's +y up, then turned upside down: the world's +y points down.
    const figure = new THREE.Group();
    figure.rotation.x = Math.PI;
    const head = new THREE.Mesh(this.head, material);
    const body = new THREE.Mesh(this.body, material);
    body.position.y = -SHOULDER_DROP;
    figure.add(head, body);
    const label = labelSprite(p.name);
    label.position.set(0, -(HEAD_RADIUS + 0.1), 0); // just above the head (world -y is up)
    group.add(figure, label);
    this.root.add(group);
    const made = { group, label, name: p.name };
    this.figures.set(p.id, made);
    return made;
  }
}
