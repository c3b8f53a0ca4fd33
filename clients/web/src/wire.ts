// msgpack framing of protocol messages: one map per binary WebSocket frame.
import { decode, encode } from "@msgpack/msgpack";
import type { ClientMessage, ServerMessage } from "./protocol";

/** Encode a client message; undefined fields are left out so the server applies its defaults. */
export function encodeMessage(message: ClientMessage): Uint8Array<ArrayBuffer> {
  // The encoder writes into a plain ArrayBuffer (never a shared one), which WebSocket.send needs.
  return encode(message, { ignoreUndefined: true }) as Uint8Array<ArrayBuffer>;
}

/**
 * Decode one server frame. Returns null for anything that is not a map with a string
 * `type` (the server defines what it sends; a malformed frame is dropped, not fatal).
 */
export function decodeMessage(data: ArrayBuffer): ServerMessage | null {
  let value: unknown;
  try {
    value = decode(new Uint8Array(data));
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null || typeof (value as { type?: unknown }).type !== "string") {
    return null;
  }
  return value as ServerMessage;
}
