# ruff: noqa: E501
"""SFU fan-out: CPU per forwarded RTP packet, loss and join-to-first-frame as viewers grow.

What runs (all on loopback, every process started here and stopped by PID at the end):

- ``stagecast coordinator`` (SQLite in a temporary directory) and ``stagecast sfu`` (one
  standalone SFU node, uvloop) on the Redis bus (a free Redis database, flushed at the end).
  The SFU is its own process, so its CPU is read from ``/proc/<pid>/stat`` alone.
- one publisher process (``bench/_fanout_worker.py``): a host joins through the coordinator
  and publishes ``SyntheticVideoTrack`` 640x360 @ 30 fps as VP8 (encoder set to about
  1 Mbit/s) plus ``ToneAudioTrack`` as Opus; the call goes live.
- ``--viewer-procs`` viewer processes: thin viewers, each one join through the coordinator
  (``POST …/join``), the signalling WebSocket and a subscribe, counting RTP at the socket
  without decrypting or decoding (see ``_fanout_worker.py``).

For each step N (viewers joined at ``--join-rate`` per second, then ``--settle`` s, then a
``--step-seconds`` window), it reports: viewers connected and receiving, SFU CPU % (100 = one
core), SFU µs of CPU per forwarded packet (SFU CPU seconds / the delta of the node's
``stagecast_sfu_forwarded_packets_total``), forwarded packets/s, viewer loss % (sequence
gaps), the incoming stream (fps and Mbit/s as the viewers see it; frames the publisher
produced), join-to-first-video-packet p50/p95 of the step's joiners, join-to-first-decoded
frame of ``--probes`` decoding viewers joined after the window, SFU RSS, and the CPU of
every other process and of the whole machine. It stops after the step where the SFU reaches
``--cpu-limit`` % of a core or loss exceeds ``--loss-limit`` %, or at ``--max-viewers``.

Baseline in the same run: aiortc's ``MediaRelay`` (decode once, re-encode per viewer;
``bench/_fanout_relay.py``) at ``--relay-steps`` viewers, with the same publisher and thin
viewers; its forwarded packets are what the viewers received.

    .venv/bin/python bench/fanout.py                              # the full ladder
    .venv/bin/python bench/fanout.py --max-viewers 50 --step-seconds 5 --relay-steps 2
    .venv/bin/python bench/fanout.py --json > fanout.json
    .venv/bin/python bench/fanout.py --py-spy /tmp/fanout-prof     # SFU flame graph per step
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._machine import describe, format_machine  # noqa: E402
from stagecast.loadtest.process import WorkerProcess  # noqa: E402

PYTHON = str(ROOT / ".venv" / "bin" / "python")
STAGECAST = str(ROOT / ".venv" / "bin" / "stagecast")
WORKER = str(ROOT / "bench" / "_fanout_worker.py")
RELAY = str(ROOT / "bench" / "_fanout_relay.py")
API_KEY = "bench-fanout"
CALL_TYPE = "livestream"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
DEFAULT_STEPS = [10, 25, 50, 100, 150, 200, 250, 300, 350, 400, 500, 600, 800, 1000]

QUIET = False


def log(message: str) -> None:
    if not QUIET:
        print(message, file=sys.stderr, flush=True)


# -- /proc ------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def runqueue_seconds(pid: int) -> float:
    """Seconds the process's threads were runnable but waiting for a CPU (schedstat)."""
    total = 0
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[1])
    return total / 1e9


def rss_mb(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20
    except OSError:
        return 0.0


def machine_jiffies() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


def udp_rcvbuf_errors() -> int:
    """Datagrams the kernel dropped because a receiver's socket buffer was full."""
    lines = [
        ln.split()
        for ln in Path("/proc/net/snmp").read_text().splitlines()
        if ln.startswith("Udp:")
    ]
    if len(lines) < 2:
        return 0
    row = dict(zip(lines[0][1:], lines[1][1:], strict=False))
    return int(row.get("RcvbufErrors", 0))


def pids_named(name: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry}/comm").read_text().strip() == name:
                    found.append(int(entry))
    return found


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(1000 * value, 1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- processes --------------------------------------------------------------------------------


class Worker(WorkerProcess):
    """One ``_fanout_worker.py`` process, driven by JSON lines (``stagecast.loadtest.process``)."""

    def __init__(self, name: str, logdir: Path) -> None:
        super().__init__(name, [PYTHON, WORKER], logdir / f"{name}.log")
        self.viewers = 0


class Service:
    """A server subprocess (coordinator, SFU node, relay)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.logfile = logdir / f"{name}.log"
        with self.logfile.open("wb") as out:
            self.process = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wait_ready(self, url: str, path: str = "/readyz") -> None:
        import httpx

        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.process.returncode}:\n"
                        + self.logfile.read_text()[-3000:]
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(url + path)).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready:\n" + self.logfile.read_text()[-3000:])

    async def stop(self, sig: int = signal.SIGTERM, grace: float = 15) -> None:
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)
        try:
            await asyncio.to_thread(self.process.wait, grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await asyncio.to_thread(self.process.wait, 5)


# -- the run ----------------------------------------------------------------------------------


def pick_redis_db(base: str, wanted: int | None) -> int:
    import redis

    if wanted is not None:
        return wanted
    client = redis.Redis.from_url(f"{base}/0")
    try:
        count = int(client.config_get("databases").get("databases", 16))
        keyspace = client.info("keyspace")
        empty = [db for db in range(1, count) if f"db{db}" not in keyspace]
        if not empty:
            raise SystemExit("no empty Redis database; pass --redis-db")
        db = random.choice(empty)  # other benchmarks may pick the highest one at the same time
        claim = redis.Redis.from_url(f"{base}/{db}")
        claim.set("stagecast-bench-fanout", str(os.getpid()), ex=7200)
        claim.close()
        return db
    finally:
        client.close()


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="stagecast-fanout-"))
        self.secret = secrets.token_urlsafe(48)
        self.services: list[Service] = []
        self.workers: list[Worker] = []
        self.call_id = f"fanout-{uuid.uuid4().hex[:8]}"
        self.call_path = f"/v1/calls/{CALL_TYPE}/{self.call_id}"
        self.node_id = f"sfu-fanout-{uuid.uuid4().hex[:6]}"
        self.redis_db: int | None = None
        self.user_count = 0
        self.rows: dict[str, list[dict[str, Any]]] = {}

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STAGECAST_")}
        env.update(
            STAGECAST_REDIS_URL=f"{self.args.redis}/{self.redis_db}",
            STAGECAST_API_KEY=API_KEY,
            STAGECAST_API_SECRET=self.secret,
            STAGECAST_LOG_LEVEL="WARNING",
            STAGECAST_DATA_DIR=str(self.tmp / "data"),
            STAGECAST_SFU_CAPACITY="100000",
            STAGECAST_SFU_ANNOUNCED_ADDRESS="127.0.0.1",
            STAGECAST_NODE_ID=self.node_id,
            PYTHONUNBUFFERED="1",
        )
        return env

    def token(self, user: str) -> str:
        return self.keyring.user_token(user, ttl_seconds=7200)

    def viewer_tokens(self, count: int) -> list[str]:
        tokens = []
        for _ in range(count):
            self.user_count += 1
            tokens.append(self.token(f"viewer-{self.user_count}"))
        return tokens

    # -- set-up -----------------------------------------------------------------------------

    async def start_stagecast(self) -> None:
        from stagecast.settings import ApiKey
        from stagecast.tokens import KeyRing

        self.keyring = KeyRing([ApiKey(API_KEY, self.secret)])
        self.redis_db = pick_redis_db(self.args.redis, self.args.redis_db)
        (self.tmp / "data").mkdir()
        log(f"Redis db {self.redis_db}; logs in {self.tmp}")
        upgrade = await asyncio.create_subprocess_exec(
            STAGECAST, "db", "upgrade", env=self.env(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await upgrade.communicate()
        if upgrade.returncode:
            raise RuntimeError("stagecast db upgrade failed:\n" + output.decode()[-3000:])
        api_port, sfu_port = free_port(), free_port()
        self.api_url = f"http://127.0.0.1:{api_port}"
        self.sfu_url = f"http://127.0.0.1:{sfu_port}"
        self.coordinator = Service(
            "coordinator", [STAGECAST, "coordinator", "--port", str(api_port)], self.env(), self.tmp
        )
        self.services.append(self.coordinator)
        self.sfu = Service(
            "sfu",
            [STAGECAST, "sfu", "--port", str(sfu_port), "--public-url", self.sfu_url],
            {**self.env(), "STAGECAST_LOG_LEVEL": self.args.sfu_log_level},
            self.tmp,
        )
        self.services.append(self.sfu)
        await self.coordinator.wait_ready(self.api_url)
        await self.sfu.wait_ready(self.sfu_url)
        log(
            f"coordinator pid {self.coordinator.pid} {self.api_url}; SFU pid {self.sfu.pid} {self.sfu_url}"
        )

        import httpx

        host = {"authorization": f"Bearer {self.token('bench-host')}"}
        async with httpx.AsyncClient(base_url=self.api_url, timeout=10) as http:
            created = await http.post(self.call_path, json={}, headers=host)
            if created.status_code >= 300:
                raise RuntimeError(f"create call: {created.status_code} {created.text}")
        await asyncio.sleep(2.5)  # the node's first heartbeats reach the registry
        self.publisher = await self.start_worker("publisher", mode="sfu")
        await self.publisher.call("publish", token=self.token("bench-host"), **self.media())
        async with httpx.AsyncClient(base_url=self.api_url, timeout=10) as http:
            live = await http.post(self.call_path + "/go-live", json={}, headers=host)
            if live.status_code >= 300:
                raise RuntimeError(f"go-live: {live.status_code} {live.text}")
        log(f"call {CALL_TYPE}:{self.call_id} is live; publisher pid {self.publisher.pid}")
        self.viewer_workers = [
            await self.start_worker(f"viewers-{i}", mode="sfu")
            for i in range(self.args.viewer_procs)
        ]

    def media(self) -> dict[str, Any]:
        return {"width": 640, "height": 360, "fps": 30, "bitrate": self.args.video_bitrate}

    async def start_worker(self, name: str, mode: str, **config: Any) -> Worker:
        worker = Worker(name, self.tmp)
        await worker.start(self.env())
        self.workers.append(worker)
        await worker.call(
            "init",
            mode=mode,
            api_url=getattr(self, "api_url", None),
            call_path=self.call_path,
            **config,
        )
        return worker

    async def metrics(self, url: str) -> dict[str, float]:
        import httpx

        async with httpx.AsyncClient(timeout=5) as http:
            text = (await http.get(url + "/metrics")).text
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("stagecast_sfu_"):
                name, _, value = line.rpartition(" ")
                values[name.split("{", 1)[0]] = float(value)
        return values

    # -- measuring ----------------------------------------------------------------------------

    async def snapshot(
        self, viewer_workers: list[Worker], server: Service, metrics_url: str | None
    ) -> dict[str, Any]:
        stats = await asyncio.gather(*(w.call("stats") for w in viewer_workers))
        pub = await self.current_publisher.call("publisher_stats")
        snap = {
            "at": time.monotonic(),
            "cpu": {
                "server": cpu_seconds(server.pid),
                "publisher": cpu_seconds(self.current_publisher.pid),
                "viewers": sum(cpu_seconds(w.pid) for w in viewer_workers),
                "coordinator": cpu_seconds(self.coordinator.pid) if self.coordinator else 0.0,
                "redis": sum(cpu_seconds(p) for p in pids_named("redis-server")),
            },
            "machine": machine_jiffies(),
            "server_wait": runqueue_seconds(server.pid),
            "udp_drops": udp_rcvbuf_errors(),
            "viewers": {
                key: sum(s[key] for s in stats)
                for key in (
                    "viewers",
                    "receiving",
                    "video_packets",
                    "audio_packets",
                    "video_gaps",
                    "audio_gaps",
                    "video_bytes",
                    "markers",
                )
            },
            "publisher": pub,
            "metrics": await self.metrics(metrics_url) if metrics_url else {},
        }
        return snap

    def summarize(self, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        secs = after["at"] - before["at"]
        cpu = {k: 100 * (after["cpu"][k] - before["cpu"][k]) / secs for k in after["cpu"]}
        busy = after["machine"][0] - before["machine"][0]
        total = after["machine"][1] - before["machine"][1]
        cpu["machine"] = 100 * (os.cpu_count() or 1) * busy / total if total else 0.0
        # processes this benchmark did not start (other work on a shared machine)
        cpu["other"] = max(
            0.0,
            cpu["machine"]
            - sum(cpu[k] for k in ("server", "publisher", "viewers", "coordinator", "redis")),
        )
        dv = {k: after["viewers"][k] - before["viewers"][k] for k in after["viewers"]}
        received = dv["video_packets"] + dv["audio_packets"]
        gaps = dv["video_gaps"] + dv["audio_gaps"]
        viewers = after["viewers"]["viewers"]
        m0, m1 = before["metrics"], after["metrics"]
        forwarded = (
            m1.get("stagecast_sfu_forwarded_packets_total", 0)
            - m0.get("stagecast_sfu_forwarded_packets_total", 0)
            if m1
            else received
        )
        incoming = (
            m1.get("stagecast_sfu_received_packets_total", 0)
            - m0.get("stagecast_sfu_received_packets_total", 0)
            if m1
            else None
        )
        server_cpu_s = after["cpu"]["server"] - before["cpu"]["server"]
        p0, p1 = before["publisher"], after["publisher"]
        pub_secs = p1["at"] - p0["at"]
        return {
            "seconds": round(secs, 2),
            "viewers": viewers,
            "receiving": after["viewers"]["receiving"],
            "server_cpu_percent": round(cpu["server"], 1),
            # runnable but not running: > 0 means the SFU was short of CPU (shared cores)
            "server_runqueue_wait_percent": round(
                100 * (after["server_wait"] - before["server_wait"]) / secs, 1
            ),
            "us_per_forwarded_packet": round(1e6 * server_cpu_s / forwarded, 2)
            if forwarded
            else None,
            "us_per_received_packet_at_viewers": round(1e6 * server_cpu_s / received, 2)
            if received
            else None,
            "forwarded_packets": int(forwarded),
            "forwarded_per_second": round(forwarded / secs, 1),
            "received_at_viewers_per_second": round(received / secs, 1),
            "incoming_packets_per_second": None if incoming is None else round(incoming / secs, 1),
            "loss_percent": round(100 * gaps / (received + gaps), 3) if received + gaps else None,
            "kernel_udp_drops": after["udp_drops"] - before["udp_drops"],
            "incoming_fps_at_viewers": round(dv["markers"] / viewers / secs, 1)
            if viewers
            else None,
            "incoming_video_mbps_at_viewers": round(8 * dv["video_bytes"] / viewers / secs / 1e6, 3)
            if viewers
            else None,
            "publisher_fps_produced": round((p1["frames"] - p0["frames"]) / pub_secs, 1),
            "publisher_video_mbps_sent": round(
                8 * (p1["video_bytes_sent"] - p0["video_bytes_sent"]) / pub_secs / 1e6, 3
            ),
            "cpu_percent": {k: round(v, 1) for k, v in cpu.items()},
        }

    async def join(self, workers: list[Worker], add: int) -> dict[str, Any]:
        """Join ``add`` viewers spread over ``workers`` at ``--join-rate`` per second."""
        shares = [0] * len(workers)
        order = sorted(range(len(workers)), key=lambda i: workers[i].viewers)
        for k in range(add):
            shares[order[k % len(workers)]] += 1
        rate = self.args.join_rate / max(1, sum(1 for s in shares if s))
        calls = []
        for worker, share in zip(workers, shares, strict=True):
            if not share:
                continue
            names = [f"v{worker.viewers + j}" for j in range(share)]
            tokens = self.viewer_tokens(share) if self.mode == "sfu" else []
            worker.viewers += share
            calls.append(
                worker.call(
                    "join", names=names, tokens=tokens, rate=rate, timeout=15, call_timeout=600
                )
            )
        started = time.monotonic()
        replies = await asyncio.gather(*calls)
        delays = [d for r in replies for d in r["first_packet"]]
        errors = [e for r in replies for e in r["errors"]]
        result = {
            "joined": sum(r["joined"] for r in replies),
            "join_errors": sum(r["error_count"] for r in replies),
            "no_first_packet": sum(r["no_packet"] for r in replies),
            "join_seconds": round(time.monotonic() - started, 1),
            "first_packet_ms": {
                "p50": ms(percentile(delays, 0.5)),
                "p95": ms(percentile(delays, 0.95)),
                "max": ms(max(delays) if delays else None),
            },
        }
        for worker, reply in zip(
            [w for w, s in zip(workers, shares, strict=True) if s], replies, strict=True
        ):
            worker.viewers -= reply["error_count"]
        phases: dict[str, list[float]] = {}
        for r in replies:
            for phase, values in (r.get("phases") or {}).items():
                phases.setdefault(phase, []).extend(values)
        # when each phase of a join ended, after the join request (p50/p95, ms)
        result["phases_ms"] = {
            phase: [ms(percentile(v, 0.5)), ms(percentile(v, 0.95))] for phase, v in phases.items()
        }
        result["phases_ms"]["first_packet"] = [
            result["first_packet_ms"]["p50"],
            result["first_packet_ms"]["p95"],
        ]
        if errors:
            result["error_samples"] = errors[:3]
        return result

    async def probe(self, workers: list[Worker]) -> dict[str, Any]:
        if not self.args.probes:
            return {}
        worker = min(workers, key=lambda w: w.viewers)
        tokens = self.viewer_tokens(self.args.probes) if self.mode == "sfu" else []
        reply = await worker.call(
            "probe", count=self.args.probes, tokens=tokens, timeout=10, call_timeout=60
        )
        results = reply["results"]
        frames = [r["first_frame"] for r in results if "first_frame" in r]
        packets = [r["first_packet"] for r in results if r.get("first_packet") is not None]
        out: dict[str, Any] = {
            "count": len(results),
            "failed": sum(1 for r in results if "error" in r),
            "first_packet_ms": {
                "p50": ms(percentile(packets, 0.5)),
                "max": ms(max(packets) if packets else None),
            },
            "first_frame_ms": {
                "p50": ms(percentile(frames, 0.5)),
                "max": ms(max(frames) if frames else None),
            },
            "first_frame_all_ms": [ms(f) for f in frames],
        }
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            out["error_samples"] = errors[:2]
        return out

    async def window(
        self, workers: list[Worker], server: Service, metrics_url: str | None, label: str
    ) -> dict[str, Any]:
        before = await self.snapshot(workers, server, metrics_url)
        spy = self.start_py_spy(server, label)
        end = before["at"] + self.args.step_seconds
        last = before
        while time.monotonic() < end - 0.1:
            await asyncio.sleep(min(self.args.progress_seconds, max(0.0, end - time.monotonic())))
            now = await self.snapshot(workers, server, metrics_url)
            part = self.summarize(last, now)
            log(
                f"    {label}: {now['at'] - before['at']:4.1f}/{self.args.step_seconds:g} s  "
                f"server CPU {part['server_cpu_percent']:5.1f}% (waiting {part['server_runqueue_wait_percent']:.0f}%)  "
                f"{part['forwarded_per_second']:8.0f} pkt/s out  loss {part['loss_percent']}%  "
                f"machine {part['cpu_percent']['machine']:.0f}%"
            )
            last = now
        row = self.summarize(before, last)
        row["rss_mb"] = round(rss_mb(server.pid), 1)
        if spy is not None:
            await asyncio.to_thread(spy.wait, 30)
        return row

    def start_py_spy(
        self, server: Service, label: str, seconds: float | None = None
    ) -> subprocess.Popen[bytes] | None:
        if not self.args.py_spy:
            return None
        binary = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
        out = Path(self.args.py_spy)
        out.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen(
            [
                binary, "record", "--pid", str(server.pid), "--rate", "250", "--nonblocking",
                "--duration", str(max(1, int(seconds or self.args.step_seconds - 1))),
                "--format", self.args.py_spy_format,
                "--output", str(out / f"{label.replace(' ', '-').replace('=', '')}.{'svg' if self.args.py_spy_format == 'flamegraph' else 'txt'}"),
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    async def ladder(
        self,
        steps: list[int],
        workers: list[Worker],
        server: Service,
        metrics_url: str | None,
        name: str,
    ) -> list[dict[str, Any]]:
        rows = self.rows.setdefault(name, [])  # kept when interrupted
        current = 0
        for n in steps:
            add = n - current
            log(f"{name}: N={n}: joining {add} viewers at {self.args.join_rate:g}/s")
            spy = self.start_py_spy(server, f"{name} join N={n}", add / self.args.join_rate + 2)
            joined = await self.join(workers, add)
            if spy is not None:
                await asyncio.to_thread(spy.wait, 60)
            current = sum(w.viewers for w in workers)
            log(
                f"  joined {joined['joined']} (errors {joined['join_errors']}, no first packet "
                f"{joined['no_first_packet']}) in {joined['join_seconds']} s"
                + (f" {joined['error_samples']}" if joined.get("error_samples") else "")
                + "; first packet "
                f"p50/p95 {joined['first_packet_ms']['p50']}/{joined['first_packet_ms']['p95']} ms"
            )
            if joined.get("phases_ms"):
                log(
                    "  join phases done at (p50/p95 ms after the request): "
                    + ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in joined["phases_ms"].items())
                )
            await asyncio.sleep(self.args.settle)
            row = await self.window(workers, server, metrics_url, f"{name} N={n}")
            row["target_viewers"] = n
            row["join"] = joined
            row["probe"] = await self.probe(workers)
            rows.append(row)
            log("  " + format_row(row))
            reasons = []
            if row["server_cpu_percent"] >= self.args.cpu_limit:
                reasons.append(
                    f"server CPU {row['server_cpu_percent']}% >= {self.args.cpu_limit:g}%"
                )
            if (row["loss_percent"] or 0) > self.args.loss_limit:
                reasons.append(f"loss {row['loss_percent']}% > {self.args.loss_limit:g}%")
            if row["receiving"] < 0.9 * n:
                reasons.append(f"only {row['receiving']} of {n} viewers receive media")
            if reasons:
                row["stopped_because"] = "; ".join(reasons)
                log(f"  stopping {name}: " + row["stopped_because"])
                break
        return rows

    async def run_stagecast(self) -> list[dict[str, Any]]:
        self.mode = "sfu"
        await self.start_stagecast()
        self.current_publisher = self.publisher
        steps = [n for n in self.args.steps if n <= self.args.max_viewers]
        try:
            return await self.ladder(
                steps, self.viewer_workers, self.sfu, self.sfu_url, "stagecast"
            )
        finally:
            log("stagecast: closing viewers")
            await asyncio.gather(*(w.stop() for w in [*self.viewer_workers, self.publisher]))

    async def run_relay(self) -> list[dict[str, Any]]:
        self.mode = "relay"
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        relay = Service(
            "relay",
            [PYTHON, RELAY, "--port", str(port), "--video-bitrate", str(self.args.video_bitrate)],
            self.env(),
            self.tmp,
        )
        self.services.append(relay)
        try:
            await relay.wait_ready(url, "/healthz")
            log(f"MediaRelay server pid {relay.pid} at {url}")
            publisher = await self.start_worker("relay-publisher", mode="relay", relay_url=url)
            await publisher.call("publish", **self.media())
            self.current_publisher = publisher
            viewers = await self.start_worker("relay-viewers", mode="relay", relay_url=url)
            await asyncio.sleep(1)
            try:
                return await self.ladder(
                    self.args.relay_steps, [viewers], relay, None, "mediarelay"
                )
            finally:
                await asyncio.gather(viewers.stop(), publisher.stop())
        finally:
            await relay.stop()

    async def tear_down(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.workers), return_exceptions=True)
        # the SFU drains on SIGTERM (grace period); its viewers are gone already
        await asyncio.gather(*(s.stop() for s in reversed(self.services)), return_exceptions=True)
        if self.redis_db is not None:
            import redis

            with contextlib.suppress(Exception):
                client = redis.Redis.from_url(f"{self.args.redis}/{self.redis_db}")
                client.flushdb()
                client.close()
        if self.args.keep_logs:
            log(f"logs kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


# -- output -----------------------------------------------------------------------------------


def format_row(row: dict[str, Any]) -> str:
    cpu = row["cpu_percent"]
    probe = row.get("probe") or {}
    return (
        f"N={row['viewers']} recv {row['receiving']}  server {row['server_cpu_percent']}%  "
        f"{row['us_per_forwarded_packet']} us/pkt  {row['forwarded_per_second']:.0f} pkt/s  "
        f"loss {row['loss_percent']}%  in {row['incoming_fps_at_viewers']} fps "
        f"{row['incoming_video_mbps_at_viewers']} Mbit/s  join->1st pkt p50/p95 "
        f"{row['join']['first_packet_ms']['p50']}/{row['join']['first_packet_ms']['p95']} ms  "
        f"decoded 1st frame max {(probe.get('first_frame_ms') or {}).get('max')} ms  "
        f"RSS {row['rss_mb']} MB  CPU viewers {cpu['viewers']:.0f}% machine {cpu['machine']:.0f}%"
    )


def table(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'N':>5} {'recv':>5} {'srv%':>6} {'us/pkt':>7} {'pkt/s':>8} {'loss%':>6} {'kdrop':>6} "
        f"{'fps':>5} {'Mbit/s':>6} {'pubfps':>6} {'1stpkt p50/p95 ms':>18} {'1stframe p50/max ms':>20} "
        f"{'RSS MB':>7} {'srvwait%':>8} {'pub%':>5} {'view%':>6} {'coord%':>6} {'other%':>6} {'mach%':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        cpu = r["cpu_percent"]
        probe = r.get("probe") or {}
        ff = probe.get("first_frame_ms") or {}
        fp = r["join"]["first_packet_ms"]
        lines.append(
            f"{r['viewers']:>5} {r['receiving']:>5} {r['server_cpu_percent']:>6.1f} "
            f"{_f(r['us_per_forwarded_packet'], 7, 1)} {r['forwarded_per_second']:>8.0f} "
            f"{_f(r['loss_percent'], 6, 2)} {r['kernel_udp_drops']:>6} "
            f"{_f(r['incoming_fps_at_viewers'], 5, 1)} {_f(r['incoming_video_mbps_at_viewers'], 6, 2)} "
            f"{r['publisher_fps_produced']:>6.1f} "
            f"{(str(fp['p50']) + '/' + str(fp['p95'])):>18} "
            f"{(str(ff.get('p50')) + '/' + str(ff.get('max'))):>20} "
            f"{r['rss_mb']:>7.1f} {r.get('server_runqueue_wait_percent', 0):>8.1f} {cpu['publisher']:>5.0f} {cpu['viewers']:>6.0f} "
            f"{cpu['coordinator']:>6.0f} {cpu['other']:>6.0f} {cpu['machine']:>6.0f}"
        )
    return "\n".join(lines)


def _f(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def print_report(report: dict[str, Any]) -> None:
    print(format_machine(report["machine"]))
    a = report["settings"]
    print(
        f"\nStagecast: `stagecast sfu` (standalone node, Redis bus) + `stagecast coordinator` "
        f"(SQLite); publisher: synthetic VP8 640x360@30 (~{a['video_bitrate'] / 1e6:g} Mbit/s) "
        f"+ Opus; thin viewers in {a['viewer_procs']} processes, joined at {a['join_rate']:g}/s "
        f"through POST join + WebSocket; {a['step_seconds']:g} s windows after {a['settle']:g} s "
        f"settling; {a['probes']} decoding viewers per step."
    )
    print(
        "CPU % is of one core (the machine has "
        f"{os.cpu_count()}). us/pkt = server CPU s / forwarded packets (Stagecast: the node's "
        "forwarded_packets counter; MediaRelay: packets the viewers received). loss% = sequence "
        "gaps at viewers; kdrop = datagrams the kernel dropped on full receive buffers; "
        "fps, Mbit/s = the stream as viewers get it; other% = processes this benchmark did not start; srvwait% = time the server was runnable but waiting for a CPU; pubfps = frames the publisher produced; "
        "1stpkt = join request -> first video RTP packet (the step's joiners); 1stframe = "
        "join request -> first decoded frame (decoding viewers joined after the window).\n"
    )
    print("Stagecast RTP forwarding:")
    print(table(report["stagecast"]))
    if report["stagecast"] and "stopped_because" in report["stagecast"][-1]:
        print(f"  stopped: {report['stagecast'][-1]['stopped_because']}")
    if report.get("mediarelay"):
        print("\naiortc MediaRelay (decode once, re-encode per viewer):")
        print(table(report["mediarelay"]))
        if "stopped_because" in report["mediarelay"][-1]:
            print(f"  stopped: {report['mediarelay'][-1]['stopped_because']}")
    s = report.get("summary", {})
    if s:
        print()
        for key, value in s.items():
            print(f"{key}: {value}")


def summary(report: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sc = [r for r in report["stagecast"] if r["us_per_forwarded_packet"]]
    healthy = [
        r for r in sc
        if r["server_cpu_percent"] < args.cpu_limit and (r["loss_percent"] or 0) <= args.loss_limit
    ]  # fmt: skip
    if sc:
        best = min(sc, key=lambda r: r["us_per_forwarded_packet"])
        out["stagecast_us_per_packet_range"] = (
            f"{min(r['us_per_forwarded_packet'] for r in sc):.1f}-"
            f"{max(r['us_per_forwarded_packet'] for r in sc):.1f} us (best at N={best['viewers']})"
        )
        largest = max(sc, key=lambda r: r["viewers"])
        out["stagecast_largest_step"] = (
            f"N={largest['viewers']}: {largest['us_per_forwarded_packet']} us/pkt, server "
            f"{largest['server_cpu_percent']}%, machine {largest['cpu_percent']['machine']}%"
        )
    if healthy:
        out["stagecast_largest_healthy_step"] = max(r["viewers"] for r in healthy)
    mr = [r for r in report.get("mediarelay") or [] if r["us_per_forwarded_packet"]]
    if mr and sc:
        relay = min(r["us_per_forwarded_packet"] for r in mr)
        at = max(healthy or sc, key=lambda r: r["viewers"])
        ours = at["us_per_forwarded_packet"]
        small = min(sc, key=lambda r: r["viewers"])
        out["ratio_us_per_packet_mediarelay_over_stagecast"] = (
            f"{relay / ours:.0f}x (MediaRelay best {relay:.0f} us / Stagecast {ours:.1f} us at "
            f"N={at['viewers']}); at small N: {relay / small['us_per_forwarded_packet']:.0f}x "
            f"(Stagecast {small['us_per_forwarded_packet']:.1f} us at N={small['viewers']})"
        )
    joins = [
        d
        for r in report["stagecast"]
        for d in [r["join"]["first_packet_ms"]["p95"]]
        if d is not None
    ]
    if joins:
        out["stagecast_join_to_first_packet_p95_worst_step_ms"] = max(joins)
    frames = [
        f
        for r in report["stagecast"]
        for f in (r.get("probe") or {}).get("first_frame_all_ms", [])
        if f is not None
    ]
    if frames:
        out["stagecast_join_to_first_decoded_frame_ms"] = (
            f"p50 {percentile(frames, 0.5)} p95 {percentile(frames, 0.95)} (n={len(frames)})"
        )
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ints = lambda text: [int(x) for x in text.split(",") if x.strip()]  # noqa: E731
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-viewers", type=int, default=1000, help="stop the ladder here")
    parser.add_argument(
        "--steps", type=ints, default=DEFAULT_STEPS, help="viewer counts, comma-separated"
    )
    parser.add_argument(
        "--step-seconds", type=float, default=10.0, help="measurement window per step"
    )
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds between joins and the window"
    )
    parser.add_argument("--progress-seconds", type=float, default=2.5)
    parser.add_argument("--viewer-procs", type=int, default=3, help="viewer processes")
    parser.add_argument("--join-rate", type=float, default=10.0, help="viewer joins per second")
    parser.add_argument("--probes", type=int, default=3, help="decoding viewers per step")
    parser.add_argument("--video-bitrate", type=int, default=1_000_000)
    parser.add_argument(
        "--cpu-limit", type=float, default=90.0, help="server CPU %% that ends the ladder"
    )
    parser.add_argument(
        "--loss-limit", type=float, default=1.0, help="viewer loss %% that ends the ladder"
    )
    parser.add_argument(
        "--relay-steps", type=ints, default=[2, 4, 8], help="MediaRelay viewer counts"
    )
    parser.add_argument("--no-relay", action="store_true", help="skip the MediaRelay baseline")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis, no db number")
    parser.add_argument("--redis-db", type=int, default=None)
    parser.add_argument("--py-spy", metavar="DIR", help="py-spy record the server in every window")
    parser.add_argument(
        "--py-spy-format", default="flamegraph", choices=["flamegraph", "raw", "speedscope"]
    )
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--sfu-log-level", default="WARNING")
    parser.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.viewer_procs < 1 or args.step_seconds <= 0:
        parser.error("--viewer-procs and --step-seconds must be positive")
    return args


async def amain(args: argparse.Namespace) -> int:
    machine = describe(redis_url=f"{args.redis}/0")
    log(format_machine(machine))
    bench = Bench(args)
    bench.coordinator = None  # type: ignore[assignment]
    main_task = asyncio.current_task()
    assert main_task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, main_task.cancel)
    report: dict[str, Any] = {
        "benchmark": "sfu-fanout",
        "machine": machine,
        "settings": {
            "server": "stagecast sfu (standalone node process, Redis bus); stagecast coordinator (SQLite)",
            "video": "SyntheticVideoTrack VP8 640x360 @ 30 fps",
            "audio": "ToneAudioTrack Opus 48 kHz",
            "video_bitrate": args.video_bitrate,
            "viewer_procs": args.viewer_procs,
            "viewer_mode": "thin: RTP counted at the ICE socket, not decrypted or decoded",
            "join_rate": args.join_rate,
            "step_seconds": args.step_seconds,
            "settle": args.settle,
            "probes": args.probes,
            "cpu_limit": args.cpu_limit,
            "loss_limit": args.loss_limit,
        },
    }
    try:
        await bench.run_stagecast()
        # the SFU and coordinator are not needed by the baseline: stop them (their CPU too)
        await asyncio.gather(bench.sfu.stop(), bench.coordinator.stop())
        if not args.no_relay and args.relay_steps:
            await bench.run_relay()
    except asyncio.CancelledError:
        log("interrupted: stopping every process")
        report["interrupted"] = True
    finally:
        await asyncio.shield(bench.tear_down())
    report["stagecast"] = bench.rows.get("stagecast", [])
    if bench.rows.get("mediarelay"):
        report["mediarelay"] = bench.rows["mediarelay"]
    report["summary"] = summary(report, args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 130 if report.get("interrupted") else 0


def main(argv: list[str] | None = None) -> int:
    global QUIET
    args = parse_args(argv)
    QUIET = args.quiet
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
