"""``/healthz``, ``/readyz``, ``/metrics``: no token needed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from server.context import CoordinatorDep
from server.errors import ErrorResponse, error_response

router = APIRouter(tags=["service"])


@router.get("/healthz")
async def healthz() -> dict[str, Any]:
    """The process is alive."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"model": ErrorResponse, "description": "not_ready: details.checks names it"}},
)
async def readyz(coordinator: CoordinatorDep) -> Any:
    """The database, the bus and the background workers are reachable."""
    checks: dict[str, str] = {}
    try:
        async with coordinator.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = type(exc).__name__
    try:
        await coordinator.bus.ping()
        checks["bus"] = "ok"
    except Exception as exc:
        checks["bus"] = type(exc).__name__
    checks["workers"] = "ok" if coordinator.workers_alive() else "stopped"
    if all(value == "ok" for value in checks.values()):
        return {"status": "ok", "checks": checks}
    return error_response(503, "not_ready", "A dependency is not reachable.", {"checks": checks})


@router.get("/metrics")
async def metrics() -> Response:
    """Prometheus metrics of this process."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
