// Turns a chosen picture into the PNG/JPEG bytes a new_world request accepts.
import { MAX_START_IMAGE_BYTES } from "./protocol";

const MAX_EDGE_PX = 1600;

function isPngOrJpeg(bytes: Uint8Array): boolean {
  const png = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (png.every((b, i) => bytes[i] === b)) return true;
  return bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
}

/**
 * The file's own bytes when they are already PNG/JPEG and small enough; otherwise (WebP,
 * HEIC shown by the browser, huge photos) the picture re-encoded as JPEG, at most 1600 px.
 */
export async function startImageBytes(file: File): Promise<Uint8Array> {
  const raw = new Uint8Array(await file.arrayBuffer());
  if (isPngOrJpeg(raw) && raw.byteLength <= MAX_START_IMAGE_BYTES) return raw;
  const bitmap = await createImageBitmap(file);
  const scale = Math.min(1, MAX_EDGE_PX / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  canvas.getContext("2d")?.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  const blob = await new Promise<Blob | null>((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.9));
  if (!blob) throw new Error("this picture could not be read");
  const bytes = new Uint8Array(await blob.arrayBuffer());
  if (bytes.byteLength > MAX_START_IMAGE_BYTES) throw new Error("this picture is too large");
  return bytes;
}
