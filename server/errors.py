"""One error shape for every failure, the OpenAI one, so the SDK raises the right exception class::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "size", "code": "invalid_size"}}
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    def __init__(self, status: int, code: str, message: str, param: str | None = None,
                 type: str = "invalid_request_error", extra: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.param, self.type = status, code, message, param, type
        self.extra = extra or {}
        self.headers = headers


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
