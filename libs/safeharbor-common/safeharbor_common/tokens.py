"""Session-token verification, identical at the gateway and in every service (trust rule 2).

Pinned algorithm, required claims, issuer, audience, small leeway; signing keys from auth-service's JWKS,
cached and refreshed on an unknown `kid` no more often than the cooldown. Verified tokens are cached
by their exact string until they expire, so the hot path does no I/O and little crypto.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, TypeVar, cast

import jwt
import requests
from flask import Flask, current_app, g, request

from .errors import (
    Forbidden,
    MfaEnrollmentRequired,
    SessionExpired,
    Unauthenticated,
)

ALGORITHMS: tuple[str, ...] = ("EdDSA",)
REQUIRED_CLAIMS: tuple[str, ...] = ("iss", "aud", "sub", "exp", "iat", "jti", "sid")
MAX_TOKEN_LENGTH = 4096

SCOPE_FULL = "full"
SCOPE_MFA_ENROLLMENT = "mfa_enrollment"
SCOPE_BREAK_GLASS = "break_glass"


@dataclass(frozen=True)
class SessionClaims:
    sub: str
    sid: str
    jti: str
    role: str
    scope: str
    exp: int
    iat: int
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def user_id(self) -> str:
        return self.sub


KeyFetcher = Callable[[], dict[str, Any]]


def http_jwks_fetcher(url: str, *, timeout: float = 2.0) -> KeyFetcher:
    def fetch() -> dict[str, Any]:
        response = requests.get(url, timeout=timeout)
        response.raise_for_status()
        return cast(dict[str, Any], response.json())

    return fetch


class JwksCache:
    """kid → public key, refreshed from the fetcher on an unknown kid at most once per cooldown."""

    def __init__(self, fetch: KeyFetcher, *, refresh_cooldown: float = 10.0) -> None:
        self._fetch = fetch
        self._cooldown = refresh_cooldown
        self._keys: dict[str, Any] = {}
        self._last_refresh = float("-inf")
        self._last_attempt = float("-inf")
        self._lock = threading.Lock()

    def get(self, kid: str) -> Any | None:
        key = self._keys.get(kid)
        if key is not None:
            return key
        with self._lock:
            key = self._keys.get(kid)
            if key is None and self._may_fetch_now():
                self._refresh_locked()
                key = self._keys.get(kid)
        return key

    def _may_fetch_now(self) -> bool:
        now = time.monotonic()
        if not self._keys:
            # Nothing loaded yet (or the issuer was unreachable): retry, but not more than once a second.
            return now - self._last_attempt >= 1.0
        # Keys loaded: an unknown kid may mean rotation; refresh at most once per cooldown.
        return now - self._last_refresh >= self._cooldown

    def _refresh_locked(self) -> None:
        had_keys = bool(self._keys)
        self._last_attempt = time.monotonic()
        if had_keys:
            self._last_refresh = self._last_attempt
        try:
            document = self._fetch()
        except Exception:  # noqa: BLE001 - an unreachable JWKS must not crash a request; kid stays unknown
            return
        keys: dict[str, Any] = {}
        for jwk in document.get("keys", []):
            kid = jwk.get("kid")
            if not isinstance(kid, str) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
                continue
            try:
                keys[kid] = jwt.PyJWK.from_dict(jwk, algorithm="EdDSA").key
            except jwt.PyJWTError:
                continue
        if keys:
            self._keys = keys


class TokenVerifier:
    def __init__(
        self,
        *,
        keys: JwksCache,
        issuer: str,
        audience: str,
        leeway: int = 5,
        cache_size: int = 10_000,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._cache: OrderedDict[str, SessionClaims] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()

    def verify(self, token: str) -> SessionClaims:
        cached = self._cache.get(token)
        if cached is not None:
            if cached.exp + self._leeway < time.time():
                raise SessionExpired()
            return cached
        claims = self._verify_uncached(token)
        with self._cache_lock:
            self._cache[token] = claims
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return claims

    def _verify_uncached(self, token: str) -> SessionClaims:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise Unauthenticated("Invalid token.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("Invalid token.") from exc
        if header.get("alg") not in ALGORITHMS:
            raise Unauthenticated("Invalid token.")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("Invalid token.")
        key = self._keys.get(kid)
        if key is None:
            raise Unauthenticated("Invalid token.")
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=list(ALGORITHMS),
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError as exc:
            raise SessionExpired() from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("Invalid token.") from exc
        return _claims_from_payload(payload)


def _claims_from_payload(payload: dict[str, Any]) -> SessionClaims:
    for name in ("sub", "sid", "jti"):
        if not isinstance(payload.get(name), str) or not payload[name]:
            raise Unauthenticated("Invalid token.")
    return SessionClaims(
        sub=payload["sub"],
        sid=payload["sid"],
        jti=payload["jti"],
        role=str(payload.get("role", "")),
        scope=str(payload.get("scope", SCOPE_FULL)),
        exp=int(payload["exp"]),
        iat=int(payload["iat"]),
        raw=payload,
    )


def bearer_token() -> str | None:
    return bearer_from_header(request.headers.get("Authorization", ""))


def bearer_from_header(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` value, or None."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def init_app(app: Flask) -> None:
    """Builds the verifier from app.config: JWKS_URL (or JWKS_FETCHER), JWT_ISSUER, JWT_AUDIENCE."""
    fetcher = app.config.get("JWKS_FETCHER") or http_jwks_fetcher(app.config["JWKS_URL"])
    app.extensions["token_verifier"] = TokenVerifier(
        keys=JwksCache(fetcher, refresh_cooldown=float(app.config.get("JWKS_REFRESH_COOLDOWN", 10))),
        issuer=app.config["JWT_ISSUER"],
        audience=app.config["JWT_AUDIENCE"],
        leeway=int(app.config.get("JWT_LEEWAY", 5)),
    )


def current_session() -> SessionClaims:
    """The verified session of this request (require_session must have run)."""
    return cast(SessionClaims, g.session)


F = TypeVar("F", bound=Callable[..., Any])


def require_session(
    *, roles: Iterable[str] | None = None, scopes: Iterable[str] = (SCOPE_FULL,)
) -> Callable[[F], F]:
    """Verifies the Bearer token again inside the service (defense in depth) and checks role and scope."""
    allowed_roles = frozenset(roles) if roles is not None else None
    allowed_scopes = frozenset(scopes)

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = bearer_token()
            if token is None:
                raise Unauthenticated()
            verifier: TokenVerifier = current_app.extensions["token_verifier"]
            claims = verifier.verify(token)
            if claims.scope not in allowed_scopes:
                if claims.scope == SCOPE_MFA_ENROLLMENT:
                    raise MfaEnrollmentRequired()
                raise Forbidden()
            if allowed_roles is not None and claims.role not in allowed_roles:
                raise Forbidden()
            g.session = claims
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorator
