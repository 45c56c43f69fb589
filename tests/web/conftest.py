"""A real browser against the embedded server (``stagecast serve``): Playwright's async API
driving Debian's Chromium, with fake camera and microphone and loopback ICE.

Chromium is never downloaded: a machine without ``/usr/bin/chromium`` skips these tests with
the reason (under ``CI=true`` they fail instead).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from sfu.ice import reset_host_candidates
from stagecast.embedded import create_embedded_app
from stagecast.settings import Settings
from stagecast.tokens import KeyRing, load_api_keys
from tests.support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    loopback_socket,
    require_chromium,
    serve,
    socket_url,
)

SCREENS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screens"
API_KEY = "web-key"
API_SECRET = "web-secret-0123456789abcdef-0123456789abcdef"


@dataclass
class WebServer:
    url: str
    settings: Settings
    keyring: KeyRing
    http: httpx.AsyncClient

    def auth(self, user_id: str = "server") -> dict[str, str]:
        token = (
            self.keyring.server_token() if user_id == "server" else self.keyring.user_token(user_id)
        )
        return {"authorization": f"Bearer {token}"}


@pytest.fixture
async def web(tmp_path: Path) -> AsyncIterator[WebServer]:
    """``create_embedded_app`` in dev mode on a pre-bound loopback port, so that the URLs it
    hands out (the SFU's ``ws_url``) name the port it really listens on."""
    sock = loopback_socket()
    url = socket_url(sock)
    settings = Settings(
        api_key=API_KEY,
        api_secret=API_SECRET,
        data_dir=tmp_path,
        dev_mode=True,
        public_url=url,
        sfu_announced_address="127.0.0.1",
        node_heartbeat_seconds=0.5,
    )
    app = create_embedded_app(settings)
    try:
        async with serve(app, sock), httpx.AsyncClient(base_url=url, timeout=30) as http:
            for _ in range(200):
                if (await http.get("/readyz")).status_code == 200 and app.state.sfu_node.started:
                    break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("the embedded server never became ready")
            yield WebServer(url, settings, KeyRing(load_api_keys(settings)), http)
    finally:
        sock.close()
        reset_host_candidates()


@dataclass
class Browser:
    """One Chromium; ``page()`` opens a page in a fresh context (its own user)."""

    browser: Any
    base_url: str
    errors: list[str] = field(default_factory=list)

    async def page(self, viewport: dict[str, int] | None = None) -> Any:
        context = await self.browser.new_context(
            base_url=self.base_url,
            permissions=["camera", "microphone"],
            viewport=viewport or {"width": 1280, "height": 800},
        )
        page = await context.new_page()
        page.on("pageerror", lambda error: self.errors.append(f"{page.url}: {error}"))
        return page


@pytest.fixture
def chromium_present() -> None:
    require_chromium()


@pytest.fixture
async def chromium(chromium_present: None, web: WebServer) -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    SCREENS.mkdir(parents=True, exist_ok=True)
    playwright = await async_playwright().start()
    browser = await playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000
    )
    try:
        yield Browser(browser, web.url)
    finally:
        # Chromium may take 10-20 s to close after media: close contexts first, bounded.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                asyncio.gather(*(c.close() for c in browser.contexts), return_exceptions=True), 10
            )
        with contextlib.suppress(Exception):
            await asyncio.wait_for(browser.close(), 15)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(playwright.stop(), 10)


async def eventually(
    check: Callable[[], Awaitable[Any]], what: str, timeout: float = 15.0, every: float = 0.1
) -> Any:
    """Poll ``check`` until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        last = await check()
        if last:
            return last
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
        await asyncio.sleep(every)


async def screenshot(page: Any, name: str) -> None:
    await page.screenshot(path=str(SCREENS / f"{name}.png"))
