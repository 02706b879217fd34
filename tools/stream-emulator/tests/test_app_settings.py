"""App settings round trip through the SDK, in Stream's shapes (PATCH apn_config/firebase_config,
GET app.push_notifications.apn/firebase)."""

from __future__ import annotations

import json

import pytest
from conftest import Emulator
from stream_chat.base.exceptions import StreamAPIException

APN = json.dumps({"aps": {"alert": {"title": "New secure message", "body": "Open the app to view."}}})
FCM_NOTIFICATION = json.dumps({"title": "New secure message", "body": "Open the app to view."})
FCM_DATA = json.dumps({"message_id": "{{ message.id }}", "channel_id": "{{ channel.id }}"})


def test_push_templates_round_trip(emu: Emulator) -> None:
    resp = emu.client.update_app_settings(
        apn_config={"notification_template": APN, "auth_key": "-----BEGIN PRIVATE KEY-----x", "key_id": "K1"},
        firebase_config={"notification_template": FCM_NOTIFICATION, "data_template": FCM_DATA,
                         "server_key": "secret-server-key"},
    )  # fmt: skip
    assert set(resp) == {"duration"}
    app = emu.client.get_app_settings()["app"]
    apn = app["push_notifications"]["apn"]
    fcm = app["push_notifications"]["firebase"]
    assert apn["notification_template"] == APN and apn["key_id"] == "K1" and apn["enabled"] is True
    assert fcm["notification_template"] == FCM_NOTIFICATION and fcm["data_template"] == FCM_DATA
    # Credentials are accepted but never read back.
    assert "secret-server-key" not in json.dumps(app) and "PRIVATE KEY" not in json.dumps(app)


def test_partial_updates_keep_other_fields(emu: Emulator) -> None:
    emu.client.update_app_settings(firebase_config={"notification_template": "a", "data_template": "b"})
    emu.client.update_app_settings(firebase_config={"data_template": "c"})
    fcm = emu.client.get_app_settings()["app"]["push_notifications"]["firebase"]
    assert (fcm["notification_template"], fcm["data_template"]) == ("a", "c")


def test_other_settings(emu: Emulator) -> None:
    emu.client.update_app_settings(
        webhook_url="http://127.0.0.1:9/hook",
        webhook_events=["message.new"],
        push_config={"version": "v3"},
        custom_flag={"x": 1},
    )
    app = emu.client.get_app_settings()["app"]
    assert app["webhook_url"] == "http://127.0.0.1:9/hook" and app["webhook_events"] == ["message.new"]
    assert app["push_notifications"]["version"] == "v3"
    assert app["custom_flag"] == {"x": 1}
    assert "messaging" in app["channel_configs"]


def test_bad_settings_refused_without_partial_write(emu: Emulator) -> None:
    with pytest.raises(StreamAPIException) as exc:
        emu.client.update_app_settings(
            firebase_config={"notification_template": "kept?"}, apn_config={"notification_template": 42}
        )
    assert exc.value.status_code == 400 and exc.value.error_code == 4
    fcm = emu.client.get_app_settings()["app"]["push_notifications"]["firebase"]
    assert fcm["notification_template"] == ""
    for bad in ({"revoke_tokens_issued_before": "yesterday"}, {"webhook_compression_algorithm": "br"}):
        with pytest.raises(StreamAPIException):
            emu.client.update_app_settings(**bad)
