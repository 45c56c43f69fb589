"""ICE host candidates within the configured UDP port range."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiortc import RTCPeerConnection

from sfu.ice import configure_host_candidates, configure_port_range, rtc_configuration


@pytest.fixture
def port_range() -> Iterator[range]:
    ports = range(42100, 42120)
    configure_host_candidates(["127.0.0.1"])
    configure_port_range(ports.start, ports.stop - 1)
    yield ports
    configure_port_range(0, 0)


async def test_candidates_use_ports_from_the_range(port_range: range) -> None:
    peers = [RTCPeerConnection(rtc_configuration()) for _ in range(3)]
    try:
        for pc in peers:
            pc.addTransceiver("video", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
        ports = [
            int(line.split()[5])
            for pc in peers
            for line in pc.localDescription.sdp.splitlines()
            if line.startswith("a=candidate:")
        ]
        assert len(ports) == 3 and len(set(ports)) == 3
        assert all(port in port_range for port in ports)
    finally:
        for pc in peers:
            await pc.close()


def test_invalid_ranges_are_refused() -> None:
    with pytest.raises(ValueError):
        configure_port_range(5000, 4000)
    with pytest.raises(ValueError):
        configure_port_range(0, 70000)
