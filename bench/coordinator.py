"""Join throughput and latency of the coordinator against PostgreSQL.

Creates a fresh PostgreSQL database (dropped at the end), runs ``stagecast db upgrade``,
starts ``stagecast coordinator`` as subprocess(es) on free ports, registers an SFU node
heartbeat on the Redis bus (the real registry contract; refreshed during the run), creates a
live livestream call, then, for each client count N, measures:

- ``GET /healthz`` requests/s: the cost of the HTTP stack alone (the baseline);
- ``POST /v1/calls/livestream/{id}/join`` joins/s and p50/p95/p99 latency, each of the N
  clients a distinct viewer with its own ``httpx.AsyncClient`` (one keep-alive connection)
  joining in a loop for ``--duration`` seconds.

The N clients may be spread over several client processes (``--client-procs``). The CPU of
the coordinator(s), the client processes, PostgreSQL and Redis is reported per phase, so a
saturated load generator (or database) is visible. ``stagecast coordinator`` has no
``--workers`` flag, so ``--workers K`` starts K coordinator processes on K ports and spreads
the clients over them round-robin.

    .venv/bin/python bench/coordinator.py                      # N = 1, 10, 50, 100; 10 s each
    .venv/bin/python bench/coordinator.py --clients 50 --duration 5 --client-procs 2 --json
    .venv/bin/python bench/coordinator.py --workers 2 --py-spy /tmp/prof   # flame graphs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._machine import describe, format_machine  # noqa: E402

API_KEY = "bench-key"
CALL_TYPE = "livestream"
NODE_TTL_SECONDS = 6.0
NODE_REFRESH_SECONDS = 2.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# CPU accounting from /proc (psutil when installed is not needed for this).


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def pids_named(name: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == name:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])
    return total - idle, total


def postgres_backends(database: str) -> list[int]:
    """The PostgreSQL backends serving ``database`` (other databases' work is not ours)."""
    pids = []
    for pid in pids_named("postgres"):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if f" {database} " in title:
            pids.append(pid)
    return pids


class CpuMeter:
    """CPU % (100 = one core) of process groups between ``start`` and ``stop``."""

    def __init__(self, groups: dict[str, list[int]], database: str) -> None:
        self.groups = groups
        self.database = database

    def _sample(self) -> dict[str, dict[int, float]]:
        return {
            name: {pid: proc_cpu_seconds(pid) for pid in pids} for name, pids in self.groups.items()
        }

    def start(self) -> None:
        self.groups["postgres"] = postgres_backends(self.database)
        self.before = self._sample()
        self.machine_before = machine_busy()
        self.wall = time.perf_counter()

    def stop(self) -> dict[str, float]:
        # Backends may have been started meanwhile (the pool grows): count them whole.
        self.groups["postgres"] = sorted(
            set(self.groups["postgres"]) | set(postgres_backends(self.database))
        )
        after = self._sample()
        elapsed = time.perf_counter() - self.wall
        busy, total = machine_busy()
        result = {}
        for name, pids in after.items():
            before = self.before.get(name, {})
            seconds = sum(
                cpu - before.get(pid, 0.0)
                for pid, cpu in pids.items()
                if cpu > 0  # gone: 0
            )
            result[name] = round(100 * max(0.0, seconds) / elapsed, 1)
        cpus = os.cpu_count() or 1
        d_total = total - self.machine_before[1]
        result["machine"] = round(
            100 * cpus * (busy - self.machine_before[0]) / d_total if d_total else 0.0, 1
        )
        return result


# The load generator (runs in client processes).


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def _client_loop(
    url: str,
    method: str,
    path: str,
    token: str | None,
    start_at: float,
    end_at: float,
    latencies: list[float],
    errors: Counter[str],
    counter: list[int],
) -> float:
    import httpx

    headers = {"authorization": f"Bearer {token}"} if token else {}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=30.0
    ) as http:
        # Open the keep-alive connection before the clock starts.
        with contextlib.suppress(httpx.HTTPError):
            await http.get("/healthz")
        await asyncio.sleep(max(0.0, start_at - time.time()))
        last = time.time()
        while time.time() < end_at:
            started = time.perf_counter()
            try:
                response = await http.request(method, path, json={} if method == "POST" else None)
            except httpx.HTTPError as exc:
                errors[f"exception:{type(exc).__name__}"] += 1
                await asyncio.sleep(0.01)
                continue
            elapsed = time.perf_counter() - started
            last = time.time()
            if response.status_code >= 400:
                try:
                    code = response.json()["error"]["code"]
                except (ValueError, KeyError, TypeError):
                    code = "?"
                errors[f"{response.status_code} {code}"] += 1
            else:
                latencies.append(elapsed)
                counter[0] += 1
        return last


async def _run_clients(job: dict[str, Any], progress: Any, index: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    counter = [0]

    async def report() -> None:
        while True:
            await asyncio.sleep(0.5)
            progress.put((index, counter[0]))

    mark: dict[str, float] = {}

    async def mark_start() -> None:
        # CPU is counted from the synchronized start: connection set-up before it is not load.
        await asyncio.sleep(max(0.0, job["start_at"] - time.time()))
        mark["cpu"] = time.process_time()

    reporter = asyncio.create_task(report())
    marker = asyncio.create_task(mark_start())
    lasts = await asyncio.gather(
        *(
            _client_loop(
                client["url"],
                job["method"],
                job["path"],
                client["token"],
                job["start_at"],
                job["end_at"],
                latencies,
                errors,
                counter,
            )
            for client in job["clients"]
        )
    )
    cpu = time.process_time() - mark.get("cpu", time.process_time())
    wall = time.time() - job["start_at"]
    reporter.cancel()
    await marker
    progress.put((index, counter[0]))
    return {
        "ok": len(latencies),
        "latencies": latencies,
        "errors": dict(errors),
        "last": max(lasts) if lasts else job["start_at"],
        "cpu_seconds": cpu,
        "wall_seconds": wall,
    }


def client_process(job: dict[str, Any], index: int, progress: Any, results: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        results.put((index, asyncio.run(_run_clients(job, progress, index))))
    except BaseException as exc:  # report, never hang the parent
        results.put((index, {"failure": f"{type(exc).__name__}: {exc}"}))


# The orchestration.


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pick_redis_db(base: str, wanted: int | None) -> int:
    """The Redis database to use: ``wanted``, else the highest-numbered empty one."""
    if wanted is not None:
        return wanted
    import redis

    client = redis.Redis.from_url(f"{base}/0")
    try:
        count = int(client.config_get("databases").get("databases", 16))
        keyspace = client.info("keyspace")
    finally:
        client.close()
    for db in range(count - 1, 0, -1):
        if f"db{db}" not in keyspace:
            return db
    raise SystemExit("no empty Redis database; pass --redis-db")


async def postgres_admin(dsn: str, sql: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def wait_healthy(url: str, process: subprocess.Popen[bytes], logfile: Path) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=2) as http:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = logfile.read_text()[-3000:]  # noqa: ASYNC240 (failure path)
                raise RuntimeError(f"coordinator exited with {process.returncode}:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    tail = logfile.read_text()[-3000:]  # noqa: ASYNC240 (failure path)
    raise RuntimeError(f"coordinator at {url} not ready in 30 s:\n{tail}")


def summarize(
    kind: str, n: int, parts: list[dict[str, Any]], start_at: float, cpu: dict[str, float]
) -> dict[str, Any]:
    failures = [p["failure"] for p in parts if "failure" in p]
    if failures:
        raise RuntimeError("a client process failed: " + "; ".join(failures))
    latencies = sorted(x for p in parts for x in p["latencies"])
    errors: Counter[str] = Counter()
    for p in parts:
        errors.update(p["errors"])
    elapsed = max(p["last"] for p in parts) - start_at
    ok = len(latencies)
    client_cpu = [
        round(100 * p["cpu_seconds"] / p["wall_seconds"], 1) if p["wall_seconds"] else 0.0
        for p in parts
    ]
    cpu["client_total"] = round(sum(client_cpu), 1)
    cpu["other"] = round(
        max(
            0.0,
            cpu["machine"]
            - cpu["coordinator"] - cpu["postgres"] - cpu["redis"] - cpu["client_total"],
        ),
        1,
    )  # fmt: skip
    per_request = (
        {
            name: round(10_000 * cpu[name] * elapsed / ok, 1)
            for name in ("coordinator", "postgres", "redis", "client_total")
        }
        if ok
        else {}
    )
    return {
        "kind": kind,
        "clients": n,
        "seconds": round(elapsed, 3),
        "ok": ok,
        "errors": dict(errors),
        "per_second": round(ok / elapsed, 1) if elapsed > 0 else 0.0,
        "latency_ms": {
            "p50": round(1000 * _percentile(latencies, 0.50), 2),
            "p95": round(1000 * _percentile(latencies, 0.95), 2),
            "p99": round(1000 * _percentile(latencies, 0.99), 2),
            "max": round(1000 * latencies[-1], 2) if latencies else float("nan"),
        },
        "cpu_percent": {**cpu, "client_procs": client_cpu},
        # CPU microseconds per successful request: robust to a saturated load generator.
        "cpu_us_per_request": per_request,
    }


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.secret = secrets.token_urlsafe(48)
        self.db_name = f"stagecast_bench_{uuid.uuid4().hex[:10]}"
        self.admin_dsn = f"{args.postgres}/postgres"
        self.database_url = (
            args.postgres.replace("postgresql://", "postgresql+asyncpg://") + "/" + self.db_name
        )
        self.redis_db = pick_redis_db(args.redis, args.redis_db)
        self.redis_url = f"{args.redis}/{self.redis_db}"
        self.call_id = f"bench-{uuid.uuid4().hex[:8]}"
        self.node_id = f"sfu-bench-{uuid.uuid4().hex[:6]}"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="stagecast-bench-"))
        self.db_created = False

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for key in list(env):
            if key.startswith("STAGECAST_"):
                del env[key]
        env.update(
            STAGECAST_DATABASE_URL=self.database_url,
            STAGECAST_REDIS_URL=self.redis_url,
            STAGECAST_API_KEY=API_KEY,
            STAGECAST_API_SECRET=self.secret,
            STAGECAST_LOG_LEVEL="WARNING",
            STAGECAST_DATA_DIR=str(self.tmp / "data"),
        )
        return env

    async def set_up(self) -> None:
        stagecast = ROOT / ".venv" / "bin" / "stagecast"
        log(f"creating database {self.db_name}; Redis db {self.redis_db}")
        await postgres_admin(self.admin_dsn, f'CREATE DATABASE "{self.db_name}"')
        self.db_created = True
        upgrade = await asyncio.create_subprocess_exec(
            str(stagecast), "db", "upgrade", env=self.env(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await upgrade.communicate()
        if upgrade.returncode != 0:
            raise RuntimeError("stagecast db upgrade failed:\n" + output.decode()[-3000:])

        from stagecast.bus.redis import RedisBus
        from stagecast.nodes import NodeInfo, heartbeat
        from stagecast.settings import ApiKey
        from stagecast.tokens import KeyRing

        self.keyring = KeyRing([ApiKey(API_KEY, self.secret)])
        self.bus = RedisBus(self.redis_url)
        self.node = NodeInfo(
            id=self.node_id,
            url=f"http://127.0.0.1:1/{self.node_id}",
            ws_url=f"ws://127.0.0.1:1/{self.node_id}/ws",
            capacity=10_000_000,
        )
        await heartbeat(self.bus, self.node, NODE_TTL_SECONDS)

        async def refresh() -> None:
            while True:
                await asyncio.sleep(NODE_REFRESH_SECONDS)
                await heartbeat(self.bus, self.node, NODE_TTL_SECONDS)

        self.refresher = asyncio.create_task(refresh())

        for k in range(self.args.workers):
            port = free_port()
            logfile = self.tmp / f"coordinator-{k}.log"
            with logfile.open("wb") as out:
                process = subprocess.Popen(  # noqa: ASYNC220 (spawning does not wait)
                    [str(stagecast), "coordinator", "--port", str(port)],
                    env=self.env(), stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            self.processes.append(process)
            url = f"http://127.0.0.1:{port}"
            await wait_healthy(url, process, logfile)
            self.urls.append(url)
            log(f"coordinator {k} pid {process.pid} at {url}")

        import httpx

        host = {"authorization": f"Bearer {self.keyring.user_token('bench-host')}"}
        path = f"/v1/calls/{CALL_TYPE}/{self.call_id}"
        async with httpx.AsyncClient(base_url=self.urls[0], timeout=10) as http:
            created = await http.post(path, json={}, headers=host)
            live = await http.post(path + "/go-live", json={}, headers=host)
            probe = await http.post(
                path + "/join",
                json={},
                headers={"authorization": f"Bearer {self.keyring.user_token('bench-probe')}"},
            )
        for name, response in (("create", created), ("go-live", live), ("join", probe)):
            if response.status_code >= 300:
                raise RuntimeError(f"{name}: {response.status_code} {response.text}")
        session_id = probe.json()["call"]["session"]["id"]
        await self.add_participants(session_id, self.args.participants)
        await self.add_extra_calls(self.args.extra_calls)
        async with httpx.AsyncClient(base_url=self.urls[0], timeout=10) as http:
            probe = await http.post(
                path + "/join",
                json={},
                headers={"authorization": f"Bearer {self.keyring.user_token('bench-probe')}"},
            )
        self.join_response_bytes = len(probe.content)
        log(f"call {CALL_TYPE}:{self.call_id} is live; a join answers {len(probe.content)} bytes")

    async def add_participants(self, session_id: str, count: int) -> None:
        """Present participants, reported the way SFU nodes report them (the bus queue)."""
        if not count:
            return
        from stagecast.protocol import SFU_EVENTS

        cid = f"{CALL_TYPE}:{self.call_id}"
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for i in range(count):
            await self.bus.enqueue(
                SFU_EVENTS,
                {
                    "type": "participant_joined", "cid": cid, "session_id": session_id,
                    "participant_id": uuid.uuid4().hex, "user_id": f"present-{i}",
                    "role": "user", "hidden": False, "node_id": self.node_id, "at": at,
                },
            )  # fmt: skip
        import httpx

        server = {"authorization": f"Bearer {self.keyring.server_token()}"}
        async with httpx.AsyncClient(base_url=self.urls[0], timeout=10) as http:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                answer = await http.get(f"/v1/calls/{CALL_TYPE}/{self.call_id}", headers=server)
                present = (answer.json()["call"].get("session") or {}).get("participant_count", 0)
                if present >= count:
                    log(f"{present} participants present in the call")
                    return
                await asyncio.sleep(0.5)
        raise RuntimeError(f"only {present} of {count} participant reports were applied")

    async def add_extra_calls(self, count: int) -> None:
        """Registry keys of other calls on the bus, as ``count`` recent calls leave them."""
        from stagecast.protocol import call_state_key

        self.extra_keys = [call_state_key(f"{CALL_TYPE}:other-{i}") for i in range(count)]
        for key in self.extra_keys:
            await self.bus.set_key(key, {"live": False, "ended": True}, 3600)
        if count:
            log(f"{count} other calls' state keys on the bus")

    async def phase(self, kind: str, n: int) -> dict[str, Any]:
        args = self.args
        procs = max(1, min(args.client_procs, n))
        path = "/healthz" if kind == "healthz" else f"/v1/calls/{CALL_TYPE}/{self.call_id}/join"
        clients = [
            {
                "url": self.urls[i % len(self.urls)],
                "token": None
                if kind == "healthz"
                else self.keyring.user_token(f"viewer-{n}-{i}", ttl_seconds=3600),
            }
            for i in range(n)
        ]
        ctx = multiprocessing.get_context("spawn")
        progress, results = ctx.Queue(), ctx.Queue()
        # Client processes start (interpreter, imports, connections) before the clock does.
        start_at = time.time() + 1.5 + 0.3 * procs
        end_at = start_at + args.duration
        workers = []
        for p in range(procs):
            job = {
                "method": "GET" if kind == "healthz" else "POST",
                "path": path,
                "clients": clients[p::procs],
                "start_at": start_at,
                "end_at": end_at,
            }
            worker = ctx.Process(target=client_process, args=(job, p, progress, results))
            worker.start()
            workers.append(worker)
        meter = CpuMeter(
            {
                "coordinator": [process.pid for process in self.processes],
                "redis": pids_named("redis-server"),
                "postgres": [],
            },
            self.db_name,
        )
        await asyncio.sleep(max(0.0, start_at - time.time()))
        meter.start()
        counts = [0] * procs
        next_tick = time.time() + 2
        while time.time() < end_at:
            await asyncio.sleep(0.1)
            while True:
                try:
                    index, count = progress.get_nowait()
                except Exception:
                    break
                counts[index] = count
            if time.time() >= next_tick and not args.quiet:
                elapsed = time.time() - start_at
                log(
                    f"  {kind:7} N={n:<4} {elapsed:5.1f}/{args.duration:g} s "
                    f"{sum(counts):7d} ok ({sum(counts) / elapsed:7.1f}/s)"
                )
                next_tick += 2
        # The phase ends when the last in-flight request completes.
        parts: list[dict[str, Any] | None] = [None] * procs
        deadline = time.time() + 60
        while any(part is None for part in parts) and time.time() < deadline:
            try:
                index, part = await asyncio.to_thread(results.get, True, 1.0)
                parts[index] = part
            except Exception:
                continue
        cpu = meter.stop()
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
        if any(part is None for part in parts):
            raise RuntimeError("a client process did not report")
        return summarize(kind, n, [p for p in parts if p is not None], start_at, cpu)

    async def profile(self, n: int) -> subprocess.Popen[bytes] | None:
        if not self.args.py_spy:
            return None
        py_spy = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
        out = Path(self.args.py_spy)
        out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
        return subprocess.Popen(  # noqa: ASYNC220 (spawning does not wait)
            [
                py_spy, "record", "--pid", str(self.processes[0].pid),
                "--duration", str(int(self.args.duration) + 2), "--rate", "200",
                "--format", self.args.py_spy_format, "--nonblocking",
                "--output", str(out / f"join-N{n}.{self.args.py_spy_format}"),
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    async def run(self) -> dict[str, Any]:
        results = []
        for n in self.args.clients:
            row: dict[str, Any] = {"clients": n}
            if not self.args.no_healthz:
                log(f"N={n}: GET /healthz for {self.args.duration:g} s")
                row["healthz"] = await self.phase("healthz", n)
            log(f"N={n}: POST join for {self.args.duration:g} s")
            spy = await self.profile(n)
            row["join"] = await self.phase("join", n)
            if spy is not None:
                spy.wait(30)
            if "healthz" in row and row["healthz"]["per_second"]:
                row["join_to_healthz"] = round(
                    row["join"]["per_second"] / row["healthz"]["per_second"], 3
                )
                join_us = row["join"]["cpu_us_per_request"].get("coordinator")
                health_us = row["healthz"]["cpu_us_per_request"].get("coordinator")
                if join_us and health_us:
                    # How many healthz requests one join costs, in coordinator CPU.
                    row["join_cpu_in_healthz"] = round(join_us / health_us, 1)
            if not self.args.quiet:
                log("  " + format_row(row))
            results.append(row)
        return {
            "benchmark": "coordinator-join",
            "database": "postgresql",
            "coordinator_processes": self.args.workers,
            "client_processes": self.args.client_procs,
            "duration_seconds": self.args.duration,
            "join_response_bytes": self.join_response_bytes,
            "participants_present": self.args.participants,
            "extra_calls_on_bus": self.args.extra_calls,
            "results": results,
        }

    async def tear_down(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                await asyncio.to_thread(process.wait, 10)
            except subprocess.TimeoutExpired:
                process.kill()
        if hasattr(self, "bus"):
            from stagecast.nodes import deregister
            from stagecast.protocol import call_state_key

            self.refresher.cancel()
            with contextlib.suppress(Exception):
                await deregister(self.bus, self.node_id)
                await self.bus.delete_key(call_state_key(f"{CALL_TYPE}:{self.call_id}"))
                for key in getattr(self, "extra_keys", []):
                    await self.bus.delete_key(key)
            await self.bus.close()
        if self.db_created:
            drop = f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)'
            await postgres_admin(self.admin_dsn, drop)
            log(f"dropped database {self.db_name}")
        shutil.rmtree(self.tmp, ignore_errors=True)


def format_row(row: dict[str, Any]) -> str:
    join = row["join"]
    cpu = join["cpu_percent"]
    text = (
        f"N={row['clients']:<4} joins/s {join['per_second']:7.1f}  "
        f"p50/p95/p99 {join['latency_ms']['p50']:.1f}/{join['latency_ms']['p95']:.1f}/"
        f"{join['latency_ms']['p99']:.1f} ms  errors {sum(join['errors'].values())}  "
        f"CPU% coord {cpu['coordinator']:.0f} pg {cpu['postgres']:.0f} "
        f"redis {cpu['redis']:.0f} clients {cpu['client_total']:.0f} other {cpu['other']:.0f}  "
        f"coord {join['cpu_us_per_request'].get('coordinator', 0):.0f} us/join"
    )
    if "healthz" in row:
        health = row["healthz"]
        text += (
            f"  | healthz/s {health['per_second']:.1f} (coord "
            f"{health['cpu_percent']['coordinator']:.0f}%, clients "
            f"{health['cpu_percent']['client_total']:.0f}%) ratio "
            f"{row.get('join_to_healthz', 0):.3f}"
        )
    return text


def print_report(machine: dict[str, Any], report: dict[str, Any]) -> None:
    print(format_machine(machine))
    print(
        f"\nCoordinator: {report['coordinator_processes']} process(es); "
        f"client processes: {report['client_processes']}; {report['duration_seconds']:g} s "
        f"per phase; PostgreSQL; {report['participants_present']} participants present, "
        f"{report['extra_calls_on_bus']} other calls' keys on the bus; a join answers "
        f"{report['join_response_bytes']} bytes"
    )
    print(
        f"CPU % is of one core (the machine has {os.cpu_count()}): coord = coordinator "
        "process(es), pg = this database's backends, cl = load generator processes, "
        "oth = everything else on the machine.\n"
        "us/req = coordinator CPU microseconds per successful request.\n"
    )
    header = (
        f"{'N':>4} | {'joins/s':>8} {'p50':>6} {'p95':>6} {'p99':>6} {'err':>4} "
        f"{'coord%':>6} {'pg%':>4} {'redis%':>6} {'cl%':>4} {'oth%':>4} {'us/req':>6} | "
        f"{'healthz/s':>9} {'coord%':>6} {'cl%':>4} {'us/req':>6} | {'ratio':>5} {'cpu x':>5}"
    )
    print(header)
    print("-" * len(header))
    for row in report["results"]:
        join = row["join"]
        cpu = join["cpu_percent"]
        health = row.get("healthz")
        line = (
            f"{row['clients']:>4} | {join['per_second']:>8.1f} {join['latency_ms']['p50']:>6.1f} "
            f"{join['latency_ms']['p95']:>6.1f} {join['latency_ms']['p99']:>6.1f} "
            f"{sum(join['errors'].values()):>4} {cpu['coordinator']:>6.0f} "
            f"{cpu['postgres']:>4.0f} {cpu['redis']:>6.0f} {cpu['client_total']:>4.0f} "
            f"{cpu['other']:>4.0f} {join['cpu_us_per_request'].get('coordinator', 0):>6.0f} | "
        )
        if health:
            hcpu = health["cpu_percent"]
            line += (
                f"{health['per_second']:>9.1f} {hcpu['coordinator']:>6.0f} "
                f"{hcpu['client_total']:>4.0f} "
                f"{health['cpu_us_per_request'].get('coordinator', 0):>6.0f} | "
                f"{row.get('join_to_healthz', 0):>5.3f} {row.get('join_cpu_in_healthz', 0):>5.1f}"
            )
        else:
            line += f"{'-':>9} {'-':>6} {'-':>4} {'-':>6} | {'-':>5} {'-':>5}"
        print(line)
    errors = {
        row["clients"]: row["join"]["errors"] for row in report["results"] if row["join"]["errors"]
    }
    if errors:
        print("\nErrors by code:")
        for n, by_code in errors.items():
            print(f"  N={n}: " + ", ".join(f"{code} x{count}" for code, count in by_code.items()))
    print(
        "\nLatencies in ms. ratio = joins/s / healthz/s; cpu x = coordinator CPU of one join in "
        "healthz requests. When cl% nears 100 x client processes, the load generator limits "
        "the rate: add --client-procs."
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--clients", default="1,10,50,100",
        type=lambda text: [int(x) for x in text.split(",") if x.strip()],
        help="concurrent client counts, comma-separated (default 1,10,50,100)",
    )  # fmt: skip
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--client-procs", type=int, default=1, help="load generator processes")
    parser.add_argument("--workers", type=int, default=1, help="coordinator processes")
    parser.add_argument(
        "--participants", type=int, default=0,
        help="participants present in the call (reported on the bus as SFU nodes do)",
    )  # fmt: skip
    parser.add_argument(
        "--extra-calls", type=int, default=0,
        help="state keys of that many other calls on the bus (the node registry scans them)",
    )  # fmt: skip
    parser.add_argument("--no-healthz", action="store_true", help="skip the /healthz baseline")
    parser.add_argument(
        "--postgres", default="postgresql://postgres@127.0.0.1:5432",
        help="PostgreSQL server, without a database name",
    )  # fmt: skip
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis, no db number")
    parser.add_argument(
        "--redis-db", type=int, default=None,
        help="Redis database number (default: the highest-numbered empty one)",
    )  # fmt: skip
    parser.add_argument(
        "--py-spy", metavar="DIR", help="py-spy record coordinator 0 during each join phase"
    )
    parser.add_argument(
        "--py-spy-format", default="flamegraph", choices=["flamegraph", "speedscope", "raw"]
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.client_procs < 1 or not args.clients:
        parser.error("--workers, --client-procs and --clients must be positive")
    return args


async def amain(args: argparse.Namespace) -> int:
    machine = describe(f"{args.postgres}/postgres", f"{args.redis}/0")
    if not args.json:
        log(format_machine(machine))
    bench = Bench(args)
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
    try:
        await bench.set_up()
        report = await bench.run()
    finally:
        await bench.tear_down()
    report["machine"] = machine
    report["redis_db"] = bench.redis_db
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(machine, report)
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
