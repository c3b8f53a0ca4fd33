// Who the player is across visits: a remembered display name, and per-tab resume tokens.
import { ACCESS_KEY_PATTERN, PLAYER_NAME_PATTERN, WORLD_NAME_PATTERN } from "./protocol";

const NAME_KEY = "worldstream.playerName";
const RESUME_KEY_PREFIX = "worldstream.resume.";
const OWNER_KEY_PREFIX = "worldstream.owner.";

const ADJECTIVES = ["Quiet", "Amber", "Swift", "Misty", "Bold", "Lunar", "Mossy", "Sunny", "Stray", "Azure"];
const NOUNS = ["Fox", "Heron", "Lynx", "Otter", "Wren", "Moth", "Finch", "Hare", "Owl", "Elk"];

const playerNameRe = new RegExp(PLAYER_NAME_PATTERN);
const worldNameRe = new RegExp(WORLD_NAME_PATTERN);
const accessKeyRe = new RegExp(ACCESS_KEY_PATTERN);

export function isValidPlayerName(name: string): boolean {
  return playerNameRe.test(name);
}

export function isValidWorldName(name: string): boolean {
  return worldNameRe.test(name);
}

export function isValidInvite(invite: string): boolean {
  return accessKeyRe.test(invite);
}

/** A friendly random name, so that following a shared link needs no typing. */
export function generatedPlayerName(): string {
  const pick = <T>(items: T[]): T => items[Math.floor(Math.random() * items.length)]!;
  return `${pick(ADJECTIVES)}${pick(NOUNS)}${Math.floor(10 + Math.random() * 90)}`;
}

/** Storage can throw (privacy modes, sandboxed frames); the client then just forgets. */
function safeGet(storage: () => Storage, key: string): string | null {
  try {
    return storage().getItem(key);
  } catch {
    return null;
  }
}

function safeSet(storage: () => Storage, key: string, value: string | null): void {
  try {
    if (value === null) storage().removeItem(key);
    else storage().setItem(key, value);
  } catch {
    /* not persisted; harmless */
  }
}

/** The remembered name, or a new generated one (remembered from now on). */
export function playerName(): string {
  const saved = safeGet(() => localStorage, NAME_KEY);
  if (saved && isValidPlayerName(saved)) return saved;
  const fresh = generatedPlayerName();
  safeSet(() => localStorage, NAME_KEY, fresh);
  return fresh;
}

export function rememberPlayerName(name: string): void {
  if (isValidPlayerName(name)) safeSet(() => localStorage, NAME_KEY, name);
}

// Resume tokens live in sessionStorage: a reload of this tab gets its place back, while a
// second tab on the same world is a second player rather than a takeover of the first.
export function resumeToken(world: string): string | null {
  return safeGet(() => sessionStorage, RESUME_KEY_PREFIX + world);
}

export function rememberResumeToken(world: string, token: string | null): void {
  safeSet(() => sessionStorage, RESUME_KEY_PREFIX + world, token);
}

// Owner keys live in localStorage: the creator of a world is recognised on every later
// visit from this browser (it may then revoke the world's invite link). The server keeps
// only a hash, so this is the one copy.
export function ownerKey(world: string): string | null {
  return safeGet(() => localStorage, OWNER_KEY_PREFIX + world);
}

export function rememberOwnerKey(world: string, key: string): void {
  safeSet(() => localStorage, OWNER_KEY_PREFIX + world, key);
}
