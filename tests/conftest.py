"""The integration suite's stack: every service and the Stream emulator as real processes on loopback.

`--backend=sqlite` (default) gives each service its own SQLite file in a temporary folder;
`--backend=postgres` creates one PostgreSQL database per service and a Redis database, and drops them at
the end. The stack starts once per session; tests share it and must not depend on each other's data.
"""
from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from answer_contract import AnswerWatch, watch
from compose_stack import ComposeStack, ComposeUnavailable, engine
from safeharbor_devstack import SERVICES, Stack, StackSettings, free_port
from safeharbor_devstack.secrets import generate_secrets
from safeharbor_gateway.contract import public_document
from stack_modes import MARKERS, RemoteStack, ensure_demo_users

ROOT = Path(__file__).resolve().parent.parent
# A stack the suite did not start (--stack-url) hands over its demo users' password (tests/stack_modes.py).
DEMO_PASSWORD = os.environ.get("SAFEHARBOR_DEMO_PASSWORD") or "Harbor-it-" + secrets.token_hex(4)
REMOTE: pytest.StashKey[RemoteStack] = pytest.StashKey()
COMPOSE: pytest.StashKey[str | None] = pytest.StashKey()  # --stack=compose: None, or why it cannot run
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_TEST_DB_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--backend", default=os.environ.get("SAFEHARBOR_TEST_BACKEND", "sqlite"),
                     choices=["sqlite", "postgres"])
    parser.addoption("--replicas", type=int, default=int(os.environ.get("SAFEHARBOR_TEST_REPLICAS", "1")),
                     help="instances of every service (issue 19): with 2, the gateway spreads requests over "
                          "two of each and the suite talks to two gateways through a loopback balancer")
    parser.addoption("--stack-url", default=os.environ.get("SAFEHARBOR_STACK_URL"),
                     help="run against the stack whose gateway is at this URL instead of starting one "
                          "(see tests/stack_modes.py for what it reads from the environment)")
    parser.addoption("--stack", default="local", choices=["local", "compose"],
                     help="compose: build and start docker-compose.yml (dev profile) for the run "
                          "(tests/compose_stack.py); skipped without a Docker engine unless REQUIRE_DOCKER=1")


def pytest_configure(config: pytest.Config) -> None:
    for marker, reason in MARKERS.items():
        config.addinivalue_line("markers", f"{marker}: {reason}")
    url = config.getoption("--stack-url")
    if url:
        config.stash[REMOTE] = RemoteStack.from_environment(url)
    if config.getoption("--stack") == "compose":
        try:
            engine()
            config.stash[COMPOSE] = None
        except ComposeUnavailable as exc:
            if os.environ.get("REQUIRE_DOCKER") == "1":
                raise pytest.UsageError(f"--stack=compose: {exc} and REQUIRE_DOCKER=1") from None
            config.stash[COMPOSE] = f"!!! --stack=compose: {exc}: the compose stack is NOT tested"
            print(f"\n{config.stash[COMPOSE]}\n", file=sys.stderr)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if COMPOSE in item.config.stash and item.get_closest_marker("owned_stack"):
        pytest.skip(f"--stack=compose: {MARKERS['owned_stack']}")
    remote = item.config.stash.get(REMOTE, None)
    if remote is not None:
        for marker in MARKERS:
            why = remote.missing(marker) if item.get_closest_marker(marker) else None
            if why:
                pytest.skip(why)


@dataclass
class Api:
    """A small client for the gateway: JSON in, JSON out, status kept."""

    base: str
    # A role's account where it is not the demo one: {"admin": (username, password)} on a stack elsewhere.
    accounts: dict[str, tuple[str, str]] = field(default_factory=dict)

    def call(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.base + path, headers=headers, timeout=30, **kwargs)

    def login(self, username: str, password: str = DEMO_PASSWORD, **extra: Any) -> dict[str, Any]:
        response = self.call("POST", "/v1/auth/login", json={**self._account(username, password), **extra})
        assert response.status_code == 200, response.text
        return dict(response.json())

    def token(self, username: str, password: str = DEMO_PASSWORD) -> str:
        return str(self.session(username, password)["access_token"])

    def session(self, username: str, password: str = DEMO_PASSWORD) -> dict[str, Any]:
        """A full session for `username`, enrolling TOTP first when the role needs it.

        The TOTP secret is kept per user; each login uses a time step not used before (the server accepts a
        step once, with one step of drift either way), falling back to a recovery code.
        """
        response = self.call("POST", "/v1/auth/login", json=self._credentials(username, password))
        body = response.json()
        if response.status_code == 200 and body.get("user", {}).get("mfa_enrolled") is False and \
                self._is_enrolment_only(body["access_token"]):
            self._enrol(username, body["access_token"])
            response = self.call("POST", "/v1/auth/login", json=self._credentials(username, password))
            body = response.json()
        assert response.status_code == 200, response.text
        return dict(body)

    def _is_enrolment_only(self, token: str) -> bool:
        return self.call("GET", "/v1/auth/me", token=token).status_code == 403

    def _enrol(self, username: str, token: str) -> None:
        import pyotp

        enrolled = self.call("POST", "/v1/auth/mfa/totp/enroll", token=token)
        assert enrolled.status_code == 200, enrolled.text
        secret = enrolled.json()["secret"]
        code = self._next_code(username, secret)
        confirmed = self.call("POST", "/v1/auth/mfa/totp/confirm", token=token, json={"code": code})
        assert confirmed.status_code == 200, confirmed.text
        _MFA[username] = {"secret": secret, "recovery": list(confirmed.json()["recovery_codes"])}
        del pyotp

    def otp(self, username: str) -> str:
        """A one-time code for an enrolled user that has not been used yet."""
        state = _MFA[username]
        return self._next_code(username, str(state["secret"]))

    def _next_code(self, username: str, secret: str) -> str:
        import time

        import pyotp

        totp = pyotp.TOTP(secret)
        now = time.time()
        step = int(now) // 30
        used = _USED_STEPS.setdefault(username, -1)
        # The server accepts one step either way of its own: the previous step only while the request cannot
        # reach it in the next window (a busy machine took seconds: the code was then two steps old).
        earliest = step - 1 if 30 - now % 30 > STEP_MARGIN_S else step
        for candidate in range(earliest, step + 2):
            if candidate > used:
                _USED_STEPS[username] = candidate
                return str(totp.at(candidate * 30))
        recovery = _MFA.get(username, {}).get("recovery") or []
        if recovery:
            return str(recovery.pop())
        time.sleep(30 - time.time() % 30 + 0.5)
        return self._next_code(username, secret)

    def _account(self, username: str, password: str) -> dict[str, Any]:
        if username in self.accounts and password == DEMO_PASSWORD:
            username, password = self.accounts[username]
        return {"username": username, "password": password}

    def _credentials(self, username: str, password: str) -> dict[str, Any]:
        creds: dict[str, Any] = self._account(username, password)
        if username in _MFA:
            creds["otp"] = self.otp(username)
        return creds


_MFA: dict[str, dict[str, Any]] = {}
_USED_STEPS: dict[str, int] = {}
STEP_MARGIN_S = 10.0  # seconds before a TOTP window ends from which its previous step is no longer used


class _Databases:
    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.prefix = f"sh_it_{uuid.uuid4().hex[:8]}"
        self.created: list[str] = []

    def urls(self, tmp: Path) -> dict[str, str]:
        names = [s.name for s in SERVICES if s.migrates]
        if self.backend == "sqlite":
            return {n: f"sqlite:///{tmp / n}.db" for n in names}
        import psycopg

        urls = {}
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            for name in names:
                db = f"{self.prefix}_{name}"
                conn.execute(f'CREATE DATABASE "{db}"')
                self.created.append(db)
                urls[name] = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{db}"
        return urls

    def drop(self) -> None:
        if not self.created:
            return
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            for db in self.created:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--backend"))


@pytest.fixture(scope="session")
def replicas(request: pytest.FixtureRequest) -> int:
    return int(request.config.getoption("--replicas"))


@pytest.fixture(scope="session")
def stack(backend: str, replicas: int, request: pytest.FixtureRequest) -> Iterator[Stack]:
    remote = request.config.stash.get(REMOTE, None)
    if remote is not None:
        yield remote  # type: ignore[misc]  # the parts of a Stack a stack elsewhere has (stack_modes.py)
        return
    if COMPOSE in request.config.stash:
        yield from _compose_stack(request)  # type: ignore[misc]
        return
    if replicas > 1 and backend != "postgres":
        raise pytest.UsageError("--replicas above 1 needs --backend=postgres (SQLite files are one machine's)")
    tmp = Path(tempfile.mkdtemp(prefix="safeharbor-it-"))
    databases = _Databases(backend)
    redis_url = None
    if backend == "postgres":
        import redis

        redis_url = REDIS_TEST_DB_URL
        redis.Redis.from_url(redis_url).flushdb()
    ports = {spec.name: free_port() for spec in SERVICES}
    internal_port = free_port()
    settings = StackSettings(
        root=ROOT,
        var_dir=tmp,
        secrets=generate_secrets(),
        ports=ports,
        database_urls=databases.urls(tmp),
        redis_url=redis_url,
        emulator=True,
        emulator_port=free_port(),
        workers=2,
        replicas=replicas,
        gateway_internal_port=internal_port,
        env="dev",
        demo_password=DEMO_PASSWORD,
        extra_env={
            "RATE_LIMIT_PER_IP": "100000",
            "RATE_LIMIT_PER_USER": "100000",
            "PUSH_DRIFT_INTERVAL": "1",
            "LOGIN_IP_MAX_FAILURES": "100000",
            "BREAK_GLASS_TTL": "6",  # test_stream_integration waits for a break-glass session to end
            "JOB_BACKOFF_MAX": "1",  # deprovisioning retries after a Stream outage finish within seconds
            # With replicas, a checkpoint interval short enough for test_replicas_integration to see several.
            **({"AUDIT_CHECKPOINT_INTERVAL": "1"} if replicas > 1 else {}),
        },
        # The compliance report reads the gateway's controls on its internal listener (issue 17).
        service_env={"audit": {"GATEWAY_INTERNAL_URL": f"http://127.0.0.1:{internal_port}"}},
    )
    running = Stack(settings)
    try:
        running.start(timeout=90)
        yield running
    finally:
        running.stop()
        databases.drop()
        if redis_url:
            import redis

            redis.Redis.from_url(redis_url).flushdb()
        if os.environ.get("KEEP_STACK_LOGS"):
            print(f"stack logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _compose_stack(request: pytest.FixtureRequest) -> Iterator[ComposeStack]:
    unavailable = request.config.stash[COMPOSE]
    if unavailable:
        pytest.skip(unavailable)
    folder = Path(tempfile.mkdtemp(prefix="safeharbor-compose-"))
    running = ComposeStack.up(folder)  # on failure: the containers' logs are in folder/logs
    try:
        yield running
    finally:
        if request.session.testsfailed:
            print(f"compose logs kept in {running.collect_logs()}")
        running.down()


@pytest.fixture(scope="session")
def api(stack: Stack) -> Api:
    if not isinstance(stack, RemoteStack):
        return Api(stack.gateway_url)
    api = Api(stack.gateway_url, accounts={"admin": stack.admin_account(DEMO_PASSWORD)})
    if os.environ.get("SAFEHARBOR_ADMIN_TOTP_SECRET"):  # enrolled already: the harness logs in with it
        _MFA["admin"] = {"secret": os.environ["SAFEHARBOR_ADMIN_TOTP_SECRET"], "recovery": []}
    ensure_demo_users(api, api.token("admin"), DEMO_PASSWORD)
    return api


@pytest.fixture
def admin_token(api: Api) -> str:
    return api.token("admin")


@pytest.fixture(scope="session")
def answer_watch(api: Api) -> Iterator[AnswerWatch]:
    """Every answer from the gateway, checked against the public OpenAPI document (tests/answer_contract.py)."""
    with watch(api.base, public_document()) as answers:
        yield answers


@pytest.fixture(autouse=True)
def _answers_conform(request: pytest.FixtureRequest) -> Iterator[None]:
    if "api" not in request.fixturenames:
        yield
        return
    answers: AnswerWatch = request.getfixturevalue("answer_watch")
    answers.take()
    yield
    problems = answers.take()
    if problems:
        pytest.fail("answers that do not match docs/API.md's OpenAPI document "
                    "(gateway/safeharbor_gateway/public-openapi.json):\n  " + "\n  ".join(problems))
