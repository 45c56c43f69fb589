"""The coordinator's ASGI application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from egress.storage import default_storage
from server import db
from server import egress as egress_reports
from server.calls import iso
from server.clock import Clock, system_clock
from server.context import Coordinator
from server.errors import install_error_handlers
from server.events import EventHub
from server.metrics import API_ERRORS, HTTP_LATENCY, HTTP_REQUESTS
from server.routers import call_types, calls, dev, egress, events, media, service, users, web
from server.sessions import run_report_consumer, run_sweeper
from stagecast.bus import Bus, create_bus
from stagecast.logs import redact_server_logs
from stagecast.settings import Settings
from stagecast.tokens import KeyRing, load_api_keys

log = logging.getLogger("stagecast.coordinator")

WEBHOOK_DELIVERY_TASKS = 4
access_log = logging.getLogger("stagecast.access")

# Started and stopped with the coordinator, after it is ready (e.g. the embedded SFU node).
Companion = Callable[[Coordinator], contextlib.AbstractAsyncContextManager[None]]


class AccessLog:
    """Counts, times and logs every HTTP request; logs the path only, never the query."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_LATENCY.labels(method, route).observe(elapsed)
            if status >= 400:
                API_ERRORS.labels(str(status)).inc()
            access_log.info(
                "request",
                extra={
                    "method": method,
                    "path": scope["path"],
                    "status": status,
                    "ms": round(elapsed * 1000, 2),
                },
            )


def create_app(
    settings: Settings,
    *,
    bus: Bus | None = None,
    clock: Clock = system_clock,
    migrate: bool = False,
    companions: list[Companion] | None = None,
) -> FastAPI:
    """The coordinator. ``migrate`` applies database migrations on start (embedded mode)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.effective_database_url
        if migrate:
            await db.upgrade_async(url)
        keyring = KeyRing(load_api_keys(settings))
        the_bus = bus or create_bus(settings.redis_url)
        engine = db.create_engine(url)
        hub = EventHub(
            the_bus,
            settings.webhook_urls,
            keyring.signing_key.secret,
            settings.webhook_max_attempts,
            now_iso=lambda: iso(clock()) or "",
        )
        coordinator = Coordinator(
            settings=settings,
            keyring=keyring,
            bus=the_bus,
            engine=engine,
            sessions=db.session_factory(engine),
            clock=clock,
            hub=hub,
            storage=default_storage(settings.data_dir),
        )
        app.state.coordinator = coordinator
        hub.listen(coordinator.forget)
        fanout_ready = asyncio.Event()
        workers: list[Callable[[], Awaitable[None]]] = [
            lambda: hub.run_fanout(fanout_ready),
            # Several deliveries at once: one slow receiver must not hold up the others.
            *[hub.run_webhooks] * WEBHOOK_DELIVERY_TASKS,
            lambda: run_report_consumer(coordinator),
            lambda: run_sweeper(coordinator),
            lambda: egress_reports.run_report_consumer(coordinator),
        ]
        coordinator.tasks = [asyncio.create_task(_supervised(work())) for work in workers]
        await asyncio.wait_for(fanout_ready.wait(), 10)
        try:
            async with contextlib.AsyncExitStack() as stack:
                for companion in companions or []:
                    await stack.enter_async_context(companion(coordinator))
                log.info("coordinator ready", extra={"url": settings.base_url})
                yield
        finally:
            # Cancel until every worker has stopped: a cancellation that lands as a Redis
            # reply completes can be swallowed (asyncio.wait_for on Python 3.11), and one
            # cancel() would then leave shutdown waiting forever.
            while pending := [task for task in coordinator.tasks if not task.done()]:
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=1.0)
            await asyncio.gather(*coordinator.tasks, return_exceptions=True)  # all done
            if bus is None:
                await the_bus.close()
            await engine.dispose()

    app = FastAPI(
        title="Stagecast",
        version="1",
        summary="Self-hosted livestreaming: backstage, go-live, WebRTC, HLS, recordings.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for router in (
        service.router,
        users.router,
        call_types.router,
        calls.router,
        media.router,
        egress.router,
        events.router,
        web.router,
    ):
        app.include_router(router)
    if settings.dev_mode:
        app.include_router(dev.router)
    # Tokens travel in headers, never cookies, so any origin may call the API (WHIP players,
    # web apps served elsewhere); Location must be readable for WHIP/WHEP.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["Location", "Link", "ETag"],
    )
    app.add_middleware(AccessLog)
    redact_server_logs()
    return app


async def _supervised(work: Awaitable[None]) -> None:
    try:
        await work
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("a coordinator worker stopped")
        raise
