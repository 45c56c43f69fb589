"""Egress control without media checks: automatic starts, refusals, a failing job's event, a
stop that reaches a job before any worker claimed it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from egress import worker as worker_module
from egress.storage import default_storage
from egress.worker import EgressWorker
from stagecast.client import ApiError
from tests.egress.conftest import Embedded, event_log, need_ffprobe, run_stack

BASE = "/v1/calls/livestream"


async def test_auto_on_and_auto_recording_start_at_go_live(stack: Embedded) -> None:
    call_id, host = await stack.new_show()
    await host.update_call(
        "livestream",
        call_id,
        settings_override={
            "broadcasting": {"hls": {"auto_on": True}},
            "recording": {"mode": "auto"},
        },
    )
    body = await host.go_live("livestream", call_id)
    egress = body["call"]["egress"]
    assert egress["hls"]["status"] == "starting" and egress["hls"]["playlist_url"]
    assert egress["recording"]["status"] == "starting"
    # Nobody publishes: both wait for media. Stopping works all the same.
    await host.request("POST", f"{BASE}/{call_id}/hls/stop")
    await host.request("POST", f"{BASE}/{call_id}/recordings/stop")
    body = await host.get_call("livestream", call_id)
    assert body["call"]["egress"]["hls"]["status"] == "stopped"


async def test_refusals(stack: Embedded) -> None:
    client = stack.api("host")
    await client.get_or_create_call("default", "meeting-egress")
    with pytest.raises(ApiError) as refused:
        await client.request("POST", "/v1/calls/default/meeting-egress/hls/start")
    assert (refused.value.status, refused.value.code) == (409, "conflict")
    call_id, host = await stack.new_show()
    await host.update_call(
        "livestream", call_id, settings_override={"recording": {"mode": "disabled"}}
    )
    with pytest.raises(ApiError) as refused:
        await host.request("POST", f"{BASE}/{call_id}/recordings/start")
    assert (refused.value.status, refused.value.code) == (409, "conflict")
    await host.end_call("livestream", call_id)
    with pytest.raises(ApiError) as refused:
        await host.request("POST", f"{BASE}/{call_id}/hls/start")
    assert (refused.value.status, refused.value.code) == (409, "call_ended")


async def test_a_job_that_cannot_run_is_reported_failed(
    stack: Embedded, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_nodes(_bus: object) -> list[object]:
        return []

    monkeypatch.setattr(worker_module, "live_nodes", no_nodes)  # no SFU node to subscribe on
    call_id, host = await stack.new_show()
    async with event_log(stack.bus) as events:
        await host.request("POST", f"{BASE}/{call_id}/recordings/start")
        await events.wait("call.recording_failed")
    failed = events.of("call.recording_failed")[0]
    assert "no SFU node" in failed["error"] and failed["recording"]["id"]
    body = await host.get_call("livestream", call_id)
    assert body["call"]["egress"]["recording"]["status"] == "stopped"
    assert (await host.request("GET", f"{BASE}/{call_id}/recordings"))["recordings"] == []


async def test_a_stop_reaches_a_job_no_worker_had_claimed(tmp_path: Path) -> None:
    need_ffprobe()
    async with run_stack(tmp_path, egress_worker=False) as stack:
        call_id, host = await stack.new_show()
        async with event_log(stack.bus) as events:
            await host.request("POST", f"{BASE}/{call_id}/hls/start")
            await host.request("POST", f"{BASE}/{call_id}/hls/stop")
            worker = EgressWorker(stack.bus, default_storage(tmp_path))
            await worker.start()
            try:
                await events.wait("call.hls_stopped")
            finally:
                await worker.stop()
        assert not events.of("call.hls_started")


def test_egress_command_needs_the_redis_bus(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGECAST_")}
    done = subprocess.run(
        [sys.executable, "-m", "stagecast.cli", "egress", "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "STAGECAST_REDIS_URL" in done.stderr
