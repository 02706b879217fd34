"""JSON over HTTP to the gateway and to Stream, with the API's errors turned into typed exceptions."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests
from safeharbor_protocol.encoding import parse_decimal

from . import errors as e

# API.md error code -> exception class.
_BY_CODE: dict[str, type[e.ApiError]] = {
    "unauthenticated": e.LoginRequired,
    "session_expired": e.SessionExpired,
    "session_revoked": e.SessionRevoked,
    "invalid_credentials": e.InvalidCredentials,
    "mfa_required": e.MfaRequired,
    "mfa_invalid": e.MfaInvalid,
    "mfa_enrollment_required": e.MfaEnrollmentRequired,
    "forbidden": e.Forbidden,
    "not_found": e.NotFound,
    "conflict": e.Conflict,
    "unprocessable": e.Unprocessable,
    "rate_limited": e.RateLimited,
    "locked_out": e.RateLimited,
    "upstream_error": e.ServiceUnavailable,
    "service_unavailable": e.ServiceUnavailable,
}


def api_error(response: requests.Response) -> e.ApiError:
    """The exception for an error response (falls back on the status when the body is not the API's)."""
    code, message, request_id, details = "", "", response.headers.get("X-Request-ID"), {}
    try:
        body = response.json()
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            code = str(err.get("code") or "")
            message = str(err.get("message") or "")
            request_id = str(err.get("request_id") or request_id or "") or None
            details = {k: v for k, v in err.items() if k not in ("code", "message", "request_id")}
    except ValueError:
        pass
    status = response.status_code
    if not code:
        code = {401: "unauthenticated", 403: "forbidden", 404: "not_found", 409: "conflict", 429: "rate_limited",
                502: "upstream_error", 503: "service_unavailable"}.get(status, "http_error")
    message = message or f"HTTP {status}"
    cls = _BY_CODE.get(code, e.ApiError)
    if code == "forbidden" and details.get("reason") == "fresh_login_required":
        cls = e.FreshLoginRequired
    kwargs: dict[str, Any] = {"status": status, "code": code, "request_id": request_id, "details": details}
    if cls is e.RateLimited:
        # An HTTP date, or anything but a plain number of seconds, leaves it unknown.
        kwargs["retry_after"] = parse_decimal(response.headers.get("Retry-After") or "", max_digits=9)
    return cls(message, **kwargs)


class Transport:
    """One base URL, one connection pool; `call` returns parsed JSON (or text for text/plain)."""

    def __init__(self, base_url: str, *, http: requests.Session | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http or requests.Session()
        self.timeout = timeout

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Bearer {token}"
        try:
            response = self.http.request(method, self.base_url + path, json=json, params=params, headers=sent,
                                         timeout=self.timeout)
        except requests.RequestException as exc:
            raise e.TransportError(f"cannot reach {self.base_url}: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            raise api_error(response)
        if response.status_code == 204 or not response.content:
            return None
        if response.headers.get("Content-Type", "").startswith("text/plain"):
            return response.text
        try:
            return response.json()
        except ValueError as exc:
            raise e.TransportError(f"{method} {path} answered something that is not JSON") from exc


class StreamUserClient:
    """The user side of Stream's REST API: the user's own token, `stream-auth-type: jwt`, `api_key`.

    (The `stream-chat` package is the server SDK; a user client is this small.)
    """

    def __init__(self, base_url: str, *, api_key: str, token: str, http: requests.Session | None = None,
                 timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.token = token
        self.http = http or requests.Session()
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        try:
            response = self.http.request(
                method,
                self.base_url + path,
                params={"api_key": self.api_key},
                json=body,
                headers={"Authorization": self.token, "stream-auth-type": "jwt",
                         "X-Stream-Client": "safeharbor-python-client"},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise e.TransportError(f"cannot reach Stream at {self.base_url}: {type(exc).__name__}") from exc
        try:
            data = response.json() if response.content else {}
        except ValueError:
            data = {}
        if response.status_code >= 400:
            code = data.get("code") if isinstance(data, dict) else None
            message = data.get("message") if isinstance(data, dict) else None
            raise e.StreamApiError(f"Stream refused {method} {path}: {message or response.status_code}",
                                   status=response.status_code, stream_code=code if isinstance(code, int) else None)
        if not isinstance(data, dict):
            raise e.TransportError("Stream answered something that is not a JSON object")
        return data

    def send_message(self, channel_type: str, channel_id: str, *, message_id: str, text: str) -> dict[str, Any]:
        body = {"message": {"id": message_id, "text": text}}
        return dict(self._call("POST", f"/channels/{channel_type}/{channel_id}/message", body)["message"])

    def query_channel(self, channel_type: str, channel_id: str, *, limit: int = 50) -> dict[str, Any]:
        body = {"state": True, "watch": False, "presence": False, "messages": {"limit": limit}}
        return self._call("POST", f"/channels/{channel_type}/{channel_id}/query", body)

    def query_channels(self, filter_conditions: Mapping[str, Any], *, limit: int = 30) -> list[dict[str, Any]]:
        body = {"filter_conditions": dict(filter_conditions), "sort": [{"field": "last_message_at", "direction": -1}],
                "state": True, "watch": False, "presence": False, "limit": limit, "message_limit": 0}
        return list(self._call("POST", "/channels", body).get("channels", []))
