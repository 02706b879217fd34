"""Issue 14, the CLI for people: the TOTP enrolment QR code and a session at the end of it, Ctrl-C and end of
input ending cleanly, channel members by username, the admin commands, --json everywhere (errors too), and
the countdown warning before automatic logoff in a long-running command. Against a small fake gateway that
records what the CLI asked for (the server side of each route has its own tests)."""
from __future__ import annotations

import builtins
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify, request
from safeharbor_client import cli
from safeharbor_client.client import SafeHarborClient
from safeharbor_client.logoff import logoff_warning
from werkzeug.serving import make_server

USER_ID = "0b6c1c4e-1111-4a4a-8888-000000000001"
PAT_ID = "0b6c1c4e-1111-4a4a-8888-000000000002"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class FakeGateway:
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    idle_s: int = 600
    logins: int = 0
    url: str = ""

    def session(self, scope: str = "full", role: str = "admin") -> dict[str, Any]:
        now = time.time()
        return {"access_token": f"tok-{scope}-{now}", "token_type": "Bearer", "expires_at": _iso(now + self.idle_s),
                "idle_timeout_s": 600, "absolute_expires_at": _iso(now + 43200), "session_id": "s-" + scope,
                "scope": scope, "user": {"id": USER_ID, "name": "Ada Admin", "role": role,
                                         "mfa_enrolled": scope == "full"}}

    def app(self) -> Flask:
        app = Flask("fake-gateway")
        users = [{"id": USER_ID, "username": "ada", "name": "Ada Admin", "role": "admin", "status": "active",
                  "mfa_enrolled": True},
                 {"id": PAT_ID, "username": "pat", "name": "Pat", "role": "patient", "status": "active",
                  "mfa_enrolled": False}]

        @app.before_request
        def record() -> None:
            self.calls.append((request.method, request.full_path.rstrip("?"), request.get_json(silent=True)))

        @app.post("/v1/auth/login")
        def login() -> Any:
            self.logins += 1
            return jsonify(self.session("mfa_enrollment" if request.get_json()["username"] == "newdoc" else "full"))

        @app.post("/v1/auth/mfa/totp/enroll")
        def enroll() -> Any:
            return jsonify({"secret": "JBSWY3DPEHPK3PXP",
                            "otpauth_uri": "otpauth://totp/SafeHarbor:newdoc?secret=JBSWY3DPEHPK3PXP&issuer=SafeHarbor"})

        @app.post("/v1/auth/mfa/totp/confirm")
        def confirm() -> Any:
            return jsonify({"recovery_codes": ["aaaa-bbbb", "cccc-dddd"], **self.session("full", "clinician")})

        @app.post("/v1/channels")
        def channels() -> Any:
            body = request.get_json()
            return jsonify({"cid": f"{body['type']}:c1", "type": body["type"], "id": "c1",
                            "members": [USER_ID, PAT_ID]}), 201

        @app.get("/v1/users")
        def list_users() -> Any:
            return jsonify({"users": users})

        @app.post("/v1/users")
        def create_user() -> Any:
            body = request.get_json()
            return jsonify({"id": "new-id", "username": body["username"], "name": body["name"],
                            "role": body["role"], "status": "active"}), 201

        @app.get("/v1/users/<user_id>")
        def show_user(user_id: str) -> Any:
            return jsonify(next(u for u in users if u["id"] == user_id))

        @app.patch("/v1/users/<user_id>")
        def patch_user(user_id: str) -> Any:
            return jsonify({**next(u for u in users if u["id"] == user_id), **request.get_json()})

        @app.get("/v1/users/<user_id>/sessions")
        def sessions(user_id: str) -> Any:
            return jsonify({"sessions": [{"id": "s1", "active": True, "scope": "full"},
                                         {"id": "s0", "active": False, "scope": "full"}]})

        @app.delete("/v1/users/<user_id>/sessions/<sid>")
        def end_session(user_id: str, sid: str) -> Any:
            return "", 204

        @app.post("/v1/users/<user_id>/<action>")
        def activation(user_id: str, action: str) -> Any:
            status = "deactivated" if action == "deactivate" else "active"
            return jsonify({"id": user_id, "status": status,
                            "deprovisioning": {"sessions": "done", "stream": "done", "keys": "pending"}})

        @app.post("/v1/push/lint")
        def lint() -> Any:
            phi = "sender.name" in request.get_json()["template"]
            return jsonify({"ok": not phi, "findings": [{"rule": "phi_variable", "text": "sender.name", "line": 1,
                                                         "column": 3}] if phi else []})

        @app.put("/v1/push/templates")
        def apply() -> Any:
            if "sender.name" in request.get_json()["template"]:
                return jsonify({"error": {"code": "phi_in_template", "message": "PHI", "request_id": "r",
                                          "findings": [{"rule": "phi_variable", "text": "sender.name", "line": 1,
                                                        "column": 3}]}}), 422
            return jsonify({"version": 4, "applied": True}), 201

        @app.get("/v1/push/status")
        def status() -> Any:
            return jsonify({"providers": {"apn": {"approved_version": 4, "in_sync": True},
                                          "firebase": {"approved_version": 2, "in_sync": False}}})

        @app.post("/v1/push/templates/rollback")
        def rollback() -> Any:
            return jsonify({"version": request.get_json()["version"], "applied": True})

        @app.get("/v1/break-glass")
        def glass() -> Any:
            return jsonify({"break_glass": [{"id": "bg1", "status": "closed", "user_id": USER_ID,
                                             "channel_cid": "clinical:x", "opened_at": "2026-12-01T00:00:00Z",
                                             "reviewed_at": None}]})

        @app.post("/v1/break-glass/<bg_id>/review")
        def review(bg_id: str) -> Any:
            return jsonify({"id": bg_id, "reviewed_at": "2026-12-03T00:00:00Z"})

        @app.get("/v1/auth/me")
        def me() -> Any:
            return jsonify({"error": {"code": "forbidden", "message": "Not allowed.", "request_id": "r"}}), 403

        return app


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    fake = FakeGateway()
    server = make_server("127.0.0.1", 0, fake.app(), threaded=True)
    fake.url = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield fake
    server.shutdown()


def run(gateway: FakeGateway, state: Path, *argv: str) -> tuple[int, list[str]]:
    printed: list[str] = []
    code = cli.main(["--gateway", gateway.url, "--state-dir", str(state), *argv], out=printed.append)
    return code, printed


@pytest.fixture
def admin(gateway: FakeGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SAFEHARBOR_PASSWORD", "Granite-Heron-42")
    assert run(gateway, tmp_path, "login", "ada")[0] == 0
    gateway.calls.clear()
    return tmp_path


def test_enrolment_shows_a_qr_code_and_ends_with_a_session(gateway: FakeGateway, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SAFEHARBOR_PASSWORD", "Granite-Heron-42")
    monkeypatch.setattr(builtins, "input", lambda prompt="": "123456")
    code, printed = run(gateway, tmp_path, "login", "newdoc")
    assert code == 0
    shown = "\n".join(printed)
    assert "▄" in shown or "█" in shown  # the QR code, drawn in the terminal
    assert "JBSWY3DPEHPK3PXP" in shown and "aaaa-bbbb" in shown
    assert "Traceback" not in capsys.readouterr().err
    assert gateway.logins == 1  # no second login: confirming the code gave the full session
    assert "Logged in as" in printed[-1]
    stored = SafeHarborClient(gateway.url, state_dir=tmp_path).session
    assert stored is not None and stored.scope == "full"


def test_end_of_input_and_ctrl_c_end_cleanly(gateway: FakeGateway, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SAFEHARBOR_PASSWORD", "Granite-Heron-42")

    def eof(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr(builtins, "input", eof)
    assert run(gateway, tmp_path, "login", "newdoc")[0] == 1
    err = capsys.readouterr().err
    assert "input ended" in err and "Traceback" not in err

    def interrupt(prompt: str = "") -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(builtins, "input", interrupt)
    assert run(gateway, tmp_path, "--json", "login", "newdoc")[0] == 130
    err = capsys.readouterr().err
    assert json.loads(err.strip().splitlines()[-1])["error"]["code"] == "interrupted"


def test_channel_members_by_username(gateway: FakeGateway, admin: Path) -> None:
    code, _ = run(gateway, admin, "channels", "open", "patient-care", "pat", PAT_ID)
    assert code == 0
    assert ("POST", "/v1/channels", {"type": "patient-care", "members": ["pat", PAT_ID]}) in gateway.calls


def test_admin_user_commands(gateway: FakeGateway, admin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFEHARBOR_NEW_PASSWORD", "Another-Long-Pass-9")
    code, printed = run(gateway, admin, "--json", "admin", "users", "create", "bob", "--name", "Bob B",
                        "--role", "billing")
    assert code == 0 and json.loads(printed[-1])["username"] == "bob"
    assert ("POST", "/v1/users", {"username": "bob", "name": "Bob B", "role": "billing",
                                  "password": "Another-Long-Pass-9"}) in gateway.calls
    code, printed = run(gateway, admin, "admin", "users", "list", "--role", "patient")
    assert code == 0 and "pat" in printed[-1]
    assert ("GET", "/v1/users?role=patient", None) in gateway.calls
    code, printed = run(gateway, admin, "--json", "admin", "users", "show", "pat")  # by username
    assert code == 0 and json.loads(printed[-1])["id"] == PAT_ID
    assert ("GET", f"/v1/users/{PAT_ID}/sessions", None) in gateway.calls
    assert run(gateway, admin, "admin", "users", "role", "pat", "billing")[0] == 0
    assert ("PATCH", f"/v1/users/{PAT_ID}", {"role": "billing"}) in gateway.calls
    for action in ("deactivate", "reactivate"):
        code, printed = run(gateway, admin, "admin", "users", action, PAT_ID)
        assert code == 0 and ("POST", f"/v1/users/{PAT_ID}/{action}", None) in gateway.calls
    code, printed = run(gateway, admin, "--json", "admin", "users", "revoke-sessions", "pat")
    assert code == 0 and json.loads(printed[-1]) == {"revoked": ["s1"]}  # only the active one
    assert ("DELETE", f"/v1/users/{PAT_ID}/sessions/s1", None) in gateway.calls


def test_admin_push_and_break_glass_commands(gateway: FakeGateway, admin: Path, tmp_path: Path) -> None:
    clean, phi = tmp_path / "clean.hbs", tmp_path / "phi.hbs"
    clean.write_text('{"aps":{"alert":"New secure message"}}')
    phi.write_text('{"aps":{"alert":"{{ sender.name }}"}}')
    assert run(gateway, admin, "admin", "push", "lint", str(clean), "--provider", "apn")[0] == 0
    code, printed = run(gateway, admin, "admin", "push", "lint", str(phi), "--provider", "apn")
    assert code == 1 and "sender.name" in printed[-1]
    code, printed = run(gateway, admin, "--json", "admin", "push", "apply", str(phi), "--provider", "apn")
    assert code == 1 and json.loads(printed[-1])["applied"] is False
    code, printed = run(gateway, admin, "admin", "push", "apply", str(clean), "--provider", "apn")
    assert code == 0 and "version 4" in printed[-1]
    code, printed = run(gateway, admin, "admin", "push", "status")
    assert code == 0 and "DRIFT" in printed[-1]
    assert run(gateway, admin, "admin", "push", "rollback", "--provider", "firebase", "--version", "1")[0] == 0
    assert ("POST", "/v1/push/templates/rollback", {"provider": "firebase", "kind": "notification",
                                                    "version": 1}) in gateway.calls
    code, printed = run(gateway, admin, "admin", "break-glass", "list")
    assert code == 0 and "NOT REVIEWED" in printed[-1]
    assert run(gateway, admin, "admin", "break-glass", "review", "bg1", "--note", "Checked with the ward")[0] == 0
    assert ("POST", "/v1/break-glass/bg1/review", {"note": "Checked with the ward"}) in gateway.calls


def test_json_errors(gateway: FakeGateway, admin: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(gateway, admin, "--json", "admin", "users", "show", "nobody")
    assert code == 1
    assert json.loads(capsys.readouterr().err.strip())["error"]["code"] == "not_found"


def test_logoff_warning_once_per_threshold() -> None:
    warned: set[int] = set()
    assert logoff_warning(200, 40000, warned=warned) is None
    first = logoff_warning(59, 40000, warned=warned)
    assert first is not None and "automatic logoff in 59 s" in first and "Enter" in first
    assert logoff_warning(58, 40000, warned=warned) is None  # already warned at 60
    assert logoff_warning(29, 40000, warned=warned) is not None
    ending = logoff_warning(500, 9, warned=set())
    assert ending is not None and "maximum lifetime" in ending


def test_follow_warns_before_automatic_logoff_and_does_not_keep_the_session_alive(
    gateway: FakeGateway, admin: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    gateway.idle_s = 45
    run(gateway, admin, "login", "ada")  # a session with 45 s of idle time left
    monkeypatch.setattr(SafeHarborClient, "read", lambda self, cid, limit=50: [])
    refreshes_before = sum(1 for c in gateway.calls if c[1] == "/v1/auth/refresh")
    code, _ = run(gateway, admin, "read", "patient-care:c1", "--follow", "--interval", "0", "--polls", "2")
    assert code == 0
    err = capsys.readouterr().err
    assert err.count("automatic logoff in") == 1  # warned once, not at every read
    assert sum(1 for c in gateway.calls if c[1] == "/v1/auth/refresh") == refreshes_before
