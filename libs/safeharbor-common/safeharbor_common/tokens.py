"""Session-token verification, identical at the gateway and in every service (trust rule 2).

Pinned algorithm, required claims (a known `scope` among them), issuer, audience, small leeway; signing keys
from auth-service's JWKS, refreshed on a timer that follows the answer's `Cache-Control: max-age` (and on an
unknown `kid`, no more often than the cooldown). A key no longer published is dropped together with every
verified token cached for it, so a retired or compromised key is refused within max-age plus a few seconds.
Verified tokens are cached by their exact string until they expire, so the hot path does no I/O and little
crypto. Where the app has a revocation list (every service but auth, which reads its own table), ended
sessions and tokens replaced by refresh are refused too, and a stale list fails closed.
"""
from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, TypeVar, cast

import jwt
from flask import Flask, current_app, g, request

from .errors import (
    Forbidden,
    MfaEnrollmentRequired,
    ServiceUnavailable,
    SessionExpired,
    SessionRevoked,
    Unauthenticated,
)
from .internal_http import internal_session
from .revocation import FEED_PATH, RevocationList

ALGORITHMS: tuple[str, ...] = ("EdDSA",)
REQUIRED_CLAIMS: tuple[str, ...] = ("iss", "aud", "sub", "exp", "iat", "jti", "sid")
MAX_TOKEN_LENGTH = 4096

SCOPE_FULL = "full"
SCOPE_MFA_ENROLLMENT = "mfa_enrollment"
SCOPE_BREAK_GLASS = "break_glass"
SCOPES: frozenset[str] = frozenset({SCOPE_FULL, SCOPE_MFA_ENROLLMENT, SCOPE_BREAK_GLASS})

# JWKS refresh period when the answer says nothing (auth-service sends max-age=30), and its bounds.
DEFAULT_JWKS_MAX_AGE = 30.0
MIN_JWKS_MAX_AGE = 1.0
MAX_JWKS_MAX_AGE = 3600.0


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


@dataclass(frozen=True)
class JwksAnswer:
    """A JWKS document and how long it may be cached (`Cache-Control: max-age`), when the source says."""

    document: dict[str, Any]
    max_age: float | None = None


# A fetcher returns the document alone (in-process sources: auth-service itself, tests) or a JwksAnswer.
KeyFetcher = Callable[[], "dict[str, Any] | JwksAnswer"]
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*(\d+)", re.IGNORECASE)


def cache_max_age(cache_control: str | None) -> float | None:
    """Seconds from a Cache-Control header; 0 for no-store/no-cache; None when it says nothing."""
    if not cache_control:
        return None
    lowered = cache_control.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        return 0.0
    match = _MAX_AGE.search(cache_control)
    return float(match.group(1)) if match else None


def http_jwks_fetcher(url: str, *, timeout: float = 2.0) -> KeyFetcher:
    http = internal_session()

    def fetch() -> JwksAnswer:
        response = http.get(url, timeout=timeout)
        response.raise_for_status()
        return JwksAnswer(
            document=cast(dict[str, Any], response.json()),
            max_age=cache_max_age(response.headers.get("Cache-Control")),
        )

    return fetch


class JwksCache:
    """kid → public key, refreshed on a timer (the answer's max-age) and on an unknown kid at most once per
    cooldown. Keys that a successful refresh no longer lists are dropped and the listeners told."""

    def __init__(
        self,
        fetch: KeyFetcher,
        *,
        refresh_cooldown: float = 10.0,
        default_max_age: float = DEFAULT_JWKS_MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._cooldown = refresh_cooldown
        self._default_max_age = default_max_age
        self._clock = clock
        self._keys: dict[str, Any] = {}
        self._last_refresh = float("-inf")
        self._last_attempt = float("-inf")
        self._next_due = float("-inf")
        self._failures = 0
        self._lock = threading.Lock()
        self._on_drop: list[Callable[[frozenset[str]], None]] = []
        self._started = False
        self._stop = threading.Event()

    def on_drop(self, listener: Callable[[frozenset[str]], None]) -> None:
        self._on_drop.append(listener)

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
        now = self._clock()
        if not self._keys:
            # Nothing loaded yet (or the issuer was unreachable): retry, but not more than once a second.
            return now - self._last_attempt >= 1.0
        # Keys loaded: an unknown kid may mean rotation; refresh at most once per cooldown.
        return now - self._last_refresh >= self._cooldown

    def refresh_if_due(self) -> bool:
        """The timer's tick: refreshes when max-age has run out. True if it refreshed."""
        if self._clock() < self._next_due:
            return False
        with self._lock:
            if self._clock() < self._next_due:
                return False
            self._refresh_locked()
            return True

    def ensure_started(self) -> None:
        """Starts the refresh timer in this worker (after the server's fork), once."""
        if self._started:
            return
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._timer_loop, name="jwks-refresh", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _timer_loop(self) -> None:
        while not self._stop.is_set():
            self.refresh_if_due()
            self._stop.wait(max(0.05, min(1.0, self._next_due - self._clock())))

    def _refresh_locked(self) -> None:
        had_keys = bool(self._keys)
        self._last_attempt = self._clock()
        if had_keys:
            self._last_refresh = self._last_attempt
        try:
            answer = self._fetch()
        except Exception:  # noqa: BLE001 - an unreachable JWKS must not crash a request; keys stay as they were
            # Retry soon, backing off, never slower than the normal period.
            self._failures = min(self._failures + 1, 6)
            self._next_due = self._last_attempt + min(float(2**self._failures), self._default_max_age)
            return
        self._failures = 0
        if not isinstance(answer, JwksAnswer):
            answer = JwksAnswer(document=answer)
        max_age = self._default_max_age if answer.max_age is None else answer.max_age
        self._next_due = self._last_attempt + min(max(max_age, MIN_JWKS_MAX_AGE), MAX_JWKS_MAX_AGE)
        listed = answer.document.get("keys")
        if not isinstance(listed, list):
            return  # not a JWKS: keep what we had rather than drop every key on a broken answer
        keys: dict[str, Any] = {}
        for jwk in listed:
            kid = jwk.get("kid") if isinstance(jwk, dict) else None
            if not isinstance(kid, str) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
                continue
            try:
                keys[kid] = jwt.PyJWK.from_dict(jwk, algorithm="EdDSA").key
            except jwt.PyJWTError:
                continue
        dropped = frozenset(self._keys) - frozenset(keys)
        self._keys = keys
        if dropped:
            for listener in self._on_drop:
                listener(dropped)


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
        # token → (claims, kid of the key that signed it)
        self._cache: OrderedDict[str, tuple[SessionClaims, str]] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        keys.on_drop(self._forget_kids)

    def verify(self, token: str) -> SessionClaims:
        self._keys.ensure_started()
        cached = self._cache.get(token)
        if cached is not None:
            if cached[0].exp + self._leeway < time.time():
                raise SessionExpired()
            return cached[0]
        claims, kid = self._verify_uncached(token)
        with self._cache_lock:
            self._cache[token] = (claims, kid)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return claims

    def already_verified(self, token: str) -> SessionClaims | None:
        """The claims of `token` if it was verified before and has not expired: a dictionary lookup, no
        signature check and no I/O (None otherwise; `verify` gives the reason)."""
        cached = self._cache.get(token)
        if cached is None or cached[0].exp + self._leeway < time.time():
            return None
        return cached[0]

    def _forget_kids(self, kids: frozenset[str]) -> None:
        """A key is no longer published: what it vouched for is no longer trusted either."""
        with self._cache_lock:
            for token in [t for t, (_, kid) in self._cache.items() if kid in kids]:
                self._cache.pop(token, None)

    def _verify_uncached(self, token: str) -> tuple[SessionClaims, str]:
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
        return _claims_from_payload(payload), kid


def _claims_from_payload(payload: dict[str, Any]) -> SessionClaims:
    for name in ("sub", "sid", "jti"):
        if not isinstance(payload.get(name), str) or not payload[name]:
            raise Unauthenticated("Invalid token.")
    # No scope is no privilege (it once meant "full").
    if payload.get("scope") not in SCOPES:
        raise Unauthenticated("Invalid token.")
    return SessionClaims(
        sub=payload["sub"],
        sid=payload["sid"],
        jti=payload["jti"],
        role=str(payload.get("role", "")),
        scope=str(payload["scope"]),
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
    """Builds the verifier from app.config: JWKS_URL (or JWKS_FETCHER), JWT_ISSUER, JWT_AUDIENCE; and, for a
    service that verifies tokens without owning the sessions, the revocation list (REVOCATION_LIST, or the
    feed at REVOCATION_FEED_URL, by default auth-service's)."""
    fetcher = app.config.get("JWKS_FETCHER") or http_jwks_fetcher(app.config["JWKS_URL"])
    app.extensions["token_verifier"] = TokenVerifier(
        keys=JwksCache(
            fetcher,
            refresh_cooldown=float(app.config.get("JWKS_REFRESH_COOLDOWN", 10)),
            default_max_age=float(app.config.get("JWKS_MAX_AGE", DEFAULT_JWKS_MAX_AGE)),
        ),
        issuer=app.config["JWT_ISSUER"],
        audience=app.config["JWT_AUDIENCE"],
        leeway=int(app.config.get("JWT_LEEWAY", 5)),
    )
    revocations = app.config.get("REVOCATION_LIST") or _feed_reader(app)
    if revocations is not None:
        app.extensions["revocation_list"] = revocations


def _feed_reader(app: Flask) -> RevocationList | None:
    """auth-service reads its own table and the gateway wires its list into its forwarder; an app handed
    its keys in process (JWKS_FETCHER: auth itself, unit tests) has no auth-service to poll either."""
    if app.config.get("SERVICE_NAME") in ("auth", "gateway") or app.config.get("JWKS_FETCHER"):
        return None
    url = app.config.get("REVOCATION_FEED_URL") or str(app.config["AUTH_SERVICE_URL"]).rstrip("/") + FEED_PATH
    return RevocationList(
        feed_url=url,
        signer=app.extensions["service_signer"],
        redis_url=app.config.get("REDIS_URL"),
        poll_interval=float(app.config.get("REVOCATION_POLL_INTERVAL", 0.25)),
        max_staleness=float(app.config.get("REVOCATION_MAX_STALENESS", 5.0)),
    )


def check_revocation(claims: SessionClaims) -> None:
    """Refuses an ended session or a token replaced by refresh; 503 while the feed is stale (fail closed)."""
    revocations: RevocationList | None = current_app.extensions.get("revocation_list")
    if revocations is None:
        return
    revocations.ensure_started()
    if not revocations.is_fresh():
        raise ServiceUnavailable("Revocation feed is stale.")
    if revocations.refuses(sid=claims.sid, jti=claims.jti):
        raise SessionRevoked()


def current_session() -> SessionClaims:
    """The verified session of this request (require_session must have run)."""
    return cast(SessionClaims, g.session)


F = TypeVar("F", bound=Callable[..., Any])
ACCESS_ATTRIBUTE = "_safeharbor_access"


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
            check_revocation(claims)
            if claims.scope not in allowed_scopes:
                if claims.scope == SCOPE_MFA_ENROLLMENT:
                    raise MfaEnrollmentRequired()
                raise Forbidden()
            if allowed_roles is not None and claims.role not in allowed_roles:
                raise Forbidden()
            g.session = claims
            return view(*args, **kwargs)

        # Read by the OpenAPI document (x-safeharbor-access), which the gateway's route table is checked against.
        wrapper.__dict__[ACCESS_ATTRIBUTE] = {
            "roles": None if allowed_roles is None else sorted(allowed_roles),
            "scopes": sorted(allowed_scopes),
        }
        return cast(F, wrapper)

    return decorator
