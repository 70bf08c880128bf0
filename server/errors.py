"""One error shape for every failure, the OpenAI one, so the SDK raises the right exception class::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "size", "code": "invalid_size"}}
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class APIError(Exception):
    def __init__(self, status: int, code: str, message: str, param: str | None = None,
                 type: str = "invalid_request_error", extra: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.param, self.type = status, code, message, param, type
        self.extra = extra or {}
        self.headers = headers


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")  # some codes add a field: min_budget, models, video_id, …

    message: str
    type: str
    param: str | None
    code: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


# what each status means in this API, for the OpenAPI description of the operations that return it
STATUS_MEANINGS = {
    400: "malformed body (invalid_json, invalid_multipart, invalid_idempotency_key)",
    401: "missing or invalid API key",
    404: "unknown video or model (another API key's video is unknown too)",
    409: "the video is not ready, or an Idempotency-Key was reused with another body",
    410: "the video expired",
    413: "request body or image too large",
    422: "a field is invalid or not offered by the model",
    429: "rate limit, active-job cap or unreachable deadline (Retry-After)",
    503: "a backing service (job store, broker, storage) is unreachable (Retry-After)",
}


def error_responses(*statuses: int) -> dict[int, dict[str, Any]]:
    """``responses=`` of a route: the error statuses it can return, each with the error object."""
    return {status: {"model": ErrorResponse, "description": STATUS_MEANINGS[status]} for status in statuses}


def error_body(code: str, message: str, param: str | None = None, type: str = "invalid_request_error",
               **extra: Any) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code, **extra}}


def install_error_handlers(app) -> None:
    # imported here: workers share this module (through schemas) without installing FastAPI
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(APIError)
    async def _api_error(request: Request, error: APIError) -> JSONResponse:
        return JSONResponse(error_body(error.code, error.message, error.param, error.type, **error.extra),
                            status_code=error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        param = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        return JSONResponse(error_body("invalid_value", f"{param}: {first.get('msg')}", param), status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
        # still re-raised by Starlette afterwards, so the server logs the traceback; the client gets
        # the one error shape. A dependency that cannot be reached (Redis, SQLite busy past its
        # timeout: redis-py's and the builtin ConnectionError/TimeoutError) is a 503 worth retrying.
        if any(cls.__name__ in ("ConnectionError", "TimeoutError", "OperationalError")
               for cls in type(error).__mro__):
            return JSONResponse(error_body("service_unavailable", "a backing service is unreachable; retry shortly",
                                           type="server_error"), status_code=503, headers={"Retry-After": "1"})
        return JSONResponse(error_body("internal_error", "internal server error", type="server_error"),
                            status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return JSONResponse(error_body(code, str(error.detail)), status_code=error.status_code)
