"""Worker processes driven by JSON lines: the parent side and the worker side.

The parent starts a worker in a session of its own (a Ctrl-C in the terminal reaches the
parent only, which then stops every worker itself, by PID) and sends one JSON command per
line on its stdin (``{"cmd", "id", ...}``); the worker answers each with one JSON line on
stdout (``{"id", "ok", ...}``). Logs go to a file. ``bench/fanout.py`` drives its workers
the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class WorkerError(RuntimeError):
    pass


class WorkerProcess:
    """One worker process (``argv``), its stderr in ``logfile``."""

    def __init__(self, name: str, argv: Sequence[str], logfile: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.logfile = logfile
        self.process: asyncio.subprocess.Process | None = None
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.ids = 0
        self.reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self, env: dict[str, str] | None = None) -> None:
        with self.logfile.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=env,
                start_new_session=True,
                limit=2**26,
            )
        self.reader = asyncio.create_task(self._read())

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while True:
            line = await self.process.stdout.readline()
            if not line:
                break
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            future = self.pending.pop(msg.get("id"), None)
            if future is not None and not future.done():
                future.set_result(msg)
        for future in self.pending.values():
            if not future.done():
                future.set_exception(WorkerError(f"{self.name} exited:\n{self.log_tail()}"))

    async def call(self, cmd: str, call_timeout: float = 120, **fields: Any) -> dict[str, Any]:
        """Send a command and wait for its answer; :class:`WorkerError` if it failed."""
        if self.process is None or self.process.stdin is None or not self.running:
            raise WorkerError(f"{self.name} is not running")
        self.ids += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[self.ids] = future
        self.process.stdin.write(
            (json.dumps({"cmd": cmd, "id": self.ids, **fields}) + "\n").encode()
        )
        await self.process.stdin.drain()
        reply = await asyncio.wait_for(future, call_timeout)
        if not reply.get("ok"):
            raise WorkerError(f"{self.name} {cmd}: {reply.get('error')}")
        return reply

    async def stop(self, grace: float = 20) -> None:
        """Ask the worker to exit; after ``grace`` seconds SIGTERM, then SIGKILL, by PID."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(Exception):
            assert process.stdin is not None
            process.stdin.write(b'{"cmd": "exit"}\n')
            await process.stdin.drain()
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                await process.wait()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)


async def serve_commands(
    handlers: dict[str, Handler], close: Callable[[], Awaitable[None]], close_timeout: float = 30
) -> None:
    """The worker side: run ``handlers[cmd](msg)`` for each command line on stdin (each in a
    task of its own) until ``exit`` or end of input, then ``close()``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout

    def reply(payload: dict[str, Any]) -> None:
        out.write(json.dumps(payload) + "\n")
        out.flush()

    async def handle(msg: dict[str, Any]) -> None:
        try:
            handler = handlers[msg["cmd"]]
            result = await handler(msg)
            reply({"id": msg.get("id"), "ok": True, **result})
        except Exception as exc:
            print(traceback.format_exc(), file=sys.stderr, flush=True)
            reply({"id": msg.get("id"), "ok": False, "error": f"{type(exc).__name__}: {exc}"})

    tasks: set[asyncio.Task[None]] = set()
    while True:
        line = await reader.readline()
        if not line:
            break
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("cmd") == "exit":
            break
        task = asyncio.create_task(handle(msg))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(close(), close_timeout)
