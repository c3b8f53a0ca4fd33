"""Who sent a request, and how they reached us, when a reverse proxy may stand in between.

Behind a proxy that terminates TLS (nginx, Caddy), the TCP peer is the proxy and the
request arrived as plain HTTP; the proxy names the real client and the scheme and host it
used in ``X-Forwarded-For``, ``X-Forwarded-Proto`` and ``X-Forwarded-Host``. Anyone can
send those headers, so they are believed only from peers listed with ``--trust-proxy``,
and only the entry the trusted proxy itself appended (the last) is used.
"""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass
from typing import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class RequestSource:
    """Where a request came from, as the client sees it.

    Attributes:
        address: the client's IP address (the proxy's own when it is not trusted).
        scheme: ``http`` or ``https``: how the client reached the server (its page's scheme).
        host: the ``Host`` the client asked for (``host[:port]``), lower case, or None.
        forwarded: True when a trusted proxy's headers supplied any of the above.
    """

    address: str
    scheme: str
    host: str | None
    forwarded: bool = False


def proxy_networks(text: str) -> tuple[Network, ...]:
    """``--trust-proxy``: comma-separated addresses or networks (``127.0.0.1``, ``10.0.0.0/8``, ``::1``)."""
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--trust-proxy takes addresses or networks like 127.0.0.1 or 10.0.0.0/8: {exc}") from None


def is_trusted(address: str, networks: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if getattr(ip, "ipv4_mapped", None) is not None:  # ::ffff:127.0.0.1 on a dual-stack socket
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


def _last(value: str | None) -> str | None:
    """The last entry of a comma-separated header: the one our (trusted) proxy wrote."""
    if not value:
        return None
    last = value.rsplit(",", 1)[-1].strip()
    return last or None


def request_source(peer: str, headers, trusted: Iterable[Network]) -> RequestSource:
    """The client behind a request from TCP peer ``peer`` with these ``headers`` (a mapping
    with ``.get``), believing ``X-Forwarded-*`` only when ``peer`` is in ``trusted``."""
    host = headers.get("Host")
    host = host.strip().lower() if host else None
    if not is_trusted(peer, trusted):
        return RequestSource(peer, "http", host)
    address = _last(headers.get("X-Forwarded-For"))
    if address is not None:
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:  # not an address: keep the proxy's rather than log a client's text
            address = None
    proto = (_last(headers.get("X-Forwarded-Proto")) or "").lower()
    fwd_host = _last(headers.get("X-Forwarded-Host"))
    return RequestSource(
        address=address or peer,
        scheme=proto if proto in ("http", "https") else "http",
        host=fwd_host.lower() if fwd_host else host,
        forwarded=bool(address or proto or fwd_host),
    )
