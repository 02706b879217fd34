"""Stream's push settings through the real server SDK: apply one template, read all of them back."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from stream_chat import StreamChat
from stream_chat.base.exceptions import StreamAPIException

from .errors import StreamUnavailable, StreamUnreachable

_log = logging.getLogger("safeharbor.push.stream")

CONFIG_KEY = {"apn": "apn_config", "firebase": "firebase_config"}
TEMPLATE_FIELD = {"notification": "notification_template", "data": "data_template", "apn": "apn_template"}
SLOTS: tuple[tuple[str, str], ...] = (
    ("apn", "notification"),
    ("firebase", "notification"),
    ("firebase", "data"),
    ("firebase", "apn"),
)

T = TypeVar("T")


class StreamPushSettings:
    def __init__(self, *, api_key: str, api_secret: str, base_url: str | None, timeout: float) -> None:
        options: dict[str, Any] = {"base_url": base_url} if base_url else {}
        self._client = StreamChat(api_key, api_secret, timeout=timeout, **options)

    def apply(self, *, provider: str, kind: str, template: str) -> None:
        settings = {CONFIG_KEY[provider]: {TEMPLATE_FIELD[kind]: template}}
        self._call("update_app_settings", lambda: self._client.update_app_settings(**settings))

    def read(self) -> dict[tuple[str, str], str | None]:
        """Every template slot as Stream holds it now (None when Stream does not report it)."""
        response = self._call("get_app_settings", self._client.get_app_settings)
        try:
            push = response["app"]["push_notifications"]
            result: dict[tuple[str, str], str | None] = {}
            for provider, kind in SLOTS:
                section = push.get(provider) or {}
                value = section.get(TEMPLATE_FIELD[kind])
                result[(provider, kind)] = value if isinstance(value, str) else None
            return result
        except (KeyError, TypeError, AttributeError) as exc:
            _log.warning("unexpected app settings shape from Stream")
            raise StreamUnavailable("get_app_settings") from exc

    @staticmethod
    def _call(operation: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except StreamAPIException as exc:
            code = getattr(exc, "error_code", None)
            _log.warning(
                "stream call failed",
                extra={"fields": {"operation": operation, "stream_status": exc.status_code, "stream_code": code}},
            )
            raise StreamUnavailable(
                operation, stream_status=exc.status_code, stream_code=code if isinstance(code, int) else None
            ) from exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            # No answer at all: Stream is down or unreachable (API.md: 503), not "answered with an error".
            _log.warning("stream unreachable", extra={"fields": {"operation": operation, "error": type(exc).__name__}})
            raise StreamUnreachable(operation) from exc
        except (requests.RequestException, ValueError) as exc:
            # An answer we cannot use (e.g. a body that is not JSON): Stream answered badly, 502.
            _log.warning("stream answer unusable", extra={"fields": {"operation": operation,
                                                                     "error": type(exc).__name__}})
            raise StreamUnavailable(operation) from exc
