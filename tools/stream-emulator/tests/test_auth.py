"""Stream-style authentication: api_key, server and user JWTs, revocation, deactivation."""

from __future__ import annotations

import datetime as dt
import time

import jwt
import pytest
from conftest import API_KEY, API_SECRET, Emulator
from stream_chat.base.exceptions import StreamAPIException


def _err(resp: object) -> tuple[int, int]:
    body = resp.json()  # type: ignore[attr-defined]
    assert set(body) >= {"code", "message", "StatusCode", "duration"}
    return resp.status_code, body["code"]  # type: ignore[attr-defined]


def test_missing_and_wrong_api_key(emu: Emulator) -> None:
    token = emu.client.auth_token
    assert _err(emu.raw("GET", "/app", token=token, params={})) == (401, 2)
    assert _err(emu.raw("GET", "/app", token=token, params={"api_key": "nope"})) == (401, 2)


def test_missing_and_bad_tokens(emu: Emulator) -> None:
    assert _err(emu.raw("GET", "/app")) == (401, 5)
    forged = jwt.encode({"server": True}, "another-secret-that-is-long-enough-000000", algorithm="HS256")
    assert _err(emu.raw("GET", "/app", token=forged)) == (401, 43)
    assert _err(emu.raw("GET", "/app", token="not-a-jwt")) == (401, 5)
    none_alg = jwt.encode({"server": True}, None, algorithm="none")  # type: ignore[arg-type]  # the SDK's hints are narrower than what it accepts
    assert _err(emu.raw("GET", "/app", token=none_alg))[0] == 401


def test_bearer_prefix_tolerated(emu: Emulator) -> None:
    resp = emu.raw("GET", "/app", token="Bearer " + emu.client.auth_token)
    assert resp.status_code == 200 and "app" in resp.json()


def test_sdk_raises_stream_api_exception_with_code(emu: Emulator) -> None:
    from stream_chat import StreamChat

    bad = StreamChat(API_KEY, "wrong-secret-wrong-secret-wrong-secret-1234", base_url=emu.url)
    with pytest.raises(StreamAPIException) as exc:
        bad.get_app_settings()
    assert exc.value.status_code == 401 and exc.value.error_code == 43


def test_user_token_works_and_expired_token_refused(emu: Emulator) -> None:
    emu.client.upsert_user({"id": "u1"})
    assert emu.user_client("u1").query_channels({})["channels"] == []
    expired = emu.user_client("u1", exp=int(time.time()) - 60)
    with pytest.raises(StreamAPIException) as exc:
        expired.query_channels({})
    assert exc.value.status_code == 401 and exc.value.error_code == 40


def test_token_for_unknown_user_refused(emu: Emulator) -> None:
    with pytest.raises(StreamAPIException) as exc:
        emu.user_client("ghost").query_channels({})
    assert exc.value.status_code == 401


def test_revoke_user_token_refuses_old_token_accepts_new(emu: Emulator) -> None:
    emu.client.upsert_users([{"id": "u1"}, {"id": "u2"}])
    old_iat = int(time.time()) - 10
    old = emu.user_client("u1", iat=old_iat)
    other = emu.user_client("u2", iat=old_iat)
    old.query_channels({})
    emu.client.revoke_user_token("u1", dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5))
    with pytest.raises(StreamAPIException) as exc:
        old.query_channels({})
    assert exc.value.status_code == 401 and exc.value.error_code == 5
    other.query_channels({})  # only u1 was revoked
    fresh = emu.user_client("u1", iat=int(time.time()))
    fresh.query_channels({})
    # A token without iat cannot prove it is newer: refused once a revocation exists (fail closed).
    with pytest.raises(StreamAPIException):
        emu.user_client("u1").query_channels({})
    # Undo the revoke (Stream: set it to null).
    emu.client.update_user_partial({"id": "u1", "set": {"revoke_tokens_issued_before": None}})
    old.query_channels({})


def test_naive_datetime_revocation_is_utc(emu: Emulator) -> None:
    emu.client.upsert_user({"id": "u1"})
    old = emu.user_client("u1", iat=int(time.time()) - 30)
    naive_utc = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=5)
    emu.client.revoke_user_token("u1", naive_utc)  # SDK sends naive isoformat()
    with pytest.raises(StreamAPIException):
        old.query_channels({})


def test_app_level_revoke_tokens(emu: Emulator) -> None:
    emu.client.upsert_user({"id": "u1"})
    old = emu.user_client("u1", iat=int(time.time()) - 30)
    emu.client.revoke_tokens(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5))
    assert emu.client.get_app_settings()["app"]["revoke_tokens_issued_before"]
    with pytest.raises(StreamAPIException):
        old.query_channels({})
    emu.user_client("u1", iat=int(time.time())).query_channels({})
    emu.client.get_app_settings()  # server tokens are not affected


def test_deactivated_user_token_refused_until_reactivated(emu: Emulator) -> None:
    emu.client.upsert_user({"id": "u1"})
    uc = emu.user_client("u1")
    uc.query_channels({})
    emu.client.deactivate_user("u1")
    with pytest.raises(StreamAPIException) as exc:
        uc.query_channels({})
    assert exc.value.status_code == 401
    emu.client.reactivate_user("u1")
    uc.query_channels({})


def test_deleted_user_token_refused(emu: Emulator) -> None:
    emu.client.upsert_user({"id": "u1"})
    uc = emu.user_client("u1")
    emu.client.delete_user("u1")
    with pytest.raises(StreamAPIException):
        uc.query_channels({})


def test_user_token_cannot_call_server_endpoints(emu: Emulator) -> None:
    emu.client.upsert_user({"id": "u1"})
    uc = emu.user_client("u1")
    for call in (
        lambda: uc.upsert_user({"id": "u1", "role": "admin"}),
        lambda: uc.get_app_settings(),
        lambda: uc.update_app_settings(webhook_url="http://evil.invalid"),
        lambda: uc.create_channel_type({"name": "x"}),
        lambda: uc.deactivate_user("u1"),
        lambda: uc.revoke_user_token("u1", dt.datetime.now(dt.UTC)),
    ):
        with pytest.raises(StreamAPIException) as exc:
            call()
        assert exc.value.status_code == 403 and exc.value.error_code == 17


def test_token_signed_with_other_alg_refused(emu: Emulator) -> None:
    token = jwt.encode({"server": True}, API_SECRET, algorithm="HS512")
    assert emu.raw("GET", "/app", token=token).status_code == 401
