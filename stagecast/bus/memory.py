"""The in-process bus: every role in one process (the embedded default)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from stagecast.bus import Bus, Job, Message, Subscription, decode, directory_of, encode


class _MemorySubscription(Subscription):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    async def get(self, timeout: float | None = None) -> tuple[str, Message]:
        channel, data = await asyncio.wait_for(self.queue.get(), timeout)
        return channel, decode(data)


class _QueuedJob:
    __slots__ = ("attempts", "lease_until", "payload")

    def __init__(self, payload: str) -> None:
        self.payload = payload
        self.attempts = 0
        self.lease_until: float | None = None


class MemoryBus(Bus):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._subscribers: dict[str, set[_MemorySubscription]] = defaultdict(set)
        self._keys: dict[str, tuple[str, float]] = {}
        self._queues: dict[str, OrderedDict[str, _QueuedJob]] = defaultdict(OrderedDict)
        self._job_added = asyncio.Event()

    async def publish(self, channel: str, message: Message) -> None:
        data = encode(message)
        for subscription in list(self._subscribers.get(channel, ())):
            subscription.queue.put_nowait((channel, data))

    @asynccontextmanager
    async def subscribe(self, *channels: str) -> AsyncIterator[Subscription]:
        subscription = _MemorySubscription()
        for channel in channels:
            self._subscribers[channel].add(subscription)
        try:
            yield subscription
        finally:
            for channel in channels:
                subscribers = self._subscribers.get(channel)
                if subscribers is not None:
                    subscribers.discard(subscription)
                    if not subscribers:
                        del self._subscribers[channel]

    async def set_key(self, key: str, value: Message, ttl_seconds: float) -> None:
        directory_of(key)
        self._keys[key] = (encode(value), self._clock() + ttl_seconds)

    async def get_key(self, key: str) -> Message | None:
        entry = self._keys.get(key)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._keys[key]
            return None
        return decode(entry[0])

    async def delete_key(self, key: str) -> None:
        self._keys.pop(key, None)

    async def keys_in(self, directory: str) -> dict[str, Message]:
        prefix = directory + "/"
        now = self._clock()
        expired = [key for key, (_, deadline) in self._keys.items() if deadline <= now]
        for key in expired:
            del self._keys[key]
        return {
            key: decode(data) for key, (data, _) in self._keys.items() if key.startswith(prefix)
        }

    async def enqueue(self, queue: str, payload: Message) -> str:
        job_id = uuid.uuid4().hex
        self._queues[queue][job_id] = _QueuedJob(encode(payload))
        self._job_added.set()
        return job_id

    async def claim(self, queue: str, lease_seconds: float, timeout: float) -> Job | None:
        deadline = self._clock() + timeout
        while True:
            now = self._clock()
            for job_id, job in self._queues[queue].items():
                if job.lease_until is None or job.lease_until <= now:
                    job.lease_until = now + lease_seconds
                    job.attempts += 1
                    return Job(job_id, queue, decode(job.payload), job.attempts)
            remaining = deadline - now
            if remaining <= 0:
                return None
            self._job_added.clear()
            # Wake on a new job, or poll for leases that expire meanwhile.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._job_added.wait(), min(remaining, 0.1))

    async def renew(self, job: Job, lease_seconds: float) -> bool:
        held = self._queues[job.queue].get(job.id)
        if held is None or held.attempts != job.attempts:
            return False
        held.lease_until = self._clock() + lease_seconds
        return True

    async def complete(self, job: Job) -> None:
        self._queues[job.queue].pop(job.id, None)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._subscribers.clear()
