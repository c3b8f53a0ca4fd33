// The world's Gaussians held in this browser, as the server's splat feed sends them
// (runtime/splat_feed.py): `splat_piece` messages, each a complete `.spz` of part of one
// chunk, and `splat_forget` for chunks to drop. A chunk becomes one Spark SplatMesh
// once all its pieces are in; until then its pieces wait decoded. Scene chunks go under
// `root`, far-field chunks (layer "far") under `farRoot`, which only the far pass draws
// (far_layer.ts: behind the scene, on the coarse sky grid). Every piece is
// acknowledged once decoded (or found broken), so the feed's flow control also bounds the
// decoding work queued here.
//
// The memory budget is the feed's: the client asks for at most `budget` Gaussians (the
// `splats` message) and the server forgets the farthest chunks to stay within it. Spark's
// "extended" splat encoding keeps float32 centres (32 bytes a Gaussian on the GPU), so a
// chunk far from the origin keeps its millimetres.
import * as THREE from "three";
import { ExtSplats, SplatMesh, utils } from "@sparkjsdev/spark";
import type { SplatPiece } from "../protocol";
import { decodeSpz, type DecodedSplats } from "./spz";

const SPLAT_TEX_WIDTH = 2048; // ExtSplats hold whole texture rows of this many splats
export const BYTES_PER_SPLAT = 32;

/** A chunk held (or arriving), with what the feed said of it. */
export interface HeldChunk {
  id: number;
  layer: "scene" | "far";
  /** Bounding-sphere centre (world, metres) and radius. */
  center: [number, number, number];
  radius: number;
  parts: number;
  /** Decoded pieces by part index, until the chunk is complete. */
  pending: Map<number, DecodedSplats>;
  mesh: SplatMesh | null;
  splats: number;
  /** performance.now() when it became visible (complete). */
  shownAt: number;
}

export interface StoreEvents {
  /** Acknowledge a piece (splat_ack). */
  ack(pieceId: number): void;
  /** Something drawn changed (a chunk appeared or went). */
  changed(): void;
}

export interface StoreStats {
  /** Chunks complete and drawn, and all held (including incomplete ones). */
  chunksShown: number;
  chunksHeld: number;
  /** Gaussians drawn (scene chunks). */
  splats: number;
  /** Far-field chunks complete and drawn, and their Gaussians. */
  farChunksShown: number;
  farSplats: number;
  /** Pieces and `.spz` bytes received since the page loaded. */
  pieces: number;
  bytes: number;
  /** Pieces that could not be decoded (acknowledged all the same). */
  badPieces: number;
  /** performance.now() of the last piece, and of the first chunk shown since the last clear() (-1: none yet). */
  lastPieceAt: number;
  firstChunkAt: number;
}

export class SplatStore {
  readonly root = new THREE.Group();
  readonly farRoot = new THREE.Group();
  private readonly chunks = new Map<number, HeldChunk>();
  private generation = 0; // bumped by clear(): decodes started before it are dropped
  readonly stats: StoreStats = { chunksShown: 0, chunksHeld: 0, splats: 0, farChunksShown: 0, farSplats: 0, pieces: 0, bytes: 0, badPieces: 0, lastPieceAt: -1, firstChunkAt: -1 };

  constructor(private readonly events: StoreEvents) {
    this.root.name = "splats";
    this.farRoot.name = "far-field";
  }

  /** Take one piece: decode it, acknowledge it, and show its chunk once complete. */
  receive(piece: SplatPiece): void {
    this.stats.pieces += 1;
    this.stats.bytes += piece.spz.byteLength;
    this.stats.lastPieceAt = performance.now();
    let chunk = this.chunks.get(piece.chunk_id);
    const layer = piece.layer === "far" ? "far" : "scene";
    if (!chunk || chunk.parts !== piece.parts || chunk.layer !== layer) {
      if (chunk) this.drop(chunk); // a new version of the chunk (the old one should have been forgotten)
      chunk = { id: piece.chunk_id, layer, center: piece.center, radius: piece.radius, parts: piece.parts, pending: new Map(), mesh: null, splats: 0, shownAt: -1 };
      this.chunks.set(chunk.id, chunk);
    }
    const generation = this.generation;
    const target = chunk;
    decodeSpz(piece.spz).then(
      (decoded) => {
        this.events.ack(piece.id);
        if (generation !== this.generation || this.chunks.get(target.id) !== target || target.mesh) return; // forgotten meanwhile
        target.pending.set(piece.part, decoded);
        if (target.pending.size === target.parts) this.show(target);
      },
      () => {
        this.stats.badPieces += 1;
        this.events.ack(piece.id);
      },
    );
  }

  /** `splat_forget`: drop these chunks (complete or not). */
  forget(chunkIds: number[]): void {
    for (const id of chunkIds) {
      const chunk = this.chunks.get(id);
      if (chunk) this.drop(chunk);
    }
    this.updateCounts();
    this.events.changed();
  }

  /** Drop everything (local rendering stopped, or a new connection: the server starts over). */
  clear(): void {
    this.generation += 1;
    this.stats.firstChunkAt = -1;
    for (const chunk of [...this.chunks.values()]) this.drop(chunk);
    this.updateCounts();
    this.events.changed();
  }

  /** Chunks held now (complete or not). */
  held(): HeldChunk[] {
    return [...this.chunks.values()];
  }

  private show(chunk: HeldChunk): void {
    const parts = [...chunk.pending.entries()].sort((a, b) => a[0] - b[0]).map(([, d]) => d);
    chunk.pending.clear();
    const n = parts.reduce((sum, d) => sum + d.count, 0);
    const capacity = Math.max(1, Math.ceil(n / SPLAT_TEX_WIDTH)) * SPLAT_TEX_WIDTH;
    const arrays: [Uint32Array, Uint32Array] = [new Uint32Array(capacity * 4), new Uint32Array(capacity * 4)];
    let i = 0;
    for (const d of parts) {
      const { positions: p, scales: s, quats: q, opacities: a, colors: c } = d;
      for (let k = 0; k < d.count; k++, i++) {
        utils.encodeExtSplat(
          arrays, i,
          p[k * 3]!, p[k * 3 + 1]!, p[k * 3 + 2]!,
          s[k * 3]!, s[k * 3 + 1]!, s[k * 3 + 2]!,
          q[k * 4]!, q[k * 4 + 1]!, q[k * 4 + 2]!, q[k * 4 + 3]!,
          a[k]!, c[k * 3]!, c[k * 3 + 1]!, c[k * 3 + 2]!,
        );
      }
    }
    const mesh = new SplatMesh({ extSplats: new ExtSplats({ extArrays: arrays, numSplats: n }) });
    mesh.name = `chunk-${chunk.id}`;
    mesh.userData["bounds"] = { center: chunk.center, radius: chunk.radius }; // LocalRenderer culls by it
    chunk.mesh = mesh;
    chunk.splats = n;
    chunk.shownAt = performance.now();
    if (chunk.layer === "far") {
      mesh.name = `far-${chunk.id}`;
      this.farRoot.add(mesh);
    } else {
      if (this.stats.firstChunkAt < 0) this.stats.firstChunkAt = chunk.shownAt;
      this.root.add(mesh);
    }
    this.updateCounts();
    this.events.changed();
  }

  private drop(chunk: HeldChunk): void {
    this.chunks.delete(chunk.id);
    chunk.pending.clear();
    if (chunk.mesh) {
      chunk.mesh.removeFromParent();
      chunk.mesh.dispose();
      chunk.mesh = null;
    }
  }

  private updateCounts(): void {
    let shown = 0, splats = 0, farShown = 0, farSplats = 0;
    for (const chunk of this.chunks.values()) {
      if (!chunk.mesh) continue;
      if (chunk.layer === "far") {
        farShown += 1;
        farSplats += chunk.splats;
      } else {
        shown += 1;
        splats += chunk.splats;
      }
    }
    this.stats.chunksShown = shown;
    this.stats.chunksHeld = this.chunks.size;
    this.stats.splats = splats;
    this.stats.farChunksShown = farShown;
    this.stats.farSplats = farSplats;
  }
}
