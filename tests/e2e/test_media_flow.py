"""A livestream end to end through the coordinator: the Python client against the embedded
server (coordinator + SFU node), with the in-process bus and the real Redis bus, on SQLite
and on the real PostgreSQL.

What is proven here is what the SFU issue asks to see: a host publishes (VP8, and H.264
separately); three viewers decode frames of the right size and hear audio; the call's
``session.participant_count`` follows viewers coming and going, including one that
vanishes without a word; a viewer cannot publish; backstage viewers admitted by join-ahead
get nothing until go-live and then media without rejoining; stop-live stops media; end
disconnects everyone.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from stagecast.bus import Bus
from stagecast.bus.memory import MemoryBus
from stagecast.bus.redis import RedisBus
from stagecast.client import (
    ApiClient,
    ApiError,
    SfuConnection,
    SignallingError,
    SyntheticVideoTrack,
    ToneAudioTrack,
    Viewer,
)
from tests.e2e.stack import CALL_TYPE, Embedded, run_embedded, vanish
from tests.server.conftest import _postgres_admin
from tests.support import POSTGRES_URL, REDIS_URL, port_open, require

WIDTH, HEIGHT = 320, 240

# (bus, database, codec): every codec on the in-process bus and SQLite; the real Redis bus
# with SQLite, and the production pair (Redis + PostgreSQL) once.
STACKS = [
    ("memory", "sqlite", "VP8"),
    ("memory", "sqlite", "H264"),
    ("redis", "sqlite", "VP8"),
    ("redis", "postgres", "H264"),
]


@pytest.fixture(params=STACKS, ids=["-".join(p) for p in STACKS])
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Embedded]:
    bus_kind, database, _ = request.param
    bus: Bus = MemoryBus()
    if bus_kind == "redis":
        require(port_open("127.0.0.1", 6379), "Redis is not running on 127.0.0.1:6379")
        bus = RedisBus(REDIS_URL, namespace=f"e2e-{uuid.uuid4().hex[:12]}")
    url = None
    if database == "postgres":
        require(port_open("127.0.0.1", 5432), "PostgreSQL is not running on 127.0.0.1:5432")
        template = request.getfixturevalue("postgres_template")
        name = f"stagecast_e2e_{uuid.uuid4().hex[:10]}"
        await _postgres_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        url = POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    try:
        async with run_embedded(tmp_path, bus=bus, database_url=url) as running:
            yield running
    finally:
        await bus.close()
        if url is not None:
            await _postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def codec(request: pytest.FixtureRequest) -> str:
    return str(request.node.callspec.params["stack"][2])


async def watch(conn: SfuConnection, joined_at: float) -> tuple[Viewer, float]:
    """Subscribe (decoding); wait for media; the viewer and join-to-first-frame seconds."""
    viewer = await conn.subscribe()
    await viewer.wait_video_frames(10, timeout=15)
    await viewer.wait_audio_frames(10, timeout=15)
    assert viewer.first_frame_at is not None
    return viewer, viewer.first_frame_at - joined_at


async def frames_keep_coming(viewer: Viewer, seconds: float = 0.6) -> None:
    before = viewer.video_frames
    await asyncio.sleep(seconds)
    assert viewer.video_frames > before + 3, "video stalled"


async def media_stopped(viewer: Viewer, settle: float = 0.4, window: float = 1.0) -> None:
    await asyncio.sleep(settle)
    packets = viewer.rtp["video"].packets, viewer.rtp["audio"].packets
    await asyncio.sleep(window)
    assert (viewer.rtp["video"].packets, viewer.rtp["audio"].packets) == packets


async def test_livestream_through_the_coordinator(
    stack: Embedded, codec: str, closing: Callable[[Any], Any]
) -> None:
    server = stack
    call_id, host_api = await server.new_show("host")
    cid = f"{CALL_TYPE}:{call_id}"

    # the host may publish in backstage
    host = closing(await server.connect("host", call_id))
    assert host.joined["role"] == "host"
    assert host.joined["can_publish"] == {"audio": True, "video": True}
    answer = await host.publish(
        ToneAudioTrack(), SyntheticVideoTrack(WIDTH, HEIGHT, 30), video_codec=codec
    )
    assert f"{codec}/90000" in answer
    if codec == "H264":
        assert "profile-level-id=42e01f" in answer and "packetization-mode=1" in answer
    live = await host_api.go_live(CALL_TYPE, call_id)
    assert live["call"]["backstage"] is False
    await server.wait_count(call_id, 1)

    # three viewers decode frames of the right size and receive audio
    viewers: list[SfuConnection] = []
    subs: list[Viewer] = []
    firsts: list[float] = []
    for n in range(3):
        joined_at = time.monotonic()
        conn = closing(await server.connect(f"fan{n}", call_id))
        assert conn.joined["role"] == "user" and conn.joined["receiving"] is True
        assert conn.joined["can_publish"] == {"audio": False, "video": False}
        assert any(t["kind"] == "video" and t["codec"] == codec for t in conn.joined["tracks"])
        viewer, first = await watch(conn, joined_at)
        viewers.append(conn)
        subs.append(viewer)
        firsts.append(first)
    for viewer in subs:
        assert (viewer.width, viewer.height) == (WIDTH, HEIGHT)
        assert viewer.sizes == {(WIDTH, HEIGHT): viewer.video_frames}
        assert viewer.last_counter is not None and viewer.last_counter > 0
    print(f"\n{codec} join-to-first-frame: " + ", ".join(f"{t * 1000:.0f} ms" for t in firsts))
    assert max(firsts) < 3.0
    await server.wait_count(call_id, 4)
    call = (await server.api().get_call(CALL_TYPE, call_id))["call"]
    assert call["session"]["participant_count_by_role"] == {"host": 1, "user": 3}

    # a viewer cannot publish: a clear error, and nothing of it is forwarded
    with pytest.raises(SignallingError) as refused:
        await viewers[0].publish(ToneAudioTrack(), SyntheticVideoTrack(WIDTH, HEIGHT))
    assert refused.value.code == "forbidden"
    assert refused.value.details["missing_capability"] in ("send-audio", "send-video")
    with pytest.raises(SignallingError) as refused:
        await viewers[0].publish(None, SyntheticVideoTrack(WIDTH, HEIGHT))
    assert refused.value.details["missing_capability"] == "send-video"
    room = server.node.rooms[cid].room
    publishers = {p.participant.id for p in room.publications}
    assert publishers == {host.joined["participant_id"]}
    await frames_keep_coming(subs[1])

    # viewers come and go; one leaves politely, one vanishes without a goodbye
    await viewers[2].leave()
    await server.wait_count(call_id, 3)
    vanished = viewers[1].joined["participant_id"]
    vanish(viewers[1])
    await server.wait_count(call_id, 2)
    left = await host.wait_for("participant_left", lambda m: m["participant_id"] == vanished)
    assert left["reason"] == "disconnected"
    late_at = time.monotonic()
    late = closing(await server.connect("fan3", call_id))
    late_viewer, late_first = await watch(late, late_at)
    print(f"{codec} late joiner join-to-first-frame: {late_first * 1000:.0f} ms")
    await server.wait_count(call_id, 3)
    await frames_keep_coming(subs[0])

    # stop-live: viewers stay connected, fed nothing; the host stays
    await host_api.stop_live(CALL_TYPE, call_id)
    state = await viewers[0].wait_for("call_state", lambda m: m["live"] is False)
    assert state["receiving"] is False
    await media_stopped(subs[0])
    await media_stopped(late_viewer, settle=0)
    assert not viewers[0].closed.is_set() and not host.closed.is_set()
    await server.wait_count(call_id, 3)

    # end: everyone is disconnected, the session is over
    await host_api.end_call(CALL_TYPE, call_id)
    for conn in (host, viewers[0], late):
        await asyncio.wait_for(conn.closed.wait(), 10)
        assert conn.goodbye == {"type": "goodbye", "reason": "call_ended"}
        assert conn.close_code == 4009
    await server.wait_count(call_id, 0)
    assert cid not in server.node.rooms
    with pytest.raises(ApiError) as ended:
        await server.api("fan9").join(CALL_TYPE, call_id)
    assert ended.value.status == 409 and ended.value.code == "call_ended"


async def test_backstage_join_ahead_then_go_live(
    embedded: Embedded, closing: Callable[[Any], Any]
) -> None:
    server = embedded
    starts_at = (datetime.now(UTC) + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    call_id, host_api = await server.new_show(
        "host",
        starts_at=starts_at,
        settings_override={"backstage": {"join_ahead_time_seconds": 600}},
    )
    # a second show with no join-ahead: viewers are turned away until it is live
    closed_id, _ = await server.new_show("host")
    with pytest.raises(ApiError) as refused:
        await server.api("early").join(CALL_TYPE, closed_id)
    assert refused.value.status == 403 and refused.value.code == "call_in_backstage"
    assert refused.value.details["join_ahead_time_seconds"] == 0

    host = closing(await server.connect("host", call_id))
    await host.publish(ToneAudioTrack(), SyntheticVideoTrack(WIDTH, HEIGHT, 30))
    fans = [closing(await server.connect(f"early{n}", call_id)) for n in range(2)]
    subs = []
    for fan in fans:
        assert fan.joined["call"] == {"live": False, "ended": False}
        assert fan.joined["receiving"] is False
        subs.append(await fan.subscribe())
    await server.wait_count(call_id, 3)
    await asyncio.sleep(1.5)  # connected, fed nothing in backstage
    for sub in subs:
        assert sub.pc.connectionState == "connected"
        assert sub.rtp["video"].packets == 0 and sub.rtp["audio"].packets == 0

    went_live = time.monotonic()
    await host_api.go_live(CALL_TYPE, call_id)
    for fan, sub in zip(fans, subs, strict=True):
        state = await fan.wait_for("call_state", lambda m: m["live"] is True)
        assert state["receiving"] is True
        await sub.wait_video_frames(10, timeout=10)
        await sub.wait_audio_frames(10, timeout=10)
        assert (sub.width, sub.height) == (WIDTH, HEIGHT)
    assert subs[0].first_frame_at is not None
    print(f"\ngo-live to first frame: {(subs[0].first_frame_at - went_live) * 1000:.0f} ms")
    assert len(fans[0].received("joined")) == 1  # no rejoin

    await host_api.stop_live(CALL_TYPE, call_id)
    await fans[0].wait_for("call_state", lambda m: m["live"] is False)
    await media_stopped(subs[0])
    # back live: the same connections resume at the next keyframe
    await host_api.go_live(CALL_TYPE, call_id)
    before = subs[1].video_frames
    await subs[1].wait_video_frames(before + 10, timeout=10)


async def test_two_shows_at_once_are_isolated(
    embedded: Embedded, closing: Callable[[Any], Any]
) -> None:
    """Two shows at once on one node: each viewer sees only its own show's frames."""
    server = embedded
    shows = []
    for size in ((320, 240), (256, 144)):
        call_id, api = await server.new_show("host", f"iso-{uuid.uuid4().hex[:8]}")
        host = closing(await server.connect("host", call_id))
        await host.publish(ToneAudioTrack(), SyntheticVideoTrack(*size, 30))
        await api.go_live(CALL_TYPE, call_id)
        fan = closing(await server.connect("fan", call_id))
        shows.append((size, await fan.subscribe()))
    for size, sub in shows:
        await sub.wait_video_frames(10)
        assert sub.sizes == {size: sub.video_frames}


async def test_join_answer_names_this_server(embedded: Embedded) -> None:
    answer = await embedded.api("fan").join(CALL_TYPE, "open-show", create=True)
    credentials = ApiClient.credentials(answer)
    assert credentials.ws_url == embedded.url.replace("http://", "ws://") + "/sfu/ws"
    assert credentials.ice_servers == []
