"""Plain HTTP on the WebSocket port: the web client's files, ``/healthz`` and ``/metrics``.

websockets' ``process_request`` hook answers every request that is not the WebSocket
handshake at ``/ws``, so no web framework is needed. With an access token (``--token``)
every request, the handshake included, must carry it (:mod:`runtime.stream.auth`).
"""

from __future__ import annotations

import asyncio
import http
import json
import mimetypes
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from runtime.stream.auth import authorized, query_token, token_cookie
from runtime.stream.slow_refusal import SlowRefusals

WS_PATH = "/ws"
FLOOD_RETRY_AFTER_S = 5
"""A flooding client's handshake refusal (429) says try again after this many seconds, and is answered after as long."""

_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".html": "text/html; charset=utf-8",
          ".wasm": "application/wasm", ".json": "application/json", ".svg": "image/svg+xml", ".map": "application/json"}

_UNAUTHORIZED = (
    b"This worldstream server needs its access token. Open it as /?token=TOKEN (the page keeps it in a cookie), "
    b"or send 'Authorization: Bearer TOKEN'.\n"
)

_NOT_BUILT = """<!doctype html>
<html><head><meta charset="utf-8"><title>worldstream</title></head>
<body style="font-family: sans-serif; max-width: 42em; margin: 3em auto; line-height: 1.5">
<h1>worldstream is running</h1>
<p>The web client has not been built, so there is nothing to show here yet. Build it with</p>
<pre>cd clients/web &amp;&amp; npm install &amp;&amp; npm run build</pre>
<p>and reload this page. The server itself works: the WebSocket is at <code>/ws</code>
(see <code>protocol/PROTOCOL.md</code>), health at <a href="/healthz">/healthz</a>,
metrics at <a href="/metrics">/metrics</a>.</p>
</body></html>
"""


def _response(status: int, body: bytes, content_type: str, cache: str = "no-cache") -> Response:
    headers = Headers()
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(body))
    headers["Cache-Control"] = cache
    headers["X-Content-Type-Options"] = "nosniff"
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def static_file(root: Path, url_path: str) -> Path | None:
    """The file under ``root`` that ``url_path`` names, or None. Never leaves ``root``."""
    rel = unquote(url_path).lstrip("/") or "index.html"
    if "\0" in rel or "\\" in rel:
        return None
    root = root.resolve()
    try:
        path = (root / rel).resolve()
    except (OSError, RuntimeError):
        return None
    if path != root and root not in path.parents:
        return None
    if path.is_dir():
        path = path / "index.html"
    return path if path.is_file() else None


def make_process_request(
    static_dir: Path,
    health: Callable[[], dict],
    metrics: Callable[[], bytes],
    worlds: Callable[[], list[dict]] = lambda: [],
    refuse_websocket: Callable[[object, Request], tuple[int, str] | None] = lambda connection, request: None,
    token: str | None = None,
    secure: Callable[[object, Request], bool] = lambda connection, request: False,
    flooding: Callable[[object, Request], str | None] = lambda connection, request: None,
    refusals: SlowRefusals | None = None,
    unauthorized: Callable[[], None] = lambda: None,
):
    """The ``process_request`` hook: returns a Response for HTTP routes, None for the WebSocket.

    ``worlds()`` lists joinable worlds for ``/worlds``; it may read files, so it runs in a thread.
    ``refuse_websocket(connection, request)`` says why a WebSocket handshake is refused, as
    ``(HTTP status, reason)`` (answered with that status and reason), or None to let it through. With ``token``, a request
    without it is answered 401 (the handshake too); ``secure(connection, request)`` says
    whether the client came over https (the token cookie is then marked Secure).
    ``flooding(connection, request)`` names the connection quota a client keeps running
    into (its handshake is answered 429 with the name, before a WebSocket is set up), or None.
    A refused handshake is answered after ``refusals``' pause (``runtime.stream.slow_refusal``).
    ``unauthorized()`` is called for every request answered 401 (the metrics counter).
    """
    refusals = refusals or SlowRefusals(0.0)

    async def process_request(connection, request: Request) -> Response | None:
        if token is not None:
            if not authorized(request, token):
                unauthorized()
                response = _response(401, _UNAUTHORIZED, "text/plain; charset=utf-8")
                response.headers["WWW-Authenticate"] = 'Bearer realm="worldstream"'
                return response
            response = await route(connection, request)
            if response is not None and query_token(request) is not None:  # a browser's first visit: keep it
                response.headers["Set-Cookie"] = token_cookie(token, secure(connection, request))
            return response
        return await route(connection, request)

    async def route(connection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == WS_PATH:
            refusal = refuse_websocket(connection, request)
            if refusal is not None:
                status, reason = refusal
                await refusals.wait()
                return _response(status, reason.encode() + b"\n", "text/plain; charset=utf-8")
            limit = flooding(connection, request)
            if limit is not None:
                await refusals.wait(FLOOD_RETRY_AFTER_S)  # it knocks again at once anyway: make it wait here
                response = _response(429, f"limit_reached: {limit}\n".encode(), "text/plain; charset=utf-8")
                response.headers["Retry-After"] = str(FLOOD_RETRY_AFTER_S)
                return response
            return None  # continue with the WebSocket handshake
        if path == "/healthz":
            return _response(200, json.dumps(health()).encode(), "application/json")
        if path == "/worlds":
            listing = await asyncio.to_thread(worlds)
            return _response(200, json.dumps({"worlds": listing}).encode(), "application/json", "no-cache")
        if path == "/metrics":
            body = await asyncio.to_thread(metrics)
            return _response(200, body, "text/plain; version=0.0.4; charset=utf-8")
        if not static_dir.is_dir():
            if path in ("/", "/index.html"):
                return _response(200, _NOT_BUILT.encode(), "text/html; charset=utf-8")
            return _response(404, b"not found (the web client is not built)\n", "text/plain")
        file = static_file(static_dir, path)
        if file is None:
            return _response(404, b"not found\n", "text/plain")
        body = await asyncio.to_thread(file.read_bytes)
        ctype = _TYPES.get(file.suffix) or mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        # Vite puts content hashes in asset names: those may be cached for good.
        cache = "public, max-age=31536000, immutable" if "/assets/" in path else "no-cache"
        return _response(200, body, ctype, cache)

    return process_request
