"""Admin commands: `python -m safeharbor_auth.manage <command>`.

migrate              create/upgrade tables, then create the first signing key if there is none
create-admin         the first admin (--username, --name; password from SAFEHARBOR_ADMIN_PASSWORD or prompted)
seed-demo            demo users (dev only; password SAFEHARBOR_DEMO_PASSWORD); idempotent
rotate-signing-key   new signing key (published now, signs after SIGNING_KEY_PREPUBLISH s, or --now);
                     --withdraw-old for a compromised key: the old one leaves the JWKS at once
provision-stream     create/update Stream roles and channel-type grants from safeharbor_auth.roles, read back
                     (the service also does this at every start)
run-jobs             run due deprovisioning jobs once (the service also runs them in the background)
"""
from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from safeharbor_common.config import ConfigError, EnvReader
from safeharbor_common.db import create_db_engine, upgrade_database
from safeharbor_common.errors import SafeHarborError

from .config import data_key, database_url

if TYPE_CHECKING:
    from .context import AuthContext

MIGRATIONS = Path(__file__).parent / "migrations"

DEMO_USERS: tuple[tuple[str, str, str], ...] = (
    ("admin", "Avery Admin", "admin"),
    ("dr-chen", "Dr. Wei Chen", "clinician"),
    ("sam", "Sam Rivera", "billing"),
    ("pat", "Pat Morgan", "patient"),
    ("audra", "Audra Quinn", "auditor"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m safeharbor_auth.manage", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create or upgrade the tables; first signing key")
    admin = sub.add_parser("create-admin", help="create an admin user")
    admin.add_argument("--username", required=True)
    admin.add_argument("--name", required=True)
    sub.add_parser("seed-demo", help="demo users (SAFEHARBOR_ENV=dev only)")
    rotate = sub.add_parser("rotate-signing-key", help="rotate the session-token signing key")
    rotate.add_argument("--now", action="store_true", help="sign with the new key at once (skip pre-publishing)")
    rotate.add_argument("--withdraw-old", action="store_true",
                        help="compromised key: unpublish the old key at once (its tokens stop working)")
    sub.add_parser("provision-stream", help="create/update Stream channel types and grants")
    sub.add_parser("run-jobs", help="run due deprovisioning jobs once")
    args = parser.parse_args(argv)

    try:
        if args.command == "migrate":
            return _migrate()
        if args.command == "create-admin":
            return _with_app(lambda ctx: _create_admin(ctx, args.username, args.name))
        if args.command == "seed-demo":
            return _seed_demo()
        if args.command == "rotate-signing-key":
            return _with_app(lambda ctx: _rotate(ctx, now=args.now, withdraw=args.withdraw_old))
        if args.command == "provision-stream":
            return _with_app(_provision_stream)
        if args.command == "run-jobs":
            return _with_app(_run_jobs)
    except ConfigError as exc:
        print(f"auth: configuration error: {exc}", file=sys.stderr)
        return 2
    except SafeHarborError as exc:
        print(f"auth: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    return 2


def _migrate() -> int:
    url = database_url()
    upgrade_database(url, MIGRATIONS)
    print("auth: database migrated")
    raw_key = EnvReader().optional_secret("AUTH_DATA_KEY")
    if raw_key is None:
        print("auth: AUTH_DATA_KEY not set; the first signing key will be created at start")
        return 0
    from .crypto import DataCipher
    from .signing import SigningKeys

    env = EnvReader()
    engine = create_db_engine(url)
    keys = SigningKeys(
        engine=engine,
        cipher=DataCipher(data_key(raw_key.reveal(), "AUTH_DATA_KEY")),
        idle_timeout=env.int("SESSION_IDLE_TIMEOUT", 600),
        leeway=env.int("JWT_LEEWAY", 5),
        prepublish=env.int("SIGNING_KEY_PREPUBLISH", 12),
    )
    if keys.ensure_key():
        print("auth: first signing key created")
    engine.dispose()
    return 0


def _with_app(action: Callable[[AuthContext], int]) -> int:
    """Runs `action` with the context of a fully configured app (no job loop, no provisioner)."""
    from .app import create_app

    app = create_app({"JOB_RUNNER_ENABLED": False, "STREAM_PROVISIONER": False})
    with app.app_context():
        result = action(app.extensions["auth"])
    emitter = app.extensions.get("audit")
    if emitter is not None:  # events are in the durable outbox either way; try to ship them now
        emitter.flush(timeout=1.0)
    return result


def _create_admin(ctx: AuthContext, username: str, name: str) -> int:
    from .users.service import create_user

    password = os.environ.get("SAFEHARBOR_ADMIN_PASSWORD") or ""
    if not password:
        if not sys.stdin.isatty():
            print("auth: set SAFEHARBOR_ADMIN_PASSWORD or run interactively", file=sys.stderr)
            return 2
        password = getpass.getpass("Password for the new admin: ")
        if password != getpass.getpass("Again: "):
            print("auth: the passwords differ", file=sys.stderr)
            return 2
    user = create_user(ctx=ctx, actor=None, username=username, name=name, role="admin", password=password)
    print(f"auth: admin created id={user.id} username={user.username}")
    return 0


def _seed_demo() -> int:
    env = EnvReader()
    if env.str("SAFEHARBOR_ENV", "dev") != "dev":
        print("auth: seed-demo refuses to run unless SAFEHARBOR_ENV=dev", file=sys.stderr)
        return 2
    password = env.optional_secret("SAFEHARBOR_DEMO_PASSWORD")
    if password is None:
        print("auth: SAFEHARBOR_DEMO_PASSWORD is required for seed-demo", file=sys.stderr)
        return 2
    return _with_app(lambda ctx: _seed_users(ctx, password.reveal()))


def _seed_users(ctx: AuthContext, password: str) -> int:
    from sqlalchemy import select

    from .errors import UsernameTaken
    from .models import User
    from .users.service import create_user

    created = 0
    for username, name, role in DEMO_USERS:
        with ctx.db() as db:
            if db.scalar(select(User.id).where(User.username == username)) is not None:
                continue
        try:
            create_user(ctx=ctx, actor=None, username=username, name=name, role=role, password=password)
            created += 1
        except UsernameTaken:  # a concurrent seeder got there first
            continue
    print(f"auth: demo users ready ({created} created, {len(DEMO_USERS) - created} already present)")
    return 0


def _rotate(ctx: AuthContext, *, now: bool, withdraw: bool = False) -> int:
    row = ctx.keys.rotate(immediately=now, withdraw=withdraw)
    print(f"auth: new signing key kid={row.kid} signs from {row.active_from.isoformat()}")
    return 0


def _provision_stream(ctx: AuthContext) -> int:
    from .channels.service import provision_stream

    drift = provision_stream(ctx=ctx)
    if drift:
        print("auth: Stream still differs from the role map: " + "; ".join(drift), file=sys.stderr)
        return 1
    print("auth: Stream roles and channel-type grants provisioned and read back")
    return 0


def _run_jobs(ctx: AuthContext) -> int:
    runner = ctx.jobs
    done = runner.run_due() if runner is not None else 0
    print(f"auth: {done} job(s) completed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
