"""Application factory (served by `python -m safeharbor_common.serving safeharbor_auth.app:create_app`)."""
from __future__ import annotations

import dataclasses
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
from safeharbor_common.settings import settings_of
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError

from . import compliance
from .breakglass.service import sweep_break_glass
from .clock import Clock, SystemClock
from .config import AuthSettings
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
        settings = AuthSettings.from_env(test_config.get("ENVIRON") if test_config else None)
    except ConfigError as exc:
        if test_config is not None:
            raise
        # Refuse to start with one clear line (the setting's name, never its value).
        print(f"auth-service: configuration error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from exc
    overrides = {k: v for k, v in (test_config or {}).items() if k not in ("ENVIRON", "CLOCK")}
    app.config.update(_overridden(settings, overrides).as_config())
    app.config.update(overrides)
    clock = test_config.get("CLOCK") if test_config else None

    web.init_app(app, service_name="auth", readiness_check=_readiness)
    service_identity.init_app(app)
    # The recorder every service shares (its emitter is looked up per event: installed below, or by tests).
    auth = build_context(settings_of(app, AuthSettings), clock=clock or SystemClock(),
                         audit=audit_recorder.init_app(app),
                         redis_key_prefix=str(app.config.get("REDIS_KEY_PREFIX", "safeharbor:auth:throttle:")))
    app.extensions["auth"] = auth
    app.config["JWKS_FETCHER"] = auth.keys.jwks
    tokens.init_app(app)
    # Session tokens' times are judged by auth's clock (verifier.py); the rest of the checks are shared.
    app.extensions["token_verifier"] = ClockedTokenVerifier(
        keys=tokens.JwksCache(auth.keys.jwks, refresh_cooldown=float(app.config["JWKS_REFRESH_COOLDOWN"])),
        issuer=auth.settings.jwt_issuer,
        audience=auth.settings.jwt_audience,
        clock=auth.clock,
        leeway=auth.leeway,
    )
    if auth.settings.audit_enabled:
        from safeharbor_common import audit_emitter

        audit_emitter.init_app(app)

    try:
        auth.keys.ensure_key()
    except SQLAlchemyError:
        # Not migrated yet: /readyz says so until `manage migrate` has run.
        _log.warning("database not ready at start; run `python -m safeharbor_auth.manage migrate`")

    runner = JobRunner(
        ctx=auth,
        poll_interval=auth.settings.job_poll_interval,
        backoff_max=auth.settings.job_backoff_max,
    )
    runner.handlers[KEYDIR_REVOKE] = keydir_revoke_all(ctx=auth, signer=app.extensions["service_signer"])
    auth.jobs = runner
    _init_stream(app, auth, runner)
    if auth.settings.job_runner_enabled:
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


def _overridden(settings: AuthSettings, overrides: Mapping[str, Any]) -> AuthSettings:
    """Overrides given as config keys (tests, admin commands: JOB_RUNNER_ENABLED=False) that name a setting
    change the typed settings too, so the context and app.config never disagree."""
    names = {spec.name for spec in dataclasses.fields(settings)}
    changes = {key.lower(): value for key, value in overrides.items() if key.lower() in names}
    return dataclasses.replace(settings, **changes) if changes else settings


def build_context(settings: AuthSettings, *, clock: Clock, audit: AuditRecorder,
                  redis_key_prefix: str = "safeharbor:auth:throttle:") -> AuthContext:
    engine = create_db_engine(settings.database_url)
    cipher = DataCipher(settings.auth_data_key)
    store: ThrottleStore
    if settings.redis_url:
        import redis

        store = FallbackThrottleStore(
            RedisThrottleStore(
                redis.Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0),
                prefix=redis_key_prefix,
            ),
            DatabaseThrottleStore(engine),
        )
    else:
        store = DatabaseThrottleStore(engine)
    policy = ThrottlePolicy(
        user_max_failures=settings.login_user_max_failures,
        ip_max_failures=settings.login_ip_max_failures,
        increment=settings.login_lockout_increment,
        max_wait=settings.login_lockout_max,
        reset=settings.login_failure_reset,
        global_max_per_minute=settings.login_global_max_failures_per_minute,
        slow_interval=settings.login_global_slow_interval,
    )
    return AuthContext(
        settings=settings,
        engine=engine,
        audit=audit,
        clock=clock,
        cipher=cipher,
        passwords=Passwords(
            memory_kib=settings.argon2_memory_kib,
            time_cost=settings.argon2_time_cost,
            parallelism=settings.argon2_parallelism,
        ),
        throttler=LoginThrottler(store, policy, clock=clock),
        keys=SigningKeys(
            engine=engine,
            cipher=cipher,
            idle_timeout=settings.session_idle_timeout,
            leeway=settings.jwt_leeway,
            prepublish=settings.signing_key_prepublish,
            clock=clock,
        ),
        publisher=RevocationPublisher(settings.redis_url),
    )


def _init_stream(app: Flask, auth: AuthContext, runner: JobRunner) -> None:
    """Builds the Stream gateway when configured, registers its job handlers and the break-glass sweep."""
    runner.periodic.append(partial(sweep_break_glass, ctx=auth))
    settings = auth.settings
    if not settings.stream_api_key or settings.stream_api_secret is None:
        return
    auth.stream = StreamGateway(
        api_key=settings.stream_api_key,
        api_secret=settings.stream_api_secret.reveal(),
        base_url=settings.stream_chat_url,
        timeout=settings.stream_timeout,
    )
    runner.handlers.update(stream_job_handlers(auth))
    if app.config.get("STREAM_PROVISIONER", True):  # off only for one-shot admin commands
        auth.provisioner = StreamProvisioner(
            audit=auth.audit, clock=auth.clock, stream=auth.stream,
            write=settings.stream_provision_on_start,
            verify_interval=settings.stream_verify_interval,
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
