"""The optional server-wide access token (``--token``), checked on every HTTP request and
WebSocket handshake alike.

A request carries it as ``Authorization: Bearer TOKEN`` (scripts, probes, the Python
client), as ``?token=TOKEN`` in the URL (the first page load, or a WebSocket URL), or in
the ``worldstream_token`` cookie. A page loaded with ``?token=`` gets the cookie (HttpOnly,
SameSite=Lax), so the browser sends it with every later request of that page, the
WebSocket's included, and the web client needs no code for it. Lax rather than Strict: a
share link opened from a chat app (a cross-site navigation) must still carry it, while
other sites' pages still cannot send it with their requests or WebSockets. Tokens are
compared in constant time.
"""

from __future__ import annotations

import hmac
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs, urlsplit

from websockets.http11 import Request

COOKIE = "worldstream_token"
MIN_TOKEN_CHARS = 16


def token_arg(text: str) -> str:
    """``--token``: at least 16 characters (a short one could be guessed), no spaces or ';'."""
    import argparse

    if len(text) < MIN_TOKEN_CHARS or any(c.isspace() or c in ';,"\\' for c in text):
        raise argparse.ArgumentTypeError(f"token must be at least {MIN_TOKEN_CHARS} characters without spaces, ';', ',', quotes or backslashes")
    return text


def query_token(request: Request) -> str | None:
    """The ``token`` query parameter of the request's URL, if any."""
    values = parse_qs(urlsplit(request.path).query).get("token")
    return values[0] if values else None


def presented_tokens(request: Request) -> list[str]:
    """Every token the request carries (header, query, cookie)."""
    found = []
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        found.append(auth[7:].strip())
    if (q := query_token(request)) is not None:
        found.append(q)
    for header in request.headers.get_all("Cookie"):
        try:
            cookie = SimpleCookie(header)
        except CookieError:
            continue
        if COOKIE in cookie:
            found.append(cookie[COOKIE].value)
    return found


def authorized(request: Request, token: str) -> bool:
    """Does the request carry ``token``? (each candidate compared in constant time)"""
    expected = token.encode()
    ok = False
    for given in presented_tokens(request):
        ok |= hmac.compare_digest(given.encode(), expected)
    return ok


def token_cookie(token: str, secure: bool) -> str:
    """The ``Set-Cookie`` value handing the token to a browser that came with ``?token=``."""
    return f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")
