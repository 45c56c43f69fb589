"""The web app (``web/``): the page at ``/``, its modules under ``/app/``, hls.js at
``/vendor/hls.js``. Plain files, no build step; everything else stays JSON."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from server.errors import not_found

ROOT = Path(__file__).resolve().parents[2]
WEB_DIR = ROOT / "web"
HLS_JS = ROOT / "node_modules" / "hls.js" / "dist" / "hls.min.js"

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
# Revalidate every time: the files change with the server, and ETags keep it cheap.
NO_CACHE = {"cache-control": "no-cache"}

router = APIRouter(include_in_schema=False)


def _file(path: Path) -> Response:
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=NO_CACHE)


@router.get("/")
def index() -> Response:
    """The single-page app (hash routes: ``#/``, ``#/call/livestream/abc``, ``#/watch/…``)."""
    page = WEB_DIR / "index.html"
    if not page.is_file():
        raise not_found("The web app is not installed (web/index.html is missing).")
    return _file(page)


@router.get("/app/{path:path}")
def asset(path: str) -> Response:
    """A module, stylesheet or image of the web app."""
    base = WEB_DIR.resolve()
    target = (base / path).resolve()
    if (
        not target.is_relative_to(base)
        or not target.is_file()
        or target.suffix not in MEDIA_TYPES
        or any(part.startswith(".") for part in target.relative_to(base).parts)
    ):
        raise not_found(f"No web app file '{path}'.")
    return _file(target)


@router.get("/vendor/hls.js")
def hls_js() -> Response:
    """hls.js from ``node_modules`` (installed by ``scripts/setup``)."""
    if not HLS_JS.is_file():
        raise not_found("hls.js is not installed: run scripts/setup (npm install).")
    return _file(HLS_JS)
