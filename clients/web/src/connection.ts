// The WebSocket session with the server: hello/welcome, message dispatch, and automatic
// reconnection with backoff that resumes the same player (resume token) in the same world.
import {
  PROTOCOL_VERSION,
  type ClientMessage,
  type ErrorMessage,
  type NewWorld,
  type ServerMessage,
  type View,
  type Welcome,
} from "./protocol";
import { ownerKey, rememberOwnerKey, rememberResumeToken, resumeToken } from "./identity";
import { shareUrl } from "./share_link";
import { decodeMessage, encodeMessage } from "./wire";

/** What the player asked for on the start screen (or through a shared link). */
export type JoinTarget = { kind: "join"; world: string; invite?: string | null } | { kind: "create"; newWorld: NewWorld };

/**
 * connecting: first attempt under way; joined: welcome received; reconnecting: lost, retrying;
 * offline: several retries failed (the server looks gone; retries go on); failed: the server
 * refused us for good (version mismatch, unknown world), no more retries.
 */
export type LinkState = "connecting" | "joined" | "reconnecting" | "offline" | "failed";

export interface ConnectionEvents {
  state(state: LinkState, detail: { attempt: number; retryInMs: number; reason: string }): void;
  welcome(welcome: Welcome): void;
  message(message: ServerMessage): void;
  /** The socket closed (the video link belongs to it and must be torn down). */
  closed(): void;
}

const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 8000;
const OFFLINE_AFTER_ATTEMPTS = 5; // about 15 s of failed retries
const WELCOME_TIMEOUT_MS = 15000;

// Refusals of a hello that are worth retrying later; any other refusal of a hello would
// come back the same (bad_resume_token is not a refusal: the player joins fresh).
const RETRY_HELLO_CODES = new Set(["server_busy", "internal", "rate_limited"]);
const NOT_A_REFUSAL = new Set(["bad_resume_token"]);
// Server quotas (error code limit_reached) that free up by themselves; others (worlds created
// per hour) would refuse again for a long while. The idle timeout ends a joined session for good.
const RETRY_LIMITS = new Set(["max_connections", "max_connections_per_client", "max_open_worlds"]);
// The server closes a connection (1008) with this reason when another connection resumed its
// player with its resume token (protocol/PROTOCOL.md): a duplicated tab, another window.
const CLOSE_POLICY = 1008;
const DISPLACED_REASON = "resumed on another connection";

function retryable(error: ErrorMessage): boolean {
  if (error.code === "limit_reached") return RETRY_LIMITS.has(error.limit ?? "");
  return RETRY_HELLO_CODES.has(error.code);
}

export class WorldConnection {
  private socket: WebSocket | null = null;
  private target: JoinTarget;
  private attempt = 0;
  private retryTimer = 0;
  private welcomeTimer = 0;
  private stopped = false;
  private fatal: ErrorMessage | null = null;
  private joined = false;
  /** Another connection took this player over (state "failed"); no retries until restart(). */
  displaced = false;
  /** Name of the world once welcomed (a created world is joined by name on reconnect). */
  world: string | null = null;
  /** What the latest hello asked for. */
  get request(): JoinTarget {
    return this.target;
  }
  state: LinkState = "connecting";
  reconnects = 0;

  constructor(
    private readonly url: string,
    target: JoinTarget,
    private readonly playerName: string,
    private readonly view: () => View,
    private readonly events: ConnectionEvents,
  ) {
    this.target = target;
    if (target.kind === "join") this.world = target.world;
    window.addEventListener("online", () => this.retryNow());
  }

  start(): void {
    this.open();
  }

  /** Send a message if the session is joined; returns false when it could not go out. */
  send(message: ClientMessage): boolean {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN || !this.joined) return false;
    socket.send(encodeMessage(message));
    return true;
  }

  /** Close the socket as a network drop would; the usual reconnect logic takes over. */
  drop(): void {
    this.socket?.close(4000, "dropped by client");
  }

  /** Skip the backoff wait (the "Retry now" button, or the browser going back online). */
  retryNow(): void {
    if (this.stopped || this.fatal || this.socket) return;
    window.clearTimeout(this.retryTimer);
    this.open();
  }

  /** Start over with another request (e.g. create the world a link named but nobody made yet). */
  restart(target: JoinTarget): void {
    this.fatal = null;
    this.displaced = false;
    this.target = target;
    this.attempt = 0;
    window.clearTimeout(this.retryTimer);
    if (this.socket) this.socket.close(1000, "restart");
    else this.open();
  }

  /** A private world's invite changed (its creator revoked the old one): reconnects use the new one. */
  setInvite(invite: string): void {
    if (this.target.kind === "join") this.target = { ...this.target, invite };
  }

  /** The refusal that stopped the retries (state "failed"), if any. */
  get refusal(): ErrorMessage | null {
    return this.fatal;
  }

  stop(): void {
    this.stopped = true;
    window.clearTimeout(this.retryTimer);
    this.socket?.close(1000, "leaving");
  }

  private setState(state: LinkState, retryInMs = 0, reason = ""): void {
    this.state = state;
    this.events.state(state, { attempt: this.attempt, retryInMs, reason });
  }

  private hello(): ClientMessage {
    const common = { type: "hello" as const, protocol_version: PROTOCOL_VERSION, player_name: this.playerName, view: this.view() };
    if (this.target.kind === "create") return { ...common, new_world: this.target.newWorld };
    const world = this.target.world;
    return { ...common, world, resume_token: resumeToken(world), invite: this.target.invite ?? null, owner_key: ownerKey(world) };
  }

  private open(): void {
    this.joined = false;
    const socket = new WebSocket(this.url);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.onopen = () => {
      // hello may carry a start image of several MiB; it is the one message sent before welcome.
      socket.send(encodeMessage(this.hello()));
      this.welcomeTimer = window.setTimeout(() => socket.close(4001, "no welcome"), WELCOME_TIMEOUT_MS);
    };
    socket.onmessage = (event: MessageEvent) => {
      if (!(event.data instanceof ArrayBuffer)) return;
      const message = decodeMessage(event.data);
      if (message) this.receive(message);
    };
    socket.onclose = (event: CloseEvent) => this.closed(socket, event);
  }

  private receive(message: ServerMessage): void {
    if (message.type === "welcome") {
      window.clearTimeout(this.welcomeTimer);
      this.joined = true;
      this.attempt = 0;
      this.world = message.world;
      // From now on a reconnect joins this world (even one we created) and resumes our pose.
      this.target = { kind: "join", world: message.world, invite: message.invite ?? null };
      rememberResumeToken(message.world, message.resume_token);
      if (message.owner_key) rememberOwnerKey(message.world, message.owner_key);
      this.setState("joined");
      this.events.welcome(message);
      return;
    }
    if (message.type === "redirect") {
      // The world is open on another server (servers sharing worlds over Ray): load this page
      // from that server with the world's link, so the page and its WebSocket share an origin.
      window.clearTimeout(this.welcomeTimer);
      this.stopped = true;
      const invite = this.target.kind === "join" ? (this.target.invite ?? null) : null;
      window.location.assign(shareUrl(message.world, invite, message.url));
      return;
    }
    if (message.type === "error") {
      if (message.code === "bad_resume_token" && this.world) rememberResumeToken(this.world, null);
      if (!this.joined && !NOT_A_REFUSAL.has(message.code)) {
        if (!retryable(message)) this.fatal = message;
        this.socket?.close(1000, message.code); // retried with backoff unless fatal
      }
      if (message.code === "limit_reached" && message.limit === "idle_timeout") this.fatal = message; // the server closes
    }
    this.events.message(message);
  }

  private closed(socket: WebSocket, event: CloseEvent): void {
    if (socket !== this.socket) return;
    window.clearTimeout(this.welcomeTimer);
    this.socket = null;
    const wasJoined = this.joined;
    this.joined = false;
    this.events.closed();
    if (this.stopped) return;
    if (event.code === CLOSE_POLICY && event.reason === DISPLACED_REASON) {
      // Retrying would start a second player, or take this one back from the other
      // connection and so on in turn: stop, say so, and let the player choose.
      this.displaced = true;
      if (this.world) rememberResumeToken(this.world, null); // spent: the other connection holds the player
      this.setState("failed", 0, event.reason);
      return;
    }
    if (this.fatal) {
      this.setState("failed", 0, this.fatal.message || this.fatal.code);
      return;
    }
    if (wasJoined) this.reconnects += 1;
    const delay = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** this.attempt) * (0.8 + 0.4 * Math.random());
    this.attempt += 1;
    const reason = event.reason || (event.code === 1006 ? "connection lost" : `closed (${event.code})`);
    this.setState(this.attempt > OFFLINE_AFTER_ATTEMPTS ? "offline" : "reconnecting", delay, reason);
    this.retryTimer = window.setTimeout(() => this.open(), delay);
  }
}
