"""Issue 16: the PHI-safe defaults reach Stream because the service starts, not because someone ran
`manage apply-defaults`: applied at start (by one process), retried while Stream is down, /readyz 503 with
the reason until every slot has an approved template."""

from __future__ import annotations

import pytest
from safeharbor_push.defaults import DEFAULT_TEMPLATES
from safeharbor_push.stream import SLOTS

from .conftest import AppFactory, Emulator


def _ready(app: object) -> tuple[int, dict[str, object]]:
    response = app.test_client().get("/readyz")  # type: ignore[attr-defined]
    return response.status_code, response.get_json()


def test_defaults_applied_at_start(make_app: AppFactory, emulator: Emulator) -> None:
    app = make_app(ENVIRON_EXTRA={"PUSH_APPLY_DEFAULTS_ON_START": "1"})
    assert _ready(app)[0] == 200
    held = emulator.push_settings()
    assert held["apn"]["notification_template"] == DEFAULT_TEMPLATES[("apn", "notification")]
    assert held["firebase"]["data_template"] == DEFAULT_TEMPLATES[("firebase", "data")]
    # A second process (or a restart) finds every slot approved and applies nothing again.
    again = make_app(ENVIRON_EXTRA={"PUSH_APPLY_DEFAULTS_ON_START": "1"})
    assert _ready(again)[0] == 200
    from safeharbor_push.service import list_templates

    with again.app_context():
        versions = list_templates(ctx=again.extensions["push"]).templates
    assert len(versions) == len(SLOTS)


def test_not_ready_until_stream_takes_the_defaults(make_app: AppFactory, emulator: Emulator) -> None:
    emulator.outage(True)
    try:
        app = make_app(ENVIRON_EXTRA={"PUSH_APPLY_DEFAULTS_ON_START": "1"})
        status, body = _ready(app)
        assert status == 503
        reasons = body["error"]["reasons"]  # type: ignore[index]
        assert any("apn/notification" in r for r in reasons), reasons
    finally:
        emulator.outage(False)
    assert app.extensions["push_drift"].ensure_defaults() is True
    assert _ready(app)[0] == 200
    assert emulator.push_settings()["apn"]["notification_template"] == DEFAULT_TEMPLATES[("apn", "notification")]


@pytest.mark.parametrize("setting", ["0"])
def test_off_means_no_write_and_no_gate(make_app: AppFactory, emulator: Emulator, setting: str) -> None:
    app = make_app(ENVIRON_EXTRA={"PUSH_APPLY_DEFAULTS_ON_START": setting})
    assert _ready(app)[0] == 200
    assert emulator.push_settings()["apn"]["notification_template"] != DEFAULT_TEMPLATES[("apn", "notification")]
