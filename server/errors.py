"""API errors: ``{"error": {"code", "message", "details"}}`` with a stable snake_case code."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("stagecast.api")


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


def invalid_request(message: str, **details: Any) -> ApiError:
    return ApiError(400, "invalid_request", message, details)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


def forbidden(message: str, missing_capability: str | None = None) -> ApiError:
    details = {"missing_capability": missing_capability} if missing_capability else {}
    return ApiError(403, "forbidden", message, details)


def not_implemented(feature: str) -> ApiError:
    return ApiError(
        501, "not_implemented", f"{feature} is not available in this version of Stagecast."
    )


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = {}


class ErrorResponse(BaseModel):
    """Every error the API returns has this shape."""

    error: ErrorBody


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "details": details or {}}}, status_code=status
    )


# Documented on every route in the OpenAPI schema.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "invalid_request",
        401: "unauthenticated, token_expired",
        403: "forbidden, call_in_backstage",
        404: "not_found",
        409: "call_ended, conflict",
        422: "invalid_request, no_compatible_codec",
        429: "rate_limited",
        501: "not_implemented",
        503: "capacity_exhausted",
    }.items()
}

_STATUS_CODES = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "invalid_request",
    415: "invalid_request",
    429: "rate_limited",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "location": ".".join(str(part) for part in error.get("loc", ())),
                "problem": error.get("msg", ""),
            }
            for error in exc.errors()
        ]
        summary = "; ".join(f"{p['location']}: {p['problem']}" for p in problems[:3])
        return error_response(
            422, "invalid_request", f"The request is not valid: {summary}", {"errors": problems}
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else "Request failed."
        return error_response(exc.status_code, code, message)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return error_response(500, "internal_error", "Something went wrong on the server.")
