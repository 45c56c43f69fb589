"""What a benchmark ran on: CPU, cores, memory, Python, OS and, when asked, PostgreSQL and
Redis versions. Shared by the benchmarks in ``bench/``; standard library only, except that
the database versions use the project's own clients (asyncpg, redis).

    from bench._machine import describe, format_machine
    info = describe(postgres_dsn="postgresql://postgres@127.0.0.1:5432/postgres",
                    redis_url="redis://127.0.0.1:6379/0")
    print(format_machine(info))
"""

from __future__ import annotations

import asyncio
import os
import platform
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _cpu_quota() -> float | None:
    """CPUs allowed by the cgroup (v2 ``cpu.max``), or None when unlimited."""
    quota, _, period = _read("/sys/fs/cgroup/cpu.max").strip().partition(" ")
    if not quota or quota == "max" or not period:
        return None
    return int(quota) / int(period)


def _memory_mb() -> int | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return None


def _os_name() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return platform.system()


def _postgres_version(dsn: str) -> str:
    import asyncpg

    async def query() -> str:
        connection = await asyncpg.connect(dsn, timeout=5)
        try:
            return str(await connection.fetchval("SHOW server_version"))
        finally:
            await connection.close()

    # May be called while an event loop runs: keep asyncio.run off its thread.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, query()).result()


def _redis_version(url: str) -> str:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        return str(client.info("server")["redis_version"])
    finally:
        client.close()


def describe(postgres_dsn: str | None = None, redis_url: str | None = None) -> dict[str, Any]:
    """The machine as a JSON-ready dict. Unreachable services are reported, not raised."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": affinity,
        "cgroup_cpu_quota": _cpu_quota(),
        "memory_mb": _memory_mb(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": _os_name(),
        "kernel": platform.release(),
    }
    if postgres_dsn is not None:
        try:
            info["postgres"] = _postgres_version(postgres_dsn)
        except Exception as exc:  # a description, never a failure
            info["postgres"] = f"unreachable ({type(exc).__name__})"
    if redis_url is not None:
        try:
            info["redis"] = _redis_version(redis_url)
        except Exception as exc:
            info["redis"] = f"unreachable ({type(exc).__name__})"
    return info


def format_machine(info: dict[str, Any]) -> str:
    """A few human-readable lines."""
    cpus = f"{info['logical_cpus']} logical CPUs"
    if info.get("usable_cpus") not in (None, info["logical_cpus"]):
        cpus += f" ({info['usable_cpus']} usable)"
    if info.get("cgroup_cpu_quota") is not None:
        cpus += f", cgroup quota {info['cgroup_cpu_quota']:g} CPUs"
    lines = [
        f"CPU:     {info['cpu_model']}, {cpus}",
        f"Memory:  {info['memory_mb']} MB; load average at start {info['load_average']}",
        f"Python:  {info['python']}",
        f"OS:      {info['os']} (kernel {info['kernel']})",
    ]
    if "postgres" in info:
        lines.append(f"Postgres: {info['postgres']}")
    if "redis" in info:
        lines.append(f"Redis:   {info['redis']}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(
        format_machine(
            describe("postgresql://postgres@127.0.0.1:5432/postgres", "redis://127.0.0.1:6379/0")
        )
    )
