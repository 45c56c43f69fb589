"""``stagecast ingest``'s HTTP side: ``/healthz``, ``/readyz`` and ``/metrics`` (as every
Stagecast process serves); its lifespan starts and stops the RTMP server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .service import IngestService


def create_ingest_app(service: IngestService) -> Starlette:
    registry = CollectorRegistry()
    publishers = Gauge(
        "stagecast_ingest_publishers", "RTMP publishers publishing now", registry=registry
    )
    connections = Gauge("stagecast_ingest_connections", "Open RTMP connections", registry=registry)
    accepted = Gauge(
        "stagecast_ingest_accepted", "Publishers accepted since start", registry=registry
    )
    refused = Gauge("stagecast_ingest_refused", "Publishers refused since start", registry=registry)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "rtmp_port": service.port})

    async def readyz(request: Request) -> Response:
        listening = service.server.listening
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                coordinator = (await http.get(service.api_url + "/healthz")).status_code == 200
        except (TimeoutError, httpx.HTTPError):
            coordinator = False
        ok = listening and coordinator
        return JSONResponse(
            {
                "status": "ok" if ok else "unavailable",
                "rtmp": "listening" if listening else "down",
                "coordinator": "reachable" if coordinator else "unreachable",
            },
            status_code=200 if ok else 503,
        )

    async def metrics(request: Request) -> Response:
        publishers.set(len(service.sessions))
        connections.set(service.server.connection_count)
        accepted.set(service.accepted)
        refused.set(service.refused)
        body = generate_latest(registry)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @asynccontextmanager
    async def run(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ],
        lifespan=run,
    )
