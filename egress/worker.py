"""The egress worker: takes HLS and recording jobs from the bus and runs them.

Each job subscribes to its call on an SFU node like a viewer (a hidden, server-issued SFU
token that the coordinator minted), asks for a keyframe every segment length (browsers send
keyframes only on request) and writes through a :class:`MediaWriter`. The job's lease is
renewed while it runs; if this process dies, the lease expires and another worker takes the
job again (``attempt`` grows): HLS goes on in the same playlist directory, a recording writes a
new part, and the parts are joined when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from egress.media import (
    FRAGMENTED_MP4_OPTIONS,
    MediaWriter,
    hls_options,
    opus_decoder,
    remux_parts,
)
from egress.storage import Storage
from sfu.hooks import drop_receive_estimator
from stagecast.bus import Bus, Job, Message, Subscription
from stagecast.client.sfu import SfuConnection
from stagecast.nodes import choose_node, live_nodes
from stagecast.protocol import EGRESS_CONTROL, EGRESS_JOBS, EGRESS_REPORTS, egress_stop_key

log = logging.getLogger("stagecast.egress")

LEASE_SECONDS = 10.0
HLS_LIST_SIZE = 6
# An HLS job resumed after a worker died numbers its segments from here on, so that the media
# sequence keeps growing.
HLS_ATTEMPT_STRIDE = 100_000
# How often a job checks its progress (reports ``started`` this soon after the first frame).
PROGRESS_SECONDS = 0.1
MASTER_PLAYLIST = "master.m3u8"
MEDIA_PLAYLIST = "index.m3u8"


async def cancel_until_done(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel until every task has stopped: a cancellation that lands as a Redis reply
    completes can be swallowed (redis-py on Python 3.11), and one cancel() would then leave a
    loop running."""
    while pending := [task for task in tasks if not task.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=1.0)
    await asyncio.gather(*tasks, return_exceptions=True)


class RemuxTap:
    """Stands in for an aiortc receiver's decoder queue: H.264 frames go to the writer as they
    are (remuxed, never decoded); other codecs (VP8) go on to the decoder and are transcoded."""

    def __init__(self, inner: Any, writer: MediaWriter, failures: list[BaseException]) -> None:
        self.inner = inner
        self.writer = writer
        self.failures = failures

    def put(self, item: Any) -> None:
        if item is not None:
            codec, encoded = item
            writer = self.writer
            if codec.name == "H264" and (not writer.opened or writer.passthrough):
                try:
                    writer.h264(bytes(encoded.data), int(encoded.timestamp), time.monotonic())
                except Exception as exc:
                    self.failures.append(exc)
                return
        self.inner.put(item)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class OpusTap:
    """Stands in for the audio receiver's decoder queue: Opus is decoded right here on the event
    loop (about 0.1 % of a core), straight into the writer. aiortc would decode it in its
    decoder thread and hand every 20 ms frame back to the loop (a thread wakeup, a
    cross-thread future, a task and the track's queue per frame), costing several times the
    decoding itself. Other audio codecs go on to aiortc's decoder."""

    def __init__(self, inner: Any, writer: MediaWriter, failures: list[BaseException]) -> None:
        self.inner = inner
        self.writer = writer
        self.failures = failures
        self.decoder: Any = None

    def put(self, item: Any) -> None:
        if item is not None:
            codec, encoded = item
            if codec.name.lower() == "opus":
                try:
                    if self.decoder is None:
                        self.decoder = opus_decoder()
                    frames = self.decoder.decode(av.Packet(bytes(encoded.data)))
                except av.FFmpegError as exc:  # a bad packet: skipped, as aiortc would
                    log.debug("opus frame not decoded", extra={"error": str(exc)})
                    return
                try:
                    for frame in frames:
                        self.writer.audio(frame, time.monotonic())
                except Exception as exc:
                    self.failures.append(exc)
                return
        self.inner.put(item)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class EgressError(Exception):
    """A job cannot go on (reported as ``failed``)."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def master_playlist(width: int, height: int) -> str:
    return (
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n"
        f"#EXT-X-STREAM-INF:BANDWIDTH=2500000,RESOLUTION={width}x{height},"
        f'CODECS="avc1.64001f,mp4a.40.2"\n{MEDIA_PLAYLIST}\n'
    )


def part_name(attempt: int) -> str:
    return f"part-{attempt:03d}.mp4"


class EgressWorker:
    def __init__(
        self,
        bus: Bus,
        storage: Storage,
        *,
        worker_id: str | None = None,
        max_jobs: int = 4,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self.bus = bus
        self.storage = storage
        self.worker_id = worker_id or "egress-" + secrets.token_hex(4)
        self.max_jobs = max_jobs
        self.lease_seconds = lease_seconds
        self.jobs: dict[str, asyncio.Task[None]] = {}
        self._stops: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None

    # -- running ------------------------------------------------------------------------------

    async def start(self) -> None:
        ready = asyncio.Event()
        self._task = asyncio.create_task(self.run(ready))
        await asyncio.wait_for(ready.wait(), 10)

    async def stop(self) -> None:
        """Stop taking jobs and drop the running ones without completing them: their leases
        expire and another worker takes them again."""
        if self._task is not None:
            await cancel_until_done([self._task])
            self._task = None

    async def run(self, ready: asyncio.Event | None = None) -> None:
        async with self.bus.subscribe(EGRESS_CONTROL) as control:
            listener = asyncio.create_task(self._listen(control))
            if ready is not None:
                ready.set()
            log.info("egress worker ready", extra={"worker_id": self.worker_id})
            try:
                while True:
                    if len(self.jobs) >= self.max_jobs:
                        await asyncio.sleep(0.5)
                        continue
                    job = await self.bus.claim(EGRESS_JOBS, self.lease_seconds, timeout=1.0)
                    if job is not None:
                        task = asyncio.create_task(self._run_job(job))
                        self.jobs[job.id] = task
                        task.add_done_callback(self._forget(job.id))
            finally:
                await cancel_until_done([listener, *self.jobs.values()])

    def _forget(self, job_id: str) -> Any:
        def forget(_task: asyncio.Task[None]) -> None:
            self.jobs.pop(job_id, None)

        return forget

    async def _listen(self, control: Subscription) -> None:
        async for _, message in control:
            if message.get("type") == "stop":
                event = self._stops.get(str(message.get("egress_id")))
                if event is not None:
                    event.set()

    async def _report(self, job: Job, kind: str, **fields: Any) -> None:
        payload = job.payload
        report: Message = {
            "type": kind,
            "egress_id": payload["egress_id"],
            "kind": payload["kind"],
            "cid": payload["cid"],
            "at": now_iso(),
            "attempt": job.attempts,
            "worker_id": self.worker_id,
            **fields,
        }
        await self.bus.enqueue(EGRESS_REPORTS, report)

    async def _renew(self, job: Job, stop: asyncio.Event, lost: asyncio.Event) -> None:
        stop_key = egress_stop_key(job.payload["egress_id"])
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            if not await self.bus.renew(job, self.lease_seconds):
                log.warning("egress job lost its lease", extra={"job_id": job.id})
                lost.set()
                stop.set()
                return
            if await self.bus.get_key(stop_key) is not None:
                stop.set()

    async def _run_job(self, job: Job) -> None:
        payload = job.payload
        egress_id = str(payload["egress_id"])
        stop = asyncio.Event()
        lost = asyncio.Event()
        self._stops[egress_id] = stop
        if await self.bus.get_key(egress_stop_key(egress_id)) is not None:
            stop.set()
        renewer = asyncio.create_task(self._renew(job, stop, lost))
        log.info(
            "egress job started",
            extra={"egress_id": egress_id, "kind": payload["kind"], "attempt": job.attempts},
        )
        try:
            if payload["kind"] == "hls":
                await self._hls(job, stop, lost)
            else:
                await self._recording(job, stop, lost)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("egress job failed", extra={"egress_id": egress_id})
            if not lost.is_set():
                await self._report(job, "failed", error=str(exc) or type(exc).__name__)
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
            self._stops.pop(egress_id, None)
        if not lost.is_set():
            await self.bus.complete(job)

    # -- media --------------------------------------------------------------------------------

    async def _capture(
        self, job: Job, writer: MediaWriter, stop: asyncio.Event, on_progress: Any
    ) -> None:
        """Receive the call's media into ``writer`` until ``stop`` (or the call ends)."""
        if stop.is_set():
            return  # stopped before it ran (or taken over after a stop): nothing to receive
        payload = job.payload
        segment_seconds = float(payload.get("segment_seconds", 1.0))
        node = choose_node(await live_nodes(self.bus), str(payload["cid"]))
        if node is None:
            raise EgressError("no SFU node is available")
        conn = await SfuConnection.connect(node.ws_url, str(payload["token"]))
        pc = RTCPeerConnection()
        failures: list[BaseException] = []
        consumers: list[asyncio.Task[None]] = []

        async def consume(track: Any) -> None:
            try:
                while True:
                    frame = await track.recv()
                    at = time.monotonic()
                    if track.kind == "video":
                        writer.video(frame, at)
                    else:
                        writer.audio(frame, at)
            except MediaStreamError:
                return
            except Exception as exc:
                failures.append(exc)
                stop.set()

        @pc.on("track")
        def on_track(track: Any) -> None:
            consumers.append(asyncio.ensure_future(consume(track)))

        try:
            offer = await conn.request({"type": "subscribe"}, "subscribe_offer")
            await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
            for transceiver in pc.getTransceivers():
                receiver: Any = transceiver.receiver
                # Stagecast's SFU ignores REMB: estimating the bandwidth is wasted work.
                drop_receive_estimator(receiver)
                tap = RemuxTap if transceiver.kind == "video" else OpusTap
                receiver._RTCRtpReceiver__decoder_queue = tap(
                    receiver._RTCRtpReceiver__decoder_queue, writer, failures
                )
            await pc.setLocalDescription(await pc.createAnswer())
            await conn.request({"type": "subscribe_answer", "sdp": pc.localDescription.sdp}, "ack")
            next_keyframe_request = 0.0
            while not stop.is_set():
                if conn.closed.is_set():
                    if conn.goodbye is None:
                        raise EgressError("lost the connection to the SFU node")
                    break  # the call ended (or we were told to leave)
                if time.monotonic() >= next_keyframe_request:
                    # Browsers send keyframes only on request: one per segment.
                    next_keyframe_request = time.monotonic() + segment_seconds
                    with contextlib.suppress(Exception):
                        await conn.request_keyframe()
                await on_progress()
                if failures:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), PROGRESS_SECONDS)
        finally:
            for task in consumers:
                task.cancel()
            await asyncio.gather(*consumers, return_exceptions=True)
            await conn.close()
            await asyncio.shield(pc.close())
        if failures:
            raise EgressError(f"writing failed: {failures[0]}")

    async def _hls(self, job: Job, stop: asyncio.Event, lost: asyncio.Event) -> None:
        prefix = str(job.payload["prefix"])
        segment_seconds = float(job.payload.get("segment_seconds", 1.0))
        playlist: Path = self.storage.local_path(f"{prefix}/{MEDIA_PLAYLIST}")
        options = hls_options(playlist.parent, segment_seconds, HLS_LIST_SIZE)
        options["hls_segment_filename"] = str(playlist.parent / "seg-%06d.ts")
        options["start_number"] = str((job.attempts - 1) * HLS_ATTEMPT_STRIDE)
        writer = MediaWriter(playlist, "hls", options, keyframe_seconds=segment_seconds)
        started = False

        async def progress() -> None:
            nonlocal started
            if (
                started
                or not writer.opened
                or self.storage.open_path(f"{prefix}/{MEDIA_PLAYLIST}") is None
            ):
                return
            master = self.storage.local_path(f"{prefix}/{MASTER_PLAYLIST}")
            tmp = master.with_suffix(".tmp")
            tmp.write_text(master_playlist(writer.width, writer.height))
            tmp.replace(master)
            started = True
            await self._report(job, "started", width=writer.width, height=writer.height)

        try:
            await self._capture(job, writer, stop, progress)
        finally:
            writer.close()
        if not lost.is_set():
            await self._report(job, "stopped")

    async def _recording(self, job: Job, stop: asyncio.Event, lost: asyncio.Event) -> None:
        prefix = str(job.payload["prefix"])
        part = self.storage.local_path(f"{prefix}/{part_name(job.attempts)}")
        writer = MediaWriter(part, "mp4", dict(FRAGMENTED_MP4_OPTIONS))
        started = False

        async def progress() -> None:
            nonlocal started
            if not started and writer.video_frames > 0:
                started = True
                await self._report(job, "started")

        failure: BaseException | None = None
        try:
            await self._capture(job, writer, stop, progress)
        except Exception as exc:  # what was written is still joined and kept
            failure = exc
        finally:
            await asyncio.to_thread(writer.close)
        if lost.is_set():
            return
        await self._report(job, "stopped")
        try:
            await self._finalize(job)
        except EgressError:
            if failure is not None:
                raise failure from None  # the cause, not its consequence
            raise
        if failure is not None:
            raise failure

    async def _finalize(self, job: Job) -> None:
        """Join the parts into the final MP4 and report it ``ready``."""
        prefix = str(job.payload["prefix"])
        filename = str(job.payload["filename"])
        parts = [
            key
            for key in self.storage.list(prefix)
            if key.rsplit("/", 1)[-1].startswith("part-") and key.endswith(".mp4")
        ]
        paths = [path for key in parts if (path := self.storage.open_path(key)) is not None]
        if not paths:
            raise EgressError("nothing was recorded")
        final_key = f"{prefix}/{filename}"
        final = self.storage.local_path(final_key)
        duration = await asyncio.to_thread(remux_parts, paths, final)
        for key in parts:
            self.storage.delete(key)
        await self._report(
            job,
            "ready",
            key=final_key,
            filename=filename,
            duration_seconds=round(duration, 3),
            size_bytes=self.storage.size(final_key) or 0,
        )
