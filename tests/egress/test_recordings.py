"""Recordings: start/stop gives an MP4 of the recorded length with video and audio, listed and
downloadable only with ``list-recordings`` or a signed URL; a worker killed with ``kill -9``
mid-recording leaves a playable partial file and its job is taken again by another worker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from egress.storage import default_storage
from egress.worker import EgressWorker
from stagecast.bus.redis import RedisBus
from stagecast.client import ApiError
from tests.egress.conftest import (
    API_KEY,
    API_SECRET,
    HEIGHT,
    WIDTH,
    Embedded,
    decodes,
    event_log,
    ffprobe,
    need_ffprobe,
    publish_host,
    run_stack,
    wait_status,
)
from tests.support import REDIS_URL, port_open, require

BASE = "/v1/calls/livestream"


def streams(probe: dict[str, object]) -> dict[str, dict[str, object]]:
    return {s["codec_type"]: s for s in probe["streams"]}  # type: ignore[attr-defined,index]


async def test_recording_start_stop_list_and_download(stack: Embedded) -> None:
    call_id, host = await stack.new_show()
    async with event_log(stack.bus) as events:
        conn = await publish_host(stack, call_id)
        try:
            answer = await host.request("POST", f"{BASE}/{call_id}/recordings/start")
            assert answer["recording"]["status"] in ("starting", "running")
            await wait_status(stack, call_id, "recording", "running")
            began = time.monotonic()
            await asyncio.sleep(4.0)
            await host.request("POST", f"{BASE}/{call_id}/recordings/stop")
            recorded = time.monotonic() - began
            await events.wait("call.recording_ready")
        finally:
            await conn.close()
        assert [e["type"] for e in events.events if "recording" in e["type"]] == [
            "call.recording_started",
            "call.recording_stopped",
            "call.recording_ready",
        ]

    listed = (await host.request("GET", f"{BASE}/{call_id}/recordings"))["recordings"]
    assert len(listed) == 1
    recording = listed[0]
    assert set(recording) == {
        "id",
        "filename",
        "url",
        "started_at",
        "ended_at",
        "duration_seconds",
        "size_bytes",
    }
    assert abs(recording["duration_seconds"] - recorded) < 1.0, (recording, recorded)
    assert recording["filename"].endswith(".mp4") and recording["size_bytes"] > 10_000

    async with httpx.AsyncClient(timeout=30) as http:
        signed = await http.get(recording["url"])
        assert signed.status_code == 200 and signed.headers["content-type"] == "video/mp4"
        assert len(signed.content) == recording["size_bytes"]
        tampered = await http.get(recording["url"][:-4] + "0000")
        assert tampered.status_code == 403
        bare = recording["url"].split("?", 1)[0]
        assert (await http.get(bare)).status_code == 401
        viewer = {"authorization": f"Bearer {stack.keyring.user_token('viewer')}"}
        assert (await http.get(bare, headers=viewer)).status_code == 403
        hosted = {"authorization": f"Bearer {stack.keyring.user_token('host')}"}
        assert (await http.get(bare, headers=hosted)).status_code == 200

    with pytest.raises(ApiError) as refused:
        await stack.api("viewer").request("GET", f"{BASE}/{call_id}/recordings")
    assert refused.value.status == 403
    with pytest.raises(ApiError) as refused:
        await stack.api("viewer").request("POST", f"{BASE}/{call_id}/recordings/start")
    assert refused.value.status == 403

    mp4 = Path(stack.settings.data_dir) / "recording.mp4"
    mp4.write_bytes(signed.content)
    probe = await ffprobe(mp4)
    found = streams(probe)
    assert found["video"]["codec_name"] == "h264" and found["audio"]["codec_name"] == "aac"
    assert (found["video"]["width"], found["video"]["height"]) == (WIDTH, HEIGHT)
    assert abs(float(probe["format"]["duration"]) - recorded) < 1.0
    assert await decodes(mp4) > 25 * (recorded - 1)


async def test_end_stops_every_egress(stack: Embedded) -> None:
    call_id, host = await stack.new_show()
    async with event_log(stack.bus) as events:
        conn = await publish_host(stack, call_id)
        try:
            await host.go_live("livestream", call_id, start_hls=True, start_recording=True)
            await wait_status(stack, call_id, "hls", "running")
            await wait_status(stack, call_id, "recording", "running")
            await host.end_call("livestream", call_id)
            await events.wait("call.hls_stopped")
            await events.wait("call.recording_ready")
        finally:
            await conn.close()
    body = await host.get_call("livestream", call_id)
    assert body["call"]["egress"]["hls"]["status"] == "stopped"
    assert body["call"]["egress"]["recording"]["status"] == "stopped"


def _spawn_worker(data_dir: Path, redis_url: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "STAGECAST_REDIS_URL": redis_url,
        "STAGECAST_DATA_DIR": str(data_dir),
        "STAGECAST_API_KEY": API_KEY,
        "STAGECAST_API_SECRET": API_SECRET,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "stagecast.cli", "egress"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_kill_9_mid_recording_keeps_the_partial_and_resumes(tmp_path: Path) -> None:
    need_ffprobe()
    require(port_open("127.0.0.1", 6379), "Redis is not running on 127.0.0.1:6379")
    # `stagecast egress` uses the default namespace: a database of its own for this test.
    redis_url = REDIS_URL.rsplit("/", 1)[0] + "/14"
    flush = aioredis.Redis.from_url(redis_url)
    await flush.flushdb()
    bus = RedisBus(redis_url)
    worker = _spawn_worker(tmp_path, redis_url)
    try:
        async with run_stack(tmp_path, bus=bus, egress_worker=False) as stack:
            call_id, host = await stack.new_show()
            async with event_log(stack.bus) as events:
                conn = await publish_host(stack, call_id)
                try:
                    await host.request("POST", f"{BASE}/{call_id}/recordings/start")
                    await wait_status(stack, call_id, "recording", "running", timeout=30)
                    await asyncio.sleep(3.5)
                    worker.send_signal(signal.SIGKILL)
                    await asyncio.to_thread(worker.wait, 10)
                    killed_at = time.monotonic()

                    parts = list((tmp_path / "egress" / "recordings").glob("*/part-001.mp4"))
                    assert len(parts) == 1
                    partial = await ffprobe(parts[0])
                    assert {"video", "audio"} <= set(streams(partial))
                    assert float(partial["format"]["duration"]) > 3.5 - 2.0
                    assert await decodes(parts[0]) > 30

                    # Another worker takes the job again once the dead one's lease expires.
                    rescuer = EgressWorker(RedisBus(redis_url), default_storage(tmp_path))
                    await rescuer.start()
                    try:
                        await events.wait("call.recording_started", 2, timeout=30)
                        assert events.of("call.recording_started")[1]["attempt"] == 2
                        resumed_after = time.monotonic() - killed_at
                        await asyncio.sleep(2.0)
                        await host.request("POST", f"{BASE}/{call_id}/recordings/stop")
                        await events.wait("call.recording_ready", timeout=30)
                    finally:
                        await rescuer.stop()
                        await rescuer.bus.close()
                finally:
                    await conn.close()
            listed = (await host.request("GET", f"{BASE}/{call_id}/recordings"))["recordings"]
            assert len(listed) == 1
            async with httpx.AsyncClient(timeout=30) as http:
                final = tmp_path / "final.mp4"
                final.write_bytes((await http.get(listed[0]["url"])).content)
            probe = await ffprobe(final)
            assert {"video", "audio"} <= set(streams(probe))
            # both parts: at least the killed worker's 2 s and the rescuer's 2 s
            assert float(probe["format"]["duration"]) >= 3.5, (probe["format"], resumed_after)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        await bus.close()
        await flush.flushdb()
        await flush.aclose()


async def test_kill_9_mid_hls_goes_on_in_the_same_playlist(tmp_path: Path) -> None:
    need_ffprobe()
    require(port_open("127.0.0.1", 6379), "Redis is not running on 127.0.0.1:6379")
    redis_url = REDIS_URL.rsplit("/", 1)[0] + "/14"
    flush = aioredis.Redis.from_url(redis_url)
    await flush.flushdb()
    bus = RedisBus(redis_url)
    worker = _spawn_worker(tmp_path, redis_url)
    try:
        async with run_stack(tmp_path, bus=bus, egress_worker=False) as stack:
            call_id, host = await stack.new_show()
            async with event_log(stack.bus) as events, httpx.AsyncClient(timeout=10) as http:
                conn = await publish_host(stack, call_id, "VP8")
                try:
                    url = (await host.request("POST", f"{BASE}/{call_id}/hls/start"))[
                        "playlist_url"
                    ]
                    media_url = url.rsplit("/", 1)[0] + "/index.m3u8"
                    await wait_status(stack, call_id, "hls", "running", timeout=30)
                    await asyncio.sleep(2.0)
                    worker.send_signal(signal.SIGKILL)
                    await asyncio.to_thread(worker.wait, 10)
                    before = (await http.get(media_url)).text
                    assert "#EXT-X-ENDLIST" not in before

                    rescuer = EgressWorker(RedisBus(redis_url), default_storage(tmp_path))
                    await rescuer.start()
                    try:
                        await events.wait("call.hls_started", 2, timeout=30)
                        # The rescuer appends to the same playlist: players reloading it
                        # go on (segment numbers, and so the media sequence, keep growing).
                        after = before
                        for _ in range(100):
                            await asyncio.sleep(0.2)
                            after = (await http.get(media_url)).text
                            if _last_segment(after) > _last_segment(before):
                                break
                        assert _last_segment(after) > _last_segment(before), (before, after)
                        assert "#EXT-X-ENDLIST" not in after
                        probe = await ffprobe(url)
                        assert {"video", "audio"} <= set(streams(probe))
                        await host.request("POST", f"{BASE}/{call_id}/hls/stop")
                        await events.wait("call.hls_stopped", timeout=30)
                    finally:
                        await rescuer.stop()
                        await rescuer.bus.close()
                finally:
                    await conn.close()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        await bus.close()
        await flush.flushdb()
        await flush.aclose()


def _last_segment(playlist: str) -> int:
    """The number of the newest segment a live playlist lists (``seg-000012.ts`` -> 12)."""
    names = [line for line in playlist.splitlines() if line.endswith(".ts")]
    return int(names[-1].rsplit("-", 1)[1].split(".")[0]) if names else -1
