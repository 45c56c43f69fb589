"""``stagecast loadtest``: set up the call, start the workers, ramp, watch, report.

The runner process only orchestrates: a publisher process (when ``--publish``) and ``W``
viewer processes do the media work (:mod:`.worker`). Every second the runner asks each
worker for its counters, prints a progress line on stderr and folds them into phases:
``ramp`` (from the first join until every viewer is connected or has failed), ``steady``
(from then until ``--duration`` is over) and ``total``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from stagecast.client import ApiClient

from .process import WorkerError, WorkerProcess
from .report import Phase, Snapshot, progress_line, summary_table
from .schema import SCHEMA_ID
from .worker import error_code

SAFE_REMOTE_VIEWERS = 50
HOST_USER = "loadtest-host"
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # so workers import this stagecast
EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Refused before anything starts (exit code 2)."""


@dataclass
class Config:
    url: str
    viewers: int
    api_key: str | None = None
    api_secret: str | None = None
    token_file: Path | None = None
    call: str | None = None
    publish: bool = False
    codec: str = "vp8"
    width: int = 640
    height: int = 360
    fps: float = 30.0
    bitrate: int = 1_000_000
    file: str | None = None
    ramp: float = 10.0
    duration: float = 30.0
    workers: int = 2
    full_viewers: int | None = None
    i_own_this_server: bool = False
    json_output: bool = False
    log_dir: Path | None = None
    tokens: list[str] = field(default_factory=list)

    @property
    def call_type(self) -> str:
        return self.cid.split(":", 1)[0]

    @property
    def call_id(self) -> str:
        return self.cid.split(":", 1)[1]

    @property
    def cid(self) -> str:
        assert self.call is not None
        return self.call

    @property
    def decoders(self) -> int:
        """How many viewers decode (and measure latency); the rest are thin."""
        if self.full_viewers is not None:
            return max(0, min(self.full_viewers, self.viewers))
        return min(self.viewers, 2 if self.viewers >= 10 else 1)


def is_loopback(url: str) -> bool:
    """True when every address the URL's host resolves to is a loopback address."""
    host = urlparse(url).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(str(a)).is_loopback for a in addresses)


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError("resolution is WIDTHxHEIGHT, e.g. 640x360") from None
    return width, height


def parse_bitrate(text: str) -> int:
    scale = {"k": 1000, "m": 1_000_000}.get(text[-1:].lower(), 1)
    try:
        return int(float(text[:-1] if scale > 1 else text) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError("bitrate is e.g. 1000k, 2.5m or 800000") from None


def validate(config: Config) -> None:
    if config.viewers < 0:
        raise UsageError("--viewers must be 0 or more")
    if config.ramp <= 0 or config.duration <= 0 or config.workers < 1:
        raise UsageError("--ramp and --duration must be positive, --workers at least 1")
    if not (config.token_file or (config.api_key and config.api_secret)):
        raise UsageError("give --api-key and --api-secret, or --token-file")
    if config.codec not in ("vp8", "h264"):
        raise UsageError("--codec is vp8 or h264")
    if config.call is not None and (":" not in config.call or config.call.startswith(":")):
        raise UsageError("--call is TYPE:ID, e.g. livestream:loadtest")
    if (
        config.viewers > SAFE_REMOTE_VIEWERS
        and not config.i_own_this_server
        and not is_loopback(config.url)
    ):
        raise UsageError(
            f"{urlparse(config.url).hostname} is not on this machine (loopback): more than "
            f"{SAFE_REMOTE_VIEWERS} viewers against another server needs --i-own-this-server. "
            "Load-test only servers you operate."
        )


class Tokens:
    """Who does what: an admin token (create, go live), the publisher's, the viewers'."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.keyring: Any = None
        self.lines: list[str] = []
        if config.token_file is not None:
            self.lines = [
                line.strip()
                for line in config.token_file.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")
            ]
            if not self.lines:
                raise UsageError(f"{config.token_file} holds no token")
        else:
            from stagecast.settings import ApiKey
            from stagecast.tokens import KeyRing

            assert config.api_key and config.api_secret
            self.keyring = KeyRing([ApiKey(config.api_key, config.api_secret)])

    @property
    def minted(self) -> bool:
        return self.keyring is not None

    def admin(self) -> str:
        return str(self.keyring.server_token()) if self.minted else self.lines[0]

    def publisher(self) -> str:
        if self.minted:
            return str(self.keyring.user_token(HOST_USER, call_cids=[self.config.cid]))
        return self.lines[0]

    def viewer(self, i: int) -> str:
        if self.minted:
            return str(self.keyring.user_token(f"loadtest-viewer-{i}", call_cids=[self.config.cid]))
        pool = self.lines[1:] or self.lines
        return pool[i % len(pool)]


class Run:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.tokens = Tokens(config)
        self.stop = asyncio.Event()
        self.interrupted = False
        self.setup_errors: list[dict[str, str]] = []
        self.publisher: WorkerProcess | None = None
        self.workers: list[WorkerProcess] = []
        self.loopback = is_loopback(config.url)
        self.log_dir = config.log_dir or Path(tempfile.mkdtemp(prefix="stagecast-loadtest-"))
        self.started_at = 0.0  # time.time() of the first join
        self.error_examples: dict[str, str] = {}
        self.worker_cpu: list[float] = []

    def fail(self, step: str, exc: BaseException) -> None:
        code = error_code(exc)
        self.setup_errors.append({"step": step, "code": code, "message": str(exc)[:500]})

    # -- setup ------------------------------------------------------------------------------

    async def setup_call(self) -> bool:
        """Create (or get) the call; with ``--publish``, make the publisher host and go live."""
        c = self.config
        try:
            async with ApiClient(c.url, self.tokens.admin(), timeout=20) as api:
                if self.tokens.minted and c.publish:
                    await api.get_or_create_call(
                        c.call_type, c.call_id, members=[{"user_id": HOST_USER, "role": "host"}]
                    )
                    await api.update_members(
                        c.call_type, c.call_id, upsert=[{"user_id": HOST_USER, "role": "host"}]
                    )
                else:
                    await api.get_or_create_call(c.call_type, c.call_id)
        except Exception as exc:
            self.fail("create_call", exc)
            return False
        return True

    async def go_live(self) -> None:
        c = self.config
        try:
            async with ApiClient(c.url, self.tokens.admin(), timeout=20) as api:
                await api.go_live(c.call_type, c.call_id)
        except Exception as exc:  # e.g. forbidden: viewers then see the backstage errors
            self.fail("go_live", exc)

    async def start_workers(self) -> None:
        c = self.config
        argv = [sys.executable, "-m", "stagecast.loadtest.worker"]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([PACKAGE_ROOT, env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        count = min(c.workers, max(1, c.viewers))
        self.workers = [
            WorkerProcess(f"viewers-{i}", argv, self.log_dir / f"viewers-{i}.log")
            for i in range(count)
        ]
        if c.publish:
            self.publisher = WorkerProcess("publisher", argv, self.log_dir / "publisher.log")
        everyone = [*self.workers, *([self.publisher] if self.publisher else [])]
        await asyncio.gather(*(w.start(env) for w in everyone))
        for w in everyone:
            print(f"loadtest: {w.name} worker pid {w.pid}", file=sys.stderr, flush=True)
        await asyncio.gather(*(w.call("init", 60, loopback=self.loopback) for w in everyone))

    async def publish(self) -> None:
        c = self.config
        assert self.publisher is not None
        try:
            await self.publisher.call(
                "publish",
                60,
                api_url=c.url,
                call_type=c.call_type,
                call_id=c.call_id,
                token=self.tokens.publisher(),
                codec=c.codec,
                width=c.width,
                height=c.height,
                fps=c.fps,
                bitrate=c.bitrate,
                file=c.file,
            )
        except WorkerError as exc:
            self.fail("publish", exc)

    async def schedule_viewers(self) -> None:
        c = self.config
        start = time.time() + 0.5
        self.started_at = start
        decoders = c.decoders
        full = {round(k * c.viewers / decoders) for k in range(decoders)} if decoders else set()
        batches: list[list[dict[str, Any]]] = [[] for _ in self.workers]
        for i in range(c.viewers):
            batches[i % len(self.workers)].append(
                {
                    "name": f"viewer-{i}",
                    "token": self.tokens.viewer(i),
                    "at": start + i / c.ramp,
                    "mode": "full" if i in full else "thin",
                }
            )
        await asyncio.gather(
            *(
                w.call(
                    "join",
                    60,
                    api_url=c.url,
                    call_type=c.call_type,
                    call_id=c.call_id,
                    measure_latency=c.publish and not c.file,
                    viewers=batch,
                )
                for w, batch in zip(self.workers, batches, strict=True)
                if batch
            )
        )

    # -- watching ---------------------------------------------------------------------------

    async def poll(self) -> tuple[Snapshot, list[float], list[float]]:
        replies = await asyncio.gather(
            *(w.call("stats", 30) for w in self.workers), return_exceptions=True
        )
        good = [r for r in replies if isinstance(r, dict)]
        publisher = None
        if self.publisher is not None and self.publisher.running:
            with contextlib.suppress(Exception):
                publisher = await self.publisher.call("publisher_stats", 30)
        snap = Snapshot.combine(time.time() - self.started_at, good, publisher)
        first: list[float] = []
        latency: list[float] = []
        self.worker_cpu = []
        for reply in good:
            first.extend(reply.get("first_frame_ms", []))
            latency.extend(reply.get("latency_ms", []))
            self.worker_cpu.append(float(reply.get("cpu_seconds", 0.0)))
            for code, message in reply.get("error_messages", {}).items():
                self.error_examples.setdefault(code, message)
        return snap, first, latency

    async def watch(self) -> dict[str, Phase]:
        c = self.config
        tty = sys.stderr.isatty()
        with contextlib.suppress(TimeoutError):  # the baseline: when the first viewer joins
            await asyncio.wait_for(self.stop.wait(), max(0.0, self.started_at - time.time()))
        snap, first, latency = await self.poll()
        total = Phase("total", snap)
        phases = {"ramp": Phase("ramp", snap), "total": total}
        current = phases["ramp"]
        ramp_end = c.viewers / c.ramp
        previous = snap
        last_print = 0.0
        end_at = self.started_at + c.duration
        while True:
            timeout = max(0.0, min(1.0, end_at - time.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout)
            snap, first, latency = await self.poll()
            current.add(snap, first, latency)
            total.add(snap, first, latency)
            done = self.stop.is_set() or time.time() >= end_at
            if (
                current.name == "ramp"
                and not done
                and snap.at >= ramp_end
                and snap.pending == 0
                and snap.scheduled >= c.viewers
            ):
                current = phases["steady"] = Phase("steady", snap)
            interval = snap.at - previous.at
            received = sum(
                snap.counters[k] - previous.counters[k] for k in ("video_bytes", "audio_bytes")
            )
            kbps = received * 8 / interval / 1000 if interval > 0 else 0.0
            packets = sum(snap.counters[k] for k in ("video_packets", "audio_packets"))
            gaps = sum(snap.counters[k] for k in ("video_gaps", "audio_gaps"))
            loss = 100.0 * gaps / (packets + gaps) if packets + gaps else 0.0
            line = progress_line(
                current.name,
                max(0.0, snap.at),
                snap,
                c.viewers,
                kbps,
                loss,
                total.first_frame_ms,
                total.latency_ms,
            )
            if tty:
                print("\r\033[K" + line, end="", file=sys.stderr, flush=True)
            elif done or time.monotonic() - last_print >= 5:
                print(line, file=sys.stderr, flush=True)
                last_print = time.monotonic()
            previous = snap
            if done:
                break
        if tty:
            print(file=sys.stderr, flush=True)
        return phases

    # -- the whole run ----------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        c = self.config
        started = datetime.now(UTC)
        phases: dict[str, Phase] = {}
        try:
            created = await self.setup_call()
            if not self.stop.is_set():
                await self.start_workers()
            if created and c.publish and not self.stop.is_set():
                await self.publish()
                if not any(e["step"] == "publish" for e in self.setup_errors):
                    await self.go_live()
                    await asyncio.sleep(1.0)  # the first frames are on their way
            if not self.stop.is_set() and self.workers:
                await self.schedule_viewers()
                phases = await self.watch()
        finally:
            await self.shutdown()
        return self.report(started, phases)

    async def shutdown(self) -> None:
        everyone = [*self.workers, *([self.publisher] if self.publisher else [])]

        async def close(worker: WorkerProcess) -> None:
            with contextlib.suppress(Exception):
                await worker.call("close", 30)
            await worker.stop(grace=10)

        await asyncio.gather(*(close(w) for w in everyone), return_exceptions=True)

    def report(self, started: datetime, phases: dict[str, Phase]) -> dict[str, Any]:
        c = self.config
        summaries = {name: phase.summary() for name, phase in phases.items()}
        errors = dict(summaries["total"]["errors"]) if "total" in summaries else {}
        load = os.getloadavg()
        failed = bool(errors or self.setup_errors)
        report: dict[str, Any] = {
            "$schema": SCHEMA_ID,
            "version": 1,
            "target": {"url": c.url, "call_cid": c.cid, "loopback": self.loopback},
            "config": {
                "viewers": c.viewers,
                "full_viewers": c.decoders,
                "ramp_per_second": c.ramp,
                "duration_s": c.duration,
                "workers": len(self.workers),
                "publish": (
                    {
                        "codec": c.codec,
                        "width": c.width,
                        "height": c.height,
                        "fps": c.fps,
                        "bitrate_bps": c.bitrate,
                        "file": c.file,
                    }
                    if c.publish
                    else None
                ),
            },
            "started_at": started.isoformat().replace("+00:00", "Z"),
            "ended_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "interrupted": self.interrupted,
            "setup_errors": self.setup_errors,
            "errors": errors,
            "error_examples": {k: v for k, v in self.error_examples.items() if k in errors},
            "phases": summaries,
            "machine": {
                "cpus": os.cpu_count() or 1,
                "load_average": [round(x, 2) for x in load],
                "worker_cpu_seconds": round(sum(self.worker_cpu), 2),
            },
            "exit_code": (
                EXIT_INTERRUPTED if self.interrupted else EXIT_FAILURES if failed else EXIT_OK
            ),
        }
        return report


async def run_loadtest(config: Config) -> dict[str, Any]:
    """Run the load test; SIGINT/SIGTERM stop it early (the report says ``interrupted``)."""
    validate(config)
    if config.call is None:
        config.call = f"livestream:loadtest-{uuid.uuid4().hex[:10]}"
    runner = Run(config)
    loop = asyncio.get_running_loop()

    def interrupt() -> None:
        runner.interrupted = True
        runner.stop.set()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, interrupt)
            installed.append(sig)
    try:
        return await runner.run()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


# -- the command line ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="the Stagecast server (its public URL)")
    parser.add_argument("--api-key", dest="api_key")
    parser.add_argument("--api-secret", dest="api_secret")
    parser.add_argument(
        "--token-file",
        dest="token_file",
        type=Path,
        help="tokens, one a line: the first creates the call and publishes, the others "
        "(or the first) are the viewers'",
    )
    parser.add_argument("--call", help="TYPE:ID (default: a new livestream:loadtest-…)")
    parser.add_argument("--publish", action="store_true", help="publish a synthetic source")
    parser.add_argument("--codec", choices=["vp8", "h264"], default="vp8")
    parser.add_argument("--resolution", type=parse_size, default=(640, 360))
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--bitrate", type=parse_bitrate, default=1_000_000)
    parser.add_argument("--file", help="publish this media file instead (no latency figure)")
    parser.add_argument("--viewers", type=int, required=True)
    parser.add_argument("--ramp", type=float, default=10.0, help="viewers per second (10)")
    parser.add_argument(
        "--duration", type=float, default=30.0, help="seconds from the first join (30)"
    )
    parser.add_argument("--workers", type=int, default=2, help="viewer processes (2)")
    parser.add_argument(
        "--full-viewers", dest="full_viewers", type=int, help="decoding viewers (1-2)"
    )
    parser.add_argument(
        "--i-own-this-server",
        dest="i_own_this_server",
        action="store_true",
        help=f"allow more than {SAFE_REMOTE_VIEWERS} viewers against a non-loopback server",
    )
    parser.add_argument("--json", dest="json_output", action="store_true")
    parser.add_argument("--log-dir", dest="log_dir", type=Path, help="worker logs (a temp dir)")


def config_from_args(args: argparse.Namespace) -> Config:
    width, height = args.resolution
    return Config(
        url=args.url.rstrip("/"),
        viewers=args.viewers,
        api_key=args.api_key,
        api_secret=args.api_secret,
        token_file=args.token_file,
        call=args.call,
        publish=args.publish or bool(args.file),
        codec=args.codec,
        width=width,
        height=height,
        fps=args.fps,
        bitrate=args.bitrate,
        file=args.file,
        ramp=args.ramp,
        duration=args.duration,
        workers=args.workers,
        full_viewers=args.full_viewers,
        i_own_this_server=args.i_own_this_server,
        json_output=args.json_output,
        log_dir=args.log_dir,
    )


def main(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    try:
        report = asyncio.run(run_loadtest(config))
    except UsageError as exc:
        print(f"stagecast loadtest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # before the run's own SIGINT handler was in place
        print("stagecast loadtest: interrupted before the run started", file=sys.stderr)
        return EXIT_INTERRUPTED
    table = summary_table(report)
    if config.json_output:
        print(table, file=sys.stderr)
        print(json.dumps(report, indent=2))
    else:
        print(table)
    return int(report["exit_code"])
