"""The shared core: config readers, service identity, the error format and the web setup."""
from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from flask import Flask
from pydantic import BaseModel
from safeharbor_common import service_identity, web
from safeharbor_common.config import ConfigError, EnvReader, Secret
from safeharbor_common.errors import Conflict, LockedOut
from safeharbor_common.service_identity import (
    ServiceTokenSigner,
    ServiceTokenVerifier,
    generate_keypair,
    load_private_key,
    parse_public_keys,
    require_service,
)
from safeharbor_protocol.encoding import EncodingError, b64url_decode, b64url_encode, parse_decimal


def test_secret_never_printed() -> None:
    secret = Secret("hunter2-very-secret")
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret) and "hunter2" not in f"{secret}"
    assert secret.reveal() == "hunter2-very-secret"


def test_env_reader_validates_and_names_the_setting() -> None:
    env = EnvReader({"PORT": "abc", "BIG": "5000", "FLAG": "maybe", "LIST": "a, b,,c"})
    with pytest.raises(ConfigError, match="PORT must be an integer"):
        env.int("PORT", 1)
    with pytest.raises(ConfigError, match="BIG must be at most 1800"):
        env.int("BIG", 1, maximum=1800)
    with pytest.raises(ConfigError, match="FLAG must be a boolean"):
        env.bool("FLAG", False)
    with pytest.raises(ConfigError, match="MISSING is required"):
        env.secret("MISSING")
    assert env.csv("LIST") == ("a", "b", "c")


def test_b64url_roundtrip_and_padding_refused() -> None:
    assert b64url_decode(b64url_encode(b"\x00\xffhello")) == b"\x00\xffhello"
    with pytest.raises(EncodingError):
        b64url_decode("aGk=")


def test_service_tokens_name_the_caller_and_target() -> None:
    seed, pub = generate_keypair()
    signer = ServiceTokenSigner(name="gateway", private_key=load_private_key(seed))
    token = signer.token_for("auth")
    assert signer.token_for("auth") == token  # reused until near expiry
    verifier = ServiceTokenVerifier(name="auth", trusted=parse_public_keys(f"gateway={pub}"))
    assert verifier.verify(token) == "gateway"
    # a token for another target is refused
    other = ServiceTokenVerifier(name="keydir", trusted=parse_public_keys(f"gateway={pub}"))
    with pytest.raises(Exception, match="Invalid service token"):
        other.verify(token)


def test_service_token_from_untrusted_key_refused() -> None:
    seed, _ = generate_keypair()
    _, trusted_pub = generate_keypair()
    token = ServiceTokenSigner(name="gateway", private_key=load_private_key(seed)).token_for("auth")
    verifier = ServiceTokenVerifier(name="auth", trusted=parse_public_keys(f"gateway={trusted_pub}"))
    with pytest.raises(Exception, match="Invalid service token"):
        verifier.verify(token)


def test_expired_service_token_refused() -> None:
    seed, pub = generate_keypair()
    key = load_private_key(seed)
    now = int(time.time())
    token = jwt.encode({"iss": "svc:gateway", "sub": "svc:gateway", "aud": "svc:auth", "iat": now - 120,
                        "exp": now - 60, "jti": "x"}, key, algorithm="EdDSA")
    verifier = ServiceTokenVerifier(name="auth", trusted=parse_public_keys(f"gateway={pub}"))
    with pytest.raises(Exception, match="Invalid service token"):
        verifier.verify(token)


def test_public_keys_setting_validated() -> None:
    with pytest.raises(ConfigError):
        parse_public_keys("stranger=abc")
    with pytest.raises(ConfigError):
        parse_public_keys("gateway=not-a-key")


class Thing(BaseModel):
    name: str
    count: int


def _app() -> tuple[Flask, str]:
    seed, pub = generate_keypair()
    app = Flask("t")
    app.config.update(SERVICE_NAME="audit", SERVICE_PRIVATE_KEY=seed, SERVICE_PUBLIC_KEYS=f"gateway={pub}",
                      MAX_CONTENT_LENGTH=256)
    web.init_app(app, service_name="audit", readiness_check=lambda: None)
    service_identity.init_app(app)

    @app.post("/things")
    def create_thing() -> Any:
        thing = web.json_body(Thing)
        if thing.name == "dup":
            raise Conflict("Exists.")
        if thing.name == "lock":
            raise LockedOut(retry_after=30)
        return {"name": thing.name, "ip": web.client_ip()}, 201

    @app.get("/internal/ping")
    @require_service("gateway")
    def ping() -> Any:
        return {"caller": service_identity.calling_service()}

    @app.get("/db-down")
    def db_down() -> Any:
        from sqlalchemy import create_engine, text

        with create_engine("postgresql+psycopg://nobody@127.0.0.1:1/x").connect() as conn:
            conn.execute(text("SELECT 1"))
        return {}

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("patient Jane Doe's record")  # must not leak

    return app, seed


def test_error_format_and_codes() -> None:
    app, _ = _app()
    client = app.test_client()
    bad_json = client.post("/things", data="{nope", content_type="application/json")
    assert bad_json.status_code == 400 and bad_json.get_json()["error"]["code"] == "invalid_request"
    missing = client.post("/things", json={"name": "a"})
    assert missing.status_code == 400 and "count" in missing.get_json()["error"]["message"]
    assert client.post("/things", json={"name": "dup", "count": 1}).get_json()["error"]["code"] == "conflict"
    locked = client.post("/things", json={"name": "lock", "count": 1})
    assert locked.status_code == 429 and locked.headers["Retry-After"] == "30"
    big = client.post("/things", data="x" * 1000, content_type="application/json")
    assert big.status_code == 413 and big.get_json()["error"]["code"] == "payload_too_large"
    down = client.get("/db-down")
    assert down.status_code == 503 and down.get_json()["error"]["code"] == "service_unavailable"
    boom = client.get("/boom")
    assert boom.status_code == 500
    assert "Jane" not in boom.get_data(as_text=True) and "Traceback" not in boom.get_data(as_text=True)
    assert boom.get_json()["error"]["request_id"] == boom.headers["X-Request-ID"]


def test_client_ip_trusted_only_from_the_gateway() -> None:
    app, seed = _app()
    client = app.test_client()
    spoofed = client.post("/things", json={"name": "a", "count": 1}, headers={"X-SafeHarbor-Client-IP": "6.6.6.6"})
    assert spoofed.get_json()["ip"] == "127.0.0.1"
    token = ServiceTokenSigner(name="gateway", private_key=load_private_key(seed)).token_for("audit")
    vouched = client.post("/things", json={"name": "a", "count": 1},
                          headers={"X-SafeHarbor-Client-IP": "6.6.6.6", "X-Service-Token": token})
    assert vouched.get_json()["ip"] == "6.6.6.6"


def test_internal_route_needs_service_identity() -> None:
    app, seed = _app()
    client = app.test_client()
    assert client.get("/internal/ping").status_code == 401
    assert client.get("/internal/ping", headers={"X-Service-Token": "garbage"}).status_code == 401
    token = ServiceTokenSigner(name="gateway", private_key=load_private_key(seed)).token_for("audit")
    assert client.get("/internal/ping", headers={"X-Service-Token": token}).get_json() == {"caller": "gateway"}


def test_health_metrics_openapi() -> None:
    app, _ = _app()
    client = app.test_client()
    assert client.get("/healthz").get_json()["status"] == "ok"
    assert client.get("/readyz").status_code == 200
    client.get("/healthz")
    assert b"http_requests_total" in client.get("/metrics").data
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.") and "/things" in doc["paths"]


def test_api_doc_states_every_status_a_view_answers() -> None:
    app = Flask("t")
    web.init_app(app, service_name="audit", readiness_check=lambda: None)

    @app.post("/things")
    @web.api_doc(summary="Create a thing", status=201, also={200: "The thing existed (same body)"},
                 request_model=Thing, response_model=Thing)
    def create_thing() -> Any:
        return {}

    responses = web.openapi_document(app, title="t", version="1")["paths"]["/things"]["post"]["responses"]
    assert set(responses) == {"201", "200", "default"}
    assert responses["200"] == {**responses["201"], "description": "The thing existed (same body)"}
    assert responses["201"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Thing"}


@pytest.mark.parametrize(("text", "expected"), [("0", 0), ("123", 123), ("9" * 9, 999_999_999), ("9" * 10, None),
                                                ("", None), ("\u00b3", None), ("\u0663", None), ("-1", None),
                                                ("1e3", None), (" 1", None)])
def test_parse_decimal_takes_ascii_digits_only(text: str, expected: int | None) -> None:
    assert parse_decimal(text, max_digits=9) == expected


def test_readyz_names_the_reasons_of_a_not_ready_check() -> None:
    from safeharbor_common.errors import NotReady

    def check() -> None:
        raise NotReady(reasons=["channel type 'clinical': grants of role 'billing' differ from the role map"])

    app = Flask("t")
    app.config.update(SERVICE_NAME="auth")
    web.init_app(app, service_name="auth", readiness_check=check)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error["code"] == "service_unavailable" and error["reasons"] == [
        "channel type 'clinical': grants of role 'billing' differ from the role map"
    ]
    # Any other failure stays a bare "Not ready." (its text may carry anything).
    boom = Flask("u")
    web.init_app(boom, service_name="auth", readiness_check=lambda: 1 / 0)  # type: ignore[func-returns-value]
    body = boom.test_client().get("/readyz").get_json()
    assert body["error"]["message"] == "Not ready." and "reasons" not in body["error"]
