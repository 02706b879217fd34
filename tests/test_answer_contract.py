"""The answer check itself (tests/answer_contract.py), on answers made up here: each kind of drift is caught."""
from __future__ import annotations

import json
from typing import Any

import requests
from answer_contract import AnswerContract, watch
from safeharbor_gateway.contract import public_document

CONTRACT = AnswerContract(public_document())
JSON = "application/json"


def _error(code: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": "m", "request_id": "r" * 8}}).encode()


def _login(**changes: Any) -> bytes:
    answer = {"access_token": "t", "token_type": "Bearer", "expires_at": "2026-01-01T00:00:00Z",
              "idle_timeout_s": 600, "scope": "full", "absolute_expires_at": "2026-01-01T12:00:00Z", "session_id": "s",
              "user": {"id": "u", "name": "n", "role": "billing", "mfa_enrolled": False}}
    answer.update(changes)
    return json.dumps(answer).encode()


def test_a_conforming_answer_passes() -> None:
    assert CONTRACT.problems("POST", "/v1/auth/login", 200, JSON, _login()) == []
    assert CONTRACT.problems("POST", "/v1/auth/login", 401, JSON, _error("mfa_required")) == []


def test_a_missing_or_wrong_typed_field_is_drift() -> None:
    answer = json.loads(_login())
    del answer["session_id"]
    assert CONTRACT.problems("POST", "/v1/auth/login", 200, JSON, json.dumps(answer).encode())
    assert CONTRACT.problems("POST", "/v1/auth/login", 200, JSON, _login(idle_timeout_s="600"))


def test_an_undocumented_status_or_path_is_drift() -> None:
    assert "status not documented" in CONTRACT.problems("POST", "/v1/auth/login", 201, JSON, _login())[0]
    assert CONTRACT.problems("GET", "/v1/nowhere", 200, JSON, b"{}")


def test_an_error_with_an_unknown_code_or_the_wrong_status_is_drift() -> None:
    assert CONTRACT.problems("GET", "/v1/auth/me", 401, JSON, _error("token_bad"))
    assert "status 403" in CONTRACT.problems("GET", "/v1/auth/me", 403, JSON, _error("unauthenticated"))[0]
    assert CONTRACT.problems("GET", "/v1/auth/me", 500, "text/html", b"<h1>oops</h1>")


def test_a_literal_path_wins_over_a_template() -> None:
    operation = CONTRACT.operation("GET", "/v1/keys/backup")
    assert operation is not None and operation.template == "/v1/keys/backup"
    operation = CONTRACT.operation("GET", "/v1/keys/dr-chen/history")
    assert operation is not None and operation.template == "/v1/keys/{user_id}/history"


def test_watch_checks_answers_sent_through_requests(monkeypatch: Any) -> None:
    def fake_send(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        response = requests.Response()
        response.status_code, response._content = 200, _login(user="not an object")
        response.headers["Content-Type"] = JSON
        response.request = request
        return response

    monkeypatch.setattr(requests.Session, "send", fake_send)
    with watch("http://gateway.test", public_document()) as answers:
        requests.post("http://gateway.test/v1/auth/login", json={})
        requests.post("http://elsewhere.test/v1/auth/login", json={})  # not the gateway: not checked
    problems = answers.take()
    assert answers.answers == 1 and len(problems) == 1 and "/user" in problems[0]
    assert requests.Session.send is fake_send  # restored
