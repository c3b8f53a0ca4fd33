// Decodes one `splat_piece` payload: a gzip-compressed `.spz` (version 3, as
// runtime/world/formats/spz.py writes it) into plain arrays in worldstream's world frame
// (OpenCV: +y down). SPZ stores right-up-back axes, so y and z of positions and of the
// quaternions' vector parts flip back here. Higher-order SH is skipped: the server's
// renderers draw the degree-0 colour only, and so does the local view.

const SPZ_MAGIC = 0x5053474e; // "NGSP"
const HEADER_BYTES = 16;
const COLOR_SCALE = 0.15;
const SH_C0 = 0.28209479177387814;
const SQRT_HALF = Math.SQRT1_2;
const SH_COEFFS = [0, 3, 8, 15];
/** Most Gaussians one piece may declare: the server's pieces hold a few thousand. */
export const MAX_PIECE_SPLATS = 1 << 20;

/** Gaussians of one piece, world frame (metres), activated (no logits, no log scales). */
export interface DecodedSplats {
  count: number;
  /** [count * 3] centres. */
  positions: Float32Array;
  /** [count * 3] standard deviations along the local axes (metres). */
  scales: Float32Array;
  /** [count * 4] unit rotations, x y z w. */
  quats: Float32Array;
  /** [count] opacity in [0, 1]. */
  opacities: Float32Array;
  /** [count * 3] RGB in [0, 1] (the degree-0 colour). */
  colors: Float32Array;
}

export class SpzError extends Error {}

async function gunzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as BlobPart]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Decode a gzip `.spz` (version 2 or 3) into world-frame arrays. Throws SpzError when malformed. */
export async function decodeSpz(gz: Uint8Array): Promise<DecodedSplats> {
  let raw: Uint8Array;
  try {
    raw = await gunzip(gz);
  } catch (err) {
    throw new SpzError(`spz: not gzip data (${String(err)})`);
  }
  return parseSpz(raw);
}

/** Parse the inflated bytes of an `.spz` (header and attribute arrays). */
export function parseSpz(raw: Uint8Array): DecodedSplats {
  if (raw.length < HEADER_BYTES) throw new SpzError("spz: shorter than its header");
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const magic = view.getUint32(0, true);
  const version = view.getUint32(4, true);
  const n = view.getUint32(8, true);
  const shDegree = view.getUint8(12);
  const fractionalBits = view.getUint8(13);
  if (magic !== SPZ_MAGIC) throw new SpzError("spz: bad magic");
  if (version !== 2 && version !== 3) throw new SpzError(`spz: version ${version} is not read here (2 or 3)`);
  if (n > MAX_PIECE_SPLATS) throw new SpzError(`spz: ${n} points, more than ${MAX_PIECE_SPLATS}`);
  if (shDegree > 3) throw new SpzError(`spz: SH degree ${shDegree}`);
  const rotationBytes = version === 3 ? 4 : 3;
  const need = HEADER_BYTES + n * (9 + 1 + 3 + 3 + rotationBytes + SH_COEFFS[shDegree]! * 3);
  if (raw.length < need) throw new SpzError(`spz: ${raw.length} bytes, the header needs ${need}`);

  const positions = new Float32Array(n * 3);
  const scales = new Float32Array(n * 3);
  const quats = new Float32Array(n * 4);
  const opacities = new Float32Array(n);
  const colors = new Float32Array(n * 3);
  const unit = 1 / (1 << fractionalBits);
  let o = HEADER_BYTES;
  for (let i = 0; i < n * 3; i++, o += 3) {
    let v = raw[o]! | (raw[o + 1]! << 8) | (raw[o + 2]! << 16);
    if (v & 0x800000) v -= 0x1000000; // 24-bit two's complement
    const axis = i % 3;
    positions[i] = (axis === 0 ? v : -v) * unit; // RUB -> RDF (OpenCV)
  }
  for (let i = 0; i < n; i++) opacities[i] = raw[o++]! / 255;
  const colorUnit = SH_C0 / (COLOR_SCALE * 255);
  for (let i = 0; i < n * 3; i++) colors[i] = Math.min(1, Math.max(0, 0.5 + (raw[o++]! - 127.5) * colorUnit));
  for (let i = 0; i < n * 3; i++) scales[i] = Math.exp(raw[o++]! / 16 - 10);
  const q = [0, 0, 0, 0];
  for (let i = 0; i < n; i++) {
    if (version === 3) {
      let comp = view.getUint32(o, true);
      o += 4;
      const largest = comp >>> 30;
      let sum = 0;
      for (let c = 3; c >= 0; c--) {
        if (c === largest) continue;
        const mag = comp & 511;
        const value = (SQRT_HALF * mag) / 511;
        q[c] = (comp >>> 9) & 1 ? -value : value;
        sum += value * value;
        comp >>>= 10;
      }
      q[largest] = Math.sqrt(Math.max(0, 1 - sum));
    } else {
      q[0] = raw[o]! / 127.5 - 1;
      q[1] = raw[o + 1]! / 127.5 - 1;
      q[2] = raw[o + 2]! / 127.5 - 1;
      q[3] = Math.sqrt(Math.max(0, 1 - q[0] * q[0] - q[1] * q[1] - q[2] * q[2]));
      o += 3;
    }
    const norm = Math.hypot(q[0]!, q[1]!, q[2]!, q[3]!) || 1;
    quats[i * 4] = q[0]! / norm;
    quats[i * 4 + 1] = -q[1]! / norm; // RUB -> RDF: the vector part flips like a position
    quats[i * 4 + 2] = -q[2]! / norm;
    quats[i * 4 + 3] = q[3]! / norm;
  }
  return { count: n, positions, scales, quats, opacities, colors };
}
