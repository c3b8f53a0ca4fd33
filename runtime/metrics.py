"""Prometheus metrics for one server (own registry, so several servers can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_MS_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.033, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)


class ServerMetrics:
    """Every metric the server exports at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions = Gauge("worldstream_sessions", "Worlds with a live session", registry=r)
        self.players = Gauge("worldstream_players", "Connected players", registry=r)
        self.frames_sent = Counter("worldstream_frames_sent", "Video frames encoded and handed to WebRTC", registry=r)
        self.frames_dropped = Counter(
            "worldstream_frames_dropped",
            "Rendered frames dropped before encoding: replaced (a newer one came before the encoder was free) "
            "or worker_behind (the media worker was a whole picture ring behind) "
            "or render_failed (the renderer raised for that view; the player gets the next tick's)",
            ["reason"],
            registry=r,
        )
        self.pictures = Counter(
            "worldstream_pictures",
            "Player pictures made per tick, by how: rendered (the scene drawn), avatars (only the other players in "
            "view moved: drawn again on a copy of the scene) or repeated (nothing in view changed)",
            ["how"],
            registry=r,
        )
        self.sent_fps = Gauge("worldstream_sent_fps", "Frames sent per second, summed over players", registry=r)
        self.render_seconds = Histogram(
            "worldstream_frame_render_seconds", "Time to render one batch of player views", buckets=_MS_BUCKETS, registry=r
        )
        self.tick_seconds = Histogram(
            "worldstream_frame_tick_seconds",
            "Where a frame clock tick's time goes: queued (waiting for the render thread), move_render (players "
            "moved, views rendered and staged, in the render thread), resume (the event loop noticing it is "
            "done) and offer (pictures handed to the videos, on the event loop)",
            ["part"],
            buckets=(0.0005, 0.001) + _MS_BUCKETS,
            registry=r,
        )
        self.encode_seconds = Histogram(
            "worldstream_frame_encode_seconds", "Time to encode one video frame", buckets=_MS_BUCKETS, registry=r
        )
        self.motion_to_photon_seconds = Histogram(
            "worldstream_motion_to_photon_seconds",
            "Server motion-to-photon: input received to the first encoded frame reflecting it",
            buckets=_MS_BUCKETS,
            registry=r,
        )
        self.generation_queue_depth = Gauge(
            "worldstream_generation_queue_depth", "Generation jobs queued or running, all worlds", registry=r
        )
        self.generation_jobs = Counter(
            "worldstream_generation_jobs", "Generation jobs by outcome", ["state"], registry=r
        )
        self.protocol_errors = Counter(
            "worldstream_protocol_errors", "Error messages sent to clients", ["code"], registry=r
        )
        self.connections_refused = Counter(
            "worldstream_connections_refused",
            "WebSocket handshakes refused, by reason (origin: a page from an origin not allowed, HTTP 403; "
            "oversize: an address with too many connections closed for oversized frames, HTTP 429; "
            "token: without the --token access token, HTTP 401, counted for every HTTP request so refused)",
            ["reason"],
            registry=r,
        )
        self.connections_closed = Counter(
            "worldstream_connections_closed",
            "WebSocket connections the server closed, by reason (message_too_big: a frame over the size it "
            "reads, close 1009, refused from its header)",
            ["reason"],
            registry=r,
        )
        self.large_messages = Counter(
            "worldstream_large_messages",
            "Client messages over 64 KiB (a hello with a start image), by outcome, decided from the frame's header "
            "(read: on a token of its client address's budget, within the server-wide one; refused: over either, close 1009 "
            "before the payload is read; the server-wide refusals are also in worldstream_limit_refusals_total)",
            ["outcome"],
            registry=r,
        )
        self.messages_dropped = Counter(
            "worldstream_messages_dropped",
            "Messages to clients dropped, by reason (client_not_reading: its connection's queue was full)",
            ["reason"],
            registry=r,
        )
        self.read_holds = Counter(
            "worldstream_read_holds",
            "Times a connection was not read for a while because it sent frames faster than the server reads "
            "(TCP then holds its sends back)",
            registry=r,
        )
        # --ray only: the generator actor pools (runtime/scale), by generator.
        self.ray_actors = Gauge("worldstream_ray_actors", "Generator actors in the pool", ["generator"], registry=r)
        self.ray_jobs_in_flight = Gauge(
            "worldstream_ray_jobs_in_flight", "Generation jobs sent to actors and not yet answered", ["generator"], registry=r
        )
        self.ray_jobs = Gauge(
            "worldstream_ray_jobs",
            "Generation jobs on actors since start, by outcome: submitted (attempts), completed, cancelled, "
            "retried (its actor died; sent to another) and actors_replaced",
            ["generator", "outcome"],
            registry=r,
        )

        self.limit_refusals = Counter(
            "worldstream_limit_refusals",
            "Requests refused by a quota, by limit (named as its flag: max_new_worlds_per_client, idle_timeout, ...)",
            ["limit"],
            registry=r,
        )

    def exposition(self) -> bytes:
        """The text exposition format served at ``/metrics``."""
        return generate_latest(self.registry)
