import asyncio

import pytest

from stagecast.bus import Bus, BusTimeout


async def test_publish_reaches_every_subscriber_in_order(bus: Bus) -> None:
    async with bus.subscribe("a", "b") as first, bus.subscribe("a") as second:
        for n in range(5):
            await bus.publish("a", {"n": n})
        await bus.publish("b", {"n": "b"})
        got = [await first.get(timeout=2) for _ in range(6)]
        assert got == [("a", {"n": n}) for n in range(5)] + [("b", {"n": "b"})]
        assert [await second.get(timeout=2) for _ in range(5)] == [
            ("a", {"n": n}) for n in range(5)
        ]


async def test_unsubscribed_channels_are_not_delivered(bus: Bus) -> None:
    async with bus.subscribe("mine") as sub:
        await bus.publish("other", {"x": 1})
        await bus.publish("mine", {"x": 2})
        assert await sub.get(timeout=2) == ("mine", {"x": 2})
        with pytest.raises(TimeoutError):
            await sub.get(timeout=0.2)


async def test_messages_round_trip_through_json(bus: Bus) -> None:
    async with bus.subscribe("c") as sub:
        await bus.publish("c", {"nested": {"list": [1, 2.5, None, True]}, "text": "é"})
        assert await sub.get(timeout=2) == (
            "c",
            {"nested": {"list": [1, 2.5, None, True]}, "text": "é"},
        )


async def test_keys_expire_and_are_listed_by_directory(bus: Bus) -> None:
    await bus.set_key("nodes/a", {"load": 1}, ttl_seconds=0.3)
    await bus.set_key("nodes/b", {"load": 2}, ttl_seconds=30)
    await bus.set_key("other/c", {"load": 3}, ttl_seconds=30)
    assert await bus.get_key("nodes/a") == {"load": 1}
    assert await bus.keys_in("nodes") == {"nodes/a": {"load": 1}, "nodes/b": {"load": 2}}
    await asyncio.sleep(0.5)
    assert await bus.get_key("nodes/a") is None
    assert await bus.keys_in("nodes") == {"nodes/b": {"load": 2}}
    await bus.delete_key("nodes/b")
    assert await bus.keys_in("nodes") == {}


async def test_directories_are_exact_and_glob_characters_literal(bus: Bus) -> None:
    await bus.set_key("x*/1", {"v": 1}, ttl_seconds=30)
    await bus.set_key("xy/2", {"v": 2}, ttl_seconds=30)
    await bus.set_key("x/3", {"v": 3}, ttl_seconds=30)
    assert await bus.keys_in("x*") == {"x*/1": {"v": 1}}
    assert await bus.keys_in("x") == {"x/3": {"v": 3}}


async def test_keys_need_a_directory(bus: Bus) -> None:
    with pytest.raises(ValueError):
        await bus.set_key("flat", {"v": 1}, ttl_seconds=30)


async def test_jobs_are_claimed_once_in_order(bus: Bus) -> None:
    first = await bus.enqueue("egress", {"n": 1})
    await bus.enqueue("egress", {"n": 2})
    job = await bus.claim("egress", lease_seconds=30, timeout=1)
    assert job is not None and job.id == first and job.payload == {"n": 1}
    other = await bus.claim("egress", lease_seconds=30, timeout=1)
    assert other is not None and other.payload == {"n": 2}
    assert await bus.claim("egress", lease_seconds=30, timeout=0.2) is None
    await bus.complete(job)
    await bus.complete(other)
    assert await bus.claim("egress", lease_seconds=30, timeout=0.2) is None


async def test_a_job_whose_lease_expires_is_taken_again(bus: Bus) -> None:
    await bus.enqueue("egress", {"n": 1})
    dead_worker = await bus.claim("egress", lease_seconds=0.3, timeout=1)
    assert dead_worker is not None and dead_worker.attempts == 1
    retaken = await bus.claim("egress", lease_seconds=30, timeout=2)
    assert retaken is not None
    assert retaken.id == dead_worker.id and retaken.attempts == 2
    # The dead worker's lease is gone: it can no longer renew.
    assert not await bus.renew(dead_worker, 30)
    assert await bus.renew(retaken, 30)
    await bus.complete(retaken)


async def test_renewed_lease_keeps_the_job(bus: Bus) -> None:
    await bus.enqueue("egress", {"n": 1})
    job = await bus.claim("egress", lease_seconds=0.4, timeout=1)
    assert job is not None
    for _ in range(3):
        await asyncio.sleep(0.2)
        assert await bus.renew(job, 0.4)
    assert await bus.claim("egress", lease_seconds=1, timeout=0.1) is None


async def test_claim_waits_for_a_new_job(bus: Bus) -> None:
    async def later() -> None:
        await asyncio.sleep(0.2)
        await bus.enqueue("q", {"late": True})

    task = asyncio.create_task(later())
    job = await bus.claim("q", lease_seconds=5, timeout=3)
    await task
    assert job is not None and job.payload == {"late": True}


async def test_request_reply(bus: Bus) -> None:
    async def responder() -> None:
        async with bus.subscribe("svc") as sub:
            ready.set()
            _, message = await sub.get(timeout=3)
            await bus.reply(message, {"echo": message["x"]})

    ready = asyncio.Event()
    task = asyncio.create_task(responder())
    await ready.wait()
    assert await bus.request("svc", {"x": 42}, timeout=3) == {"echo": 42}
    await task
    with pytest.raises(BusTimeout):
        await bus.request("nobody-listens", {}, timeout=0.2)
