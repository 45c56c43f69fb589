"""The ``stagecast`` command: tokens, database upgrades, and ``serve`` as a real process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

import stagecast.cli
from stagecast.cli import main
from stagecast.settings import ApiKey
from stagecast.tokens import KeyRing
from tests.support import POSTGRES_URL, port_open, require

KEY = "cli-key"
SECRET = "cli-secret-0123456789abcdef-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No STAGECAST_* from the machine; run in an empty folder (the default data dir)."""
    for name in list(os.environ):
        if name.startswith("STAGECAST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    # In-process commands would replace the test run's log handlers.
    monkeypatch.setattr(stagecast.cli, "configure_logging", lambda *_args: None)


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> KeyRing:
    monkeypatch.setenv("STAGECAST_API_KEY", KEY)
    monkeypatch.setenv("STAGECAST_API_SECRET", SECRET)
    return KeyRing([ApiKey(KEY, SECRET)])


# Tokens


def test_token_create_prints_a_user_token(
    api_key: KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["token", "create", "--user", "alice", "--call", "livestream:abc", "--ttl", "60"])
    out = capsys.readouterr().out
    assert code == 0
    token = out.strip()
    assert out.count("\n") == 1 and token.count(".") == 2  # just the token
    claims = api_key.decode(token)
    assert claims["sub"] == "alice" and claims["iss"] == KEY
    assert claims["call_cids"] == ["livestream:abc"]
    assert claims["exp"] - claims["iat"] == 60
    assert abs(claims["exp"] - (time.time() + 60)) < 10
    principal = api_key.principal(token)
    assert principal.user_id == "alice" and not principal.is_server
    assert principal.may_access("livestream:abc") and not principal.may_access("livestream:x")


def test_token_create_defaults_and_options(
    api_key: KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "create", "--user", "bob", "--role", "admin"]) == 0
    claims = api_key.decode(capsys.readouterr().out.strip())
    assert claims["exp"] - claims["iat"] == 3600  # one hour
    assert "call_cids" not in claims and claims["role"] == "admin"
    assert (
        main(["token", "create", "--user", "c", "--call", "default:a", "--call", "default:b"]) == 0
    )
    assert api_key.decode(capsys.readouterr().out.strip())["call_cids"] == [
        "default:a",
        "default:b",
    ]


def test_token_create_server(api_key: KeyRing, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "create", "--server", "--ttl", "120"]) == 0
    token = capsys.readouterr().out.strip()
    claims = api_key.decode(token)
    assert claims["server"] is True and claims["sub"] == "server"
    assert claims["exp"] - claims["iat"] == 120
    assert api_key.principal(token).is_server


def test_token_create_with_rotated_keys(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STAGECAST_API_KEYS", f"new:{SECRET}x, old:{SECRET}")
    assert main(["token", "create", "--user", "alice"]) == 0
    token = capsys.readouterr().out.strip()
    assert KeyRing([ApiKey("new", SECRET + "x")]).decode(token)["iss"] == "new"


def test_token_create_without_a_key_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["token", "create", "--user", "alice"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert "STAGECAST_API_KEY" in captured.err and "STAGECAST_API_SECRET" in captured.err
    assert "Traceback" not in captured.err


def test_token_create_with_a_short_secret_is_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STAGECAST_API_KEY", KEY)
    monkeypatch.setenv("STAGECAST_API_SECRET", "tiny-secret")
    assert main(["token", "create", "--user", "alice"]) == 2
    err = capsys.readouterr().err
    assert "too short" in err and KEY in err and "tiny-secret" not in err


def test_token_create_without_user_is_exit_2(
    api_key: KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "create"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "--user" in captured.err


def test_module_entry_point(tmp_path: Path) -> None:
    env = {**os.environ, "STAGECAST_API_KEY": KEY, "STAGECAST_API_SECRET": SECRET}
    done = subprocess.run(
        [sys.executable, "-m", "stagecast.cli", "token", "create", "--user", "alice"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert KeyRing([ApiKey(KEY, SECRET)]).decode(done.stdout.strip())["sub"] == "alice"
    env.pop("STAGECAST_API_KEY")
    env.pop("STAGECAST_API_SECRET")
    missing = subprocess.run(
        [sys.executable, "-m", "stagecast.cli", "token", "create", "--user", "alice"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "STAGECAST_API_KEY" in missing.stderr


# Database


def _tables_sqlite(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {row[0] for row in rows}


def test_db_upgrade_sqlite(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    database = tmp_path / "nested" / "stagecast.db"
    url = f"sqlite+aiosqlite:///{database}"
    assert main(["db", "upgrade", "--database-url", url]) == 0
    assert "up to date" in capsys.readouterr().out
    tables = _tables_sqlite(database)
    assert {"alembic_version", "calls", "call_members"} <= tables, tables
    assert main(["db", "upgrade", "--database-url", url]) == 0  # again: nothing to do
    # Without a URL, the data dir's SQLite file.
    assert main(["db", "upgrade", "--data-dir", str(tmp_path / "data")]) == 0
    assert "calls" in _tables_sqlite(tmp_path / "data" / "stagecast.db")


def _admin_dsn() -> str:
    return POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://").rsplit("/", 1)[0]


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(_admin_dsn() + "/postgres")
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _pg_tables(name: str) -> tuple[set[str], str | None]:
    connection = await asyncpg.connect(f"{_admin_dsn()}/{name}")
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        version = await connection.fetchval("SELECT version_num FROM alembic_version")
    finally:
        await connection.close()
    return {row["tablename"] for row in rows}, version


@pytest.fixture
def fresh_postgres() -> Iterator[str]:
    require(port_open("127.0.0.1", 5432), "PostgreSQL is not running on 127.0.0.1:5432")
    name = f"stagecast_cli_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield name
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_db_upgrade_postgres(fresh_postgres: str, capsys: pytest.CaptureFixture[str]) -> None:
    url = POSTGRES_URL.rsplit("/", 1)[0] + "/" + fresh_postgres
    assert main(["db", "upgrade", "--database-url", url]) == 0
    assert "up to date" in capsys.readouterr().out
    tables, version = asyncio.run(_pg_tables(fresh_postgres))
    assert {"alembic_version", "calls", "call_members"} <= tables, tables
    assert version
    assert main(["db", "upgrade", "--database-url", url]) == 0
    assert asyncio.run(_pg_tables(fresh_postgres))[1] == version


# serve


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_serve_runs_until_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGECAST_")}
    env["PYTHONPATH"] = str(ROOT)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stagecast.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not any("API key:" in line for line in output):
            assert process.poll() is None, "".join(output)
            assert time.monotonic() < deadline, "".join(output)
            with contextlib.suppress(queue.Empty):
                output.append(lines.get(timeout=0.5))
        printed = "".join(output)
        assert f"http://127.0.0.1:{port}" in printed, printed
        key = printed.split("API key:", 1)[1].split()[0]

        stored = data_dir / "dev-api-key.json"
        assert stored.stat().st_mode & 0o777 == 0o600
        pair = json.loads(stored.read_text())
        assert pair["key"] == key
        assert pair["secret"] not in printed  # the secret stays in the file

        ready = None
        while time.monotonic() < deadline:
            assert process.poll() is None, printed
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        assert ready is not None and ready.status_code == 200, ready and ready.text
        assert ready.json()["checks"] == {"database": "ok", "bus": "ok", "workers": "ok"}
        assert (data_dir / "stagecast.db").exists()
        # A token signed with the stored pair is accepted.
        token = KeyRing([ApiKey(pair["key"], pair["secret"])]).user_token("alice")
        calls = httpx.get(
            f"http://127.0.0.1:{port}/v1/calls",
            headers={"authorization": f"Bearer {token}"},
            timeout=5,
        )
        assert calls.status_code == 200, calls.text

        os.kill(process.pid, signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert process.wait(timeout=20) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        reader.join(timeout=10)
        assert process.stdout is not None
        process.stdout.close()
    while not lines.empty():
        output.append(lines.get())
    logged = "".join(output)
    assert pair["secret"] not in logged
    assert "Traceback" not in logged, logged
    assert "Application shutdown complete" in logged, logged
    assert not port_open("127.0.0.1", port)
