"""Application factory (served by `python -m safeharbor_common.serving safeharbor_auth.app:create_app`)."""
from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from functools import partial
from typing import Any

from flask import Flask, current_app
from safeharbor_common import audit_recorder, service_identity, tokens, web
from safeharbor_common.audit_recorder import AuditRecorder
from safeharbor_common.config import ConfigError
from safeharbor_common.db import create_db_engine
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError

from . import compliance
from .breakglass.service import sweep_break_glass
from .clock import Clock, SystemClock
from .config import load_config
from .context import AuthContext
from .crypto import DataCipher
from .deprovisioning.handlers import stream_job_handlers
from .jobs import KEYDIR_REVOKE, JobRunner, keydir_revoke_all
from .models import SigningKey
from .passwords import Passwords
from .provisioning import StreamProvisioner
from .revocations import RevocationPublisher
from .signing import SigningKeys
from .stream import StreamGateway
from .throttle import (
    DatabaseThrottleStore,
    FallbackThrottleStore,
    LoginThrottler,
    RedisThrottleStore,
    ThrottlePolicy,
    ThrottleStore,
)
from .verifier import ClockedTokenVerifier

_log = logging.getLogger("safeharbor.auth")


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """`test_config`: `ENVIRON` (a dict read instead of os.environ), `CLOCK` (a Clock; tests pass a
    FakeClock) and/or config keys to override."""
    app = Flask(__name__)
    try:
        app.config.update(load_config(test_config.get("ENVIRON") if test_config else None))
    except ConfigError as exc:
        if test_config is not None:
            raise
        # Refuse to start with one clear line (the setting's name, never its value).
        print(f"auth-service: configuration error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from exc
    if test_config:
        app.config.update({k: v for k, v in test_config.items() if k not in ("ENVIRON", "CLOCK")})
    clock = test_config.get("CLOCK") if test_config else None

    web.init_app(app, service_name="auth", readiness_check=_readiness)
    service_identity.init_app(app)
    # The recorder every service shares (its emitter is looked up per event: installed below, or by tests).
    auth = build_context(app.config, clock=clock or SystemClock(), audit=audit_recorder.init_app(app))
    app.extensions["auth"] = auth
    app.config["JWKS_FETCHER"] = auth.keys.jwks
    tokens.init_app(app)
    # Session tokens' times are judged by auth's clock (verifier.py); the rest of the checks are shared.
    app.extensions["token_verifier"] = ClockedTokenVerifier(
        keys=tokens.JwksCache(auth.keys.jwks, refresh_cooldown=float(app.config["JWKS_REFRESH_COOLDOWN"])),
        issuer=app.config["JWT_ISSUER"],
        audience=app.config["JWT_AUDIENCE"],
        clock=auth.clock,
        leeway=auth.leeway,
    )
    if app.config.get("AUDIT_ENABLED", True):
        from safeharbor_common import audit_emitter

        audit_emitter.init_app(app)

    try:
        auth.keys.ensure_key()
    except SQLAlchemyError:
        # Not migrated yet: /readyz says so until `manage migrate` has run.
        _log.warning("database not ready at start; run `python -m safeharbor_auth.manage migrate`")

    runner = JobRunner(
        ctx=auth,
        poll_interval=float(app.config["JOB_POLL_INTERVAL"]),
        backoff_max=float(app.config["JOB_BACKOFF_MAX"]),
    )
    runner.handlers[KEYDIR_REVOKE] = keydir_revoke_all(ctx=auth, signer=app.extensions["service_signer"])
    auth.jobs = runner
    _init_stream(app, auth, runner)
    if app.config["JOB_RUNNER_ENABLED"]:
        app.before_request(runner.ensure_started)

    # One room per concern; each room's views are registered on the API's blueprints (http.py).
    from .breakglass import views as _breakglass_views  # noqa: F401
    from .channels import views as _channels_views  # noqa: F401
    from .deprovisioning import views as _deprovisioning_views  # noqa: F401
    from .http import AUTH_API, STREAM_API
    from .mfa import views as _mfa_views  # noqa: F401
    from .sessions import views as _sessions_views  # noqa: F401
    from .users import views as _users_views  # noqa: F401

    app.register_blueprint(AUTH_API)
    app.register_blueprint(STREAM_API)
    compliance.init_app(app, auth)
    return app


def build_context(config: Mapping[str, Any], *, clock: Clock, audit: AuditRecorder) -> AuthContext:
    engine = create_db_engine(config["DATABASE_URL"])
    cipher = DataCipher(config["AUTH_DATA_KEY"])
    store: ThrottleStore
    if config.get("REDIS_URL"):
        import redis

        store = FallbackThrottleStore(
            RedisThrottleStore(
                redis.Redis.from_url(config["REDIS_URL"], socket_timeout=1.0, socket_connect_timeout=1.0),
                prefix=str(config.get("REDIS_KEY_PREFIX", "safeharbor:auth:throttle:")),
            ),
            DatabaseThrottleStore(engine),
        )
    else:
        store = DatabaseThrottleStore(engine)
    policy = ThrottlePolicy(
        user_max_failures=config["LOGIN_USER_MAX_FAILURES"],
        ip_max_failures=config["LOGIN_IP_MAX_FAILURES"],
        increment=config["LOGIN_LOCKOUT_INCREMENT"],
        max_wait=config["LOGIN_LOCKOUT_MAX"],
        reset=config["LOGIN_FAILURE_RESET"],
        global_max_per_minute=config["LOGIN_GLOBAL_MAX_FAILURES_PER_MINUTE"],
        slow_interval=config["LOGIN_GLOBAL_SLOW_INTERVAL"],
    )
    return AuthContext(
        config=dict(config),
        engine=engine,
        audit=audit,
        clock=clock,
        cipher=cipher,
        passwords=Passwords(
            memory_kib=config["ARGON2_MEMORY_KIB"],
            time_cost=config["ARGON2_TIME_COST"],
            parallelism=config["ARGON2_PARALLELISM"],
        ),
        throttler=LoginThrottler(store, policy, clock=clock),
        keys=SigningKeys(
            engine=engine,
            cipher=cipher,
            idle_timeout=config["SESSION_IDLE_TIMEOUT"],
            leeway=config["JWT_LEEWAY"],
            prepublish=config["SIGNING_KEY_PREPUBLISH"],
            clock=clock,
        ),
        publisher=RevocationPublisher(config.get("REDIS_URL")),
    )


def _init_stream(app: Flask, auth: AuthContext, runner: JobRunner) -> None:
    """Builds the Stream gateway when configured, registers its job handlers and the break-glass sweep."""
    runner.periodic.append(partial(sweep_break_glass, ctx=auth))
    if not app.config.get("STREAM_API_KEY"):
        return
    auth.stream = StreamGateway(
        api_key=app.config["STREAM_API_KEY"],
        api_secret=app.config["STREAM_API_SECRET"].reveal(),
        base_url=app.config.get("STREAM_CHAT_URL"),
        timeout=float(app.config["STREAM_TIMEOUT"]),
    )
    runner.handlers.update(stream_job_handlers(auth))
    if app.config.get("STREAM_PROVISIONER", True):  # off only for one-shot admin commands
        auth.provisioner = StreamProvisioner(
            audit=auth.audit, clock=auth.clock, stream=auth.stream,
            write=bool(app.config.get("STREAM_PROVISION_ON_START")),
            verify_interval=float(app.config["STREAM_VERIFY_INTERVAL"]),
        )
        auth.provisioner.check_now()  # first attempt at start; the job loop retries and re-reads
        runner.periodic.append(auth.provisioner.tick)


def _readiness() -> None:
    auth: AuthContext = current_app.extensions["auth"]
    with auth.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        if conn.execute(select(SigningKey.kid).where(SigningKey.retired_at.is_(None)).limit(1)).first() is None:
            auth.keys.ensure_key()
    if auth.provisioner is not None:  # Stream must hold the role map (issue 16): else 503 with the reasons
        auth.provisioner.check_ready()
