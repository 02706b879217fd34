"""GET/PATCH /app: app settings in Stream's shapes.

PATCH takes what the SDK's `update_app_settings(**kw)` sends (`apn_config`, `firebase_config`,
`push_config`, `revoke_tokens_issued_before`, `webhook_url`, ...); GET answers `{"app": {...}}` where, as on
Stream, push settings are read back under `app.push_notifications.apn` / `.firebase`. Credentials
(`auth_key`, `p12_cert`, `credentials_json`, `server_key`) are accepted, never echoed.
"""

from __future__ import annotations

import copy
from typing import Any

from flask import Blueprint

from ..clock import iso, parse_time
from ..context import body, caller, emulator
from ..errors import duration, input_error
from ..permissions import server_only

bp = Blueprint("app_settings", __name__)

JSON = dict[str, Any]

_APN_TEXT = ("notification_template", "auth_type", "bundle_id", "host", "key_id", "team_id")
_APN_SECRETS = ("auth_key", "p12_cert", "certificate")
_FIREBASE_TEXT = ("notification_template", "data_template", "apn_template")
_FIREBASE_SECRETS = ("server_key", "credentials_json")
_BOOLS = ("disable_auth_checks", "disable_permissions_checks", "multi_tenant_enabled")
_STRINGS = (
    "webhook_url",
    "custom_action_handler_url",
    "enforce_unique_usernames",
    "sqs_url",
    "sns_topic_arn",
)


def _merge_push(target: JSON, cfg: Any, field: str, text_keys: tuple[str, ...], secrets: tuple[str, ...]) -> None:
    if not isinstance(cfg, dict):
        raise input_error(f"{field} must be an object")
    for key, value in cfg.items():
        if key in text_keys:
            if not isinstance(value, str):
                raise input_error(f"{field}.{key} must be a string")
            target[key] = value
        elif key in secrets:
            if value:
                target["enabled"] = True  # configured credentials enable the provider, as on Stream
        elif key == "development":
            target["development"] = bool(value)
        elif key == "disabled":
            target["enabled"] = not bool(value)
        elif key == "enabled":
            target["enabled"] = bool(value)
        # other keys are ignored, like unknown optional fields on Stream


def _validated_event_hooks(value: Any) -> list[JSON]:
    if not isinstance(value, list) or not all(isinstance(h, dict) for h in value):
        raise input_error("event_hooks must be an array of objects")
    hooks = []
    for h in value:
        url = h.get("webhook_url")
        if h.get("hook_type", "webhook") == "webhook" and url is not None and not isinstance(url, str):
            raise input_error("event_hooks[].webhook_url must be a string")
        hooks.append(copy.deepcopy(h))
    return hooks


@bp.get("/app")
def get_app() -> Any:
    c = caller()
    if not c.server:
        raise server_only("GetApp")
    emu = emulator()
    with emu.store.tx() as state:
        app = copy.deepcopy(state["app"])
        app["channel_configs"] = copy.deepcopy(state["channel_types"])
    return {"app": app, "duration": duration()}


@bp.patch("/app")
def update_app() -> Any:
    if not caller().server:
        raise server_only("UpdateApp")
    data = body()
    emu = emulator()
    with emu.store.tx() as state:
        # Validate into a copy and swap at the end: a bad field leaves settings untouched.
        app = copy.deepcopy(state["app"])
        push = app["push_notifications"]
        for key, value in data.items():
            if key == "apn_config":
                _merge_push(push["apn"], value, key, _APN_TEXT, _APN_SECRETS)
            elif key == "firebase_config":
                _merge_push(push["firebase"], value, key, _FIREBASE_TEXT, _FIREBASE_SECRETS)
            elif key == "push_config":
                if not isinstance(value, dict):
                    raise input_error("push_config must be an object")
                if "version" in value:
                    if value["version"] not in ("v1", "v2", "v3"):
                        raise input_error("push_config.version must be v1, v2 or v3")
                    push["version"] = value["version"]
                if "offline_only" in value:
                    push["offline_only"] = bool(value["offline_only"])
            elif key == "revoke_tokens_issued_before":
                try:
                    when = parse_time(value)
                except ValueError:
                    raise input_error("revoke_tokens_issued_before must be a time") from None
                app[key] = iso(when) if when else None
            elif key == "webhook_events":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise input_error("webhook_events must be an array of strings")
                app[key] = list(value)
            elif key == "event_hooks":
                app[key] = _validated_event_hooks(value)
            elif key == "webhook_compression_algorithm":
                if value not in ("", None, "gzip"):
                    raise input_error("webhook_compression_algorithm must be 'gzip' or empty")
                app[key] = value or ""
            elif key in _BOOLS:
                app[key] = bool(value)
            elif key in _STRINGS:
                if value is not None and not isinstance(value, str):
                    raise input_error(f"{key} must be a string")
                app[key] = value or ""
            else:
                app[key] = copy.deepcopy(value)  # accepted and echoed; the emulator does not act on it
        state["app"] = app
        emu.store.touch()
    return {"duration": duration()}
