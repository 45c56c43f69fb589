"""HLS playlists and segments (no token: the path is the secret) and recording downloads
(the caller's token with ``list-recordings``, or a signed, expiring URL)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy import select

from egress.storage import Storage
from server import calls, egress
from server.context import (
    Coordinator,
    CoordinatorDep,
    DbSession,
    bearer_token,
    principal_from_token,
)
from server.errors import ERROR_RESPONSES, ApiError, not_found
from server.models import Egress
from server.routers.calls import IdPath, TypePath

router = APIRouter(prefix="/v1", tags=["egress"], responses=ERROR_RESPONSES)

HLS_TOKEN = r"^[A-Za-z0-9_-]{16,64}$"
HLS_FILE = r"^[A-Za-z0-9_-]{1,64}\.(m3u8|ts)$"
MIME_TYPES = {"m3u8": "application/vnd.apple.mpegurl", "ts": "video/mp2t"}


@router.get(
    "/hls/{token}/{name}",
    response_class=FileResponse,
    responses={200: {"content": {value: {} for value in MIME_TYPES.values()}}},
)
async def hls_file(
    token: Annotated[str, Path(pattern=HLS_TOKEN)],
    name: Annotated[str, Path(pattern=HLS_FILE)],
    coordinator: CoordinatorDep,
) -> FileResponse:
    """A playlist (never cached) or a segment (immutable, cached long)."""
    path = _storage(coordinator).open_path(f"hls/{token}/{name}")
    if path is None:
        raise not_found("There is no such HLS file.")
    extension = name.rsplit(".", 1)[1]
    cache = (
        "no-cache, no-store, max-age=0"
        if extension == "m3u8"
        else "public, max-age=31536000, immutable"
    )
    return FileResponse(
        path,
        media_type=MIME_TYPES[extension],
        headers={"Cache-Control": cache, "Access-Control-Allow-Origin": "*"},
    )


@router.get(
    "/calls/{type}/{id}/recordings/{recording_id}/{filename}",
    response_class=FileResponse,
    responses={200: {"content": {"video/mp4": {}}}},
)
async def download_recording(
    type: TypePath,
    id: IdPath,
    recording_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")],
    filename: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,256}$")],
    request: Request,
    coordinator: CoordinatorDep,
    db: DbSession,
    expires: Annotated[int | None, Query()] = None,
    signature: Annotated[str | None, Query(max_length=128)] = None,
) -> FileResponse:
    """The recording's MP4: with ``expires`` and ``signature`` (the listed ``url``), or with a
    token whose holder has ``list-recordings``."""
    cid = calls.make_cid(type, id)
    if signature is not None or expires is not None:
        if (
            signature is None
            or expires is None
            or not egress.signature_valid(coordinator, recording_id, expires, signature)
        ):
            raise ApiError(403, "forbidden", "The download link is not valid or has expired.")
    else:
        token = bearer_token(
            request.headers.get("authorization"), request.query_params.get("token")
        )
        principal = principal_from_token(coordinator, token)
        context = await calls.load_call(db, principal, type, id)
        context.require("list-recordings")
    row = await db.scalar(
        select(Egress).where(
            Egress.id == recording_id, Egress.cid == cid, Egress.kind == "recording"
        )
    )
    if row is None or row.status != "ready" or row.storage_key is None or row.filename != filename:
        raise not_found("There is no such recording.")
    path = _storage(coordinator).open_path(row.storage_key)
    if path is None:
        raise not_found("The recording's file is missing.")
    return FileResponse(path, media_type="video/mp4", filename=row.filename)


def _storage(coordinator: Coordinator) -> Storage:
    if coordinator.storage is None:
        raise not_found("This coordinator serves no egress files.")
    return coordinator.storage
