"""ICE configuration helpers.

aioice gathers host candidates on every interface address except 127.0.0.1, and aiortc
adds a public STUN server unless ICE servers are given. An SFU node (and its tests) needs
to choose: :func:`configure_host_candidates` replaces aioice's address discovery
process-wide, and :func:`rtc_configuration` builds an ``RTCConfiguration`` with explicit
(by default no) ICE servers.
"""

from __future__ import annotations

import asyncio
import random
import types
from collections.abc import Callable, Sequence
from typing import Any

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


class _PortRangeLoop:
    """The running loop, except that a UDP bind to port 0 takes a port from the range."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ports: range) -> None:
        self._loop = loop
        self._ports = ports

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    async def create_datagram_endpoint(self, factory: Any, **kwargs: Any) -> Any:
        local_addr = kwargs.get("local_addr")
        if local_addr is None or local_addr[1] != 0:
            return await self._loop.create_datagram_endpoint(factory, **kwargs)
        # Random order, so that nodes and restarts do not all fight over the first ports.
        for port in random.sample(self._ports, len(self._ports)):
            try:
                return await self._loop.create_datagram_endpoint(
                    factory, **{**kwargs, "local_addr": (local_addr[0], port)}
                )
            except OSError:
                continue
        raise OSError(f"no free UDP port in {self._ports.start}-{self._ports.stop - 1}")


def configure_port_range(port_min: int, port_max: int) -> None:
    """Bind ICE host candidates to UDP ports in ``port_min..port_max`` (process-wide), so
    that a firewall or a container needs to open only those. ``0, 0``: any free port."""
    if not port_min and not port_max:
        aioice.ice.asyncio = asyncio  # type: ignore[attr-defined]
        return
    if not 0 < port_min <= port_max <= 65535:
        raise ValueError(f"invalid UDP port range {port_min}-{port_max}")
    ports = range(port_min, port_max + 1)
    shim = types.SimpleNamespace(**vars(asyncio))
    shim.get_running_loop = lambda: _PortRangeLoop(asyncio.get_running_loop(), ports)
    aioice.ice.asyncio = shim  # type: ignore[attr-defined,assignment]


def rtc_configuration(ice_servers: Sequence[RTCIceServer] = ()) -> RTCConfiguration:
    """An ``RTCConfiguration`` with exactly these ICE servers (none by default: no STUN)."""
    return RTCConfiguration(iceServers=list(ice_servers))
