// Short messages in a corner: server errors in words, and notable events.
import { byId, el } from "./dom";

export type ToastKind = "info" | "error" | "success";

const SHOW_MS = { info: 3500, success: 3500, error: 6000 };
const MAX_TOASTS = 4;

const live = new Map<string, { node: HTMLElement; count: number; timer: number }>();

function dismissLater(key: string, node: HTMLElement, kind: ToastKind): number {
  return window.setTimeout(() => {
    live.delete(key);
    node.classList.add("leaving");
    window.setTimeout(() => node.remove(), 300);
  }, SHOW_MS[kind]);
}

/** Show a toast; the same message again while it is up just counts (no stack of repeats). */
export function toast(text: string, kind: ToastKind = "info", detail = ""): void {
  const key = `${kind}|${text}|${detail}`;
  const same = live.get(key);
  if (same) {
    same.count += 1;
    same.node.dataset["count"] = `×${same.count}`;
    window.clearTimeout(same.timer);
    same.timer = dismissLater(key, same.node, kind);
    return;
  }
  const box = byId("toasts");
  const node = el("div", `toast toast-${kind}`, { role: kind === "error" ? "alert" : "status" }, [
    el("span", "toast-text", {}, [text]),
  ]);
  if (detail) node.append(el("span", "toast-detail", {}, [detail]));
  box.append(node);
  while (box.children.length > MAX_TOASTS) box.firstElementChild?.remove();
  live.set(key, { node, count: 1, timer: dismissLater(key, node, kind) });
}

/** Words for the server's error codes (protocol ERROR_CODES), for people rather than logs. */
const ERROR_WORDS: Record<string, string> = {
  bad_message: "The server could not read a message from this page.",
  unknown_type: "The server does not understand a message from this page.",
  missing_field: "A message was missing a field.",
  bad_field: "A value was refused",
  too_large: "That was too large to send.",
  rate_limited: "Slow down: too many messages.",
  not_joined: "Not in a world yet.",
  no_rtc_offer: "The video was not set up yet.",
  already_joined: "Already in a world.",
  version_mismatch: "This page is out of date: reload it.",
  world_not_found: "There is no world of that name.",
  world_exists: "A world of that name already exists.",
  bad_resume_token: "Could not restore your place; starting fresh.",
  rtc_failed: "The video stream could not be set up.",
  server_busy: "The server is full right now.",
  invite_required: "This world is private: it needs a current invite link (ask its creator for a new one).",
  not_allowed: "Only the world's creator can do that.",
  internal: "The server hit a problem (it carries on).",
};

/** A readable sentence for an error message from the server. */
export function describeError(code: string, message: string, field: string | null): string {
  const words = ERROR_WORDS[code];
  if (field === "new_world.start_image" && message) return `The start image was refused: ${message}.`;
  if (!words) return message || code;
  if (code === "bad_field" && field) return `${words}: ${field}${message ? ` (${message})` : ""}.`;
  return words;
}
