"""Private worlds, invitations and the server-wide access token, against the real server."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from protocol import messages as m
from runtime.access import AccessBook, WorldAccess
from runtime.client import ServerError, WorldClient
from runtime.world.store import WorldLibrary
from conftest import until

pytestmark = pytest.mark.timeout(180)


def run(coro):
    return asyncio.run(coro)


def get_json(url: str, headers: dict | None = None) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
        return json.loads(r.read())


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def listed(url: str) -> set[str]:
    return {w["name"] for w in get_json(url + "/worlds")["worlds"]}


def test_private_world_is_unlisted_and_needs_its_invite(server):
    async def scenario():
        name, public = unique("secret"), unique("open")
        async with WorldClient(server.url, new_world=m.NewWorld(name=public), video=False) as c:
            assert c.welcome.visibility == "public" and c.welcome.invite is None and c.welcome.owner_key
        async with WorldClient(server.url, new_world=m.NewWorld(name=name, visibility="private"), video=False) as owner:
            welcome = owner.welcome
            assert welcome.visibility == "private" and welcome.invite and welcome.owner_key
            assert len(welcome.invite) >= 32 and welcome.invite != welcome.owner_key
            names = listed(server.url)
            assert public in names and name not in names
            assert name not in get_json(server.url + "/healthz")["worlds"]
            # no invite, a wrong one: refused, naming the field
            for invite in (None, "x" * 32):
                with pytest.raises(ServerError) as refused:
                    await WorldClient(server.url, world=name, invite=invite, video=False).connect()
                assert (refused.value.error.code, refused.value.error.field) == ("invite_required", "invite")
            # the invite lets a guest in; the guest sees the invite (to share) but is no owner
            async with WorldClient(server.url, world=name, invite=welcome.invite, name="guest", video=False) as guest:
                assert guest.welcome.invite == welcome.invite and guest.welcome.owner_key is None
                since = guest.event_count
                await guest.send(m.RevokeInvite())
                err = await guest.wait_for("error", since=since)
                assert (err.code, err.ref_type) == ("not_allowed", "revoke_invite")
                # the creator revokes: the old link stops working, the guest already in stays
                since = owner.event_count
                await owner.send(m.RevokeInvite())
                new = (await owner.wait_for("invite", since=since)).invite
                assert new != welcome.invite
                with pytest.raises(ServerError) as refused:
                    await WorldClient(server.url, world=name, invite=welcome.invite, video=False).connect()
                assert refused.value.error.code == "invite_required"
                assert await guest.ping() > 0
                async with WorldClient(server.url, world=name, invite=new, video=False) as third:
                    assert third.welcome.invite == new
                # the creator's key opens it without an invite and makes that connection an owner
                async with WorldClient(server.url, world=name, owner_key=welcome.owner_key, video=False) as again:
                    assert again.welcome.owner_key == welcome.owner_key
                    since = again.event_count
                    await again.send(m.RevokeInvite())
                    newer = (await again.wait_for("invite", since=since)).invite
                    assert (await owner.wait_for(lambda e: e.TYPE == "invite" and e.invite == newer, since=0)).invite == newer
            # revoking a public world's invite is not allowed either
            async with WorldClient(server.url, world=public, video=False) as c:
                since = c.event_count
                await c.send(m.RevokeInvite())
                assert (await c.wait_for("error", since=since)).code == "not_allowed"

    run(scenario())
    # the record on disk: the invite as it now is, the owner key only as its hash
    record = json.loads((server.worlds / [p for p in server.worlds.iterdir() if p.name.startswith("secret-")][0] / "access.json").read_text())
    assert record["visibility"] == "private" and len(record["owner_sha256"]) == 64


def test_a_private_world_stays_private_after_it_unloads(start_server):
    server = start_server(extra_args=("--world-linger", "0.3"))

    async def scenario():
        name = unique("kept")
        async with WorldClient(server.url, new_world=m.NewWorld(name=name, visibility="private"), video=False) as owner:
            invite, key = owner.welcome.invite, owner.welcome.owner_key
            token = owner.welcome.resume_token
        # the world unloads (however long a loaded machine takes to save it); its record stays on disk
        await until(lambda: not get_json(server.url + "/healthz")["sessions"], 60, "the world to unload")
        assert name not in listed(server.url)
        with pytest.raises(ServerError):
            await WorldClient(server.url, world=name, video=False).connect()
        async with WorldClient(server.url, world=name, invite=invite, video=False) as c:
            assert c.welcome.invite == invite
        # a player who was in it comes back with its resume token even without the link
        async with WorldClient(server.url, world=name, resume_token=token, video=False) as c:
            assert c.welcome.resumed and c.welcome.invite is None  # let in, but told no invite
        async with WorldClient(server.url, world=name, owner_key=key, video=False) as c:
            assert c.welcome.owner_key == key

    run(scenario())


def test_access_records(tmp_path):
    library = WorldLibrary(tmp_path)
    book = AccessBook(library)
    assert book.get("never-made") == WorldAccess()  # worlds without a record are public and unowned
    access, key = WorldAccess.create("private")
    assert access.admits(None, key) and access.is_owner(key) and not access.is_owner(key[:-1] + "A")
    assert access.admits(access.invite, None) and not access.admits(None, None) and not access.admits("", "")
    library.path("w").mkdir()
    book.put("w", access)
    assert AccessBook(library).get("w") == access
    (library.path("w") / "access.json").write_text("{not json")
    assert AccessBook(library).get("w").private  # an unreadable record keeps the world closed


def test_server_token_guards_http_and_websocket(start_server):
    token = "t0k-" + uuid.uuid4().hex
    server = start_server(extra_args=("--token", token))

    async def scenario():
        for path in ("/healthz", "/worlds", "/metrics", "/"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                get_json(server.url + path)
            assert refused.value.code == 401
        assert get_json(server.url + "/healthz", {"Authorization": f"Bearer {token}"})["status"] == "ok"
        with pytest.raises(urllib.error.HTTPError):
            get_json(server.url + "/healthz", {"Authorization": "Bearer " + token[:-1]})
        # a browser's first visit with ?token= gets the cookie that later requests carry
        with urllib.request.urlopen(server.url + f"/?token={token}", timeout=10) as r:
            cookie = r.headers["Set-Cookie"]
        assert cookie.startswith(f"worldstream_token={token};") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
        assert get_json(server.url + "/healthz", {"Cookie": cookie.split(";")[0]})["status"] == "ok"
        # the WebSocket: refused without, let in with the header, the query or the cookie
        with pytest.raises(InvalidStatus) as refused:
            await connect(server.ws_url)
        assert refused.value.response.status_code == 401
        name = unique("guarded")
        async with WorldClient(server.url, new_world=m.NewWorld(name=name), token=token, video=False) as c:
            assert c.welcome.world == name
        async with connect(server.ws_url + f"?token={token}") as ws:
            await ws.send(b"\x81\xa4type\xa4ping")  # {"type": "ping"}: answered (an error: no id)
            assert await ws.recv()
        async with connect(server.ws_url, additional_headers={"Cookie": cookie.split(";")[0]}) as ws:
            await ws.send(b"\x81\xa4type\xa4ping")
            assert await ws.recv()

    run(scenario())
    # every refusal above is counted: 4 paths, a wrong token, the WebSocket
    with urllib.request.urlopen(urllib.request.Request(server.url + "/metrics", headers={"Authorization": f"Bearer {token}"}), timeout=10) as r:
        metrics = r.read().decode()
    assert 'worldstream_connections_refused_total{reason="token"} 6.0' in metrics
