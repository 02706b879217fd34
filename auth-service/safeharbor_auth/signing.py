"""Session-token signing keys: Ed25519, stored in the database (private half encrypted with AUTH_DATA_KEY)
so every worker and replica signs with the same key; JWKS; token encoding.

Rotation inserts a key that is published at once and signs from `active_from` (by default a little later
than the verifiers' JWKS refresh cooldown, so no verifier meets a kid it cannot fetch yet). The previous key
stays published until every token it signed has expired: retirement + idle timeout + leeway + the signer
cache time.
"""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safeharbor_protocol.encoding import b64url_encode
from sqlalchemy import Engine, or_, select, update
from sqlalchemy.orm import Session as OrmSession

from .clock import Clock, SystemClock
from .crypto import DataCipher
from .models import SigningKey

SIGNER_CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class _LoadedKey:
    kid: str
    active_from: datetime
    private_key: Ed25519PrivateKey


class SigningKeys:
    def __init__(
        self,
        *,
        engine: Engine,
        cipher: DataCipher,
        idle_timeout: int,
        leeway: int,
        prepublish: int,
        clock: Clock | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock or SystemClock()
        self._cipher = cipher
        self._idle_timeout = idle_timeout
        self._leeway = leeway
        self._prepublish = prepublish
        self._cache: list[_LoadedKey] = []
        self._cache_at = float("-inf")
        self._lock = threading.Lock()

    # -- storage ------------------------------------------------------------------------------------

    def _context(self, kid: str) -> str:
        return f"signing-key:{kid}"

    def _new_row(self, *, active_from: datetime, now: datetime) -> SigningKey:
        private = Ed25519PrivateKey.generate()
        kid = now.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:8]
        seed = private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return SigningKey(
            kid=kid,
            public_key=b64url_encode(public),
            private_key_enc=self._cipher.encrypt(seed, context=self._context(kid)),
            created_at=now,
            active_from=active_from,
        )

    def ensure_key(self) -> bool:
        """Creates the first key when there is none; True if it did."""
        with OrmSession(self._engine) as db, db.begin():
            existing = db.execute(select(SigningKey.kid).where(SigningKey.retired_at.is_(None)).limit(1)).first()
            if existing is not None:
                return False
            now = self._clock.now()
            db.add(self._new_row(active_from=now, now=now))
        self._cache_at = float("-inf")
        return True

    def rotate(self, *, immediately: bool = False, withdraw: bool = False) -> SigningKey:
        """`withdraw` (a compromised key): the old keys leave the JWKS at once, so every verifier drops them,
        and every token they signed, within its JWKS max-age plus a few seconds; their users log in again."""
        now = self._clock.now()
        active_from = now if immediately or withdraw else now + timedelta(seconds=self._prepublish)
        publish_until = now if withdraw else active_from + timedelta(
            seconds=self._idle_timeout + self._leeway + SIGNER_CACHE_SECONDS + 1
        )
        with OrmSession(self._engine, expire_on_commit=False) as db, db.begin():
            row = self._new_row(active_from=active_from, now=now)
            db.execute(
                update(SigningKey)
                .where(SigningKey.retired_at.is_(None))
                .values(retired_at=active_from, publish_until=publish_until)
            )
            db.add(row)
        self._cache_at = float("-inf")
        return row

    def _load(self) -> list[_LoadedKey]:
        if time.monotonic() - self._cache_at < SIGNER_CACHE_SECONDS and self._cache:
            return self._cache
        with self._lock:
            if time.monotonic() - self._cache_at < SIGNER_CACHE_SECONDS and self._cache:
                return self._cache
            now = self._clock.now()
            with OrmSession(self._engine) as db:
                rows = db.scalars(
                    select(SigningKey).where(or_(SigningKey.retired_at.is_(None), SigningKey.retired_at > now))
                ).all()
                loaded = [
                    _LoadedKey(
                        kid=r.kid,
                        active_from=r.active_from,
                        private_key=Ed25519PrivateKey.from_private_bytes(
                            self._cipher.decrypt(r.private_key_enc, context=self._context(r.kid))
                        ),
                    )
                    for r in rows
                ]
            self._cache = loaded
            self._cache_at = time.monotonic()
            return loaded

    def active(self) -> _LoadedKey:
        now = self._clock.now()
        candidates = [k for k in self._load() if k.active_from <= now]
        if not candidates:
            self._cache_at = float("-inf")
            candidates = [k for k in self._load() if k.active_from <= now]
        if not candidates:
            raise RuntimeError("no active signing key; run `python -m safeharbor_auth.manage migrate`")
        return max(candidates, key=lambda k: (k.active_from, k.kid))

    # -- publishing ---------------------------------------------------------------------------------

    def jwks(self) -> dict[str, Any]:
        now = self._clock.now()
        with OrmSession(self._engine) as db:
            rows = db.scalars(
                select(SigningKey)
                .where(or_(SigningKey.publish_until.is_(None), SigningKey.publish_until > now))
                .order_by(SigningKey.active_from.desc())
            ).all()
            return {
                "keys": [
                    {"kty": "OKP", "crv": "Ed25519", "x": r.public_key, "kid": r.kid, "alg": "EdDSA", "use": "sig"}
                    for r in rows
                ]
            }

    def sign(self, claims: dict[str, Any]) -> str:
        key = self.active()
        return jwt.encode(claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid})
