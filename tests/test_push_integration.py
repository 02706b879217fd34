"""push-config-service through the gateway, with Stream's settings in the emulator and drift audited."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import Api
from safeharbor_devstack import Stack
from stream_chat import StreamChat

SAFE = '{"aps": {"alert": {"title": "New secure message", "body": "Open the app to view."}}, "id": "{{message.id}}"}'
UNSAFE = '{"aps": {"alert": {"title": "{{ sender.name }}", "body": "{{ message.text }}"}}}'


def _stream(stack: Stack) -> StreamChat:
    secrets = stack.settings.secrets
    return StreamChat(secrets["STREAM_API_KEY"], secrets["STREAM_API_SECRET"], base_url=stack.emulator_url)


def _status(api: Api, token: str) -> dict[str, Any]:
    response = api.call("GET", "/v1/push/status", token=token)
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.mark.stack_secrets
@pytest.mark.stream
def test_push_templates_lint_apply_drift_rollback(api: Api, stack: Stack, admin_token: str) -> None:
    lint = api.call(
        "POST",
        "/v1/push/lint",
        token=admin_token,
        json={"provider": "apn", "kind": "notification", "template": UNSAFE},
    )
    assert lint.status_code == 200
    assert [f["text"] for f in lint.json()["findings"]] == ["sender.name", "message.text"]

    refused = api.call(
        "PUT",
        "/v1/push/templates",
        token=admin_token,
        json={"provider": "apn", "kind": "notification", "template": UNSAFE},
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "phi_in_template"
    assert len(refused.json()["error"]["findings"]) == 2

    applied = api.call(
        "PUT",
        "/v1/push/templates",
        token=admin_token,
        json={"provider": "apn", "kind": "notification", "template": SAFE},
    )
    assert applied.status_code == 201, applied.text
    version = applied.json()["version"]
    stream = _stream(stack)
    assert stream.get_app_settings()["app"]["push_notifications"]["apn"]["notification_template"] == SAFE
    assert _status(api, admin_token)["providers"]["apn"]["in_sync"] is True

    # Someone changes Stream's settings outside SafeHarbor: the periodic check (1 s here) audits it.
    stream.update_app_settings(apn_config={"notification_template": UNSAFE})
    deadline = time.monotonic() + 20
    entries: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        response = api.call("GET", "/v1/audit/entries?action=push.drift.detected", token=admin_token)
        assert response.status_code == 200, response.text
        entries = response.json()["entries"]
        if entries:
            break
        time.sleep(0.5)
    assert entries, "drift was not audited"
    assert entries[-1]["actor"] == "svc:push"
    assert entries[-1]["meta"]["approved_version"] == version
    assert "sender.name" not in str(entries[-1])
    status = _status(api, admin_token)["providers"]["apn"]
    assert status["in_sync"] is False and status["phi_safe"] is False

    rolled = api.call(
        "POST",
        "/v1/push/templates/rollback",
        token=admin_token,
        json={"provider": "apn", "kind": "notification", "version": version},
    )
    assert rolled.status_code == 201, rolled.text
    assert rolled.json()["rolled_back_from"] == version
    assert _status(api, admin_token)["providers"]["apn"]["in_sync"] is True


def test_push_routes_are_admin_only(api: Api) -> None:
    token = api.token("sam")
    for method, path in (("GET", "/v1/push/status"), ("GET", "/v1/push/templates"), ("POST", "/v1/push/lint")):
        response = api.call(
            method, path, token=token, json={"provider": "apn", "kind": "notification", "template": "{}"}
        )
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"]["code"] == "forbidden"
    assert api.call("GET", "/v1/push/status").status_code == 401
