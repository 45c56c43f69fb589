"""The Redis bus: pub/sub for messages, keys with TTLs for the registry, lists and a sorted
set of leases for jobs. Nothing else in Stagecast talks to Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as redis

from stagecast.bus import Bus, Job, Message, Subscription, decode, directory_of, encode

MAX_CONNECTIONS = 512
POOL_TIMEOUT_SECONDS = 10.0

# Re-queue expired leases, then take the oldest waiting job.
_CLAIM = """
local jobs, pending, leases, attempts = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now)
for _, id in ipairs(expired) do
  redis.call('ZREM', leases, id)
  redis.call('RPUSH', pending, id)
end
while true do
  local id = redis.call('RPOP', pending)
  if not id then return nil end
  local payload = redis.call('HGET', jobs, id)
  if payload then
    redis.call('ZADD', leases, now + lease, id)
    local n = redis.call('HINCRBY', attempts, id, 1)
    return {id, payload, n}
  end
end
"""

_RENEW = """
local leases, attempts = KEYS[1], KEYS[2]
local id, n, deadline = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('ZSCORE', leases, id) and redis.call('HGET', attempts, id) == n then
  redis.call('ZADD', leases, deadline, id)
  return 1
end
return 0
"""


class _RedisSubscription(Subscription):
    def __init__(self, pubsub: Any, prefix: str) -> None:
        self._pubsub = pubsub
        self._prefix = prefix

    async def get(self, timeout: float | None = None) -> tuple[str, Message]:
        async with asyncio.timeout(timeout):
            while True:
                raw = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if raw is None or raw.get("type") != "message":
                    continue
                channel = raw["channel"].decode()[len(self._prefix) :]
                return channel, decode(raw["data"])


class RedisBus(Bus):
    def __init__(self, url: str, namespace: str = "stagecast") -> None:
        # Callers wait for a free connection rather than fail when a burst uses them all;
        # every subscription holds one for its lifetime.
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=POOL_TIMEOUT_SECONDS
        )
        self._redis = redis.Redis(connection_pool=pool)
        self._ns = namespace + ":"
        self._claim = self._redis.register_script(_CLAIM)
        self._renew = self._redis.register_script(_RENEW)

    def _queue_keys(self, queue: str) -> list[str]:
        base = f"{self._ns}queue:{queue}:"
        return [base + "jobs", base + "pending", base + "leases", base + "attempts"]

    async def publish(self, channel: str, message: Message) -> None:
        await self._redis.publish(self._ns + "ch:" + channel, encode(message))

    @asynccontextmanager
    async def subscribe(self, *channels: str) -> AsyncIterator[Subscription]:
        pubsub = self._redis.pubsub()
        prefix = self._ns + "ch:"
        try:
            await pubsub.subscribe(*(prefix + channel for channel in channels))
            # Wait for Redis to confirm, so a publish right after this block starts is seen.
            confirmed = 0
            while confirmed < len(set(channels)):
                raw = await pubsub.get_message(timeout=5.0)
                if raw is None:
                    raise ConnectionError("Redis did not confirm the subscription")
                confirmed += raw.get("type") == "subscribe"
            yield _RedisSubscription(pubsub, prefix)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _key(self, key: str) -> str:
        return self._ns + "key:" + key

    def _directory(self, key: str) -> str:
        # A sorted set per directory, scored by expiry, so listing a directory never scans
        # the whole keyspace.
        return self._ns + "dir:" + directory_of(key)

    async def set_key(self, key: str, value: Message, ttl_seconds: float) -> None:
        ttl_ms = max(1, int(ttl_seconds * 1000))
        now_ms = time.time() * 1000
        directory = self._directory(key)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key(key), encode(value), px=ttl_ms)
            pipe.zremrangebyscore(directory, "-inf", now_ms)
            pipe.zadd(directory, {key: now_ms + ttl_ms})
            await pipe.execute()

    async def get_key(self, key: str) -> Message | None:
        data = await self._redis.get(self._key(key))
        return None if data is None else decode(data)

    async def delete_key(self, key: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key(key))
            pipe.zrem(self._directory(key), key)
            await pipe.execute()

    async def keys_in(self, directory: str) -> dict[str, Message]:
        index = self._ns + "dir:" + directory
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(index, "-inf", time.time() * 1000)
            pipe.zrange(index, 0, -1)
            _, members = await pipe.execute()
        if not members:
            return {}
        names = [member.decode() for member in members]
        values = await self._redis.mget([self._key(name) for name in names])
        return {
            name: decode(value)
            for name, value in zip(names, values, strict=True)
            if value is not None
        }

    async def enqueue(self, queue: str, payload: Message) -> str:
        jobs, pending, _, _ = self._queue_keys(queue)
        job_id = uuid.uuid4().hex
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(jobs, job_id, encode(payload))
            pipe.lpush(pending, job_id)
            await pipe.execute()
        return job_id

    async def claim(self, queue: str, lease_seconds: float, timeout: float) -> Job | None:
        deadline = time.monotonic() + timeout
        keys = self._queue_keys(queue)
        while True:
            taken = await self._claim(keys=keys, args=[time.time(), lease_seconds])
            if taken is not None:
                job_id, payload, attempts = taken
                return Job(job_id.decode(), queue, decode(payload), int(attempts))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(remaining, 0.1))

    async def renew(self, job: Job, lease_seconds: float) -> bool:
        _, _, leases, attempts = self._queue_keys(job.queue)
        renewed = await self._renew(
            keys=[leases, attempts], args=[job.id, str(job.attempts), time.time() + lease_seconds]
        )
        return bool(renewed)

    async def complete(self, job: Job) -> None:
        jobs, pending, leases, attempts = self._queue_keys(job.queue)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(jobs, job.id)
            pipe.lrem(pending, 0, job.id)
            pipe.zrem(leases, job.id)
            pipe.hdel(attempts, job.id)
            await pipe.execute()

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose(close_connection_pool=True)
