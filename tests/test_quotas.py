"""The quota book (runtime.quotas) on a driven clock, and the job limits of a real World."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.quotas import FLOOD_WINDOW_S, Limits, LimitReached, Quotas, client_key
from runtime.world import PlayerState, Pose, World, WorldConfig
from runtime.world.generators.procedural import ProceduralGenerator
from runtime.world.frontier.jobs import JobLimits
from runtime.world.render.cpu import CpuRenderer
from runtime.world.world import MAX_CAPTION_HISTORY


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def book(**limits) -> tuple[Quotas, Clock, list[str]]:
    clock, refused = Clock(), []
    return Quotas(Limits(**limits), refused=refused.append, clock=clock), clock, refused


def refused_limit(call, *args) -> str:
    with pytest.raises(LimitReached) as exc:
        call(*args)
    return exc.value.limit


def test_client_keys_group_an_ipv6_host_by_its_64():
    assert client_key("203.0.113.7") == "203.0.113.7"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:198.51.100.4") == "198.51.100.4"
    assert client_key(None) == "unknown"


def test_connections_per_client_and_server_wide():
    q, _, refused = book(max_connections_per_client=2, max_connections=3)
    q.open_connection("a")
    q.open_connection("a")
    assert refused_limit(q.open_connection, "a") == "max_connections_per_client"
    q.open_connection("b")
    assert refused_limit(q.open_connection, "c") == "max_connections"
    q.close_connection("a")
    q.open_connection("c")
    assert refused == ["max_connections_per_client", "max_connections"]
    assert q.connections == 3


def create(q: Quotas, key: str) -> None:
    q.may_create_world(key)
    q.created_world(key)


def test_a_client_that_keeps_knocking_is_flooding():
    q, clock, refused = book(max_connections_per_client=1)
    q.open_connection("a")
    assert q.flooding("a") is None  # at its limit, but not refused yet: a person gets the typed error
    refused_limit(q.open_connection, "a")
    assert q.flooding("a").limit == "max_connections_per_client"
    clock.t += FLOOD_WINDOW_S + 0.5
    assert q.flooding("a") is None
    refused_limit(q.open_connection, "a")
    q.close_connection("a")
    assert q.flooding("a") is None  # below its limit again
    assert refused.count("max_connections_per_client") == 3


def test_world_creation_refills_over_the_hour_and_a_refusal_takes_nothing():
    q, clock, _ = book(max_new_worlds_per_client=2, max_new_worlds=3)
    create(q, "a")
    create(q, "a")
    assert refused_limit(create, q, "a") == "max_new_worlds_per_client"
    create(q, "b")
    assert refused_limit(create, q, "c") == "max_new_worlds"  # the server's hour is used up
    clock.t += 3600 / 3 + 1  # one server-wide world back; a's allowance refills slower
    assert refused_limit(create, q, "a") == "max_new_worlds_per_client"
    q.may_create_world("c")  # a's refusal spent nothing, and neither does a creation that then fails
    create(q, "c")
    clock.t += 3600
    create(q, "a")


def test_captions_per_client_and_per_world():
    q, clock, _ = book(max_captions_per_client=3, max_captions_per_world=4)
    for _ in range(3):
        q.caption("a", "w")
    assert refused_limit(q.caption, "a", "w") == "max_captions_per_client"
    q.caption("b", "w")
    assert refused_limit(q.caption, "c", "w") == "max_captions_per_world"
    q.caption("c", "other-world")
    clock.t += 60
    q.caption("a", "w")


def test_forgotten_clients_leave_no_entries():
    q, clock, _ = book()
    for i in range(50):
        key = f"10.0.0.{i}"
        q.open_connection(key)
        create(q, key)
        q.close_connection(key)
    assert q.prune() == 50  # their hourly allowance is not whole again yet
    clock.t += 3600
    assert q.prune() == 0


def test_limits_refuse_nonsense():
    with pytest.raises(ValueError, match="max_open_worlds"):
        Limits(max_open_worlds=0)
    assert Limits(idle_timeout=0).idle_timeout == 0


# ---------------------------------------------------------------------- a real World
@pytest.fixture(scope="module")
def world():
    gen = ProceduralGenerator()
    gen.warmup()
    w = World(WorldConfig("limits", seed=4, keyframe_width=64, keyframe_height=36, probe_width=32, probe_height=18),
              generator=gen, renderer=CpuRenderer())
    yield w
    w.close()


def test_job_limits_bound_what_teleporting_players_queue(world):
    world.job_limits = JobLimits(per_world=5, per_player=2)
    rng = np.random.default_rng(1)
    most = 0
    for step in range(30):  # two players jumping to a new far place on every update
        players = [
            PlayerState(pid, Pose(np.array([rng.uniform(-3000, 3000), 0.0, rng.uniform(-3000, 3000)], np.float32),
                                  yaw=float(rng.uniform(-math.pi, math.pi))))
            for pid in ("p", "q")
        ]
        world.update(players)
        pending = world.pending_jobs()
        most = max(most, len(pending))
        for pid in ("p", "q"):
            assert sum(pid in j.requested_by for j in pending) <= 2
    assert most <= 4  # two players, two each: the world limit (5) is not what held
    refused = world.take_refused_jobs()
    assert set(refused) <= {"p", "q"} and set(refused.values()) <= {"player"} and refused
    assert world.take_refused_jobs() == {}
    world.job_limits = JobLimits(per_world=1)
    before = len(world.pending_jobs())
    world.update([PlayerState("r", Pose(np.array([9000.0, 0.0, 9000.0], np.float32), yaw=0.0))])
    assert world.take_refused_jobs()["r"] == "world" and len(world.pending_jobs()) <= max(1, before)


def test_caption_history_is_bounded(world):
    for i in range(3 * MAX_CAPTION_HISTORY):
        world.set_caption(f"caption {i}")
    captions = world.state_dict()["captions"]
    assert len(captions) == MAX_CAPTION_HISTORY
    assert captions[-1][1] == world.caption == f"caption {3 * MAX_CAPTION_HISTORY - 1}"


def test_every_limit_is_documented_with_its_flag_and_default():
    from dataclasses import fields
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "server.md").read_text()
    for f in fields(Limits):
        flag = "--" + f.name.replace("_", "-")
        assert f"`{flag}`" in text and f"{flag} {f.default:g}" in text, flag


def _limits_table() -> list[list[str]]:
    """The rows of docs/server.md's "Limits and security" table, as lists of cells."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "server.md").read_text()
    section = text[text.index("## Limits and security"):]
    section = section[: section.index("\n### ")]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| limit | default | flag | what the client sees | counted in `/metrics` |"), lines[0]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[1:]]


def test_the_limits_table_names_real_flags_defaults_and_counters():
    """Every row says its default, its flag (one the server has, or none), what the client
    sees and where it is counted (a metric the server exports, with that label, or "—");
    every quota and every security flag has its row, with the flag's real default."""
    import re
    from dataclasses import fields

    from runtime.app import build_parser
    from runtime.metrics import ServerMetrics

    parser = build_parser()
    defaults = {option: action.default for action in parser._actions for option in action.option_strings}
    server_metrics = ServerMetrics()
    metrics = {m._name: m for m in vars(server_metrics).values() if hasattr(m, "_name")}  # by name, less _total
    flagged = {}
    for row in _limits_table():
        assert len(row) == 5 and all(row), row
        _, default, flag, sees, counted = row
        for named in re.findall(r"`(--[a-z-]+)", flag):
            assert named in defaults, (named, row)
            flagged[named] = default
        for name, label, value in re.findall(r"`(worldstream_[a-z_]+?)(?:_total)?(?:\{(\w+)=\"(\w+)\"\})?`", counted):
            assert name in metrics, (name, row)
            if label:
                metrics[name].labels(**{label: value})  # raises unless the metric has that label
        assert counted.startswith("`worldstream_") or counted.startswith("—"), row
    for f in fields(Limits):  # every quota: its own row, the default the flag really has
        flag = "--" + f.name.replace("_", "-")
        assert flag in flagged and flagged[flag].startswith(f"{defaults[flag]:g}"), (flag, flagged.get(flag))
    for flag in ("--max-players", "--world-linger", "--allow-origin", "--trust-proxy", "--token", "--worlds"):
        assert flag in flagged, flag
    assert flagged["--max-players"].startswith(f"{defaults['--max-players']:g}")
    assert flagged["--world-linger"].startswith(f"{defaults['--world-linger']:g}")


def test_failed_views_are_remembered_only_for_their_retry_time():
    """A world whose generation keeps failing (a player walking on, a broken model) records
    each failed keyframe view for ``retry_after_s`` only: the record stays small."""
    from runtime.world.camera import Cameras, intrinsics_from_fov

    # A world of its own: the module's world may still be landing the teleport test's jobs,
    # whose failures are recorded at the real clock's time, not this test's seconds.
    world = World(WorldConfig("failures", seed=4, keyframe_width=64, keyframe_height=36), generator=ProceduralGenerator(), renderer=CpuRenderer())
    planner, retry_s = world._planner, world.config.retry_after_s
    K = intrinsics_from_fov(64, 36, math.radians(60.0))
    for second in range(int(10 * retry_s)):  # a failure a second, each at a new place
        planner.record_failed(Cameras(Pose(np.array([second, 0.0, 0.0], np.float32)).w2c, K, 64, 36), float(second))
    assert len(planner.failed_views.times) <= retry_s + 1
    assert planner.failed_views.times.min() >= 10 * retry_s - 1 - retry_s
    world.close()


def test_resume_records_are_bounded(tmp_path, monkeypatch):
    """Tokens of players who left are kept at most ``MAX_RESUME_RECORDS``, the oldest going first."""
    import asyncio

    from runtime import sessions
    from runtime.config import Executors, ServerConfig
    from runtime.metrics import ServerMetrics

    monkeypatch.setattr(sessions, "MAX_RESUME_RECORDS", 3)
    executors = Executors(media_processes=0)
    try:
        registry = sessions.SessionRegistry(ServerConfig(worlds=tmp_path), executors, ServerMetrics(), CpuRenderer())
        tokens = [registry.new_token() for _ in range(5)]
        for i, token in enumerate(tokens):
            registry.remember(token, "w", f"p{i}", Pose(np.zeros(3, np.float32)))
        assert [registry.resume(t, "w") for t in tokens[:2]] == [None, None]  # the oldest two went
        assert [registry.resume(t, "w").player_id for t in tokens[2:]] == ["p2", "p3", "p4"]
    finally:
        asyncio.run(executors.close())
