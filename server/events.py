"""API events: emitted once, delivered to WebSocket watchers on every coordinator and to
webhooks (HMAC-signed, retried with backoff) by exactly one coordinator."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from server.cache import TtlCache
from server.metrics import EVENTS_EMITTED, WEBHOOK_DELIVERIES
from stagecast.bus import Bus, Job, Message, encode
from stagecast.protocol import EVENTS, WEBHOOKS

log = logging.getLogger("stagecast.events")

WEBHOOK_LEASE_SECONDS = 30.0
WEBHOOK_TIMEOUT_SECONDS = 10.0
# Retries wait this long, then twice as long each time, up to the maximum.
WEBHOOK_BACKOFF_START_SECONDS = 0.5
WEBHOOK_BACKOFF_MAX_SECONDS = 30.0
COUNT_UPDATE_INTERVAL_SECONDS = 1.0


def sign(secret: str, body: bytes) -> str:
    """The ``X-Stagecast-Signature`` header value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Watcher:
    """One events WebSocket: the calls it watches and its outgoing queue."""

    def __init__(self, may_watch_all: bool) -> None:
        self.id = uuid.uuid4().hex
        self.cids: set[str] = set()
        self.watch_all = False
        self.may_watch_all = may_watch_all
        self.outbox: asyncio.Queue[Message] = asyncio.Queue(maxsize=1000)

    def wants(self, cid: str | None) -> bool:
        return self.watch_all or (cid is not None and cid in self.cids)

    def offer(self, event: Message) -> None:
        # A watcher too slow to keep 1000 events queued loses the oldest, never blocks others.
        if self.outbox.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.outbox.get_nowait()
        self.outbox.put_nowait(event)


class EventHub:
    def __init__(
        self,
        bus: Bus,
        webhook_urls: list[str],
        webhook_secret: str,
        webhook_max_attempts: int,
        now_iso: Callable[[], str],
    ) -> None:
        self._bus = bus
        self._webhook_urls = webhook_urls
        self._webhook_secret = webhook_secret
        self._webhook_max_attempts = webhook_max_attempts
        self._now_iso = now_iso
        self._watchers: set[Watcher] = set()
        # When each call's count last went out; entries older than the interval no longer
        # matter, so they expire.
        self._count_last_sent: TtlCache[float] = TtlCache(COUNT_UPDATE_INTERVAL_SECONDS)
        self._listeners: list[Callable[[Message], None]] = []
        self._count_pending: dict[str, asyncio.Task[None]] = {}

    # Emitting

    def listen(self, listener: Callable[[Message], None]) -> None:
        """Call ``listener`` with every event: this process's own as it emits them, and
        every coordinator's as they arrive on the bus (so some twice)."""
        self._listeners.append(listener)

    def _tell_listeners(self, event: Message) -> None:
        for listener in self._listeners:
            listener(event)

    async def emit(self, event_type: str, cid: str | None, **payload: Any) -> None:
        event: Message = {"type": event_type, "cid": cid, "created_at": self._now_iso()}
        event.update(payload)
        self._tell_listeners(event)
        EVENTS_EMITTED.labels(event_type).inc()
        await self._bus.publish(EVENTS, event)
        for url in self._webhook_urls:
            await self._bus.enqueue(WEBHOOKS, {"url": url, "event": event})

    def count_changed(self, cid: str, counts: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        """Emit ``call.participant_count_updated`` for ``cid`` at most once per second,
        coalescing bursts; ``counts`` is read when the event goes out, so it is current."""
        if cid in self._count_pending:
            return
        wait = (self._count_last_sent.get(cid) or 0.0) + COUNT_UPDATE_INTERVAL_SECONDS
        delay = max(0.0, wait - time.monotonic())
        self._count_pending[cid] = asyncio.create_task(self._send_count(cid, counts, delay))

    async def _send_count(
        self, cid: str, counts: Callable[[], Awaitable[dict[str, Any]]], delay: float
    ) -> None:
        try:
            if delay:
                await asyncio.sleep(delay)
        finally:
            # From here on a change schedules the next update: the counts read below may
            # already miss it.
            self._count_pending.pop(cid, None)
        self._count_last_sent.put(cid, time.monotonic())
        try:
            await self.emit("call.participant_count_updated", cid, **(await counts()))
        except Exception:
            log.exception("participant count update failed", extra={"cid": cid})

    # WebSocket watchers on this process

    def add_watcher(self, watcher: Watcher) -> None:
        self._watchers.add(watcher)

    def remove_watcher(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)

    async def run_fanout(self, ready: asyncio.Event) -> None:
        """Deliver every event on the bus to this process's watchers."""
        async with self._bus.subscribe(EVENTS) as subscription:
            ready.set()
            async for _, event in subscription:
                self._tell_listeners(event)
                cid = event.get("cid")
                for watcher in list(self._watchers):
                    if watcher.wants(cid):
                        watcher.offer(event)

    # Webhooks

    async def run_webhooks(self) -> None:
        """Deliver webhook jobs; any coordinator may take any job, each is delivered once."""
        async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_SECONDS) as client:
            while True:
                job = await self._bus.claim(WEBHOOKS, WEBHOOK_LEASE_SECONDS, timeout=5.0)
                if job is not None:
                    await self._deliver(client, job)

    async def _deliver(self, client: httpx.AsyncClient, job: Job) -> None:
        url = str(job.payload.get("url", ""))
        event = job.payload.get("event", {})
        body = encode(event).encode()
        headers = {
            "content-type": "application/json",
            "x-stagecast-signature": sign(self._webhook_secret, body),
            "x-stagecast-event": str(event.get("type", "")),
        }
        delay = WEBHOOK_BACKOFF_START_SECONDS
        for attempt in range(1, self._webhook_max_attempts + 1):
            try:
                response = await client.post(url, content=body, headers=headers)
                if response.status_code < 300:
                    WEBHOOK_DELIVERIES.labels("delivered").inc()
                    await self._bus.complete(job)
                    return
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            WEBHOOK_DELIVERIES.labels("retried").inc()
            log.warning(
                "webhook delivery failed",
                extra={"url": url, "attempt": attempt, "reason": reason},
            )
            if attempt == self._webhook_max_attempts:
                break
            # The lease must cover the wait as well as the next attempt, or another
            # coordinator takes the job meanwhile and the event is delivered twice.
            if not await self._bus.renew(job, WEBHOOK_LEASE_SECONDS + delay):
                return  # another coordinator has the job now
            await asyncio.sleep(delay)
            delay = min(delay * 2, WEBHOOK_BACKOFF_MAX_SECONDS)
        WEBHOOK_DELIVERIES.labels("failed").inc()
        log.error("webhook dropped after retries", extra={"url": url, "type": event.get("type")})
        await self._bus.complete(job)
