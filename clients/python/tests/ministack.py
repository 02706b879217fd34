"""An in-process stand-in for the stack, for SDK tests: the real keydir-service and the real Stream
emulator on loopback threads, behind a small fake "gateway + auth" that issues real EdDSA session tokens,
Stream user tokens and channels with the role -> channel-type rule. The full multi-process stack is
exercised by tests/test_e2ee_integration.py at the repository root."""
from __future__ import annotations

import os
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask, Response, jsonify, request
from safeharbor_client import backup as backup_mod
from safeharbor_client.client import SafeHarborClient
from safeharbor_common.service_identity import generate_keypair
from safeharbor_protocol.encoding import b64url_encode
from werkzeug.serving import BaseWSGIServer, make_server

STREAM_KEY = "ministack-key"
STREAM_SECRET = "ministack-secret-" + "x" * 64
ROLE_TYPES = {"clinician": ["clinical", "patient-care"], "billing": ["billing"], "patient": ["patient-care"],
              "admin": ["clinical", "patient-care", "billing"], "auditor": []}
# As auth-service provisions Stream (issue 16): one custom Stream role per SafeHarbor role, grants keyed by it.
STREAM_ROLES = {role: "safeharbor_admin" if role == "admin" else role for role in ROLE_TYPES}
CHANNEL_PERMS = ["create-channel", "read-channel", "read-channel-members", "create-message",
                 "update-message-owner", "delete-message-owner", "update-channel-members"]


def _serve(app: Any) -> tuple[BaseWSGIServer, str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class MiniStack:
    root: Path
    idle_timeout: int = 600
    session_key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # username -> user
    revoked: set[str] = field(default_factory=set)
    servers: list[BaseWSGIServer] = field(default_factory=list)
    keydir_app: Any = None

    def start(self) -> MiniStack:
        from safeharbor_keydir.app import create_app as keydir_app
        from safeharbor_keydir.manage import main as keydir_manage
        from stream_emulator.app import create_app as emulator_app

        db = f"sqlite:///{self.root}/keydir.db"
        saved = os.environ.get("DATABASE_URL")
        os.environ["DATABASE_URL"] = db
        try:
            assert keydir_manage(["migrate"]) == 0
        finally:
            if saved is None:
                os.environ.pop("DATABASE_URL", None)
            else:
                os.environ["DATABASE_URL"] = saved
        ids = {n: generate_keypair() for n in ("gateway", "auth", "keydir", "audit", "push")}
        self.keydir_signing_seed = generate_keypair()[0]
        environ = {
            "SAFEHARBOR_ENV": "dev", "DATABASE_URL": db, "SERVICE_PRIVATE_KEY": ids["keydir"][0],
            "SERVICE_PUBLIC_KEYS": ",".join(f"{n}={k[1]}" for n, k in ids.items()),
            "KEYDIR_SIGNING_KEY": self.keydir_signing_seed, "JWKS_URL": "http://127.0.0.1:9/jwks",
            "AUDIT_SERVICE_URL": "", "AUDIT_OUTBOX_PATH": str(self.root / "outbox.db"),
        }
        self.keydir_app = keydir_app({"ENVIRON": environ, "JWKS_FETCHER": self.jwks, "TESTING": True})
        keydir_server, self.keydir_url = _serve(self.keydir_app)
        emulator = emulator_app({"api_key": STREAM_KEY, "api_secret": STREAM_SECRET})
        emulator_server, self.stream_url = _serve(emulator)
        gateway_server, self.gateway_url = _serve(self._gateway())
        self.servers = [keydir_server, emulator_server, gateway_server]
        for stream_role in STREAM_ROLES.values():
            self.stream("POST", "/roles", {"name": stream_role})
        for ctype in ("clinical", "patient-care", "billing"):
            grants = {STREAM_ROLES[role]: CHANNEL_PERMS for role, types in ROLE_TYPES.items() if ctype in types}
            self.stream("POST", "/channeltypes", {"name": ctype, "grants": grants})
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
        if self.keydir_app is not None:
            self.keydir_app.extensions["audit"].close()
            self.keydir_app.extensions["keydir_log"].engine.dispose()

    # -- helpers ---------------------------------------------------------------------------------

    def jwks(self) -> dict[str, Any]:
        public = self.session_key.public_key().public_bytes_raw()
        return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(public), "kid": "k1", "alg": "EdDSA",
                          "use": "sig"}]}

    def stream(self, method: str, path: str, body: Any = None) -> requests.Response:
        token = jwt.encode({"server": True}, STREAM_SECRET, algorithm="HS256")
        response = requests.request(method, self.stream_url + path, params={"api_key": STREAM_KEY}, json=body,
                                    headers={"Authorization": token, "stream-auth-type": "jwt"}, timeout=10)
        assert response.status_code < 400, response.text
        return response

    def add_user(self, username: str, role: str, password: str = "pw-" + "x" * 12) -> dict[str, Any]:
        user = {"id": str(uuid.uuid4()), "name": username.title(), "role": role, "password": password}
        self.users[username] = user
        self.stream("POST", "/users", {"users": {user["id"]: {"id": user["id"], "name": user["name"],
                                                              "role": STREAM_ROLES[role]}}})
        return user

    def _session(self, user: dict[str, Any], sid: str, absolute: float) -> dict[str, Any]:
        now = time.time()
        exp = min(now + self.idle_timeout, absolute)
        claims = {"iss": "safeharbor-auth", "aud": "safeharbor", "sub": user["id"], "exp": int(exp),
                  "iat": int(now), "jti": uuid.uuid4().hex, "sid": sid, "role": user["role"], "scope": "full"}
        token = jwt.encode(claims, self.session_key, algorithm="EdDSA", headers={"kid": "k1"})
        return {"access_token": token, "token_type": "Bearer", "expires_at": _iso(exp),
                "idle_timeout_s": self.idle_timeout, "absolute_expires_at": _iso(absolute), "session_id": sid,
                "scope": "full", "user": {"id": user["id"], "name": user["name"], "role": user["role"],
                                          "mfa_enrolled": False}}

    def _claims(self) -> dict[str, Any]:
        header = request.headers.get("Authorization", "")
        try:
            claims = jwt.decode(header.removeprefix("Bearer "), self.session_key.public_key(), algorithms=["EdDSA"],
                                audience="safeharbor")
        except jwt.ExpiredSignatureError:
            raise _Err(401, "session_expired") from None
        except jwt.InvalidTokenError:
            raise _Err(401, "unauthenticated") from None
        if claims["sid"] in self.revoked:
            raise _Err(401, "session_revoked")
        return dict(claims)

    def _gateway(self) -> Flask:
        app = Flask("ministack-gateway")
        by_id = lambda uid: next(u for u in self.users.values() if u["id"] == uid)  # noqa: E731

        @app.errorhandler(_Err)
        def _error(exc: _Err) -> tuple[Response, int]:
            return jsonify({"error": {"code": exc.code, "message": exc.code, "request_id": "r"}}), exc.status

        @app.post("/v1/auth/login")
        def login() -> Any:
            body = request.get_json()
            user = self.users.get(body.get("username"))
            if user is None or user["password"] != body.get("password"):
                raise _Err(401, "invalid_credentials")
            return jsonify(self._session(user, str(uuid.uuid4()), time.time() + 43200))

        @app.post("/v1/auth/refresh")
        def refresh() -> Any:
            claims = self._claims()
            return jsonify(self._session(by_id(claims["sub"]), claims["sid"], time.time() + 43200))

        @app.post("/v1/auth/logout")
        def logout() -> Any:
            self.revoked.add(self._claims()["sid"])
            return "", 204

        @app.get("/v1/auth/me")
        def me() -> Any:
            claims = self._claims()
            user = by_id(claims["sub"])
            return jsonify({"user": {k: user[k] for k in ("id", "name", "role")}, "session": {"id": claims["sid"]}})

        @app.post("/v1/stream-credentials")
        def stream_credentials() -> Any:
            user = by_id(self._claims()["sub"])
            token = jwt.encode({"user_id": user["id"], "iat": int(time.time()) - 1}, STREAM_SECRET, algorithm="HS256")
            return jsonify({"apiKey": STREAM_KEY, "token": token, "user": {"id": user["id"], "name": user["name"],
                                                                         "role": user["role"], "image": None},
                            "expires_at": _iso(time.time() + 3600)})

        @app.get("/v1/channels/filter")
        def channel_filter() -> Any:
            claims = self._claims()
            types = ROLE_TYPES[claims["role"]]
            return jsonify({"filter": {"type": {"$in": types}, "members": {"$in": [claims["sub"]]}},
                            "allowed_types": types})

        @app.post("/v1/channels")
        def channels() -> Any:
            claims = self._claims()
            body = request.get_json()
            members = sorted({claims["sub"], *body["members"]})
            if body["type"] not in ROLE_TYPES[claims["role"]] or any(
                    body["type"] not in ROLE_TYPES[by_id(m)["role"]] for m in members):
                raise _Err(403, "forbidden")
            channel_id = "c-" + secrets.token_hex(6)
            self.stream("POST", f"/channels/{body['type']}/{channel_id}/query",
                        {"data": {"members": members, "created_by_id": claims["sub"]}})
            return jsonify({"cid": f"{body['type']}:{channel_id}", "type": body["type"], "id": channel_id,
                            "members": members}), 201

        @app.route("/v1/keys", methods=["GET", "POST"])
        @app.route("/v1/keys/<path:rest>", methods=["GET", "POST", "PUT", "DELETE"])
        def keys(rest: str = "") -> Any:
            if not rest.startswith("checkpoint") and not rest.startswith("proof"):
                self._claims()
            path = "/v1/keys" + (f"/{rest}" if rest else "")
            upstream = requests.request(request.method, self.keydir_url + path, params=request.args,
                                        data=request.get_data(), timeout=10,
                                        headers={k: v for k, v in request.headers.items()
                                                 if k in ("Authorization", "Content-Type")})
            return Response(upstream.content, upstream.status_code,
                            content_type=upstream.headers.get("Content-Type"))

        return app


def make(stack: MiniStack, root: Path, name: str, **kw: Any) -> SafeHarborClient:
    """A client of the stack with its state in `root / name` (fast backup KDF)."""
    return SafeHarborClient(stack.gateway_url, state_dir=root / name, stream_url=stack.stream_url,
                            kdf=backup_mod.MIN_KDF, **kw)


def logged_in(stack: MiniStack, root: Path, name: str, user: str) -> SafeHarborClient:
    client = make(stack, root, name)
    client.login(user, stack.users[user]["password"])
    return client


class _Err(Exception):
    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
