"""The bus: how Stagecast's processes talk to each other.

One small interface with two implementations: :class:`MemoryBus` (one process, the embedded
default) and :class:`RedisBus`. It offers three things:

- publish / subscribe of JSON messages on named channels (events, signalling, control);
- a registry of JSON values under keys with a time to live (SFU nodes and their heartbeats);
- a job queue with leases, so that a job whose worker dies is taken again (egress).

Messages and values are JSON objects; both implementations round-trip them through JSON so
that code tested on one behaves the same on the other.
"""

from __future__ import annotations

import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

Message = dict[str, Any]


class BusTimeout(Exception):
    """A request got no reply in time."""


@dataclass(frozen=True, slots=True)
class Job:
    """A job taken from a queue. Its lease must be renewed until it is completed."""

    id: str
    queue: str
    payload: Message
    attempts: int


class Subscription(ABC):
    """Messages arriving on the channels subscribed to, in order, as ``(channel, message)``."""

    @abstractmethod
    async def get(self, timeout: float | None = None) -> tuple[str, Message]:
        """The next message; raises ``TimeoutError`` after ``timeout`` seconds."""

    def __aiter__(self) -> AsyncIterator[tuple[str, Message]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[tuple[str, Message]]:
        while True:
            yield await self.get()


class Bus(ABC):
    @abstractmethod
    async def publish(self, channel: str, message: Message) -> None:
        """Send ``message`` to every current subscriber of ``channel``."""

    @abstractmethod
    def subscribe(self, *channels: str) -> AbstractAsyncContextManager[Subscription]:
        """Subscribe to ``channels``; the subscription is active when the block is entered."""

    @abstractmethod
    async def set_key(self, key: str, value: Message, ttl_seconds: float) -> None:
        """Store ``value`` under ``key`` (``"directory/name"``); it disappears after
        ``ttl_seconds`` unless set again."""

    @abstractmethod
    async def get_key(self, key: str) -> Message | None: ...

    @abstractmethod
    async def delete_key(self, key: str) -> None: ...

    @abstractmethod
    async def keys_in(self, directory: str) -> dict[str, Message]:
        """Every live key ``"{directory}/..."`` with its value. Costs what the directory
        holds, not what the whole registry holds."""

    @abstractmethod
    async def enqueue(self, queue: str, payload: Message) -> str:
        """Add a job; returns its id."""

    @abstractmethod
    async def claim(self, queue: str, lease_seconds: float, timeout: float) -> Job | None:
        """Take the oldest waiting job (or one whose lease expired), or ``None`` after
        ``timeout`` seconds. The job returns to the queue unless completed or renewed
        within ``lease_seconds``."""

    @abstractmethod
    async def renew(self, job: Job, lease_seconds: float) -> bool:
        """Extend a job's lease; ``False`` if the job is no longer held (it was re-queued)."""

    @abstractmethod
    async def complete(self, job: Job) -> None:
        """Remove a job for good."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the bus is unreachable."""

    @abstractmethod
    async def close(self) -> None: ...

    async def request(self, channel: str, message: Message, timeout: float = 5.0) -> Message:
        """Publish ``message`` with a reply channel and wait for the first reply.

        The receiving side answers with :meth:`reply`. Raises :class:`BusTimeout`.
        """
        reply_to = f"reply.{uuid.uuid4().hex}"
        async with self.subscribe(reply_to) as subscription:
            await self.publish(channel, {**message, "reply_to": reply_to})
            try:
                _, answer = await subscription.get(timeout=timeout)
            except TimeoutError:
                raise BusTimeout(f"no reply on {channel!r} within {timeout} s") from None
        return answer

    async def reply(self, request: Message, answer: Message) -> None:
        """Answer a message sent with :meth:`request`."""
        reply_to = request.get("reply_to")
        if isinstance(reply_to, str) and reply_to.startswith("reply."):
            await self.publish(reply_to, answer)


def directory_of(key: str) -> str:
    """The directory of a registry key (``"nodes/sfu-1"`` -> ``"nodes"``)."""
    directory, sep, name = key.partition("/")
    if not sep or not directory or not name:
        raise ValueError(f"registry keys look like 'directory/name', not {key!r}")
    return directory


def encode(message: Message) -> str:
    return json.dumps(message, separators=(",", ":"), default=str)


def decode(data: str | bytes) -> Message:
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("bus messages are JSON objects")
    return value


def create_bus(redis_url: str | None) -> Bus:
    """The Redis bus when a URL is given, else the in-process bus."""
    if redis_url:
        from stagecast.bus.redis import RedisBus

        return RedisBus(redis_url)
    from stagecast.bus.memory import MemoryBus

    return MemoryBus()


__all__ = [
    "Bus",
    "BusTimeout",
    "Job",
    "Message",
    "Subscription",
    "create_bus",
    "decode",
    "directory_of",
    "encode",
]
