"""Issue 14, finding 2: every end of a session ends Stream access. Logout, admin revocation, deactivation, role
change and refresh reuse revoke the user's Stream tokens issued before the cutoff; credentials issued after it
keep working at once, with no sleep (Stream's `iat` is whole seconds: tokens are backdated a few seconds, the
cutoff lies just after every token issued so far, and later tokens are issued with `iat` at the cutoff or later)."""
from __future__ import annotations

from typing import Any

import pytest
import requests
from safeharbor_auth.models import Job
from sqlalchemy import update
from stream_chat.base.exceptions import StreamAPIException

from .conftest import Account, AppFactory, Factory, bearer
from .test_stream import Emulator, emulator  # noqa: F401 - the module-scoped emulator fixture


@pytest.fixture
def cutoff_factory(make_app: AppFactory, emulator: Emulator) -> Factory:  # noqa: F811
    requests.post(f"{emulator.url}/_emulator/reset", timeout=5)
    app = make_app(STREAM_API_KEY=emulator.api_key, STREAM_API_SECRET=emulator.api_secret,
                   STREAM_CHAT_URL=emulator.url, STREAM_PROVISION_ON_START="1", JOB_BACKOFF_MAX="0.2",
                   SESSION_REFRESH_GRACE="0")
    return Factory(app)


def _stream_token(factory: Factory, access_token: str) -> str:
    response = factory.client.post("/v1/stream-credentials", headers=bearer(access_token))
    assert response.status_code == 200, response.get_json()
    return str(response.get_json()["token"])


def _works(emulator: Emulator, token: str, user_id: str) -> bool:  # noqa: F811
    try:
        emulator.user_client(token).query_channels({"members": {"$in": [user_id]}})
    except StreamAPIException:
        return False
    return True


def _two_sessions(factory: Factory, account: Account) -> tuple[dict[str, Any], dict[str, Any]]:
    return factory.login(account), factory.login(account)


def test_logout_revokes_stream_tokens_and_new_ones_work_at_once(cutoff_factory: Factory,
                                                                emulator: Emulator) -> None:  # noqa: F811
    account = cutoff_factory.user(role="patient")
    ending, other = _two_sessions(cutoff_factory, account)
    old = _stream_token(cutoff_factory, ending["access_token"])
    assert _works(emulator, old, account.id)
    assert cutoff_factory.client.post("/v1/auth/logout", headers=bearer(ending["access_token"])).status_code == 204
    assert not _works(emulator, old, account.id)
    # Same second, no sleep: credentials issued after the cutoff work.
    fresh = _stream_token(cutoff_factory, other["access_token"])
    assert _works(emulator, fresh, account.id)


def test_admin_session_revocation_revokes_stream_tokens(cutoff_factory: Factory,
                                                        emulator: Emulator) -> None:  # noqa: F811
    admin = cutoff_factory.user(role="admin")
    account = cutoff_factory.user(role="patient")
    ending, other = _two_sessions(cutoff_factory, account)
    old = _stream_token(cutoff_factory, ending["access_token"])
    admin_token = cutoff_factory.token(admin)
    response = cutoff_factory.client.delete(f"/v1/users/{account.id}/sessions/{ending['session_id']}",
                                            headers=bearer(admin_token))
    assert response.status_code == 204
    assert not _works(emulator, old, account.id)
    assert _works(emulator, _stream_token(cutoff_factory, other["access_token"]), account.id)


def test_refresh_reuse_revokes_stream_tokens(cutoff_factory: Factory, emulator: Emulator) -> None:  # noqa: F811
    account = cutoff_factory.user(role="patient")
    first = cutoff_factory.login(account)["access_token"]
    old = _stream_token(cutoff_factory, first)
    refreshed = cutoff_factory.client.post("/v1/auth/refresh", headers=bearer(first))
    assert refreshed.status_code == 200
    assert cutoff_factory.client.post("/v1/auth/refresh", headers=bearer(first)).status_code == 401  # reuse
    assert not _works(emulator, old, account.id)
    assert _works(emulator, _stream_token(cutoff_factory, cutoff_factory.token(account)), account.id)


def test_role_change_revokes_stream_tokens(cutoff_factory: Factory, emulator: Emulator) -> None:  # noqa: F811
    admin = cutoff_factory.user(role="admin")
    account = cutoff_factory.user(role="patient")
    old = _stream_token(cutoff_factory, cutoff_factory.token(account))
    admin_token = cutoff_factory.token(admin)
    response = cutoff_factory.client.patch(f"/v1/users/{account.id}", headers=bearer(admin_token),
                                           json={"role": "billing"})
    assert response.status_code == 200
    assert not _works(emulator, old, account.id)
    assert _works(emulator, _stream_token(cutoff_factory, cutoff_factory.token(account)), account.id)


def test_deactivation_then_reactivation_gives_working_credentials_without_a_sleep(
    cutoff_factory: Factory, emulator: Emulator,  # noqa: F811
) -> None:
    app = cutoff_factory.app
    admin = cutoff_factory.user(role="admin")
    account = cutoff_factory.user(role="patient")
    old = _stream_token(cutoff_factory, cutoff_factory.token(account))
    admin_token = cutoff_factory.token(admin)
    assert cutoff_factory.client.post(f"/v1/users/{account.id}/deactivate",
                                      headers=bearer(admin_token)).status_code == 200
    with app.extensions["auth"].engine.begin() as conn:  # keydir is not part of this test
        conn.execute(update(Job).where(Job.kind == "keydir.revoke_all").values(status="done"))
    assert cutoff_factory.client.post(f"/v1/users/{account.id}/reactivate",
                                      headers=bearer(admin_token)).status_code == 200
    assert not _works(emulator, old, account.id)
    assert _works(emulator, _stream_token(cutoff_factory, cutoff_factory.token(account)), account.id)
