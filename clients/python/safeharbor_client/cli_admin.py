"""`safeharbor admin ...`: what admins did with raw HTTP (users, push templates, break-glass reviews).

    safeharbor admin users create USERNAME --name NAME --role ROLE    password: SAFEHARBOR_NEW_PASSWORD or prompted
    safeharbor admin users list [--role R] [--status active|deactivated]
    safeharbor admin users show USER                                   USER: username or id; with sessions
    safeharbor admin users role USER ROLE
    safeharbor admin users deactivate|reactivate USER
    safeharbor admin users revoke-sessions USER [--session ID]         every active session unless --session
    safeharbor admin push lint FILE --provider apn|firebase [--kind notification|data]
    safeharbor admin push apply FILE --provider ... [--kind ...]       refused with the findings when PHI-bearing
    safeharbor admin push status
    safeharbor admin push rollback --provider ... [--kind ...] --version N
    safeharbor admin break-glass list [--status open|closed]
    safeharbor admin break-glass review ID [--note TEXT]               note prompted when not given
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from .admin import KINDS, PROVIDERS, ROLES, Admin
from .errors import ApiError, SafeHarborClientError

if TYPE_CHECKING:
    from .cli import Cli

EXIT_OK, EXIT_ERROR = 0, 1


def add_parser(sub: Any) -> None:
    admin = sub.add_parser("admin", help="admin tasks: users, push templates, break-glass reviews")
    areas = admin.add_subparsers(dest="admin_area", required=True)

    users = areas.add_parser("users", help="create, list, show, change role, (de)activate, end sessions")
    users_sub = users.add_subparsers(dest="admin_action", required=True)
    create = users_sub.add_parser("create", help="a new user (password from SAFEHARBOR_NEW_PASSWORD or prompted)")
    create.add_argument("username")
    create.add_argument("--name", required=True, help="display name")
    create.add_argument("--role", required=True, choices=ROLES)
    listing = users_sub.add_parser("list")
    listing.add_argument("--role", choices=ROLES)
    listing.add_argument("--status", choices=("active", "deactivated"))
    for action, text in (("show", "a user and their sessions"), ("deactivate", "deactivate and deprovision"),
                         ("reactivate", "reactivate (new credentials only)")):
        users_sub.add_parser(action, help=text).add_argument("user", help="username or id")
    role = users_sub.add_parser("role", help="change a user's role (ends their sessions)")
    role.add_argument("user", help="username or id")
    role.add_argument("role", choices=ROLES)
    revoke = users_sub.add_parser("revoke-sessions", help="end a user's sessions (all active, or one)")
    revoke.add_argument("user", help="username or id")
    revoke.add_argument("--session", help="only this session id")

    push = areas.add_parser("push", help="PHI-safe push templates")
    push_sub = push.add_subparsers(dest="admin_action", required=True)
    for action, text in (("lint", "check a template for PHI"), ("apply", "lint, store and apply a template")):
        parser = push_sub.add_parser(action, help=text)
        parser.add_argument("file", help='template file, or "-" for stdin')
        parser.add_argument("--provider", required=True, choices=PROVIDERS)
        parser.add_argument("--kind", default="notification", choices=KINDS)
    push_sub.add_parser("status", help="approved version and drift per provider")
    rollback = push_sub.add_parser("rollback", help="apply an earlier approved version again")
    rollback.add_argument("--provider", required=True, choices=PROVIDERS)
    rollback.add_argument("--kind", default="notification", choices=KINDS)
    rollback.add_argument("--version", required=True, type=int)

    glass = areas.add_parser("break-glass", help="emergency access: list and review")
    glass_sub = glass.add_subparsers(dest="admin_action", required=True)
    glass_list = glass_sub.add_parser("list")
    glass_list.add_argument("--status", choices=("open", "closed"))
    review = glass_sub.add_parser("review", help="record your review of a break-glass session")
    review.add_argument("id")
    review.add_argument("--note", help="review note (prompted when not given)")


def run(cli: Cli) -> int:
    args = cli.args
    admin = Admin(cli.client)
    area = {"users": _users, "push": _push, "break-glass": _break_glass}[args.admin_area]
    return area(cli, admin, args)


def _user_line(user: dict[str, Any]) -> str:
    mfa = "mfa" if user.get("mfa_enrolled") else "no mfa"
    return f"{user.get('username'):<24} {user.get('role'):<10} {user.get('status'):<12} {mfa:<7} {user.get('id')}"


def _users(cli: Cli, admin: Admin, args: argparse.Namespace) -> int:
    action = args.admin_action
    if action == "create":
        password = cli.secret("SAFEHARBOR_NEW_PASSWORD", f"Password for {args.username}: ", confirm=True)
        user = admin.create_user(username=args.username, name=args.name, role=args.role, password=password)
        cli.emit(f"Created {user['username']} ({user['role']}), id {user['id']}.", user)
    elif action == "list":
        users = admin.list_users(role=args.role, status=args.status)
        cli.emit("\n".join(_user_line(u) for u in users) or "(no users)", users)
    elif action == "show":
        user = admin.show_user(args.user)
        active = [s for s in user["sessions"] if s.get("active")]
        lines = [_user_line(user), f"name: {user.get('name')}",
                 f"sessions: {len(active)} active of {len(user['sessions'])} listed"]
        lines += [f"  {s['id']}  {s.get('scope')}  since {s.get('created_at')}  last seen {s.get('last_seen')}"
                  for s in active]
        if user.get("deprovisioning"):
            state = user["deprovisioning"]
            lines.append(f"deprovisioning: sessions {state.get('sessions')}, stream {state.get('stream')}, "
                         f"keys {state.get('keys')}")
        cli.emit("\n".join(lines), user)
    elif action == "role":
        user = admin.set_role(args.user, args.role)
        cli.emit(f"{user['username']} is now {user['role']}; their sessions were ended.", user)
    elif action in ("deactivate", "reactivate"):
        result = admin.deactivate(args.user) if action == "deactivate" else admin.reactivate(args.user)
        state = result.get("deprovisioning") or {}
        text = f"{args.user}: {result.get('status')}"
        if state:
            text += f" (sessions {state.get('sessions')}, stream {state.get('stream')}, keys {state.get('keys')})"
        cli.emit(text, result)
    else:
        ended = admin.revoke_sessions(args.user, session_id=args.session)
        cli.emit(f"Ended {len(ended)} session(s) of {args.user}.", {"revoked": ended})
    return EXIT_OK


def _template(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise SafeHarborClientError(f"cannot read {path}: {exc.strerror}") from exc


def _findings(findings: list[dict[str, Any]]) -> str:
    return "\n".join(f"  line {f.get('line')}, column {f.get('column')}: {f.get('rule')}: {f.get('text')}"
                     for f in findings)


def _push(cli: Cli, admin: Admin, args: argparse.Namespace) -> int:
    action = args.admin_action
    if action == "lint":
        result = admin.push_lint(provider=args.provider, kind=args.kind, template=_template(args.file))
        if result.get("ok"):
            cli.emit("No PHI found: the template may be applied.", result)
            return EXIT_OK
        cli.emit("PHI-bearing template:\n" + _findings(result.get("findings") or []), result)
        return EXIT_ERROR
    if action == "apply":
        try:
            result = admin.push_apply(provider=args.provider, kind=args.kind, template=_template(args.file))
        except ApiError as exc:
            findings = exc.details.get("findings")
            if exc.code != "phi_in_template" or not isinstance(findings, list):
                raise
            cli.emit("Refused: PHI-bearing template:\n" + _findings(findings),
                     {"applied": False, "findings": findings})
            return EXIT_ERROR
        cli.emit(f"Applied version {result.get('version')} for {args.provider}/{args.kind}.", result)
        return EXIT_OK
    if action == "rollback":
        result = admin.push_rollback(provider=args.provider, kind=args.kind, version=args.version)
        cli.emit(f"Rolled back {args.provider}/{args.kind} to version {result.get('version')}.", result)
        return EXIT_OK
    status = admin.push_status()
    lines = []
    for provider, state in sorted((status.get("providers") or {}).items()):
        sync = "in sync" if state.get("in_sync") else "DRIFT: Stream differs from the approved template"
        lines.append(f"{provider}: approved version {state.get('approved_version')}, {sync}")
    cli.emit("\n".join(lines) or "(no providers)", status)
    return EXIT_OK


def _break_glass(cli: Cli, admin: Admin, args: argparse.Namespace) -> int:
    if args.admin_action == "list":
        rows = admin.break_glass_list(status=args.status)
        lines = [f"{r['id']}  {r.get('status'):<6} user {r.get('user_id')}  {r.get('channel_cid')}  opened "
                 f"{r.get('opened_at')}  {'reviewed' if r.get('reviewed_at') else 'NOT REVIEWED'}" for r in rows]
        cli.emit("\n".join(lines) or "(no break-glass sessions)", rows)
        return EXIT_OK
    note = args.note or cli.prompt("Review note: ")
    if not note.strip():
        raise SafeHarborClientError("a review needs a note")
    reviewed = admin.break_glass_review(args.id, note=note)
    cli.emit(f"Reviewed {args.id}.", reviewed)
    return EXIT_OK
