"""Service-to-service identity (trust rule 5): short-lived Ed25519-signed tokens, one key per service.

A caller sends `X-Service-Token`, a 60-second EdDSA JWT whose `aud` names the target service; the target
accepts only the peers it lists. Tokens are reused until shortly before expiry and verified tokens are
cached, so internal calls cost no crypto on the hot path.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any, TypeVar, cast

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from flask import Flask, current_app, g, request
from safeharbor_protocol.encoding import EncodingError, b64url_decode, b64url_encode

from .config import ConfigError
from .errors import Forbidden, Unauthenticated

HEADER = "X-Service-Token"
TOKEN_TTL_SECONDS = 60
# The service token's format version, claim `v` (docs/CONTRACTS.md "Versions"): a reader accepts its own
# version and the one before; a token without `v` is version 1 (what releases before the claim sent).
TOKEN_VERSION = 1
SUPPORTED_TOKEN_VERSIONS = frozenset({1})
LEEWAY_SECONDS = 5
SERVICE_NAMES: frozenset[str] = frozenset({"gateway", "auth", "keydir", "audit", "push"})


def generate_keypair() -> tuple[str, str]:
    """(private seed, public key), both unpadded base64url of the raw 32 bytes."""
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return b64url_encode(seed), public_key_b64(private)


def public_key_b64(private: Ed25519PrivateKey) -> str:
    return b64url_encode(
        private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def load_private_key(seed_b64: str, *, setting: str = "SERVICE_PRIVATE_KEY") -> Ed25519PrivateKey:
    try:
        seed = b64url_decode(seed_b64)
    except EncodingError as exc:
        raise ConfigError(f"{setting} must be base64url") from exc
    if len(seed) != 32:
        raise ConfigError(f"{setting} must be a 32-byte Ed25519 seed")
    return Ed25519PrivateKey.from_private_bytes(seed)


def parse_public_keys(text: str, *, setting: str = "SERVICE_PUBLIC_KEYS") -> dict[str, Ed25519PublicKey]:
    keys: dict[str, Ed25519PublicKey] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep or name.strip() not in SERVICE_NAMES:
            raise ConfigError(f"{setting}: expected name=key pairs with names among {sorted(SERVICE_NAMES)}")
        try:
            raw = b64url_decode(value.strip())
            keys[name.strip()] = Ed25519PublicKey.from_public_bytes(raw)
        except (EncodingError, ValueError) as exc:
            raise ConfigError(f"{setting}: the key of {name.strip()} is not a base64url Ed25519 key") from exc
    return keys


class ServiceTokenSigner:
    def __init__(self, *, name: str, private_key: Ed25519PrivateKey, ttl: int = TOKEN_TTL_SECONDS) -> None:
        self.name = name
        self._key = private_key
        self._ttl = ttl
        self._cache: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def token_for(self, target: str) -> str:
        now = time.time()
        cached = self._cache.get(target)
        if cached is not None and cached[1] - now > self._ttl / 3:
            return cached[0]
        with self._lock:
            issued = int(now)
            token = jwt.encode(
                {
                    "iss": f"svc:{self.name}",
                    "sub": f"svc:{self.name}",
                    "aud": f"svc:{target}",
                    "iat": issued,
                    "exp": issued + self._ttl,
                    "jti": uuid.uuid4().hex,
                    "v": TOKEN_VERSION,
                },
                self._key,
                algorithm="EdDSA",
            )
            self._cache[target] = (token, issued + self._ttl)
            return token

    def headers_for(self, target: str) -> dict[str, str]:
        return {HEADER: self.token_for(target)}


class ServiceTokenVerifier:
    def __init__(self, *, name: str, trusted: Mapping[str, Ed25519PublicKey]) -> None:
        self.name = name
        self._trusted = dict(trusted)
        self._cache: dict[str, tuple[str, float]] = {}

    def trusted_key(self, name: str) -> Ed25519PublicKey | None:
        """The identity key trusted for a peer (e.g. to check what audit-service signs)."""
        return self._trusted.get(name)

    def verify(self, token: str) -> str:
        """The calling service's name, or Unauthenticated."""
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None and cached[1] + LEEWAY_SECONDS >= now:
            return cached[0]
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
            caller = str(unverified.get("iss", "")).removeprefix("svc:")
        except jwt.PyJWTError as exc:
            raise Unauthenticated("Invalid service token.") from exc
        key = self._trusted.get(caller)
        if key is None:
            raise Unauthenticated("Invalid service token.")
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=["EdDSA"],
                audience=f"svc:{self.name}",
                issuer=f"svc:{caller}",
                leeway=LEEWAY_SECONDS,
                options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated("Invalid service token.") from exc
        if payload.get("v", 1) not in SUPPORTED_TOKEN_VERSIONS:
            raise Unauthenticated("Unsupported service token version.")
        if len(self._cache) > 1024:
            self._cache.clear()
        self._cache[token] = (caller, float(payload["exp"]))
        return caller


def init_app(app: Flask) -> None:
    """Reads SERVICE_NAME, SERVICE_PRIVATE_KEY, SERVICE_PUBLIC_KEYS from app.config."""
    name = app.config["SERVICE_NAME"]
    private = app.config["SERVICE_PRIVATE_KEY"]
    if isinstance(private, str):
        private = load_private_key(private)
    trusted = app.config.get("SERVICE_PUBLIC_KEYS") or {}
    if isinstance(trusted, str):
        trusted = parse_public_keys(trusted)
    app.extensions["service_signer"] = ServiceTokenSigner(name=name, private_key=private)
    app.extensions["service_verifier"] = ServiceTokenVerifier(name=name, trusted=trusted)


def calling_service() -> str | None:
    """The verified calling service of this request, or None (never raises)."""
    cached = g.get("service_caller")
    if cached is not None:
        return cast(str, cached)
    token = request.headers.get(HEADER)
    verifier: ServiceTokenVerifier | None = current_app.extensions.get("service_verifier")
    if not token or verifier is None:
        return None
    try:
        caller = verifier.verify(token)
    except Unauthenticated:
        return None
    g.service_caller = caller
    return caller


F = TypeVar("F", bound=Callable[..., Any])


def require_service(*allowed: str) -> Callable[[F], F]:
    """Internal routes: only the named services, with a valid token, may call."""
    allowed_names = frozenset(allowed)

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not request.headers.get(HEADER):
                raise Unauthenticated("Service identity required.")
            caller = calling_service()
            if caller is None:
                raise Unauthenticated("Invalid service token.")
            if allowed_names and caller not in allowed_names:
                raise Forbidden()
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorator
