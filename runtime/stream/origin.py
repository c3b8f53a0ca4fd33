"""Which web pages may open the WebSocket (cross-site WebSocket hijacking).

A browser lets any page open a WebSocket to any server and sends the page's ``Origin``
with it; the server must refuse pages it does not serve, or a foreign site could play
(and create worlds) in its visitors' names. Accepted: the server's own origin (the scheme
and host the request came in by, see :mod:`runtime.stream.forwarded`), origins listed
with ``--allow-origin`` (``*`` for any), and requests with no ``Origin`` at all (not a
browser: browsers always send one).
"""

from __future__ import annotations

import argparse
from urllib.parse import urlsplit

from .forwarded import RequestSource

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def normalise_origin(text: str) -> str | None:
    """``scheme://host[:port]`` in lower case without a default port, or None if ``text``
    is not an http(s) origin (``null``, a path, garbage)."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") or parts.query or parts.username:
        return None
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != _DEFAULT_PORTS[scheme] else "")


def allowed_origin_arg(text: str) -> str:
    """``--allow-origin``: an origin such as ``https://play.example.com`` (no path), or ``*``."""
    if text.strip() == "*":
        return "*"
    origin = normalise_origin(text)
    if origin is None:
        raise argparse.ArgumentTypeError(f"--allow-origin takes an origin like https://play.example.com or *, got {text!r}")
    return origin


def own_origin(source: RequestSource) -> str | None:
    """The origin a page served by this server has, as the request's client saw it."""
    return normalise_origin(f"{source.scheme}://{source.host}") if source.host else None


def origin_refusal(origin: str | None, source: RequestSource, allowed: frozenset[str]) -> str | None:
    """None when a WebSocket from a page at ``origin`` may open, else the reason it may not."""
    if origin is None or "*" in allowed:
        return None
    page = normalise_origin(origin)
    if page is not None and (page in allowed or page == own_origin(source)):
        return None
    hint = (" (behind a TLS proxy? start the server with --trust-proxy naming the proxy's address)"
            if page is not None and page.startswith("https://") and source.scheme == "http" and not source.forwarded else "")
    return f"pages from {origin[:100]!r} may not use this server; start it with --allow-origin {origin[:100]} to allow them{hint}"
