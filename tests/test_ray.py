"""Scaling out on a real local Ray cluster (runtime/scale), started by this module.

Generation on a pool of two CPU actors (the same world as in-process, cancellation,
backpressure, an actor killed mid-job), a server with --ray, and worlds shared by two servers
(leases, redirects followed by the Python and the web client, failover after a SIGKILL).
One Ray per module (starting it costs seconds); the actor-killing test goes last, since a
replacement actor is slow to start on a loaded machine.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from protocol import messages as m  # noqa: E402
from runtime.client import StreamStalled, WorldClient  # noqa: E402
from runtime.scale.pool import ActorPool, PoolSettings, RayGenerator  # noqa: E402
from runtime.world import PlayerState, Pose, World, WorldConfig  # noqa: E402
from runtime.world.camera import Cameras, intrinsics_from_fov  # noqa: E402
from runtime.world.events import ChunkAdded  # noqa: E402
from runtime.world.generators import CancelToken, GenerationCancelled, GenerationRequest  # noqa: E402
from runtime.world.generators.procedural import ProceduralGenerator  # noqa: E402
from runtime.world.render.cpu import CpuRenderer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Small keyframes: the worlds stay cheap to build twice on a shared 2-core machine.
CONFIG = dict(seed=5, keyframe_width=96, keyframe_height=54)
WALK = [0.0, 1.5, 3.0, 4.5]  # z of the player's stops, metres


@pytest.fixture(scope="module")
def pool():
    # Workers import this checkout (not whichever worldstream the venv has installed).
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + saved if saved else "")
    try:
        # 4 logical CPUs: the pool's two actors and one for each test server's own pool.
        ray.init(num_cpus=4, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved
    pool = ActorPool(PoolSettings("procedural", {"threads": 1}, actors=2))
    pool.wait_ready(timeout=240)
    yield pool
    pool.close()
    ray.shutdown()


@pytest.fixture(scope="module")
def renderer():
    return CpuRenderer()


def walk(world: World) -> list[ChunkAdded]:
    """The same scripted walk for every world: stop, plan, wait for the jobs, step on."""
    landed: list[ChunkAdded] = []
    world.subscribe(lambda e: landed.append(e) if isinstance(e, ChunkAdded) and e.chunks else None)
    for z in WALK:
        world.update([PlayerState("a", Pose(np.array([0.0, 0.0, z], np.float32), 0.0, 0.0), fov_y=math.radians(60))])
        assert world.wait_idle(240)
    return landed


def world_content(world: World, landed: list[ChunkAdded]) -> dict:
    chunks = world.scene.snapshot().chunks
    return {
        "job_ids": [e.job_id for e in landed],
        "chunk_sources": [c.source.job_id for c in chunks],
        "means": np.concatenate([c.gaussians.means for c in chunks]),
        "colors": np.concatenate([c.gaussians.colors for c in chunks]),
        "frames": len(world.memory),
    }


@pytest.fixture(scope="module")
def reference(renderer):
    """The world the walk builds in-process."""
    with World(WorldConfig("ray", **CONFIG), generator=ProceduralGenerator(threads=1), renderer=renderer) as world:
        return world_content(world, walk(world))


def assert_same_world(got: dict, want: dict) -> None:
    assert got["job_ids"] == want["job_ids"]  # each job landed once, in the same order
    assert len(set(got["job_ids"])) == len(got["job_ids"])
    assert got["chunk_sources"] == want["chunk_sources"] and got["frames"] == want["frames"]
    np.testing.assert_array_equal(got["means"], want["means"])
    np.testing.assert_array_equal(got["colors"], want["colors"])


def test_jobs_on_ray_actors_build_the_same_world(pool, renderer, reference):
    before = pool.stats.completed
    with World(WorldConfig("ray", **CONFIG), generator=RayGenerator(pool), renderer=renderer) as world:
        got = world_content(world, walk(world))
        assert world.sky == ProceduralGenerator().sky(world.caption, CONFIG["seed"], None)
    assert len(got["job_ids"]) >= 4 and pool.stats.completed - before >= len(got["job_ids"])
    assert_same_world(got, reference)


def big_request() -> GenerationRequest:
    """A job that takes seconds: four 640x360 views."""
    W, H = 640, 360
    w2c = np.stack([Pose(np.zeros(3, np.float32), yaw, 0.0).w2c for yaw in (0.0, 1.6, 3.1, 4.7)])
    return GenerationRequest(Cameras(w2c, np.repeat(intrinsics_from_fov(W, H, 1.2)[None], 4, 0), W, H), "hills", (), 1)


def running_jobs(pool: ActorPool) -> dict:
    """actor handle -> keys of the jobs it runs now; an actor that died is left out (the pool
    keeps a dead actor listed until a job sent to it fails, then replaces it)."""
    jobs = {}
    for handle in pool.actors:
        try:
            jobs[handle] = ray.get(handle.current.options(concurrency_group="control").remote())[1]
        except ray.exceptions.RayActorError:
            continue
    return jobs


def wait_until_running(pool: ActorPool, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = [h for h, keys in running_jobs(pool).items() if keys]
        if busy:
            return busy[0]
        time.sleep(0.02)
    raise AssertionError("no job started on the pool")


def test_a_running_jobs_progress_comes_back_from_its_actor(pool):
    reports: list[tuple[float, str]] = []
    result = pool.run(big_request(), CancelToken(), lambda fraction, message="": reports.append((fraction, message)))
    assert result.rgb.shape == (4, 360, 640, 3)
    fractions = [f for f, _ in reports]
    assert fractions and fractions == sorted(fractions) and all(0.0 <= f <= 1.0 for f in fractions)
    assert any(0.0 < f < 1.0 for f in fractions), reports  # reported while it ran, not only at the ends


def test_a_job_cancelled_on_its_actor_stops_there_and_frees_the_slot(pool):
    token, outcome = CancelToken(), {}

    def run():
        try:
            outcome["result"] = pool.run(big_request(), token)
        except Exception as exc:  # noqa: BLE001 - the test looks at what it was
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    actor = wait_until_running(pool)
    token.cancel()
    thread.join(60)
    assert isinstance(outcome.get("error"), GenerationCancelled), outcome
    # The actor saw the flag: it runs nothing now, and the pool counts no job in flight.
    assert ray.get(actor.current.options(concurrency_group="control").remote())[1] == []
    assert pool.in_flight == 0 and pool.stats.cancelled >= 1


def test_a_job_waits_for_a_slot_and_can_be_cancelled_while_waiting(pool):
    """Backpressure: with every slot taken, a job waits on our side (still cancellable)."""
    tokens = [CancelToken() for _ in range(pool.max_in_flight + 1)]
    errors: list = []
    threads = [threading.Thread(target=lambda t=t: _run_catching(pool, t, errors)) for t in tokens]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while pool.in_flight < pool.max_in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    assert pool.in_flight == pool.max_in_flight  # the extra job is not sent
    for token in tokens:
        token.cancel()
    for t in threads:
        t.join(60)
    assert len(errors) == len(tokens) and all(isinstance(e, GenerationCancelled) for e in errors)
    assert pool.in_flight == 0


def test_the_pool_grows_and_shrinks_without_cutting_a_job_short(pool):
    token, outcome = CancelToken(), {}
    thread = threading.Thread(target=lambda: outcome.update(result=pool.run(big_request(), token)))
    thread.start()
    busy = wait_until_running(pool)
    pool.resize(3)
    assert len(pool.actors) == 3 and pool.max_in_flight == 3
    pool.wait_ready(240)
    pool.resize(1)  # the two idle actors stop now; the busy one keeps its job
    assert pool.actors == [busy]
    thread.join(120)
    assert outcome["result"].rgb.shape == (4, 360, 640, 3)
    pool.resize(2)
    pool.wait_ready(240)
    assert len(pool.actors) == 2 and busy in pool.actors and pool.in_flight == 0


def _run_catching(pool, token, errors):
    try:
        pool.run(big_request(), token)
    except Exception as exc:  # noqa: BLE001
        errors.append(exc)


def test_a_server_with_ray_generates_on_the_clusters_actors(pool, start_server):
    address = ray.get_runtime_context().gcs_address
    server = start_server(extra_args=("--ray", address, "--ray-actors", "1"), startup_timeout_s=300)
    assert "ray: 1 procedural actors" in server.log_text()

    async def scenario():
        name = f"ray-{uuid.uuid4().hex[:8]}"
        async with WorldClient(server.url, new_world=m.NewWorld(name=name, seed=2), video=False) as c:
            done = await c.wait_for("generation_done", 120, since=0)
            assert done.gaussians > 0

    asyncio.run(scenario())
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as r:
        metrics = r.read().decode()
    assert 'worldstream_ray_actors{generator="procedural"} 1.0' in metrics
    completed = next(line for line in metrics.splitlines() if line.startswith('worldstream_ray_jobs{generator="procedural",outcome="completed"}'))
    assert float(completed.split()[-1]) >= 1
    assert server.stop() == 0  # stops its actors and leaves the cluster up


async def settled_frame(client: WorldClient) -> np.ndarray:
    """A frame once the world has nothing queued or running and the encoder refined the picture."""
    deadline = time.monotonic() + 120
    while (await client.wait_for("stats", timeout=10)).queue_depth != 0:
        assert time.monotonic() < deadline, "the world kept generating"
    await asyncio.sleep(1.0)
    return (await client.next_frame(timeout=30)).rgb


def test_two_servers_share_a_world_folder_through_leases(pool, start_server, tmp_path):
    """A join on the server that does not hold the world is redirected to the one that does and
    streams there; when the holder dies, the other loads the world from the shared folder once
    the lease expires, and shows the same place."""
    from bench.compare import psnr

    address = ray.get_runtime_context().gcs_address
    ttl = 3.0
    args = ("--ray", address, "--ray-actors", "1", "--lease-ttl", str(ttl), "--no-avatars")
    worlds = tmp_path / "shared-worlds"
    a = start_server(worlds=worlds, extra_args=args, startup_timeout_s=300)
    b = start_server(worlds=worlds, extra_args=args, startup_timeout_s=300)
    name = f"leased-{uuid.uuid4().hex[:8]}"

    async def on_a():
        async with WorldClient(a.url, new_world=m.NewWorld(name=name, seed=4), video=False) as creator:
            await creator.wait_for("generation_done", 120, since=0)
            async with WorldClient(b.url, world=name, name="visitor") as visitor:
                assert visitor.redirects == [a.url] and visitor.welcome.world == name
                return await settled_frame(visitor)

    seen_on_a = asyncio.run(on_a())
    time.sleep(1.0)  # chunks are written as they land; let the last one reach the disk
    a.proc.kill()  # no clean shutdown: its leases are never given back
    a.proc.wait(10)
    killed_at = time.monotonic()

    async def on_b():
        while True:
            try:
                async with WorldClient(b.url, world=name, name="back") as c:
                    return c, await settled_frame(c)
            except StreamStalled:  # redirected to the dead server: its lease has not expired yet
                assert time.monotonic() - killed_at < ttl + 30
                await asyncio.sleep(0.5)

    client, seen_on_b = asyncio.run(on_b())
    assert client.redirects == [] and time.monotonic() - killed_at < ttl + 30
    assert psnr(seen_on_a, seen_on_b) > 28  # the same world, loaded from the shared folder
    assert f"world {name!r} opened" in b.log_text()


def test_a_scene_view_sent_to_another_process_draws_the_scene_as_it_was_sent(renderer):
    """GenerationRequest.scene reaches a remote generator as the snapshot taken when the
    request was sent; it draws there what the world drew at that moment."""
    import pickle

    from runtime.world.frontier.scene_view import SceneView

    with World(WorldConfig("ray-view", **CONFIG), generator=ProceduralGenerator(threads=1), renderer=renderer) as world:
        walk(world)
        view = SceneView(world.scene, world.sky, renderer)
        cams = Pose(np.zeros(3, np.float32), 0.0, 0.0).camera(64, 36)
        sent = pickle.loads(pickle.dumps(view))
        here, there = view(cams), sent(cams)
    np.testing.assert_array_equal(here.rgb, there.rgb)
    np.testing.assert_array_equal(here.depth, there.depth)
    assert here.alpha.mean() > 0.5  # it drew the walk's chunks, not an empty scene


def test_a_lease_is_one_servers_until_it_expires_or_is_given_back():
    from runtime.scale.leases import LeaseBook

    book = LeaseBook()
    assert book.acquire("w", "a", "http://a", 0.3) is None
    assert book.acquire("w", "b", "http://b", 0.3) == "http://a"  # held: b is told where
    assert book.renew("a", "http://a", ["w"], 0.3) == []
    time.sleep(0.4)  # a stopped renewing: the lease expired
    assert book.owners() == {}
    assert book.acquire("w", "b", "http://b", 0.3) is None
    assert book.renew("a", "http://a", ["w"], 0.3) == ["w"]  # a hears b has it now
    book.release("w", "a")  # not a's to give back
    assert book.owners() == {"w": "http://b"}
    book.release("w", "b")
    assert book.acquire("w", "a", "http://a", 0.3) is None


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)")
@pytest.mark.skipif(not (ROOT / "clients/web/dist/index.html").exists(), reason="web client not built")
def test_the_web_client_follows_a_redirect_to_the_server_holding_the_world(pool, start_server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    address = ray.get_runtime_context().gcs_address
    args = ("--ray", address, "--ray-actors", "1")
    worlds = tmp_path / "shared-worlds"
    a = start_server(worlds=worlds, extra_args=args, startup_timeout_s=300)
    b = start_server(worlds=worlds, extra_args=args, startup_timeout_s=300)
    name = f"web-{uuid.uuid4().hex[:8]}"
    holder_ready, release = threading.Event(), threading.Event()

    async def hold_world_on_a():
        async with WorldClient(a.url, new_world=m.NewWorld(name=name, seed=6), video=False) as creator:
            await creator.wait_for("generation_done", 120, since=0)
            holder_ready.set()
            while not release.is_set():
                await asyncio.sleep(0.1)

    holder = threading.Thread(target=lambda: asyncio.run(hold_world_on_a()))
    holder.start()
    try:
        assert holder_ready.wait(180)
        with playwright.sync_playwright() as p:
            chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"], headless=True)
            try:
                page = chromium.new_page()
                page.goto(f"{b.url}/?world={name}&name=Web")
                page.wait_for_function(
                    "() => window.__worldstream && window.__worldstream.connectionState === 'joined'", timeout=60_000
                )
                page.wait_for_function("() => window.__worldstream.framesPresented > 3", timeout=30_000)
                assert page.url.startswith(a.url) and page.evaluate("() => window.__worldstream.world") == name
            finally:
                chromium.close()
    finally:
        release.set()
        holder.join(30)
    assert "redirected" in b.log_text()


# Keyframes big enough that a job runs for a few hundred milliseconds: ray.kill only sends a
# message, and at CONFIG's size a job can end before the kill lands (no retry to observe).
KILL_CONFIG = dict(CONFIG, keyframe_width=320, keyframe_height=180)


def test_an_actor_killed_mid_job_loses_no_chunk_and_lands_none_twice(pool, renderer):
    with World(WorldConfig("ray", **KILL_CONFIG), generator=ProceduralGenerator(threads=1), renderer=renderer) as world:
        reference = world_content(world, walk(world))
    retried = pool.stats.retried
    with World(WorldConfig("ray", **KILL_CONFIG), generator=RayGenerator(pool), renderer=renderer) as world:
        killed = []

        def kill_the_first_busy_actor():
            actor = wait_until_running(pool)
            ray.kill(actor)  # no restart: the pool must put a new actor in its place
            killed.append(actor)

        killer = threading.Thread(target=kill_the_first_busy_actor)
        killer.start()
        got = world_content(world, walk(world))
        killer.join(60)
    assert killed and pool.stats.retried > retried and pool.stats.actors_replaced >= 1
    assert killed[0] not in pool.actors
    assert_same_world(got, reference)
