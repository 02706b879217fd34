"""One error base class; every failure leaves a service as the same JSON shape (trust rule 7).

`{"error": {"code", "message", "request_id", ...extra}}` with the status and code fixed by API.md.
Messages are for humans and must never carry PHI.
"""
from __future__ import annotations

from typing import Any, ClassVar


class SafeHarborError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    default_message: ClassVar[str] = "Internal error."

    def __init__(
        self,
        message: str | None = None,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})
        super().__init__(self.message)

    def body(self, request_id: str | None) -> dict[str, Any]:
        return error_body(self.code, self.message, request_id, self.extra)


def error_body(
    code: str, message: str, request_id: str | None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message, "request_id": request_id}
    if extra:
        err.update(extra)
    return {"error": err}


class InvalidRequest(SafeHarborError):
    status, code, default_message = 400, "invalid_request", "The request is malformed."


class Unauthenticated(SafeHarborError):
    status, code, default_message = 401, "unauthenticated", "Authentication required."


class SessionExpired(SafeHarborError):
    status, code, default_message = 401, "session_expired", "The session has expired; log in again."


class SessionRevoked(SafeHarborError):
    status, code, default_message = 401, "session_revoked", "The session has been ended."


class InvalidCredentials(SafeHarborError):
    status, code, default_message = 401, "invalid_credentials", "Invalid username or password."


class MfaRequired(SafeHarborError):
    status, code, default_message = 401, "mfa_required", "A one-time code is required."


class MfaInvalid(SafeHarborError):
    status, code, default_message = 401, "mfa_invalid", "The one-time code is not valid."


class MfaEnrollmentRequired(SafeHarborError):
    status, code, default_message = (
        403,
        "mfa_enrollment_required",
        "Enrol in multi-factor authentication first.",
    )


class Forbidden(SafeHarborError):
    status, code, default_message = 403, "forbidden", "Not allowed."


class NotFound(SafeHarborError):
    status, code, default_message = 404, "not_found", "Not found."


class MethodNotAllowed(SafeHarborError):
    status, code, default_message = 405, "method_not_allowed", "Method not allowed."


class Conflict(SafeHarborError):
    status, code, default_message = 409, "conflict", "Conflict."


class PayloadTooLarge(SafeHarborError):
    status, code, default_message = 413, "payload_too_large", "The request body is too large."


class UnsupportedMediaType(SafeHarborError):
    status, code, default_message = 415, "invalid_request", "The body must be application/json."


class Unprocessable(SafeHarborError):
    status, code, default_message = 422, "unprocessable", "The request cannot be processed."


class PhiInTemplate(SafeHarborError):
    status, code, default_message = 422, "phi_in_template", "The template would expose PHI."


class _RetryAfter(SafeHarborError):
    def __init__(self, message: str | None = None, *, retry_after: int, **kw: Any) -> None:
        headers = dict(kw.pop("headers", None) or {})
        headers["Retry-After"] = str(max(1, int(retry_after)))
        extra = dict(kw.pop("extra", None) or {})
        extra.setdefault("retry_after", max(1, int(retry_after)))
        super().__init__(message, extra=extra, headers=headers)
        self.retry_after = max(1, int(retry_after))


class RateLimited(_RetryAfter):
    status, code, default_message = 429, "rate_limited", "Too many requests."


class LockedOut(_RetryAfter):
    status, code, default_message = 429, "locked_out", "Too many failed attempts; try again later."


class UpstreamError(SafeHarborError):
    status, code, default_message = 502, "upstream_error", "An upstream service answered with an error."


class ServiceUnavailable(SafeHarborError):
    status, code, default_message = 503, "service_unavailable", "The service is unavailable."


class RequestTimeout(SafeHarborError):
    status, code, default_message = 408, "request_timeout", "The request body did not arrive in time."


class UpstreamTimeout(SafeHarborError):
    # The service may have acted on the request: a client must not assume it did not (never resent here).
    status, code, default_message = 504, "upstream_timeout", "A service did not answer in time."


class NotReady(ServiceUnavailable):
    """Raised by a readiness check: `/readyz` answers 503 with `reasons` (short, PHI-free: names only)."""

    default_message = "Not ready."

    def __init__(self, message: str | None = None, *, reasons: list[str]) -> None:
        super().__init__(message, extra={"reasons": list(reasons)})
        self.reasons = list(reasons)
