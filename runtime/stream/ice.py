"""ICE host candidates on a machine whose only network is loopback.

aioice gathers a host candidate for every interface address except loopback's. On a
machine with no other interface (a sandboxed GPU machine, a network namespace) it gathers
none, and every peer connection then stays in ICE state "new": the offer is answered,
nothing ever connects, no frame and no error arrive. Where no other address exists,
the loopback address is offered instead, so a server and clients on the same machine
still connect; where one exists, nothing changes. ``WORLDSTREAM_ICE_LOOPBACK=0`` turns
this off (aioice's own behaviour).

Imported for its effect by ``webrtc`` (server and media workers) and ``runtime.client``.
"""

from __future__ import annotations

import logging
import os

import aioice.ice

log = logging.getLogger("worldstream.webrtc")

_aioice_host_addresses = aioice.ice.get_host_addresses


def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """aioice's host addresses, or the loopback address when there are none."""
    addresses = _aioice_host_addresses(use_ipv4, use_ipv6)
    if addresses or not (use_ipv4 or use_ipv6) or os.environ.get("WORLDSTREAM_ICE_LOOPBACK") == "0":
        return addresses
    loopback = "127.0.0.1" if use_ipv4 else "::1"
    if not host_addresses.warned:
        host_addresses.warned = True
        log.warning("no network interface but loopback: ICE offers %s (only peers on this machine can connect)", loopback)
    return [loopback]


host_addresses.warned = False
aioice.ice.get_host_addresses = host_addresses
