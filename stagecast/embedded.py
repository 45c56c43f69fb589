"""Every role in one process: the coordinator with an SFU node mounted at ``/sfu`` and an
egress worker.

This is what ``stagecast serve`` runs (the embedded default) and what end-to-end tests start.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from egress.storage import default_storage
from egress.worker import EgressWorker
from server.app import Companion, create_app
from server.clock import Clock, system_clock
from server.context import Coordinator
from sfu.ice import configure_host_candidates, configure_port_range
from sfu.node import SfuNode, create_sfu_app
from stagecast.bus import Bus, create_bus
from stagecast.settings import Settings
from stagecast.tokens import KeyRing, load_api_keys

SFU_MOUNT = "/sfu"

logger = logging.getLogger(__name__)


def configure_media_addresses(settings: Settings) -> None:
    """Where an SFU node gathers ICE host candidates (process-wide).

    ``STAGECAST_SFU_ANNOUNCED_ADDRESS`` names the one address to offer; otherwise every
    interface address is offered, plus 127.0.0.1 so that clients on the same machine connect.
    ``STAGECAST_SFU_UDP_PORT_MIN/MAX`` limit the UDP ports media uses.
    """
    configure_port_range(settings.sfu_udp_port_min, settings.sfu_udp_port_max)
    if settings.sfu_announced_address:
        configure_host_candidates([settings.sfu_announced_address])
    else:
        configure_host_candidates(include_loopback=True)


def create_node(settings: Settings, bus: Bus, keyring: KeyRing, public_url: str) -> SfuNode:
    configure_media_addresses(settings)
    return SfuNode(settings, bus, keyring, public_url)


def create_embedded_app(
    settings: Settings,
    *,
    bus: Bus | None = None,
    clock: Clock = system_clock,
    egress_worker: bool = True,
) -> FastAPI:
    """The coordinator with migrations applied on start, an SFU node at ``/sfu`` and (unless
    ``egress_worker=False``) an egress worker."""
    keyring = KeyRing(load_api_keys(settings))
    the_bus = bus or create_bus(settings.redis_url)
    node = create_node(settings, the_bus, keyring, settings.base_url + SFU_MOUNT)

    @asynccontextmanager
    async def run_node(_coordinator: Coordinator) -> AsyncIterator[None]:
        await node.start()
        try:
            yield
        finally:
            await node.stop(drain=False)

    @asynccontextmanager
    async def run_ingest(_coordinator: Coordinator) -> AsyncIterator[None]:
        """The RTMP ingest (``rtmp_port``; 0 turns it off). A port already taken is logged,
        not fatal: the API and WebRTC keep working without RTMP."""
        if not settings.rtmp_port:
            yield
            return
        from ingest import IngestService

        ingest = IngestService(
            settings.base_url, keyring, host=settings.host, port=settings.rtmp_port
        )
        app.state.ingest = ingest
        try:
            await ingest.start()
        except OSError as exc:
            logger.warning("RTMP ingest not started on port %d: %s", settings.rtmp_port, exc)
            yield
            return
        try:
            yield
        finally:
            await ingest.stop()

    worker = EgressWorker(the_bus, default_storage(settings.data_dir))

    @asynccontextmanager
    async def run_egress(_coordinator: Coordinator) -> AsyncIterator[None]:
        await worker.start()
        try:
            yield
        finally:
            await worker.stop()

    companions: list[Companion] = [run_node, run_ingest]
    if egress_worker:
        companions.append(run_egress)
    app = create_app(settings, bus=the_bus, clock=clock, migrate=True, companions=companions)
    app.state.egress_worker = worker if egress_worker else None
    app.mount(SFU_MOUNT, create_sfu_app(node, lifespan=False))
    app.state.sfu_node = node
    return app
