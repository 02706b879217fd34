"""Admin commands and start-up configuration checks."""
from __future__ import annotations

from pathlib import Path

import pytest
from safeharbor_auth import manage
from safeharbor_auth.app import create_app
from safeharbor_common.config import ConfigError

from .conftest import Peers, base_environ


@pytest.fixture
def env(tmp_path: Path, peers: Peers, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = base_environ(peers, f"sqlite:///{tmp_path / 'manage.db'}",
                          AUDIT_OUTBOX_PATH=str(tmp_path / "outbox.db"), SAFEHARBOR_DEMO_PASSWORD="Harbor-demo-2026")
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("REDIS_URL", raising=False)
    return values


def test_migrate_creates_first_key_and_is_idempotent(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert manage.main(["migrate"]) == 0
    assert "first signing key created" in capsys.readouterr().out
    assert manage.main(["migrate"]) == 0
    assert "first signing key" not in capsys.readouterr().out


def test_create_admin_and_seed_demo(env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    manage.main(["migrate"])
    monkeypatch.setenv("SAFEHARBOR_ADMIN_PASSWORD", "Quartz-Falcon-77")
    assert manage.main(["create-admin", "--username", "root-admin", "--name", "Root Admin"]) == 0
    assert "admin created" in capsys.readouterr().out
    assert manage.main(["create-admin", "--username", "root-admin", "--name", "Root Admin"]) == 1
    monkeypatch.setenv("SAFEHARBOR_ADMIN_PASSWORD", "short")
    assert manage.main(["create-admin", "--username", "weak", "--name", "Weak"]) == 1
    assert "unprocessable" in capsys.readouterr().err

    assert manage.main(["seed-demo"]) == 0
    assert "5 created" in capsys.readouterr().out
    assert manage.main(["seed-demo"]) == 0
    assert "0 created" in capsys.readouterr().out

    app = create_app({"AUDIT_ENABLED": False})
    client = app.test_client()
    for username, role in (("admin", "admin"), ("dr-chen", "clinician"), ("sam", "billing"), ("pat", "patient"),
                           ("audra", "auditor")):
        response = client.post("/v1/auth/login", json={"username": username, "password": "Harbor-demo-2026"})
        assert response.status_code == 200
        body = response.get_json()
        assert body["user"]["role"] == role and body["user"]["mfa_enrolled"] is False
        expected = "mfa_enrollment" if role in ("admin", "clinician", "auditor") else "full"
        assert body["scope"] == expected


def test_seed_demo_refuses_outside_dev(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFEHARBOR_ENV", "production")
    assert manage.main(["seed-demo"]) == 2


def test_rotate_signing_key(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    manage.main(["migrate"])
    assert manage.main(["rotate-signing-key", "--now"]) == 0
    assert "new signing key" in capsys.readouterr().out
    app = create_app({"AUDIT_ENABLED": False})
    assert len(app.test_client().get("/.well-known/jwks.json").get_json()["keys"]) == 2


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("SESSION_IDLE_TIMEOUT", "1801", "SESSION_IDLE_TIMEOUT must be at most 1800"),
        ("SESSION_IDLE_TIMEOUT", "ten", "SESSION_IDLE_TIMEOUT must be an integer"),
        ("SESSION_MAX_LIFETIME", "60", "SESSION_MAX_LIFETIME must be at least SESSION_IDLE_TIMEOUT"),
        ("AUTH_DATA_KEY", "c2hvcnQ", "AUTH_DATA_KEY must be 32 bytes"),
        ("MFA_REQUIRED_ROLES", "admin,wizard", "MFA_REQUIRED_ROLES has unknown roles: wizard"),
        ("SAFEHARBOR_ENV", "staging", "SAFEHARBOR_ENV must be dev or production"),
    ],
)
def test_bad_settings_refused_with_a_clear_message(env: dict[str, str], setting: str, value: str,
                                                   message: str) -> None:
    environ = dict(env, **{setting: value})
    with pytest.raises(ConfigError, match=message):
        create_app({"ENVIRON": environ})


def test_production_refuses_weak_argon2(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="OWASP"):
        create_app({"ENVIRON": dict(env, SAFEHARBOR_ENV="production")})


def test_missing_data_key_stops_the_server_start(env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("AUTH_DATA_KEY")
    with pytest.raises(SystemExit):
        create_app()
    err = capsys.readouterr().err
    assert "AUTH_DATA_KEY is required" in err and env["AUTH_DATA_KEY"] not in err


def test_health_readiness_metrics_openapi(env: dict[str, str]) -> None:
    manage.main(["migrate"])
    client = create_app({"AUDIT_ENABLED": False}).test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert b"http_requests_total" in client.get("/metrics").data
    doc = client.get("/openapi.json").get_json()
    for path in ("/v1/auth/login", "/v1/auth/refresh", "/v1/users/{user_id}/deactivate", "/v1/stream-credentials",
                 "/v1/channels", "/v1/auth/break-glass", "/internal/v1/revocations", "/.well-known/jwks.json"):
        assert path in doc["paths"], path
    assert "LoginRequest" in doc["components"]["schemas"]


def test_not_ready_before_migration(env: dict[str, str]) -> None:
    client = create_app({"AUDIT_ENABLED": False}).test_client()
    response = client.get("/readyz")
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "service_unavailable"
