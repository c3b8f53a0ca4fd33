// Turns a chosen picture into the PNG/JPEG bytes a new_world request accepts, or says in
// words why it cannot be used (too many pixels, not a readable picture).
import { MAX_START_IMAGE_BYTES, MAX_START_IMAGE_PIXELS } from "./protocol";

const MAX_EDGE_PX = 1600;
const JPEG_FRAME_MARKERS = new Set([0xc0, 0xc1, 0xc2, 0xc3, 0xc5, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcd, 0xce, 0xcf]);

function isPng(bytes: Uint8Array): boolean {
  return [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a].every((b, i) => bytes[i] === b);
}

function isPngOrJpeg(bytes: Uint8Array): boolean {
  return isPng(bytes) || (bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff);
}

/** Width and height from a PNG's IHDR or a JPEG's frame header (nothing decoded), or null. */
export function imageHeaderSize(bytes: Uint8Array): { width: number; height: number } | null {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (isPng(bytes)) {
    if (bytes.length < 24) return null;
    return { width: view.getUint32(16), height: view.getUint32(20) };
  }
  if (!(bytes[0] === 0xff && bytes[1] === 0xd8)) return null;
  let i = 2;
  while (i + 4 <= bytes.length) {
    if (bytes[i] !== 0xff) return null;
    const marker = bytes[i + 1]!;
    if (marker === 0xff) {
      i += 1;
    } else if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      i += 2;
    } else if (JPEG_FRAME_MARKERS.has(marker)) {
      return i + 9 <= bytes.length ? { height: view.getUint16(i + 5), width: view.getUint16(i + 7) } : null;
    } else if (marker === 0xd9 || marker === 0xda) {
      return null;
    } else {
      i += 2 + view.getUint16(i + 2);
    }
  }
  return null;
}

const UNREADABLE = "it is not a readable picture: the file is damaged or not an image";

/**
 * The file's own bytes when they are already PNG/JPEG and small enough; otherwise (WebP,
 * HEIC shown by the browser, large files) the picture re-encoded as JPEG, at most 1600 px.
 * Throws an Error whose message says what is wrong with the picture.
 */
export async function startImageBytes(file: File): Promise<Uint8Array> {
  const raw = new Uint8Array(await file.arrayBuffer());
  const size = imageHeaderSize(raw);
  if (size && size.width * size.height > MAX_START_IMAGE_PIXELS) {
    // Refused before decoding: a small file can unpack to gigabytes.
    const side = Math.floor(Math.sqrt(MAX_START_IMAGE_PIXELS));
    throw new Error(
      `it is ${size.width}×${size.height} pixels (${(size.width * size.height / 1e6).toFixed(1)} megapixels); ` +
        `the most is ${(MAX_START_IMAGE_PIXELS / 1e6).toFixed(1)} megapixels (e.g. ${side}×${side}): scale it down and try again`,
    );
  }
  let bitmap: ImageBitmap;
  try {
    bitmap = await createImageBitmap(file); // decoded once here so a damaged file is named before it is sent
  } catch {
    throw new Error(UNREADABLE);
  }
  if (isPngOrJpeg(raw) && raw.byteLength <= MAX_START_IMAGE_BYTES) {
    bitmap.close();
    return raw;
  }
  const scale = Math.min(1, MAX_EDGE_PX / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  canvas.getContext("2d")?.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  const blob = await new Promise<Blob | null>((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.9));
  if (!blob) throw new Error(UNREADABLE);
  const bytes = new Uint8Array(await blob.arrayBuffer());
  if (bytes.byteLength > MAX_START_IMAGE_BYTES) throw new Error("it is too large even as a 1600-pixel JPEG");
  return bytes;
}
