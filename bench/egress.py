"""Egress: CPU per HLS stream (H.264 remux vs VP8 transcode) and HLS latency.

What runs (loopback; every process started here is stopped by PID at the end):

- the embedded coordinator + SFU node in this process, without its egress worker, on the Redis
  bus (database ``--redis-db``, flushed before and after);
- one ``stagecast egress`` process: its CPU is read from ``/proc/<pid>/stat`` alone;
- a host publishing ``SyntheticVideoTrack`` (``--width``x``--height`` @ 30 fps, its frame counter
  stamped in the picture) and ``ToneAudioTrack``, once as H.264 and once as VP8.

For each codec: HLS starts, and once it runs, for ``--seconds`` s the worker's CPU (100 = one
core) is measured and every second the newest segment of the live playlist is fetched and its
last frame decoded: **latency** is now minus when the publisher produced that frame (what a
player that starts at the live edge is behind, before its own buffering).

    .venv/bin/python bench/egress.py
    .venv/bin/python bench/egress.py --seconds 20 --json
    .venv/bin/python bench/egress.py --seconds 60 --codecs H264   # the remux alone, longer
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import httpx
import uvicorn

# Run as a script, this file's directory comes first on sys.path and this module would shadow
# the ``egress`` package: the repository root instead.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

from stagecast.bus.redis import RedisBus  # noqa: E402
from stagecast.client import (  # noqa: E402
    ApiClient,
    SfuConnection,
    SyntheticVideoTrack,
    ToneAudioTrack,
    read_frame_counter,
)
from stagecast.embedded import create_embedded_app  # noqa: E402
from stagecast.settings import Settings  # noqa: E402
from stagecast.tokens import KeyRing, load_api_keys  # noqa: E402

API_KEY = "bench-key"
API_SECRET = "bench-secret-0123456789abcdef-0123456789abcdef"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def last_counter(segment: bytes) -> int | None:
    counter = None
    with av.open(io.BytesIO(segment), format="mpegts") as container:
        for frame in container.decode(video=0):
            counter = read_frame_counter(frame) or counter
    return counter


async def one_codec(
    url: str, keyring: KeyRing, worker_pid: int, codec: str, args: argparse.Namespace
) -> dict[str, Any]:
    call_id = f"bench-{codec.lower()}-{int(time.time())}"
    host = ApiClient(url, keyring.user_token("host"), timeout=30)
    await host.get_or_create_call("livestream", call_id)
    credentials = ApiClient.credentials(await host.join("livestream", call_id))
    conn = await SfuConnection.connect(credentials.ws_url, credentials.token)
    video = SyntheticVideoTrack(args.width, args.height)
    await conn.publish(audio=ToneAudioTrack(), video=video, video_codec=codec)
    await host.go_live("livestream", call_id)
    started = await host.request("POST", f"/v1/calls/livestream/{call_id}/hls/start")
    media_url = started["playlist_url"].rsplit("/", 1)[0] + "/index.m3u8"
    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(300):  # until the worker runs (polling the API, as an app would)
            body = await host.get_call("livestream", call_id)
            if body["call"]["egress"]["hls"]["status"] == "running":
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)
        cpu0, wall0 = cpu_seconds(worker_pid), time.monotonic()
        while time.monotonic() - wall0 < args.seconds:
            playlist = (await http.get(media_url)).text
            names = re.findall(r"^(seg-\d+\.ts)$", playlist, re.M)
            if names:
                data = (await http.get(media_url.rsplit("/", 1)[0] + "/" + names[-1])).content
                counter = await asyncio.to_thread(last_counter, data)
                sent = video.sent_at(counter) if counter is not None else None
                if sent is not None:
                    latencies.append(time.time() - sent)
            await asyncio.sleep(1.0)
        cpu = (cpu_seconds(worker_pid) - cpu0) / (time.monotonic() - wall0) * 100
    await host.request("POST", f"/v1/calls/livestream/{call_id}/hls/stop")
    await conn.close()
    await host.aclose()
    return {
        "codec": codec,
        "mode": "remux" if codec == "H264" else "transcode",
        "worker_cpu_percent": round(cpu, 2),
        "latency_p50_s": round(statistics.median(latencies), 2) if latencies else None,
        "latency_max_s": round(max(latencies), 2) if latencies else None,
        "samples": len(latencies),
    }


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    data_dir = Path(tempfile.mkdtemp(prefix="egress-bench-"))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = Settings(
        api_key=API_KEY,
        api_secret=API_SECRET,
        data_dir=data_dir,
        public_url=url,
        redis_url=redis_url,
        sfu_announced_address="127.0.0.1",
        rtmp_port=0,
        log_level="WARNING",
    )
    bus = RedisBus(redis_url)
    await bus._redis.flushdb()  # a database of its own (--redis-db)
    app = create_embedded_app(settings, bus=bus, egress_worker=False)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    env = {
        **os.environ,
        "STAGECAST_REDIS_URL": redis_url,
        "STAGECAST_DATA_DIR": str(data_dir),
        "STAGECAST_LOG_LEVEL": "WARNING",
    }
    worker = subprocess.Popen(  # noqa: ASYNC220 (started once, not awaited)
        [sys.executable, "-m", "stagecast.cli", "egress"], env=env, stdout=subprocess.DEVNULL
    )
    results = []
    try:
        for _ in range(400):
            if server.started:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # the node's first heartbeat
        keyring = KeyRing(load_api_keys(settings))
        for codec in args.codecs.split(","):
            results.append(await one_codec(url, keyring, worker.pid, codec, args))
    finally:
        worker.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.wait(10)
        if worker.poll() is None:
            worker.kill()
        server.should_exit = True
        await asyncio.wait_for(serving, 20)
        await bus._redis.flushdb()
        await bus.close()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--redis-db", type=int, default=13)
    parser.add_argument("--codecs", default="H264,VP8", help="comma-separated: H264, VP8")
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()
    found = asyncio.run(main(arguments))
    if arguments.json:
        print(json.dumps(found, indent=2))
    else:
        print(f"{'codec':6} {'mode':10} {'worker CPU %':>13} {'latency p50 s':>14} {'max s':>6}")
        for row in found:
            print(
                f"{row['codec']:6} {row['mode']:10} {row['worker_cpu_percent']:>13} "
                f"{row['latency_p50_s']!s:>14} {row['latency_max_s']!s:>6}"
            )
