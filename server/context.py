"""What every request handler may need, built once per process, and the typed dependencies
that hand it out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request, WebSocket
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from egress.storage import Storage
from server.cache import TtlCache
from server.clock import Clock
from server.errors import ApiError
from server.events import EventHub
from stagecast.bus import Bus, Message
from stagecast.nodes import NodeInfo, live_nodes
from stagecast.settings import Settings
from stagecast.tokens import KeyRing, Principal, TokenError

if TYPE_CHECKING:
    from server.calls import CallSnapshot

NODE_LIST_MAX_AGE_SECONDS = 1.0
# How stale a join's view may be if an event is missed: the call (rules, members)...
CALL_CACHE_SECONDS = 2.0
# ...and the counts it shows (they change with every viewer, so joins share them briefly).
SESSION_CACHE_SECONDS = 0.5


@dataclass
class Coordinator:
    settings: Settings
    keyring: KeyRing
    bus: Bus
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    hub: EventHub
    # Users known to exist, so that only a user's first request creates its row.
    known_users: TtlCache[bool] = field(
        default_factory=lambda: TtlCache(3600.0, max_entries=100_000)
    )
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # Where egress output is read from (HLS files, recordings); set by create_app.
    storage: Storage | None = None

    _nodes_read: tuple[float, list[NodeInfo]] = (float("-inf"), [])
    _nodes_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The hot join path's view of calls and their live sessions (see server.cache).
    call_cache: TtlCache[CallSnapshot] = field(default_factory=lambda: TtlCache(CALL_CACHE_SECONDS))
    session_cache: TtlCache[dict[str, Any] | None] = field(
        default_factory=lambda: TtlCache(SESSION_CACHE_SECONDS)
    )
    # ...and its egress state (changes with call.hls_* / call.recording_* events).
    egress_cache: TtlCache[dict[str, Any]] = field(
        default_factory=lambda: TtlCache(SESSION_CACHE_SECONDS)
    )

    def forget(self, event: Message) -> None:
        """Drop what the caches hold about the call an event concerns."""
        cid = event.get("cid")
        if isinstance(cid, str):
            self.call_cache.discard(cid)
            self.session_cache.discard(cid)
            self.egress_cache.discard(cid)

    async def sfu_nodes(self) -> list[NodeInfo]:
        """The live SFU nodes, read from the registry at most once per
        :data:`NODE_LIST_MAX_AGE_SECONDS`: nodes heartbeat every few seconds, so every join
        reading it again would only cost time."""
        if time.monotonic() - self._nodes_read[0] > NODE_LIST_MAX_AGE_SECONDS:
            async with self._nodes_lock:  # one read for a burst of joiners, not one each
                if time.monotonic() - self._nodes_read[0] > NODE_LIST_MAX_AGE_SECONDS:
                    self._nodes_read = (time.monotonic(), await live_nodes(self.bus))
        return self._nodes_read[1]

    def workers_alive(self) -> bool:
        return all(not task.done() for task in self.tasks)


def get_coordinator(request: Request) -> Coordinator:
    coordinator: Coordinator = request.app.state.coordinator
    return coordinator


def get_ws_coordinator(websocket: WebSocket) -> Coordinator:
    coordinator: Coordinator = websocket.app.state.coordinator
    return coordinator


AfterCommit = Callable[[], Awaitable[None]]


def after_commit(db: AsyncSession, action: AfterCommit) -> None:
    """Run ``action`` once ``db``'s transaction has committed, so that nobody hears of a change
    (events, bus messages) before it can be read, nor of one that was rolled back."""
    db.info.setdefault("after_commit", []).append(action)


@asynccontextmanager
async def transaction(coordinator: Coordinator) -> AsyncIterator[AsyncSession]:
    """A database session in one transaction; its :func:`after_commit` actions run after it."""
    async with coordinator.sessions() as session:
        async with session.begin():
            yield session
        for action in session.info.pop("after_commit", []):
            await action()


async def db_session(
    coordinator: Annotated[Coordinator, Depends(get_coordinator)],
) -> AsyncIterator[AsyncSession]:
    async with transaction(coordinator) as session:
        yield session


def bearer_token(authorization: str | None, query_token: str | None) -> str:
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthenticated", "Use 'Authorization: Bearer <token>'.")
        return token.strip()
    if query_token:
        return query_token
    raise ApiError(401, "unauthenticated", "A token is required.")


def principal_from_token(coordinator: Coordinator, token: str) -> Principal:
    try:
        return coordinator.keyring.principal(token)
    except TokenError as exc:
        raise ApiError(401, exc.code, exc.message) from None


async def authenticate(
    request: Request, coordinator: Annotated[Coordinator, Depends(get_coordinator)]
) -> Principal:
    token = bearer_token(request.headers.get("authorization"), request.query_params.get("token"))
    return principal_from_token(coordinator, token)


async def require_server_or_admin(
    principal: Annotated[Principal, Depends(authenticate)],
) -> Principal:
    if not (principal.is_server or principal.app_role == "admin"):
        raise ApiError(403, "forbidden", "Only server tokens and admins may do this.")
    return principal


CoordinatorDep = Annotated[Coordinator, Depends(get_coordinator)]
# "function": commit before the response is sent, so a client that got an answer reads what
# it wrote (and a failed commit is an error response, not a success already sent).
DbSession = Annotated[AsyncSession, Depends(db_session, scope="function")]
Caller = Annotated[Principal, Depends(authenticate)]
AdminCaller = Annotated[Principal, Depends(require_server_or_admin)]
