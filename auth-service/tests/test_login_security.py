"""Credential checks: identical failures for unknown users and wrong passwords, lockout, password policy,
MFA (enrolment-only sessions, replay, recovery codes)."""
from __future__ import annotations

import statistics
import time

import pyotp
import pytest
from flask import Flask
from safeharbor_auth.passwords import policy_problems

from .conftest import PASSWORD, AppFactory, Factory, audit_of, bearer, error_code

# -- unknown user vs wrong password -----------------------------------------------------------------------


def test_unknown_user_and_wrong_password_are_indistinguishable(factory: Factory) -> None:
    account = factory.user(role="billing")
    wrong = factory.client.post("/v1/auth/login", json={"username": account.username, "password": "Wrong-pass-123"})
    unknown = factory.client.post("/v1/auth/login", json={"username": "nobody-here", "password": "Wrong-pass-123"})
    assert wrong.status_code == unknown.status_code == 401
    a, b = wrong.get_json()["error"], unknown.get_json()["error"]
    assert a["code"] == b["code"] == "invalid_credentials"
    assert a["message"] == b["message"]
    assert set(a) == set(b)
    assert set(wrong.headers.keys()) == set(unknown.headers.keys())


def test_unknown_user_and_wrong_password_take_similar_time(make_app: AppFactory) -> None:
    # OWASP parameters, so the hash dominates; a ratio of medians, never an absolute number.
    app = make_app(ARGON2_MEMORY_KIB="19456", ARGON2_TIME_COST="2", LOGIN_USER_MAX_FAILURES="1000",
                   LOGIN_IP_MAX_FAILURES="1000")
    factory = Factory(app)
    account = factory.user(role="billing")

    def timed(username: str) -> float:
        started = time.perf_counter()
        response = factory.client.post("/v1/auth/login", json={"username": username, "password": "Wrong-pass-123"})
        elapsed = time.perf_counter() - started
        assert response.status_code == 401
        return elapsed

    timed(account.username), timed("ghost")  # warm-up
    known, unknown = [], []
    for i in range(11):
        known.append(timed(account.username))
        unknown.append(timed(f"ghost-{i}"))
    # Skipping the hash for unknown users would make them ~20x faster (a ratio near 0.05); the band is
    # wide enough for a loaded 2-core CI machine and still catches that.
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.5 < ratio < 2.0, (known, unknown)


# -- lockout ----------------------------------------------------------------------------------------------


def test_lockout_after_repeated_failures(make_app: AppFactory) -> None:
    app = make_app(LOGIN_USER_MAX_FAILURES="3", LOGIN_LOCKOUT_INCREMENT="30", LOGIN_LOCKOUT_MAX="120")
    factory = Factory(app)
    account = factory.user(role="billing")
    for _ in range(3):
        response = factory.client.post("/v1/auth/login",
                                       json={"username": account.username, "password": "Nope-nope-123"})
        assert response.status_code == 401 and error_code(response) == "invalid_credentials"
    # Locked: even the right password is not evaluated.
    response = factory.client.post("/v1/auth/login", json={"username": account.username, "password": PASSWORD})
    assert response.status_code == 429
    assert error_code(response) == "locked_out"
    assert 1 <= int(response.headers["Retry-After"]) <= 30
    recorder = audit_of(app)
    assert len(recorder.of("auth.login.failure")) == 4
    lockouts = recorder.of("auth.lockout")
    assert len(lockouts) == 1 and lockouts[0]["severity"] == "high" and lockouts[0]["meta"]["layer"] == "user"


def test_lockout_applies_to_unknown_names_the_same_way(make_app: AppFactory) -> None:
    factory = Factory(make_app(LOGIN_USER_MAX_FAILURES="2"))
    for _ in range(2):
        factory.client.post("/v1/auth/login", json={"username": "ghost", "password": "Nope-nope-123"})
    response = factory.client.post("/v1/auth/login", json={"username": "ghost", "password": "Nope-nope-123"})
    assert response.status_code == 429 and error_code(response) == "locked_out"


def test_lockout_grows_and_is_capped() -> None:
    from safeharbor_auth.throttle import lock_seconds

    waits = [lock_seconds(n, max_failures=5, increment=60, max_wait=900) for n in range(1, 80)]
    assert waits[:4] == [0, 0, 0, 0]
    assert waits[4] == 60 and waits[9] == 120 and waits[14] == 180
    assert max(waits) == 900
    assert waits == sorted(waits)


def test_lockout_resets_after_quiet_period(make_app: AppFactory) -> None:
    app = make_app(LOGIN_USER_MAX_FAILURES="3", LOGIN_FAILURE_RESET="1", LOGIN_IP_MAX_FAILURES="100")
    throttler = app.extensions["auth"].throttler
    now = time.time()
    throttler.record_failure(username="quiet", ip="10.0.0.1", now=now)
    throttler.record_failure(username="quiet", ip="10.0.0.1", now=now + 0.1)
    # A long pause: the count starts again, so the third failure does not lock.
    assert throttler.record_failure(username="quiet", ip="10.0.0.1", now=now + 5) == []


def test_ip_layer_locks_spraying_across_names(make_app: AppFactory) -> None:
    factory = Factory(make_app(LOGIN_IP_MAX_FAILURES="4", LOGIN_USER_MAX_FAILURES="100"))
    for i in range(4):
        factory.client.post("/v1/auth/login", json={"username": f"spray-{i}", "password": "Nope-nope-123"})
    response = factory.client.post("/v1/auth/login", json={"username": "spray-new", "password": "Nope-nope-123"})
    assert response.status_code == 429 and error_code(response) == "locked_out"
    assert "Retry-After" in response.headers


def test_global_layer_paces_a_name_tried_again(make_app: AppFactory) -> None:
    factory = Factory(make_app(LOGIN_GLOBAL_MAX_FAILURES_PER_MINUTE="3", LOGIN_USER_MAX_FAILURES="100",
                               LOGIN_IP_MAX_FAILURES="100"))
    throttler = factory.app.extensions["auth"].throttler
    for i in range(3):
        throttler.record_failure(username=f"g{i}", ip=f"10.1.0.{i}")
    first = factory.client.post("/v1/auth/login", json={"username": "anyone", "password": "Whatever-123"})
    assert first.status_code == 401  # evaluated: the ceiling slows, it does not shut the door
    response = factory.client.post("/v1/auth/login", json={"username": "anyone", "password": "Whatever-123"})
    assert response.status_code == 429 and error_code(response) == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= 2


def test_success_clears_the_user_count(make_app: AppFactory) -> None:
    factory = Factory(make_app(LOGIN_USER_MAX_FAILURES="3"))
    account = factory.user(role="billing")
    for _ in range(2):
        factory.client.post("/v1/auth/login", json={"username": account.username, "password": "Nope-nope-123"})
    factory.login(account)
    for _ in range(2):
        response = factory.client.post("/v1/auth/login", json={"username": account.username, "password": "Nope-no-123"})
        assert response.status_code == 401


def test_redis_throttle_store_shares_state(make_app: AppFactory) -> None:
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url("redis://127.0.0.1:6379/13")
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("Redis not reachable")
    import uuid

    settings = {"REDIS_URL": "redis://127.0.0.1:6379/13", "LOGIN_USER_MAX_FAILURES": "2"}
    first = Factory(make_app(**settings))
    first.app.extensions["auth"].throttler.store._primary._prefix = prefix = f"test:{uuid.uuid4().hex}:"
    second = Factory(make_app(**settings))
    from safeharbor_auth.throttle import RedisThrottleStore

    second.app.extensions["auth"].throttler.store = RedisThrottleStore(client, prefix=prefix)
    try:
        for _ in range(2):
            first.client.post("/v1/auth/login", json={"username": "shared", "password": "Nope-nope-123"})
        response = second.client.post("/v1/auth/login", json={"username": "shared", "password": "Nope-nope-123"})
        assert response.status_code == 429 and error_code(response) == "locked_out"
    finally:
        for key in client.scan_iter(prefix + "*"):
            client.delete(key)


def test_redis_gone_login_still_throttled_in_the_database(make_app: AppFactory) -> None:
    """Redis unreachable: no 500; failures are counted and lockouts enforced in the database."""
    factory = Factory(make_app(REDIS_URL="redis://127.0.0.1:1/0", LOGIN_USER_MAX_FAILURES="2"))
    account = factory.user(role="patient")
    wrong = {"username": account.username, "password": "Nope-nope-123"}
    codes = [error_code(factory.client.post("/v1/auth/login", json=wrong)) for _ in range(2)]
    assert codes == ["invalid_credentials", "invalid_credentials"]
    locked = factory.client.post("/v1/auth/login", json=wrong)
    assert locked.status_code == 429 and error_code(locked) == "locked_out"


# -- password policy --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("Short-1", "at least 12"),
        ("a" * 129, "at most 128"),
        ("alllowercaseletters", "two kinds"),
        ("123456789012345", "two kinds"),
        ("Password123!", "common"),
        ("P@ssw0rd2024!", "common"),
        ("qwertyqwertyQ", "common"),
        ("aaaaaaaaaaaaA1", "distinct"),
        ("Xx-jdoe-secret-99", "username"),
    ],
)
def test_password_policy_rejects(password: str, problem: str) -> None:
    problems = policy_problems(password, username="jdoe")
    assert any(problem in p for p in problems), problems


def test_password_policy_accepts_reasonable_passwords() -> None:
    for password in ("Correct-Horse-42-battery", "tidal lantern 7 orbit", "Z8#kq!vM2wLp"):
        assert policy_problems(password, username="jdoe") == []


def test_weak_password_refused_by_api_with_reasons(app: Flask, factory: Factory) -> None:
    admin = factory.user(role="admin")
    token = factory.token(admin)
    response = factory.client.post("/v1/users", headers=bearer(token),
                                   json={"username": "newbie", "name": "New Person", "role": "patient",
                                         "password": "newbie-Password1"})
    assert response.status_code == 422
    assert error_code(response) == "unprocessable"
    assert "username" in response.get_json()["error"]["message"]
    assert "newbie-Password1" not in response.get_data(as_text=True)


# -- MFA --------------------------------------------------------------------------------------------------


def test_enrolment_only_session(factory: Factory) -> None:
    account = factory.user(role="clinician", mfa=False)
    body = factory.login(account)
    assert body["scope"] == "mfa_enrollment" and body["user"]["mfa_enrolled"] is False
    token = body["access_token"]
    for method, path in (("GET", "/v1/auth/me"), ("POST", "/v1/auth/refresh"), ("GET", f"/v1/users/{account.id}")):
        response = factory.client.open(path, method=method, headers=bearer(token))
        assert response.status_code == 403, path
        assert error_code(response) == "mfa_enrollment_required"
    enrolled = factory.client.post("/v1/auth/mfa/totp/enroll", headers=bearer(token))
    assert enrolled.status_code == 200
    secret = enrolled.get_json()["secret"]
    assert enrolled.get_json()["otpauth_uri"].startswith("otpauth://totp/")
    account.totp_secret = secret
    confirmed = factory.client.post("/v1/auth/mfa/totp/confirm", headers=bearer(token), json={"code": account.totp()})
    assert confirmed.status_code == 200
    assert len(confirmed.get_json()["recovery_codes"]) == 10
    # The enrolment session is over; a full one needs the password and a code.
    assert factory.client.post("/v1/auth/mfa/totp/enroll", headers=bearer(token)).status_code == 401
    missing = factory.client.post("/v1/auth/login", json={"username": account.username, "password": PASSWORD})
    assert missing.status_code == 401 and error_code(missing) == "mfa_required"
    full = factory.login(account)
    assert full["scope"] == "full" and full["user"]["mfa_enrolled"] is True
    assert factory.client.get("/v1/auth/me", headers=bearer(full["access_token"])).status_code == 200


def test_roles_without_mfa_requirement_get_full_sessions(factory: Factory) -> None:
    for role in ("billing", "patient"):
        assert factory.login(factory.user(role=role))["scope"] == "full"


def test_wrong_totp_is_mfa_invalid(factory: Factory) -> None:
    account = factory.user(role="clinician")
    response = factory.client.post(
        "/v1/auth/login", json={"username": account.username, "password": PASSWORD, "otp": "000000"}
    )
    # One chance in a million that 000000 is the current code; the step check would still refuse a reuse.
    assert response.status_code == 401 and error_code(response) == "mfa_invalid"


def test_replayed_totp_code_refused(app: Flask, factory: Factory) -> None:
    account = factory.user(role="clinician")
    code = account.totp()
    first = factory.client.post("/v1/auth/login",
                                json={"username": account.username, "password": PASSWORD, "otp": code})
    assert first.status_code == 200
    replay = factory.client.post("/v1/auth/login",
                                 json={"username": account.username, "password": PASSWORD, "otp": code})
    assert replay.status_code == 401
    assert error_code(replay) == "mfa_invalid"
    # An older step than the last used one is refused too.
    assert account.totp_secret is not None
    older = pyotp.TOTP(account.totp_secret).at((account.last_step - 1) * 30)
    response = factory.client.post("/v1/auth/login",
                                   json={"username": account.username, "password": PASSWORD, "otp": older})
    assert error_code(response) == "mfa_invalid"
    assert "auth.mfa.use" in audit_of(app).actions()


def test_recovery_code_single_use(factory: Factory) -> None:
    account = factory.user(role="admin")
    code = account.recovery_codes[0]
    first = factory.client.post("/v1/auth/login",
                                json={"username": account.username, "password": PASSWORD, "otp": code})
    assert first.status_code == 200
    again = factory.client.post("/v1/auth/login",
                                json={"username": account.username, "password": PASSWORD, "otp": code})
    assert again.status_code == 401 and error_code(again) == "mfa_invalid"
    # Another code works once; formatting is forgiving.
    other = account.recovery_codes[1].upper().replace("-", " ")
    response = factory.client.post("/v1/auth/login",
                                   json={"username": account.username, "password": PASSWORD, "otp": other})
    assert response.status_code == 200


def test_totp_secret_and_recovery_codes_not_stored_in_clear(app: Flask, factory: Factory) -> None:
    from safeharbor_auth.models import RecoveryCode, User
    from sqlalchemy import select

    account = factory.user(role="auditor")
    with app.extensions["auth"].engine.connect() as conn:
        row = conn.execute(select(User).where(User.id == account.id)).one()
        hashes = conn.execute(select(RecoveryCode.code_hash).where(RecoveryCode.user_id == account.id)).scalars().all()
    assert account.totp_secret is not None
    assert account.totp_secret.encode() not in row.totp_secret_enc
    assert len(hashes) == 10
    assert not set(account.recovery_codes) & set(hashes)


def test_mfa_enrol_twice_conflicts(factory: Factory) -> None:
    account = factory.user(role="clinician")
    token = factory.token(account)
    response = factory.client.post("/v1/auth/mfa/totp/enroll", headers=bearer(token))
    assert response.status_code == 409 and error_code(response) == "conflict"


def test_confirm_with_wrong_code(factory: Factory) -> None:
    account = factory.user(role="clinician", mfa=False)
    token = factory.login(account)["access_token"]
    factory.client.post("/v1/auth/mfa/totp/enroll", headers=bearer(token))
    response = factory.client.post("/v1/auth/mfa/totp/confirm", headers=bearer(token), json={"code": "12345x"})
    assert response.status_code == 401 and error_code(response) == "mfa_invalid"


def test_deactivated_user_cannot_log_in_and_gets_same_error(factory: Factory) -> None:
    admin = factory.user(role="admin")
    target = factory.user(role="billing")
    token = factory.token(admin)
    assert factory.client.post(f"/v1/users/{target.id}/deactivate", headers=bearer(token)).status_code == 200
    response = factory.client.post("/v1/auth/login", json={"username": target.username, "password": PASSWORD})
    assert response.status_code == 401 and error_code(response) == "invalid_credentials"
