"""RTMP ingest: latency (frame written to ffmpeg → decoded by a viewer) and CPU per stream.

Runs the embedded server (coordinator + SFU + RTMP ingest) in this process, Debian's ffmpeg
as publisher(s) in subprocesses.

1. Latency, per mode: Python writes ``SyntheticVideoTrack`` frames (640x360/30, frame counter
   stamped) raw to ffmpeg's stdin; ffmpeg encodes libx264 ``veryfast`` ``zerolatency`` (+ AAC)
   and publishes over RTMP; an aiortc viewer in this process decodes and reads the counter.
   ``passthrough``: no B-frames, forwarded as is; ``transcode``: ``-bf 2``, decoded and
   re-encoded to baseline by the ingest.
2. CPU: N ffmpeg publishers (``testsrc2`` 640x360/30 + sine, libx264 defaults or ``-bf 0``),
   no viewers; this process's CPU (all threads) over ``--duration`` s, minus the idle figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._machine import describe, format_machine  # noqa: E402
from stagecast.client import SyntheticVideoTrack  # noqa: E402
from tests.ingest.rtmp_stack import FFMPEG, Stack, run_stack, stop_process  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def latency(stack: Stack, mode: str, seconds: float) -> dict[str, Any]:
    assert FFMPEG is not None
    call_id = await stack.new_show()
    viewer = await stack.viewer("viewer", call_id)
    assert viewer.viewer is not None
    track = SyntheticVideoTrack(640, 360, 30)
    extra = ["-bf", "2"] if mode == "transcode" else []
    key = stack.key("host", call_id)
    process = await asyncio.create_subprocess_exec(
        FFMPEG, "-hide_banner", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", "640x360", "-r", "30", "-i", "-",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "60", *extra,
        "-c:a", "aac", "-f", "flv", f"rtmp://127.0.0.1:{stack.rtmp_port}/live/{key}",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdin is not None
    seen: dict[int, float] = {}

    async def feed() -> None:
        assert process.stdin is not None
        while True:
            frame = await track.recv()
            process.stdin.write(frame.to_ndarray(format="yuv420p").tobytes())
            await process.stdin.drain()

    async def watch() -> None:
        assert viewer.viewer is not None
        while True:
            counter = viewer.viewer.last_counter
            if counter is not None and counter not in seen:
                seen[counter] = time.time()
            await asyncio.sleep(0.002)

    tasks = [asyncio.create_task(feed()), asyncio.create_task(watch())]
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    transcoding = [s.media.transcoding for s in stack.ingest.sessions]
    with contextlib.suppress(Exception):
        process.stdin.close()
    await stop_process(process)
    await viewer.close()
    delays = sorted(
        (at - sent) * 1000
        for counter, at in seen.items()
        if counter > 30 and (sent := track.sent_at(counter)) is not None
    )
    await asyncio.sleep(1)
    if not delays:
        return {"mode": mode, "frames": 0}
    return {
        "mode": mode,
        "transcoding": transcoding,
        "frames": len(delays),
        "p50_ms": round(statistics.median(delays), 1),
        "p95_ms": round(delays[int(len(delays) * 0.95) - 1], 1),
        "max_ms": round(delays[-1], 1),
    }


async def cpu(stack: Stack, mode: str, publishers: int, seconds: float) -> dict[str, Any]:
    extra = ("-bf", "0") if mode == "passthrough" else ()
    before = cpu_seconds()
    await asyncio.sleep(seconds)
    idle = (cpu_seconds() - before) / seconds
    processes = []
    for i in range(publishers):
        call_id = await stack.new_show(f"host{i}")
        processes.append(
            await stack.ffmpeg(stack.key(f"host{i}", call_id), video=extra, seconds=600)
        )
    for _ in range(200):  # up to 20 s for every publisher to be accepted
        if len(stack.ingest.sessions) >= publishers:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(3)  # past ICE and the first keyframe
    frames0 = sum(s.media.video_frames for s in stack.ingest.sessions)
    before = cpu_seconds()
    await asyncio.sleep(seconds)
    busy = (cpu_seconds() - before) / seconds
    frames = sum(s.media.video_frames for s in stack.ingest.sessions) - frames0
    await asyncio.gather(*(stop_process(p) for p in processes))
    await asyncio.sleep(1)
    return {
        "mode": mode,
        "publishers": publishers,
        "idle_core_pct": round(idle * 100, 1),
        "core_pct": round(busy * 100, 1),
        "core_pct_per_stream": round((busy - idle) * 100 / publishers, 1),
        "video_fps_per_stream": round(frames / seconds / publishers, 1),
    }


async def amain(args: argparse.Namespace) -> int:
    if FFMPEG is None:
        print("ffmpeg is not installed", file=sys.stderr)
        return 2
    machine = describe()
    print(format_machine(machine), flush=True)
    report: dict[str, Any] = {"machine": machine, "latency": [], "cpu": []}
    with tempfile.TemporaryDirectory() as tmp:
        async with run_stack(Path(tmp)) as stack:
            for mode in ("passthrough", "transcode"):
                result = await latency(stack, mode, args.latency_seconds)
                report["latency"].append(result)
                print("latency", json.dumps(result), flush=True)
            for mode in ("passthrough", "transcode"):
                result = await cpu(stack, mode, args.publishers, args.duration)
                report["cpu"].append(result)
                print("cpu", json.dumps(result), flush=True)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10.0, help="CPU window, seconds")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
