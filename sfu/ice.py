"""ICE configuration helpers.

aioice gathers host candidates on every interface address except 127.0.0.1, and aiortc
adds a public STUN server unless ICE servers are given. An SFU node (and its tests) needs
to choose: :func:`configure_host_candidates` replaces aioice's address discovery
process-wide, and :func:`rtc_configuration` builds an ``RTCConfiguration`` with explicit
(by default no) ICE servers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

_ORIGINAL_GET_HOST_ADDRESSES: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses


def configure_host_candidates(
    addresses: Sequence[str] | None = None, *, include_loopback: bool = False
) -> None:
    """Choose the local addresses on which host candidates are gathered (process-wide).

    ``addresses`` replaces interface discovery entirely (``["127.0.0.1"]`` for loopback
    tests: fast, one candidate per peer connection). Otherwise aioice's discovery is kept
    and ``include_loopback`` adds 127.0.0.1 to it.
    """
    fixed = list(addresses) if addresses is not None else None

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if fixed is not None:
            return [a for a in fixed if (use_ipv6 if ":" in a else use_ipv4)]
        found = _ORIGINAL_GET_HOST_ADDRESSES(use_ipv4, use_ipv6)
        if include_loopback and use_ipv4 and "127.0.0.1" not in found:
            found.append("127.0.0.1")
        return found

    aioice.ice.get_host_addresses = get_host_addresses


def reset_host_candidates() -> None:
    """Restore aioice's own host address discovery."""
    aioice.ice.get_host_addresses = _ORIGINAL_GET_HOST_ADDRESSES  # type: ignore[assignment]


def rtc_configuration(ice_servers: Sequence[RTCIceServer] = ()) -> RTCConfiguration:
    """An ``RTCConfiguration`` with exactly these ICE servers (none by default: no STUN)."""
    return RTCConfiguration(iceServers=list(ice_servers))
