"""Issue 18: one injectable clock decides every time question in auth-service, so tests move time instead of
sleeping and nothing reads the wall clock behind the clock's back."""
from __future__ import annotations

import ast
from pathlib import Path

import pyotp
from safeharbor_auth.clock import Clock, FakeClock, SystemClock

from .conftest import PASSWORD, AppFactory, Factory, bearer, clock_of, error_code

PACKAGE = Path(__file__).resolve().parents[1] / "safeharbor_auth"
# Wall-clock reads that would bypass the Clock (monotonic budgets and cache ages are not time decisions).
WALL_CLOCK_CALLS = {("datetime", "now"), ("datetime", "utcnow"), ("time", "time"), ("date", "today")}


def _wall_clock_reads(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) and (node.func.value.id, node.func.attr) in WALL_CLOCK_CALLS:
            found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.func.value.id}.{node.func.attr}()")
    return found


def test_only_the_system_clock_reads_the_wall_clock() -> None:
    reads = [r for p in sorted(PACKAGE.rglob("*.py")) if p.name != "clock.py" for r in _wall_clock_reads(p)]
    assert reads == []


def test_clocks_keep_the_protocol() -> None:
    assert isinstance(SystemClock(), Clock) and isinstance(FakeClock(), Clock)
    fake = FakeClock()
    start = fake.now()
    assert fake.advance(90).timestamp() - start.timestamp() == 90 == fake.timestamp() - start.timestamp()


def test_session_idle_end_follows_the_apps_clock(make_app: AppFactory) -> None:
    app = make_app(SESSION_IDLE_TIMEOUT="600", JWT_LEEWAY="0")
    factory = Factory(app)
    token = factory.login(factory.user(role="billing"))["access_token"]
    clock_of(app).advance(599)
    assert factory.client.get("/v1/auth/me", headers=bearer(token)).status_code == 200
    clock_of(app).advance(2)  # ten idle minutes in no time at all
    response = factory.client.get("/v1/auth/me", headers=bearer(token))
    assert response.status_code == 401 and error_code(response) == "session_expired"


def test_session_absolute_end_follows_the_apps_clock(make_app: AppFactory) -> None:
    app = make_app(SESSION_IDLE_TIMEOUT="600", SESSION_MAX_LIFETIME="1000", JWT_LEEWAY="0")
    factory = Factory(app)
    token = factory.login(factory.user(role="billing"))["access_token"]
    for _ in range(3):  # active all along, refreshing inside every idle window
        clock_of(app).advance(400)
        refreshed = factory.client.post("/v1/auth/refresh", headers=bearer(token))
        if refreshed.status_code != 200:
            break
        token = refreshed.get_json()["access_token"]
    assert refreshed.status_code == 401 and error_code(refreshed) == "session_expired"


def test_lockout_lifts_by_the_apps_clock(make_app: AppFactory) -> None:
    app = make_app(LOGIN_USER_MAX_FAILURES="2", LOGIN_LOCKOUT_INCREMENT="300", LOGIN_IP_MAX_FAILURES="100")
    factory = Factory(app)
    account = factory.user(role="billing")
    for _ in range(2):
        factory.client.post("/v1/auth/login", json={"username": account.username, "password": "Nope-nope-123"})
    good = {"username": account.username, "password": PASSWORD}
    assert error_code(factory.client.post("/v1/auth/login", json=good)) == "locked_out"
    clock_of(app).advance(301)
    assert factory.client.post("/v1/auth/login", json=good).status_code == 200


def test_totp_window_follows_the_apps_clock(make_app: AppFactory) -> None:
    app = make_app()
    factory = Factory(app)
    account = factory.user(role="clinician")
    assert account.totp_secret is not None
    clock = clock_of(app)
    later = pyotp.TOTP(account.totp_secret).at(clock.timestamp() + 120)  # four steps ahead: outside the window
    body = {"username": account.username, "password": PASSWORD, "otp": later}
    assert error_code(factory.client.post("/v1/auth/login", json=body)) == "mfa_invalid"
    clock.advance(120)
    assert factory.client.post("/v1/auth/login", json=body).status_code == 200


def test_retired_token_refused_after_the_grace_by_the_apps_clock(make_app: AppFactory) -> None:
    app = make_app(SESSION_REFRESH_GRACE="5")
    factory = Factory(app)
    old = factory.login(factory.user(role="patient"))["access_token"]
    assert factory.client.post("/v1/auth/refresh", headers=bearer(old)).status_code == 200
    assert factory.client.get("/v1/auth/me", headers=bearer(old)).status_code == 200  # in flight: grace
    clock_of(app).advance(6)
    reused = factory.client.get("/v1/auth/me", headers=bearer(old))
    assert reused.status_code == 401 and error_code(reused) == "session_revoked"
