"""What every SafeHarbor Flask app does the same way: request ids, the JSON error format, JSON logs
without PHI, health, readiness, Prometheus metrics and the OpenAPI document.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from flask import Flask, Response, current_app, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException

from .errors import (
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    NotReady,
    PayloadTooLarge,
    SafeHarborError,
    ServiceUnavailable,
    UnsupportedMediaType,
    error_body,
)
from .service_identity import calling_service
from .tokens import ACCESS_ATTRIBUTE

REQUEST_ID_HEADER = "X-Request-ID"
CLIENT_IP_HEADER = "X-SafeHarbor-Client-IP"
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
_log = logging.getLogger("safeharbor.web")


class JsonLogFormatter(logging.Formatter):
    """One JSON object a line. Callers log ids and counts only; never PHI."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            # Type and frames only: an exception's message may quote request data.
            entry["exc_type"] = record.exc_info[0].__name__
            tb = record.exc_info[2]
            frames = []
            while tb is not None:
                frames.append(f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}")
                tb = tb.tb_next
            entry["frames"] = frames[-8:]
        return json.dumps(entry, separators=(",", ":"))


def configure_logging(service: str, level: str = "INFO") -> None:
    root = logging.getLogger()
    if any(getattr(h, "_safeharbor", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter(service))
    handler._safeharbor = True  # type: ignore[attr-defined]
    root.handlers = [handler]
    root.setLevel(level.upper())


class _Metrics:
    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests by route and status.",
            ["service", "method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency by route.",
            ["service", "method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.service = service


def request_id() -> str:
    rid = g.get("request_id")
    if rid is None:
        rid = g.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER, ""))
    return cast(str, rid)


# Metric labels come from fixed sets: a client-chosen method must not mint a new time series.
METHOD_LABELS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in METHOD_LABELS else "OTHER"


def request_id_from(incoming: str) -> str:
    """The caller's request id when it is well formed, else a new one."""
    return incoming if _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex


def unexpected_error(exc: BaseException, rid: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) for an exception no handler claimed, logged without its message."""
    if is_store_unavailable(exc):
        # The database or Redis is down or restarting: a clean, retryable 503, not a 500.
        _log.warning("store unavailable", extra={"fields": {"request_id": rid, "exc_type": type(exc).__name__}})
        unavailable = ServiceUnavailable("A data store is unavailable; try again shortly.")
        return unavailable.status, unavailable.body(rid), unavailable.headers
    _log.error("unhandled error", exc_info=exc, extra={"fields": {"request_id": rid}})
    return 500, error_body("internal_error", "Internal error.", rid), {}


def client_ip() -> str | None:
    """The end user's IP: the gateway's header when the gateway's service token vouches for it."""
    forwarded = request.headers.get(CLIENT_IP_HEADER)
    if forwarded and calling_service() == "gateway":
        return forwarded
    return request.remote_addr


def user_agent() -> str | None:
    ua = request.headers.get("User-Agent")
    return ua[:512] if ua else None


def error_response(exc: SafeHarborError) -> Response:
    response = jsonify(exc.body(request_id()))
    response.status_code = exc.status
    for name, value in exc.headers.items():
        response.headers[name] = value
    return response


M = TypeVar("M", bound=BaseModel)


def json_body(model: type[M]) -> M:
    """The request's JSON body validated against `model`; a clear 400 naming the field otherwise."""
    if not request.is_json:
        raise InvalidRequest("The body must be JSON (Content-Type: application/json).")
    data = request.get_json(silent=True)
    if data is None:
        raise InvalidRequest("The body is not valid JSON.")
    return validate(model, data)


def validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        location = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
        problem = str(errors[0]["msg"]) if errors else "invalid value"
        location = location or "body"
        raise InvalidRequest(f"Field '{location}': {problem}.", extra={"field": location}) from exc


def init_app(
    app: Flask,
    *,
    service_name: str,
    readiness_check: Callable[[], None] | None = None,
    version: str = "1.0.0",
) -> None:
    """Registers request ids, JSON errors, access logs, /healthz, /readyz, /metrics, /openapi.json."""
    configure_logging(service_name, str(app.config.get("LOG_LEVEL", "INFO")))
    metrics = _Metrics(service_name)
    app.extensions["metrics"] = metrics
    app.config.setdefault("MAX_CONTENT_LENGTH", 1024 * 1024)

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        request_id()

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers[REQUEST_ID_HEADER] = request_id()
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        method = method_label(request.method)
        metrics.requests.labels(service_name, method, route, str(response.status_code)).inc()
        metrics.latency.labels(service_name, method, route).observe(elapsed)
        if route not in ("/healthz", "/metrics"):
            _log.info(
                "request",
                extra={
                    "fields": {
                        "request_id": request_id(),
                        "method": request.method,
                        "route": route,
                        "status": response.status_code,
                        "ms": round(elapsed * 1000, 2),
                    }
                },
            )
        return response

    @app.errorhandler(SafeHarborError)
    def _safeharbor_error(exc: SafeHarborError) -> Response:
        return error_response(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        mapped: SafeHarborError
        if exc.code == 404:
            mapped = NotFound()
        elif exc.code == 405:
            mapped = MethodNotAllowed()
        elif exc.code == 413:
            mapped = PayloadTooLarge()
        elif exc.code == 415:
            mapped = UnsupportedMediaType()
        elif exc.code is not None and exc.code < 500:
            mapped = InvalidRequest()
        else:
            mapped = ServiceUnavailable()
        return error_response(mapped)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        status, body, headers = unexpected_error(exc, request_id())
        response = jsonify(body)
        response.status_code = status
        response.headers.update(headers)
        return response

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok", "service": service_name})

    @app.get("/readyz")
    def readyz() -> Response | tuple[Response, int]:
        if readiness_check is not None:
            try:
                readiness_check()
            except NotReady as exc:  # a check that knows why: say so (names only, no PHI)
                _log.warning("not ready", extra={"fields": {"service": service_name, "reasons": len(exc.reasons)}})
                return jsonify(exc.body(request_id())), 503
            except Exception:  # noqa: BLE001 - any failure means not ready
                _log.warning("not ready", extra={"fields": {"service": service_name}})
                return jsonify(error_body("service_unavailable", "Not ready.", request_id())), 503
        return jsonify({"status": "ready", "service": service_name})

    @app.get("/metrics")
    def metrics_view() -> Response:
        return Response(generate_latest(metrics.registry), mimetype=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json")
    def openapi_view() -> Response:
        return jsonify(openapi_document(current_app, title=f"SafeHarbor {service_name}", version=version))


def is_store_unavailable(exc: BaseException) -> bool:
    """Connection-level failures of SQLAlchemy's drivers or of Redis (not bugs in a query)."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError,
                        sa_exc.TimeoutError)):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    try:
        import redis
    except ImportError:
        return False
    return isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError))


# --- OpenAPI ---------------------------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])
_PATH_PARAM = re.compile(r"<(?:[a-z_]+:)?([A-Za-z_][A-Za-z0-9_]*)>")


def api_doc(
    *,
    summary: str,
    request_model: type[BaseModel] | None = None,
    response_model: type[BaseModel] | None = None,
    status: int = 200,
    query: dict[str, str] | None = None,
    auth: str = "bearer",
    also: Mapping[int, str] | None = None,
) -> Callable[[F], F]:
    """Attaches OpenAPI facts to a view. `auth` is "bearer", "service", "signature" or "none"; `also` names
    the other statuses the view answers with the same body, each with what it means."""

    def decorator(view: F) -> F:
        view.__dict__["_openapi"] = {
            "summary": summary,
            "request_model": request_model,
            "response_model": response_model,
            "status": status,
            "query": query or {},
            "auth": auth,
            "also": dict(also or {}),
        }
        return view

    return decorator


def error_schema(code: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON schema of every error answer; `code` narrows the code (the public document lists them)."""
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "request_id"],
                "properties": {
                    "code": code or {"type": "string"},
                    "message": {"type": "string"},
                    "request_id": {"type": ["string", "null"]},
                },
            }
        },
    }


def openapi_document(app: Flask, *, title: str, version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        view = app.view_functions[rule.endpoint]
        doc: dict[str, Any] = getattr(view, "_openapi", None) or {
            "summary": rule.endpoint,
            "request_model": None,
            "response_model": None,
            "status": 200,
            "query": {},
            "auth": "none",
            "also": {},
        }
        path = _PATH_PARAM.sub(r"{\1}", rule.rule)
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PATH_PARAM.findall(rule.rule)
        ]
        parameters += [
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"}, "description": text}
            for name, text in doc["query"].items()
        ]
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            operation: dict[str, Any] = {
                "operationId": f"{rule.endpoint}_{method.lower()}",
                "summary": doc["summary"],
                "parameters": parameters,
                "responses": {
                    str(doc["status"]): {"description": "OK"},
                    "default": {
                        "description": "Error",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                    },
                },
            }
            if doc["request_model"] is not None:
                model = doc["request_model"]
                schemas[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schemas[model.__name__].pop("$defs", {}))
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
                }
            if doc["response_model"] is not None:
                model = doc["response_model"]
                schemas[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schemas[model.__name__].pop("$defs", {}))
                operation["responses"][str(doc["status"])] = {
                    "description": "OK",
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
                }
            for status, description in doc["also"].items():
                operation["responses"][str(status)] = {**operation["responses"][str(doc["status"])],
                                                       "description": description}
            if doc["auth"] == "bearer":
                operation["security"] = [{"bearer": []}]
                operation["x-safeharbor-access"] = getattr(view, ACCESS_ATTRIBUTE, None) or {
                    "roles": None, "scopes": None}
            elif doc["auth"] == "service":
                operation["security"] = [{"serviceToken": []}]
            paths.setdefault(path, {})[method.lower()] = operation
    schemas["Error"] = error_schema()
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "serviceToken": {"type": "apiKey", "in": "header", "name": "X-Service-Token"},
            },
        },
    }
