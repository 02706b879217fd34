"""Bad input always yields Stream's JSON error envelope, never HTML or a stack trace."""

from __future__ import annotations

import pytest
from conftest import Emulator
from stream_emulator.config import ConfigError, EmulatorConfig


def _check(resp, status: int, code: int) -> None:  # type: ignore[no-untyped-def]
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    assert body["code"] == code and body["StatusCode"] == status and body["duration"].endswith("ms")
    assert "Traceback" not in resp.text


def test_malformed_json(emu: Emulator) -> None:
    _check(emu.raw("POST", "/users", token=emu.client.auth_token, data=b"{oops"), 400, 4)
    _check(emu.raw("POST", "/users", token=emu.client.auth_token, data=b"[1,2]"), 400, 4)
    _check(emu.raw("POST", "/users", token=emu.client.auth_token, json={"users": "x"}), 400, 4)
    _check(emu.raw("POST", "/channels", token=emu.client.auth_token, json={"filter_conditions": []}), 400, 4)
    _check(emu.raw("GET", "/users", token=emu.client.auth_token, params={"api_key": emu.client.api_key,
                                                                         "payload": "{bad"}), 400, 4)  # fmt: skip


def test_unknown_route_and_method(emu: Emulator) -> None:
    _check(emu.raw("GET", "/nope", token=emu.client.auth_token), 404, 16)
    _check(emu.raw("PUT", "/app", token=emu.client.auth_token, json={}), 405, 4)


def test_payload_too_big(emu: Emulator) -> None:
    _check(emu.raw("POST", "/users", token=emu.client.auth_token, data=b"x" * (6 * 1024 * 1024)), 413, 22)


def test_wrong_types_in_message(emu: Emulator) -> None:
    emu.client.upsert_user({"id": "u1"})
    emu.client.channel("messaging", "m", {"members": ["u1"]}).create("u1")
    tok = emu.client.auth_token
    _check(emu.raw("POST", "/channels/messaging/m/message", token=tok, json={"message": "x"}), 400, 4)
    _check(emu.raw("POST", "/channels/messaging/m/message", token=tok,
                   json={"message": {"text": 5, "user_id": "u1"}}), 400, 4)  # fmt: skip
    _check(emu.raw("POST", "/channels/messaging/m/query", token=tok, json={"messages": {"limit": "x"}}), 400, 4)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="STREAM_API_SECRET"):
        EmulatorConfig.from_mapping({"STREAM_API_KEY": "k"})
    with pytest.raises(ConfigError, match="PORT"):
        EmulatorConfig.from_mapping({"STREAM_API_KEY": "k", "STREAM_API_SECRET": "s", "STREAM_EMULATOR_PORT": "x"})
    cfg = EmulatorConfig.from_mapping({"STREAM_API_KEY": "k", "STREAM_API_SECRET": "hunter2"})
    assert cfg.port == 8190 and "hunter2" not in repr(cfg)
