"""auth-service's own verifier of session tokens: the shared verifier's checks (signature, algorithm,
issuer, audience, required claims, scope) with the token's times judged by auth's clock.

The shared TokenVerifier reads the wall clock (PyJWT's). Here it is built with a window too wide to refuse
anything by time, and `exp`/`iat` are then checked against `Clock` with the configured leeway, exactly as
PyJWT does (expired when exp <= now - leeway; not yet valid when iat > now + leeway). With SystemClock
nothing changes; with a FakeClock, tests move time instead of sleeping.
"""
from __future__ import annotations

from safeharbor_common.errors import SessionExpired, Unauthenticated
from safeharbor_common.tokens import JwksCache, SessionClaims, TokenVerifier

from .clock import Clock

# Wide enough that the shared verifier never refuses by time (its own check adds it to `exp`): 100 years.
TIMES_CHECKED_HERE = 100 * 365 * 86400


class ClockedTokenVerifier:
    def __init__(self, *, keys: JwksCache, issuer: str, audience: str, clock: Clock, leeway: int) -> None:
        self._keys = keys  # the JWKS cache (kid -> key), as on the shared verifier
        self._inner = TokenVerifier(keys=keys, issuer=issuer, audience=audience, leeway=TIMES_CHECKED_HERE)
        self._clock = clock
        self._leeway = leeway

    def verify(self, token: str) -> SessionClaims:
        claims = self._inner.verify(token)
        now = self._clock.timestamp()
        if claims.exp <= now - self._leeway:
            raise SessionExpired()
        if claims.iat > now + self._leeway:
            raise Unauthenticated("Invalid token.")
        return claims
